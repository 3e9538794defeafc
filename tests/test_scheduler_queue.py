"""The daemon's job queue on its own: order, supersession by client key, cancel by id, the bound.

The worker's side (``take``/``done``) is called from the test, one job at a time as the worker does.
"""

from __future__ import annotations

import pytest
from scheduler_standins import job

from diffgemma.runtime.api.errors import ErrorCode, WireError, status_of
from diffgemma.runtime.daemon.job_queue import JobQueue
from diffgemma.runtime.daemon.jobs import Outcome


def test_jobs_run_in_order_and_are_known_until_answered() -> None:
    queue = JobQueue(4)
    (first, a1), (second, a2) = job("m", "a", job_id="one"), job("m", "b", job_id="two")
    queue.submit(first)
    queue.submit(second)
    assert len(queue) == 2 and queue.has_job("one") and queue.has_job("two")
    assert queue.take() is first and queue.running is first and len(queue) == 1
    assert queue.has_job("one")  # running still counts
    queue.done(first, Outcome(value="ok"))
    assert a1.get().value == "ok" and queue.running is None and not queue.has_job("one")
    assert queue.take() is second and queue.take() is None
    assert not a2.done


def test_a_newer_job_drops_its_clients_queued_one() -> None:
    queue = JobQueue(4)
    (old, old_answer), (other, other_answer) = job("m", "a", client="ed"), job("m", "b", client="other")
    (new, _new_answer) = job("m", "c", client="ed")
    for j in (old, other, new):
        queue.submit(j)
    assert old_answer.finish_reason() == "cancelled" and old.cancel.cancelled  # answered at once
    assert not other_answer.done and not other.cancel.cancelled
    assert [queue.take(), queue.take(), queue.take()] == [other, new, None]
    assert (queue.superseded, queue.dropped) == (1, 1)


def test_a_newer_job_cancels_its_clients_running_one_once() -> None:
    queue = JobQueue(4)
    running, answer = job("m", "a", client="ed")
    queue.submit(running)
    queue.take()
    queue.submit(job("m", "b", client="ed")[0])
    assert running.cancel.cancelled and not answer.done  # the worker answers it at its next step
    queue.submit(job("m", "c", client="ed")[0])  # replaces the queued "b"; "a" is already cancelled
    assert (queue.superseded, queue.dropped) == (2, 1)
    assert len(queue) == 1


def test_jobs_without_a_client_key_never_supersede() -> None:
    queue = JobQueue(4)
    first, _ = job("m", "a")
    queue.submit(first)
    queue.submit(job("m", "b")[0])
    assert len(queue) == 2 and not first.cancel.cancelled and queue.superseded == 0


def test_cancel_drops_a_queued_job_at_once_and_signals_a_running_one() -> None:
    queue = JobQueue(4)
    (running, run_answer), (queued, queued_answer) = job("m", "a", job_id="r"), job("m", "b", job_id="q")
    queue.submit(running)
    queue.submit(queued)
    queue.take()
    assert queue.cancel("q") is True
    assert queued_answer.finish_reason() == "cancelled" and len(queue) == 0 and queue.dropped == 1
    assert queue.cancel("r") is True
    assert running.cancel.cancelled and not run_answer.done and queue.dropped == 1
    assert queue.cancel("nobody") is False
    queue.done(running, Outcome(result=running.cancelled_result()))
    assert queue.cancel("r") is False  # answered: nothing left to cancel
    assert run_answer.calls == 1


def test_a_full_queue_refuses_the_next_job() -> None:
    queue = JobQueue(2)
    for name in ("a", "b"):
        queue.submit(job("m", name)[0])
    late, late_answer = job("m", "c")
    with pytest.raises(WireError) as refused:
        queue.submit(late)
    assert refused.value.code == ErrorCode.QUEUE_FULL and status_of(refused.value.code) == 503
    assert "queue is full (2 waiting)" in refused.value.message
    assert queue.rejected == 1 and len(queue) == 2 and not late_answer.done and not queue.has_job(late.id)


def test_the_running_job_does_not_take_a_place_in_the_queue() -> None:
    queue = JobQueue(1)
    queue.submit(job("m", "a")[0])
    queue.take()
    queue.submit(job("m", "b")[0])
    with pytest.raises(WireError):
        queue.submit(job("m", "c")[0])


def test_a_full_queue_still_takes_a_clients_replacement() -> None:
    queue = JobQueue(1)
    queue.submit(job("m", "a", client="ed")[0])
    newer, _ = job("m", "b", client="ed")
    queue.submit(newer)  # the older one leaves first: no refusal
    assert queue.take() is newer and queue.rejected == 0


def test_close_cancels_everything_and_refuses_new_jobs() -> None:
    queue = JobQueue(4)
    (running, run_answer), (queued, queued_answer) = job("m", "a"), job("m", "b")
    queue.submit(running)
    queue.submit(queued)
    queue.take()
    queue.close()
    assert queued_answer.finish_reason() == "cancelled" and running.cancel.cancelled and not run_answer.done
    with pytest.raises(WireError) as refused:
        queue.submit(job("m", "c")[0])
    assert refused.value.code == ErrorCode.QUEUE_FULL and "shutting down" in refused.value.message


def test_a_job_is_answered_once_even_when_a_cancel_races_the_answer() -> None:
    queue = JobQueue(4)
    running, answer = job("m", "a", job_id="r")
    queue.submit(running)
    queue.take()
    queue.done(running, Outcome(value=1))
    queue.done(running, Outcome(value=2))
    assert answer.calls == 1 and answer.get().value == 1
