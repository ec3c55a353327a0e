"""Arguments shared by several sub-commands, defined once."""

from __future__ import annotations

import argparse

from ..modalities import MODALITIES


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="bundle name or folder (default: the best installed model for the pair)")
    parser.add_argument("--steps", type=int, help="sampler steps for diffusion models (default: the bundle's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same result")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--strict", action="store_true", help="refuse inputs that fail the plausibility checks")


def add_modality_option(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    parser.add_argument(flag, choices=list(MODALITIES), metavar="MODALITY", **kwargs)
