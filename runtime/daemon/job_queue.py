"""The daemon's bounded queue of jobs in front of the engine workers, and the jobs they are running
(one at a time for the local engine, several for the vLLM engine).

- Supersession: a job with a ``client`` key cancels that client's older queued or running jobs (the
  key is scoped to the developer who sent it: runtime.daemon.team).
- Cancellation: ``cancel(id)`` drops a queued job at once (it is answered as cancelled) or sets a
  running job's CancelToken, which the engine checks every denoising step.
- A full queue refuses the new job (``queue_full``) instead of growing.

Thread-safe: every method holds the condition the worker waits on, and wakes it when work arrives.
"""

from __future__ import annotations

import threading
from collections import deque

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.daemon.jobs import Job, Outcome


class JobQueue:
    def __init__(self, max_queue: int, cond: threading.Condition | None = None) -> None:
        self.max_queue = max_queue
        self.cond = cond or threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []  # in the order the workers took them
        self.closed = False
        # Jobs answered as cancelled without running (dropped while queued), the queued or
        # running jobs a newer one of the same client replaced, and jobs refused at the door.
        self.dropped = 0
        self.superseded = 0
        self.rejected = 0

    def __len__(self) -> int:
        with self.cond:
            return len(self._waiting)

    @property
    def running(self) -> Job | None:
        """The oldest job a worker is running (the only one with one worker), or None."""
        with self.cond:
            return self._running[0] if self._running else None

    @property
    def running_count(self) -> int:
        with self.cond:
            return len(self._running)

    def submit(self, job: Job) -> None:
        """Queue ``job``; supersede the same client's older work. Raises WireError (queue full)."""
        with self.cond:
            if self.closed:
                raise WireError(ErrorCode.QUEUE_FULL, "the daemon is shutting down")
            if job.client is not None:
                self._supersede(job.client)
            if len(self._waiting) >= self.max_queue:
                self.rejected += 1
                raise WireError(ErrorCode.QUEUE_FULL, f"the daemon's queue is full ({self.max_queue} waiting); "
                                f"retry shortly or start it with a larger --queue")
            self._waiting.append(job)
            self.cond.notify_all()

    def _supersede(self, client: tuple[str | None, str]) -> None:
        for old in [j for j in self._waiting if j.client == client]:
            self._waiting.remove(old)
            self.superseded += 1
            old.superseded = True
            self._drop(old)
        for running in self._running:
            if running.client == client and not running.cancel.cancelled:
                self.superseded += 1
                running.superseded = True
                running.cancel.cancel()

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when no such job is waiting or running."""
        with self.cond:
            for job in self._waiting:
                if job.id == job_id:
                    self._waiting.remove(job)
                    self._drop(job)
                    return True
            for running in self._running:
                if running.id == job_id:
                    running.cancel.cancel()
                    return True
        return False

    def cancel_all(self) -> None:
        with self.cond:
            while self._waiting:
                self._drop(self._waiting.popleft())
            for running in self._running:
                running.cancel.cancel()

    def close(self) -> None:
        """Refuse new jobs and cancel every queued and running one (shutting down)."""
        with self.cond:
            self.closed = True
            self.cancel_all()
            self.cond.notify_all()

    def has_job(self, job_id: str) -> bool:
        with self.cond:
            return any(j.id == job_id for j in [*self._running, *self._waiting])

    def take(self) -> Job | None:
        """The next job, now a running one (a worker's side); None when nothing waits."""
        with self.cond:
            if not self._waiting:
                return None
            job = self._waiting.popleft()
            self._running.append(job)
            return job

    def done(self, job: Job, outcome: Outcome) -> None:
        """Answer the running ``job``. It stops being a running job first: a cancel that arrives
        after the answer must find nothing to cancel."""
        with self.cond:
            if job in self._running:
                self._running.remove(job)
        job.finish(outcome)

    def _drop(self, job: Job) -> None:
        job.cancel.cancel()
        self.dropped += 1
        job.finish(Outcome(result=job.cancelled_result()))
