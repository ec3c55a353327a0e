"""Progress reporting for the CLI: a bar on a terminal, a few plain lines in logs, ``PROGRESS`` lines for front ends.

``"bar"`` is for people: a tqdm bar when stderr is a terminal; when it is not (a log file, a pipe, CI), the bar's
carriage-return redraws would fill the log, so it becomes a handful of plain lines instead (one per stage and one at
each quarter). ``"lines"`` is the machine-readable contract the Slicer module parses (``MedTransSlicerLib.process``):
``PROGRESS <fraction> <stage>``, ``WARNING <text>`` and ``RESULT <json>`` on stdout; it never changes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm import tqdm

# Tests of cancellation need a run that lasts; this stretches each progress step (never set it otherwise).
SLOW_ENV = "MEDTRANS_TEST_SLOW_SECONDS"
MODES = ("bar", "plain", "lines")
# Plain mode prints a line when one of these percentages is first reached (and whenever the stage changes).
MILESTONES = (0, 25, 50, 75, 100)

T = TypeVar("T")


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (closed or replaced streams count as not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressPrinter:
    """Callable ``(fraction, stage)`` that renders progress as a bar, as plain log lines, or as ``PROGRESS`` lines.

    Args:
        mode: ``"bar"`` (a tqdm bar on stderr when it is a terminal, else ``"plain"``), ``"plain"`` (a few
            ``<description>: <percent>% <stage>`` lines on stderr) or ``"lines"`` (``PROGRESS <fraction> <stage>``
            on stdout, for front ends).
        description: the label of the bar and of the plain lines.
        stream: where the bar and plain lines go (default ``sys.stderr``).
    """

    def __init__(self, mode: str = "bar", description: str = "translating", stream: TextIO | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.stream = stream if stream is not None else sys.stderr
        if mode == "bar" and not is_terminal(self.stream):
            mode = "plain"
        self.mode = mode
        self.description = description
        self.delay = float(os.environ.get(SLOW_ENV, "0") or 0)
        self.bar = tqdm(total=100, desc=description, unit="%", leave=False, file=self.stream) if mode == "bar" else None
        self._stage: str | None = None
        self._next_milestone = 0

    def __call__(self, fraction: float, stage: str) -> None:
        if self.mode == "bar":
            self.bar.n = round(100 * fraction)
            if stage != self._stage:
                self.bar.set_postfix_str(stage, refresh=False)
                self._stage = stage
            self.bar.refresh()
        elif self.mode == "plain":
            self._plain(fraction, stage)
        else:
            print(f"PROGRESS {fraction:.4f} {stage}", flush=True)
        if self.delay:
            time.sleep(self.delay)

    def _plain(self, fraction: float, stage: str) -> None:
        percent = int(100 * min(max(fraction, 0.0), 1.0))
        reached = [m for m in MILESTONES[self._next_milestone :] if percent >= m]
        if stage == self._stage and not reached:
            return
        self._stage = stage
        self._next_milestone += len(reached)
        print(f"{self.description}: {percent:3d}% {stage}", file=self.stream, flush=True)

    def warning(self, text: str) -> None:
        if self.mode == "lines":
            print(f"WARNING {text}", flush=True)
        elif self.mode == "bar":
            tqdm.write(f"warning: {text}", file=self.stream)
        else:
            print(f"warning: {text}", file=self.stream, flush=True)

    def result(self, payload: dict) -> None:
        if self.mode == "lines":
            print("RESULT " + json.dumps(payload), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def track(items: Iterable[T], description: str, unit: str, stream: TextIO | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a tqdm bar on a terminal, or one ``<description>: <unit> i/n`` line per item.

    Args:
        items: what to iterate over (a sized collection shows ``i/n``).
        description: the label, e.g. ``"batch"``.
        unit: what one item is, e.g. ``"case"``.
        stream: where progress goes (default ``sys.stderr``).
    """
    stream = stream if stream is not None else sys.stderr
    if is_terminal(stream):
        yield from tqdm(items, desc=description, unit=unit, file=stream)
        return
    total = f"/{len(items)}" if hasattr(items, "__len__") else ""
    for index, item in enumerate(items, start=1):
        print(f"{description}: {unit} {index}{total}", file=stream, flush=True)
        yield item
