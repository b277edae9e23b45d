"""A server-wide cap on concurrent scoring: first come, first served, with each waiter's place.

Scoring a 40 MP upload holds about half a gigabyte; six users uploading at once would hold
six times that. The app's pages take a turn of one ``ScoringQueue`` (shared by every session of
the server) around their heavy work, so at most ``slots`` run at once and the others are told
their place in the queue instead of exhausting the machine. Plain Python: no streamlit here.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class ScoringQueue:
    """At most ``slots`` turns at once; waiting turns start in arrival order."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"scoring slots must be at least 1, got {slots}")
        self.slots = slots
        self._changed = threading.Condition()
        self._waiting: deque[int] = deque()
        self._running: set[int] = set()
        self._tickets = itertools.count()

    def _may_start(self, ticket: int) -> bool:
        return len(self._running) < self.slots and self._waiting[0] == ticket

    @contextmanager
    def turn(self, report: Callable[[int], None] = lambda position: None,
             poll: float = 0.5) -> Iterator[None]:
        """Wait for a slot, then hold it for the ``with`` block.

        While waiting, ``report(position)`` is called with the place in the queue (1: next)
        each time it changes, first at once if there is a wait at all. An exception from
        ``report`` (a closed browser tab stops its script that way) gives up the place.
        """
        with self._changed:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
        try:
            said = None
            while True:
                with self._changed:
                    if self._may_start(ticket):
                        self._waiting.popleft()
                        self._running.add(ticket)
                        break
                    position = self._waiting.index(ticket) + 1
                    if position == said:
                        self._changed.wait(poll)
                        continue
                said = position
                report(position)
            yield
        finally:
            with self._changed:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._running.discard(ticket)
                self._changed.notify_all()
