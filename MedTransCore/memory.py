"""Memory guard: refuse a run whose estimated peak memory exceeds the limit, instead of crashing."""

from __future__ import annotations

import os

from .errors import MemoryGuardError

ENV_LIMIT = "MEDTRANS_MEMORY_LIMIT_MB"
# Fraction of the currently available memory a run may plan to use when no explicit limit is set.
AVAILABLE_FRACTION = 0.8


def available_memory_mb() -> float:
    """MemAvailable from /proc/meminfo (Linux); elsewhere the physical memory as a fallback."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        return 8192.0


def memory_limit_mb() -> tuple[float, str]:
    """The limit in MB and where it comes from (for the error message)."""
    value = os.environ.get(ENV_LIMIT)
    if value:
        try:
            return float(value), f"${ENV_LIMIT}"
        except ValueError:
            raise MemoryGuardError(f"${ENV_LIMIT}={value!r} is not a number of megabytes") from None
    return AVAILABLE_FRACTION * available_memory_mb(), f"{int(AVAILABLE_FRACTION * 100)} % of the available memory"


def check_memory(estimate_mb: float, what: str) -> None:
    """Raise ``MemoryGuardError`` when ``estimate_mb`` exceeds the limit, naming the limit and how to change it."""
    limit, source = memory_limit_mb()
    if estimate_mb > limit:
        raise MemoryGuardError(
            f"{what} needs about {estimate_mb:,.0f} MB but the memory limit is {limit:,.0f} MB ({source}); "
            f"crop the volume, use a coarser model spacing, or raise {ENV_LIMIT}"
        )
