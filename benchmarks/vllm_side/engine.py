"""The stand-in's engine: what vLLM's ``AsyncLLM`` is to its OpenAI server, over `denoiser.CanvasRun`.

vLLM's serving code calls ``generate(engine_input, sampling_params, request_id)`` and reads
``RequestOutput``s from it. As ``AsyncLLM`` does, ``generate`` admits the request (the input
processor's checks, `served.admit`), registers it with vLLM's own ``OutputProcessor`` (incremental
detokenization, stop strings, log-probabilities, DELTA or FINAL_ONLY outputs) and hands it to the
engine; a cancelled ``generate`` (a client that disconnected) aborts the request.

Scheduling: one engine thread runs up to ``max_num_seqs`` requests, one engine step of each per
round (prefill, a denoise step or a commit), so concurrent requests progress together and an
aborted one stops within a step; the others wait (``vllm:num_requests_waiting``). The forwards
themselves are not batched: one request's step at a time on the CPU. After each emitted canvas the
scheduler's own stop check (``check_stop``, v1/core/sched/utils.py) cuts the tokens at EOS, a stop
token, ``max_tokens`` or ``max_model_len``, and trims the log-probabilities to match.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

from denoiser import CanvasModel, CanvasRun, Emission
from metrics import EngineMetrics
from served import admit
from vllm.exceptions import GracefulHTTPError, VLLMClientError, VLLMValidationError
from vllm.outputs import RequestOutput
from vllm.sampling_params import SamplingParams
from vllm.v1.core.sched.utils import check_stop
from vllm.v1.engine import EngineCoreOutput, EngineCoreRequest, FinishReason
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError
from vllm.v1.engine.input_processor import InputProcessor
from vllm.v1.engine.output_processor import OutputProcessor, RequestOutputCollector
from vllm.v1.outputs import LogprobsLists
from vllm.v1.request import RequestStatus

log = logging.getLogger("vllm_standin")


class Job:
    """A request in the engine; shaped as vLLM's ``Request`` where ``check_stop`` reads one."""

    pooling_params = None

    def __init__(self, request: EngineCoreRequest) -> None:
        self.request_id = request.request_id
        self.sampling_params: SamplingParams = request.sampling_params  # type: ignore[assignment]
        self.prompt_token_ids: list[int] = list(request.prompt_token_ids or [])
        self.max_tokens = int(self.sampling_params.max_tokens or 0)
        self.output_token_ids: list[int] = []
        self.status = RequestStatus.WAITING
        self.stop_reason: int | str | None = None
        self.arrival = time.monotonic()
        self.first_token_at: float | None = None
        self.run: CanvasRun | None = None
        self.aborted = False
        self.done = False

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    def advance(self, model: CanvasModel, max_model_len: int) -> EngineCoreOutput | None:
        """One engine step; the EngineCoreOutput when the step emitted a canvas."""
        if self.run is None:
            self.run = CanvasRun(model, self.prompt_token_ids, self.sampling_params)
        emission = self.run.step()
        return None if emission is None else self._output(emission, max_model_len)

    def _output(self, emission: Emission, max_model_len: int) -> EngineCoreOutput:
        """The scheduler's ``_update_request_with_output``: append token by token until a stop."""
        new: list[int] = []
        for token in emission.tokens:
            self.output_token_ids.append(token)
            new.append(token)
            if check_stop(self, max_model_len):  # type: ignore[arg-type]
                self.done = True
                break
        lp = emission.logprobs
        if lp is not None:
            n = len(new)
            lp = LogprobsLists(lp.logprob_token_ids[:n], lp.logprobs[:n], lp.sampled_token_ranks[:n], None)
        reason = RequestStatus.get_finished_reason(self.status) if self.done else None
        return EngineCoreOutput(request_id=self.request_id, new_token_ids=new, new_logprobs=lp,
                                finish_reason=reason, stop_reason=self.stop_reason)


