"""Build the shipped baseline bundles: ``identity`` and ``histogram-matching``.

The histogram bundle stores, per modality, quantiles of normalised in-body intensities measured on seeded
head phantom cases — the same normalisation and body mask as inference. Run:

    python -m medtrans_training.baselines --out MedTransCore/models/bundles
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from MedTransCore.bundles import save_bundle
from MedTransCore.modalities import MODALITIES, normalisation_params, normalise
from MedTransCore.models.baselines import inbody_quantiles
from MedTransCore.phantoms import generate_phantom
from MedTransCore.preprocess import body_mask

LICENCE = "Apache-2.0"


def _common_metadata(name: str, family: str, description: str, pairs: list, command: str, data: str) -> dict:
    return {
        "name": name,
        "family": family,
        "version": "1.0.0",
        "description": description,
        "modalities": list(MODALITIES),
        "pairs": pairs,
        "spacing": None,
        "grid": None,
        "normalisation": {"ct_window_hu": [-1024, 3000], "mr": "0 -> -1, 99.5th percentile in body mask -> 1"},
        "sampler": None,
        "network": {},
        "training": {"command": command, "data": data, "device": "cpu"},
        "metrics": {},
        "licence": LICENCE,
        "limitations": "A BASELINE, not a trained model: the floor every model is compared against.",
    }


def fit_histograms(
    cases: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> dict[str, np.ndarray]:
    """Average in-body quantiles per modality over ``cases`` seeded head phantoms.

    Head only: the shipped models are head models, and a histogram mixing anatomies matches neither.
    """
    sums: dict[str, list[np.ndarray]] = {key: [] for key in MODALITIES}
    for seed in tqdm(range(cases), desc="phantoms", unit="case"):
        case = generate_phantom(anatomy="head", seed=seed, shape=shape, spacing=spacing)
        for key, image in case.images.items():
            array = sitk.GetArrayFromImage(image).astype(np.float64)
            mask = sitk.GetArrayFromImage(body_mask(image, key)).astype(bool)
            values = normalise(array[mask], normalisation_params(array, key, mask))
            sums[key].append(inbody_quantiles(values))
    return {key: np.mean(q, axis=0) for key, q in sums.items() if q}


def build(out: Path, cases: int = 8, size: int = 64, spacing: float = 3.0) -> None:
    command = "python -m medtrans_training.baselines " + shlex.join(sys.argv[1:])
    keys = list(MODALITIES)
    identity_pairs = [[s, t] for s in keys for t in keys]
    save_bundle(
        out / "identity",
        _common_metadata(
            "identity",
            "identity",
            "Identity baseline: the source intensities, re-scaled to the target's range.",
            identity_pairs,
            command,
            "none",
        ),
        {},
    )
    histograms = fit_histograms(cases, (size,) * 3, (spacing,) * 3)
    data = f"{cases} head phantoms (seeds 0..{cases - 1}), {size}^3 at {spacing} mm"
    pairs = [[s, t] for s in histograms for t in histograms if s != t]
    save_bundle(
        out / "histogram-matching",
        _common_metadata(
            "histogram-matching",
            "histogram_matching",
            "Histogram matching baseline: in-body source quantiles mapped onto reference quantiles of the target.",
            pairs,
            command,
            data,
        ),
        {"histograms.safetensors": {k: torch.from_numpy(v) for k, v in histograms.items()}},
    )
    print(f"wrote identity and histogram-matching bundles to {out}/")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medtrans_training.baselines", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to create the two bundles in")
    parser.add_argument("--cases", type=int, default=8, help="head phantom seeds")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--spacing", type=float, default=3.0)
    args = parser.parse_args(argv)
    build(args.out, args.cases, args.size, args.spacing)


if __name__ == "__main__":
    main()
