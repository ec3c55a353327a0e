"""Progress reporting for the CLI: a tqdm bar for people, ``PROGRESS`` lines for front ends that parse them."""

from __future__ import annotations

import json
import os
import sys
import time

from tqdm import tqdm

# Tests of cancellation need a run that lasts; this stretches each progress step (never set it otherwise).
SLOW_ENV = "MEDTRANS_TEST_SLOW_SECONDS"


class ProgressPrinter:
    """Callable ``(fraction, stage)`` that renders progress as a bar or as machine-readable lines.

    Args:
        mode: ``"bar"`` (tqdm on stderr) or ``"lines"`` (``PROGRESS <fraction> <stage>`` on stdout).
        description: the bar's label.
    """

    def __init__(self, mode: str = "bar", description: str = "translating") -> None:
        if mode not in ("bar", "lines"):
            raise ValueError(f"progress mode must be 'bar' or 'lines', got {mode!r}")
        self.mode = mode
        self.delay = float(os.environ.get(SLOW_ENV, "0") or 0)
        self.bar = tqdm(total=100, desc=description, unit="%", leave=False) if mode == "bar" else None
        self._last = ""

    def __call__(self, fraction: float, stage: str) -> None:
        if self.bar is not None:
            self.bar.n = round(100 * fraction)
            if stage != self._last:
                self.bar.set_postfix_str(stage, refresh=False)
                self._last = stage
            self.bar.refresh()
        else:
            print(f"PROGRESS {fraction:.4f} {stage}", flush=True)
        if self.delay:
            time.sleep(self.delay)

    def warning(self, text: str) -> None:
        if self.mode == "lines":
            print(f"WARNING {text}", flush=True)
        else:
            tqdm.write(f"warning: {text}", file=sys.stderr)

    def result(self, payload: dict) -> None:
        if self.mode == "lines":
            print("RESULT " + json.dumps(payload), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
