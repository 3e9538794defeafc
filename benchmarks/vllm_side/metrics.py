"""The engine metrics a vLLM server exports on ``/metrics``, under vLLM's names, labels and help
texts (v1/metrics/loggers.py), in vLLM's Prometheus registry: the server's own ``/metrics`` route
and its HTTP instrumentator (``http_requests_total{handler="/v1/completions",...}``) serve them.

As in vLLM, a request counts in ``vllm:request_success_total`` when the engine finishes it (stop,
length); one the client aborted does not (it leaves the output processor without a final output).
vLLM has no count of aborted requests; the stand-in adds one, ``standin:aborted_requests_total``
(requests the engine was still running or holding when their client went away), for tests only:
a client of a real vLLM server cannot read it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from vllm.v1.engine import FinishReason
from vllm.v1.metrics.buckets import histogram_buckets
from vllm.v1.metrics.prometheus import get_prometheus_registry

LABELS = ["model_name", "engine"]


class EngineMetrics:
    def __init__(self, model_name: str) -> None:
        registry = get_prometheus_registry()
        values = [model_name, "0"]
        self.running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                             LABELS, registry=registry, multiprocess_mode="mostrecent").labels(*values)
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                             LABELS, registry=registry, multiprocess_mode="mostrecent").labels(*values)
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          [*LABELS, "finished_reason"], registry=registry)
        self.success = {reason: success.labels(*values, str(reason)) for reason in FinishReason}
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", LABELS,
                                     registry=registry).labels(*values)
        self.generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed.",
                                         LABELS, registry=registry).labels(*values)
        self.first_token = Histogram("vllm:time_to_first_token_seconds",
                                     "Histogram of time to first token in seconds.", LABELS, registry=registry,
                                     buckets=histogram_buckets("time_to_first_token")).labels(*values)
        self.aborted = Counter("standin:aborted_requests", "Requests aborted by their client (stand-in only).",
                               LABELS, registry=registry).labels(*values)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             LABELS, registry=registry, buckets=histogram_buckets("request_latency")).labels(*values)
