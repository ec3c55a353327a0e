"""Arguments shared by several sub-commands, defined once, with their ranges checked by argparse."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..modalities import MODALITIES

# Diffusion samplers are run with a few to a few hundred steps; more is a typo, and hours of compute.
MAX_STEPS = 1000
# numpy's legacy seeding accepts 0 .. 2**32 - 1; one range for every command keeps a seed portable.
MAX_SEED = 2**32 - 1


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``[low, high]``, else a one-line usage error saying the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; use {low} to {high}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0")
    return value


def add_seed_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed",
        type=bounded_int(0, MAX_SEED),
        default=0,
        help=f"random seed, 0 to {MAX_SEED}; the same seed gives the same result (default 0)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="bundle name or folder (default: the best installed model for the pair)")
    parser.add_argument(
        "--steps",
        type=bounded_int(1, MAX_STEPS),
        help=f"sampler steps for diffusion models, 1 to {MAX_STEPS} (default: the bundle's)",
    )
    # = MedTransCore.models.aldm.sampler.SAMPLERS, not imported here: parsing must not load torch.
    parser.add_argument(
        "--sampler",
        choices=("ddim", "dpmpp"),
        help="sampler of diffusion models: ddim, or dpmpp (DPM-Solver++ 2M, needs fewer steps) (default: the bundle's)",
    )
    add_seed_option(parser)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--strict", action="store_true", help="refuse inputs that fail the plausibility checks")


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never the inputs)")


def add_modality_option(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    parser.add_argument(flag, choices=list(MODALITIES), metavar="MODALITY", **kwargs)
