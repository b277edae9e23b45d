"""The app's server-wide scoring queue: slots, arrival order, places reported, abandoned turns."""

from __future__ import annotations

import threading

import pytest

from app_support import APP_DIR  # noqa: F401 - puts app/ on sys.path
from scoring_queue import ScoringQueue


def test_one_slot_runs_turns_one_at_a_time_in_arrival_order_and_reports_places():
    queue = ScoringQueue(1)
    order, places = [], {}
    first_in = threading.Event()
    release = threading.Event()

    def user(name: str, hold: bool = False) -> None:
        with queue.turn(lambda place: places.setdefault(name, []).append(place), poll=0.01):
            order.append(name)
            if hold:
                first_in.set()
                release.wait(10)

    first = threading.Thread(target=user, args=("a", True))
    first.start()
    assert first_in.wait(10)
    waiters = []
    for name in ("b", "c"):  # b queues before c
        waiters.append(threading.Thread(target=user, args=(name,)))
        waiters[-1].start()
        for _ in range(1000):  # until its first report: then it is in the queue
            if name in places:
                break
            threading.Event().wait(0.01)
    assert places == {"b": [1], "c": [2]}
    release.set()
    for thread in (first, *waiters):
        thread.join(10)
    assert order == ["a", "b", "c"]
    assert places["c"][0] == 2 and places["c"] == sorted(places["c"], reverse=True)
    assert "a" not in places  # no wait, no message


def test_an_abandoned_wait_gives_up_its_place():
    queue = ScoringQueue(1)
    with queue.turn():
        def closed_tab(place: int) -> None:
            raise RuntimeError("the session went away")

        with pytest.raises(RuntimeError):
            with queue.turn(closed_tab):
                pass
        started = threading.Event()

        def next_in_line() -> None:
            with queue.turn(poll=0.01):
                started.set()

        waiter = threading.Thread(target=next_in_line)
        waiter.start()
    waiter.join(10)
    assert started.is_set()  # the next one in line ran: the abandoned ticket left no gap


def test_two_slots_run_two_turns_at_once_and_bad_slots_are_refused():
    queue = ScoringQueue(2)
    with queue.turn(lambda place: pytest.fail("a free slot means no wait")):
        with queue.turn(lambda place: pytest.fail("a free slot means no wait")):
            pass
    with pytest.raises(ValueError, match="at least 1"):
        ScoringQueue(0)
