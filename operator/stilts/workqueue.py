"""A work queue of experiment keys, as controller-runtime has: every trigger (a watch event, the
periodic resync, a requested look later) adds a key; a key is handled by one worker at a time, and a
key added while it is being handled is handled once more afterwards. Its memory is bounded by the
number of experiments with pending work."""

from __future__ import annotations

import contextvars
import heapq
import threading
import time
from typing import Callable, Hashable


class WorkQueue:
    def __init__(self, handle: Callable[[Hashable], float | None], workers: int = 4):
        self._handle = handle
        self._cond = threading.Condition()
        self._ready: list[Hashable] = []      # FIFO of keys to handle now
        self._queued: set[Hashable] = set()   # keys in _ready
        self._busy: set[Hashable] = set()     # keys being handled
        self._dirty: set[Hashable] = set()    # keys added while busy
        self._later: list[tuple[float, int, Hashable]] = []  # (when, tie-break, key): a heap
        self._when: dict[Hashable, float] = {}
        self._stopped = False
        self._workers = workers

    def start(self, context: contextvars.Context | None = None) -> "WorkQueue":
        """Start the workers and the clock; each thread runs in its own copy of `context` (the operator
        passes kopf's, so that handlers' helpers such as kopf.event work from these threads)."""
        bodies = [(f"reconcile-{i}", self._work) for i in range(self._workers)] + [("requeue", self._clock)]
        for name, body in bodies:
            target = (lambda b=body: context.copy().run(b)) if context is not None else body
            threading.Thread(target=target, name=name, daemon=True).start()
        return self

    def add(self, key: Hashable) -> None:
        with self._cond:
            if key in self._busy:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
                self._cond.notify_all()

    def add_after(self, key: Hashable, delay: float) -> None:
        when = time.monotonic() + max(0.0, delay)
        with self._cond:
            if key in self._when and self._when[key] <= when:
                return  # an earlier look is already planned
            self._when[key] = when
            heapq.heappush(self._later, (when, id(key), key))
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._busy) + len(self._when)

    def _clock(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = []
                while self._later and self._later[0][0] <= now:
                    when, _, key = heapq.heappop(self._later)
                    if self._when.get(key) == when:
                        del self._when[key]
                        due.append(key)
                timeout = self._later[0][0] - now if self._later else None
            for key in due:
                self.add(key)
            with self._cond:
                if not self._stopped and not (self._later and self._later[0][0] <= time.monotonic()):
                    self._cond.wait(timeout if timeout is None else max(timeout, 0.01))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                key = self._ready.pop(0)
                self._queued.discard(key)
                self._busy.add(key)
            try:
                again = self._handle(key)
            except Exception:  # noqa: BLE001 - the handler logs; look again soon
                again = 5.0
            with self._cond:
                self._busy.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify_all()
            if again is not None:
                self.add_after(key, again)
