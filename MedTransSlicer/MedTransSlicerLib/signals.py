"""A minimal Qt-free signal: the logic talks to any front end (Qt widget, trame state, a test) through these."""

from __future__ import annotations

from collections.abc import Callable


class Signal:
    """A list of callbacks called in connection order with the emitted arguments.

    Example::

        finished = Signal()
        finished.connect(print)
        finished.emit("done")  # prints "done"
    """

    def __init__(self) -> None:
        self._slots: list[Callable] = []

    def connect(self, slot: Callable) -> None:
        """Call ``slot`` on every emit (connecting the same slot twice calls it once)."""
        if slot not in self._slots:
            self._slots.append(slot)

    def disconnect(self, slot: Callable) -> None:
        if slot in self._slots:
            self._slots.remove(slot)

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)

    __call__ = emit