class StandInEngine:
    """The engine client the stand-in server's vLLM serving classes talk to."""

    def __init__(self, model: CanvasModel, max_num_seqs: int, metrics: EngineMetrics) -> None:
        served = model.served
        self.model = model
        self.served = served
        self.max_num_seqs = max_num_seqs
        self.metrics = metrics
        # what vLLM's serving classes read from their engine client
        self.model_config = served.model_config
        self.renderer = served.renderer
        self.input_processor = None
        self.errored = False
        self.dead_error = EngineDeadError()
        self.output_processor = OutputProcessor(served.tokenizer, log_stats=False)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._jobs: dict[str, Job] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="standin-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ the EngineClient surface
    def check_admission(self, n: int = 1) -> None:
        return None

    async def check_health(self) -> None:
        if self.errored:
            raise self.dead_error

    async def generate(self, prompt: Any, sampling_params: SamplingParams, request_id: str,
                       **_: Any) -> AsyncGenerator[RequestOutput, None]:
        """``AsyncLLM.generate``: admit, queue, yield the outputs; abort when cancelled."""
        queue: RequestOutputCollector | None = None
        try:
            queue = self._add(prompt, sampling_params, request_id)
            finished = False
            while not finished:
                out = queue.get_nowait() or await queue.get()
                finished = out.finished
                yield out  # type: ignore[misc]
        except (asyncio.CancelledError, GeneratorExit):
            if queue is not None:
                self.abort(queue.request_id)
            raise
        except (VLLMClientError, GracefulHTTPError):
            raise
        except Exception as exc:
            if queue is not None:
                self.abort(queue.request_id)
            raise EngineGenerateError() from exc
        finally:
            if queue is not None:
                queue.close()

    def _add(self, prompt: Any, params: SamplingParams, request_id: str) -> RequestOutputCollector:
        self._loop = asyncio.get_running_loop()
        if params.n > 1:
            raise VLLMValidationError("n > 1 is not supported by the stand-in", parameter="n", value=params.n)
        if (params.extra_args or {}).get("diffusion_constrained"):
            raise VLLMValidationError("diffusion_constrained is not supported by the stand-in",
                                      parameter="extra_args")
        ids = list(prompt["prompt_token_ids"])
        admitted = admit(params, self.served, ids)
        request = EngineCoreRequest(request_id=request_id, prompt_token_ids=ids, mm_features=None,
                                    sampling_params=admitted, pooling_params=None, arrival_time=time.time(),
                                    lora_request=None, cache_salt=None, data_parallel_rank=None)
        InputProcessor.assign_request_id(request)
        queue = RequestOutputCollector(admitted.output_kind, request.request_id)
        self.output_processor.add_request(request, prompt.get("prompt"), None, 0, queue)
        job = Job(request)
        with self._cond:
            self._jobs[job.request_id] = job
            self._waiting.append(job)
            self._cond.notify_all()
        return queue

    def abort(self, request_id: str) -> None:
        """A client went away: drop its request from the outputs and the engine."""
        self.output_processor.abort_requests([request_id], internal=True)
        if self._drop(request_id):
            self.metrics.aborted.inc()

    def _drop(self, request_id: str) -> bool:
        """Take the request out of the engine; False when it had already finished."""
        with self._cond:
            job = self._jobs.pop(request_id, None)
            if job is None or job.done:
                return False
            job.aborted = True
            if job in self._waiting:
                self._waiting.remove(job)
            self._cond.notify_all()
            return True

    # ------------------------------------------------------------ the engine thread
    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._running:
                    self._cond.wait()
                self._running = [j for j in self._running if not j.aborted and not j.done]
                while self._waiting and len(self._running) < self.max_num_seqs:
                    self._running.append(self._waiting.popleft())
                running = list(self._running)
                self._gauges()
            outputs = [out for job in running if not job.aborted and (out := self._advance(job)) is not None]
            with self._cond:
                self._running = [j for j in self._running if not j.aborted and not j.done]
                self._gauges()
            if outputs and self._loop is not None:
                self._loop.call_soon_threadsafe(self._deliver, outputs)

    def _advance(self, job: Job) -> EngineCoreOutput | None:
        started = job.run is None
        try:
            out = job.advance(self.model, self.served.max_model_len)
        except Exception:
            log.exception("request %s failed in the engine", job.request_id)
            job.done = True
            return EngineCoreOutput(request_id=job.request_id, new_token_ids=[], finish_reason=FinishReason.ERROR)
        if started:
            self.metrics.prompt_tokens.inc(len(job.prompt_token_ids))
        if out is not None and out.new_token_ids:
            if job.first_token_at is None:
                job.first_token_at = time.monotonic()
                self.metrics.first_token.observe(job.first_token_at - job.arrival)
            self.metrics.generation_tokens.inc(len(out.new_token_ids))
        return out

    def _gauges(self) -> None:
        self.metrics.running.set(len(self._running))
        self.metrics.waiting.set(len(self._waiting))

    def _deliver(self, outputs: list[EngineCoreOutput]) -> None:
        """On the event loop, as AsyncLLM's output handler: outputs to the request queues."""
        now = time.monotonic()
        processed = self.output_processor.process_outputs(outputs, engine_core_timestamp=now)
        for out in outputs:
            if out.finish_reason is not None:
                self._count(out.request_id, out.finish_reason, now)
                with self._cond:
                    self._jobs.pop(out.request_id, None)
        for request_id in processed.reqs_to_abort:  # a stop string ended it in the detokenizer
            self._count(request_id, FinishReason.STOP, now)
            self._drop(request_id)

    def _count(self, request_id: str, reason: FinishReason, now: float) -> None:
        self.metrics.success[reason].inc()
        job = self._jobs.get(request_id)
        self.metrics.e2e.observe(now - (job.arrival if job is not None else now))
