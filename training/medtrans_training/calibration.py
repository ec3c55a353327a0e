"""The brain-MR calibration of issue 15: a plain 2D UNet, leave-one-subject-out, beside the shipped recipe.

The issue sets the bar the shipped model must clearly beat: a plain 2D MONAI UNet (channels 24-192, instance norm,
L1 loss) trained for ten minutes on this 2-core CPU. This command trains exactly that net once per held-out subject
(every other subject having the request's sequences) for a fixed number of steps, so that the result does not
depend on how busy the machine is, and scores the held-out subject with :func:`MedTransCore.metrics.brain_mr_metrics`.

The net reads and writes the metric's own scaling (each sequence's 0.5th-99.5th percentiles inside the brain -> [0, 1],
clipped, 0 outside), on axial slices cropped to 160 x 160 around the brain's centre, with left-right flips.

``python -m medtrans_training.calibration CONFIG --target MR_T2 --sources MR_T1 --out docs/brain_mr_calibration.md``
(CONFIG: a cross-validation config, for its data; ``--bundle`` names the bundle whose cross-validated scores of the
same request are put beside the plain net's; ``--plain-rows`` reuses the plain net's rows of an earlier run's
``.json`` instead of training it again, e.g. to put a new bundle beside it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.networks.nets import UNet

from MedTransCore.metrics import brain_mr_metrics, brain_mr_scale

from .config import load_config
from .crossval import METRICS, Subject, best_per_metric, subjects_of

#: The issue's plain net.
CHANNELS, STRIDES, RES_UNITS = (24, 48, 96, 192), (2, 2, 2), 2
#: 1,478 steps of 8 crops: what ten minutes bought on the 2-core CPU (two threads, nothing else running).
STEPS, BATCH, CROP, LR = 1478, 8, 160, 1.0e-3
#: Slices with fewer brain voxels are not drawn (nor any with under a quarter of the largest slice's).
MIN_BRAIN_VOXELS = 500
#: The crop's centre moves up to this many voxels from the brain's centre.
JITTER = 24


def build_plain_unet(num_sources: int, channels: Sequence[int] = CHANNELS) -> UNet:
    """The issue's plain net: MONAI's 2D UNet, ``num_sources`` channels in, one out, instance norm."""
    strides = STRIDES[: len(channels) - 1]
    return UNet(2, num_sources, 1, channels=tuple(channels), strides=strides, num_res_units=RES_UNITS, norm="instance")


def scaled_subject(subject: Subject, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, C, Y, X)`` float32 of ``keys`` in the metric's scaling, and the ``(Z, Y, X)`` brain mask."""
    images = subject.images()
    brain = subject.brain(images)
    first = images[keys[0]]
    arrays = []
    for key in keys:
        image = images[key]
        if image.GetSize() != first.GetSize():
            image = sitk.Resample(image, first, sitk.Transform(), sitk.sitkLinear, 0.0)
        arrays.append(brain_mr_scale(sitk.GetArrayFromImage(image), brain).astype(np.float32))
    return np.stack(arrays, 1), brain


class CropSampler:
    """Random ``(B, C, CROP, CROP)`` crops of the training subjects' brain slices, flipped left-right half the time.

    Args:
        volumes: per subject ``(Z, C, Y, X)`` (sources then the target).
        brains: per subject ``(Z, Y, X)`` masks.
        crop: in-plane crop size.
        seed: seed of the draws.
    """

    def __init__(self, volumes: list[np.ndarray], brains: list[np.ndarray], crop: int = CROP, seed: int = 0) -> None:
        self.volumes, self.crop = volumes, crop
        # Small test volumes have small slices: a slice counts when it holds a quarter of the largest one's brain.
        least = min(MIN_BRAIN_VOXELS, max(int(b.reshape(b.shape[0], -1).sum(1).max()) for b in brains) // 4)
        self.slices = [
            (i, z) for i, brain in enumerate(brains) for z in range(brain.shape[0]) if brain[z].sum() > least
        ]
        if not self.slices:
            raise ValueError("no training slice has enough brain voxels")
        self.centres = {(i, z): np.argwhere(brains[i][z]).mean(0).astype(int) for i, z in self.slices}
        self.random = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        items = []
        for k in self.random.integers(len(self.slices), size=size):
            i, z = self.slices[k]
            plane = self.volumes[i][z]  # (C, Y, X)
            out = np.zeros((plane.shape[0], self.crop, self.crop), np.float32)
            starts = []
            for axis, centre in enumerate(self.centres[i, z]):
                length = plane.shape[axis + 1]
                start = centre - self.crop // 2 + int(self.random.integers(-JITTER, JITTER + 1))
                starts.append(int(np.clip(start, 0, max(length - self.crop, 0))))
            piece = plane[:, starts[0] : starts[0] + self.crop, starts[1] : starts[1] + self.crop]
            out[:, : piece.shape[1], : piece.shape[2]] = piece
            items.append(out[..., ::-1] if self.random.random() < 0.5 else out)
        return torch.from_numpy(np.ascontiguousarray(np.stack(items)))


def train_plain(
    volumes: list[np.ndarray],
    brains: list[np.ndarray],
    *,
    steps: int = STEPS,
    channels: Sequence[int] = CHANNELS,
    crop: int = CROP,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> UNet:
    """Train the plain net with L1 on ``volumes`` (last channel: the target)."""
    torch.manual_seed(seed)
    net = build_plain_unet(volumes[0].shape[1] - 1, channels)
    optimiser = torch.optim.Adam(net.parameters(), LR)
    sampler = CropSampler(volumes, brains, crop, seed)
    started = time.monotonic()
    for step in range(1, steps + 1):
        batch = sampler.batch(BATCH)
        loss = (net(batch[:, :-1]) - batch[:, -1:]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == steps:
            log(f"    step {step}/{steps}: L1 {loss.item():.4f} ({time.monotonic() - started:.0f} s)")
    return net.eval()


def translate_plain(net: UNet, sources: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``(Z, Y, X)`` prediction from ``(Z, C, Y, X)`` scaled sources, 0 outside the brain."""
    divisor = int(np.prod(STRIDES[: len(net.channels) - 1]))
    height, width = sources.shape[-2:]
    pad = (0, -width % divisor, 0, -height % divisor)
    out = np.zeros(sources.shape[:1] + sources.shape[2:], np.float32)
    with torch.no_grad():
        for first in range(0, sources.shape[0], 16):
            chunk = torch.nn.functional.pad(torch.from_numpy(sources[first : first + 16]), pad)
            out[first : first + 16] = net(chunk)[:, 0, :height, :width].numpy()
    out[~brain] = 0.0
    return out


def calibrate(
    subjects: list[Subject],
    sources: Sequence[str],
    target: str,
    *,
    steps: int = STEPS,
    channels: Sequence[int] = CHANNELS,
    crop: int = CROP,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Leave-one-subject-out scores of the plain net and of the identity (each source as is) on every subject
    having ``sources`` and ``target``.

    Raises:
        ValueError: fewer than three subjects have the request's sequences.
    """
    keys = [*sources, target]
    having = [s for s in subjects if all(k in s.files for k in keys)]
    if len(having) < 3:
        raise ValueError(f"{len(having)} subjects have {' + '.join(keys)}: leave-one-out needs at least 3")
    data = {s.case: scaled_subject(s, keys) for s in having}
    rows = []
    for held in having:
        log(f"  {held.case}: training on {len(having) - 1} subjects")
        training = [data[s.case] for s in having if s is not held]
        net = train_plain([v for v, _ in training], [b for _, b in training], steps=steps, channels=channels, crop=crop)
        volume, brain = data[held.case]
        truth = volume[:, -1]
        scores = {"plain": brain_mr_metrics(translate_plain(net, volume[:, :-1], brain), truth, brain)}
        identities = [brain_mr_metrics(volume[:, c], truth, brain) for c in range(len(sources))]
        scores["identity"] = best_per_metric(identities)
        rows += [{"case": held.case, "method": method, **values} for method, values in scores.items()]
        log(
            f"  {held.case}: plain net PSNR {scores['plain']['PSNR_whole']:.2f} dB, SSIM {scores['plain']['SSIM_whole']:.3f}"
        )
    return rows


def _digits(metric: str) -> int:
    return 2 if metric.startswith("PSNR") else 3


def _fmt(value: float, metric: str) -> str:
    return f"{value:.{_digits(metric)}f}"


def _mean_std(mean: float, std: float, metric: str) -> str:
    return f"{_fmt(mean, metric)} ± {_fmt(std, metric)}"


def calibration_table(
    rows: list[dict[str, Any]], request: str, crossval: dict[str, Any] | None, steps: int, bundle: str | None
) -> str:
    """Markdown: one row per held-out subject and method, then the means, then the bundle's cross-validated row.

    ``rows`` may hold the bundle's own per-subject rows (method: the bundle's name; see :func:`bundle_rows`).
    """
    head = "| subject | method | " + " | ".join(METRICS) + " |"
    lines = [head, "| --- | --- |" + " --- |" * len(METRICS)]
    for row in rows:
        lines.append(f"| {row['case']} | {row['method']} | " + " | ".join(_fmt(row[m], m) for m in METRICS) + " |")
    for method in ("plain", "identity"):  # the bundle's own mean is the cross-validated row below
        values = [r for r in rows if r["method"] == method]
        cells = [_mean_std(np.mean([r[m] for r in values]), np.std([r[m] for r in values]), m) for m in METRICS]
        lines.append(f"| mean ± std ({len(values)}) | {method} | " + " | ".join(cells) + " |")
    if crossval is not None:
        model = crossval["methods"]["model"]
        cells = [_mean_std(model[m]["mean"], model[m]["std"], m) for m in METRICS]
        lines.append(
            f"| mean ± std ({len(crossval['subjects'])}) | {bundle} (cross-validated) | " + " | ".join(cells) + " |"
        )
    note = (
        f"\n{request}, leave-one-subject-out. plain: the issue's plain 2D UNet (channels {'-'.join(map(str, CHANNELS))}, "
        f"instance norm, L1), {steps} steps of {BATCH} crops of {CROP}^2 (`python -m medtrans_training.calibration`); "
        "identity: the source as is (the best source per metric)."
    )
    return "\n".join(lines) + "\n" + note + "\n"


def bundle_rows(metadata: dict[str, Any], request: str, cases: list[str]) -> list[dict[str, Any]]:
    """The bundle's cross-validated per-subject scores of ``request`` on ``cases`` (none in bundles exported before
    ``metrics.crossval.rows`` was recorded), as rows of method ``metadata["name"]``."""
    recorded = metadata.get("metrics", {}).get("crossval", {}).get("rows", [])
    chosen = [r for r in recorded if r["request"] == request and r["method"] == "model" and r["case"] in cases]
    return [{**{k: r[k] for k in ("case", *METRICS)}, "method": metadata["name"]} for r in chosen]


def reused_rows(path: Path, request: str) -> tuple[list[dict[str, Any]], int]:
    """The plain-net and identity rows and the step count of an earlier calibration's ``.json``.

    Raises:
        ValueError: the file is of another request.
    """
    earlier = json.loads(Path(path).read_text())
    if earlier["request"] != request:
        raise ValueError(f"{path} holds {earlier['request']}, not {request}")
    rows = [r for r in earlier["rows"] if r["method"] in ("plain", "identity")]
    return rows, int(earlier["steps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medtrans_training.calibration", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="a cross-validation config (its data section names the subjects)")
    parser.add_argument("--sources", default="MR_T1", help="comma-separated source sequences (default MR_T1)")
    parser.add_argument("--target", default="MR_T2")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--bundle", help="a bundle whose cross-validated scores of the request are shown beside")
    parser.add_argument("--out", type=Path, help="markdown table (a .json with the rows is written beside it)")
    parser.add_argument(
        "--plain-rows", type=Path, help="an earlier run's .json: reuse its plain-net and identity rows (no training)"
    )
    args = parser.parse_args(argv)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    request = f"{'+'.join(sources)}->{args.target}"
    steps = args.steps
    if args.plain_rows:  # the earlier run's step count describes its rows
        rows, steps = reused_rows(args.plain_rows, request)
    else:
        subjects = subjects_of(load_config(args.config))
        rows = calibrate(subjects, sources, args.target, steps=steps, channels=CHANNELS, crop=CROP)
    crossval, bundle_name = None, None
    if args.bundle:
        metadata = json.loads((Path(args.bundle) / "metadata.json").read_text())
        bundle_name = metadata["name"]
        crossval = metadata.get("metrics", {}).get("crossval", {}).get("requests", {}).get(request)
        cases = [r["case"] for r in rows if r["method"] == "plain"]
        rows = sorted(rows + bundle_rows(metadata, request, cases), key=lambda r: cases.index(r["case"]))
    table = calibration_table(rows, request, crossval, steps, bundle_name)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
        args.out.with_suffix(".json").write_text(
            json.dumps({"request": request, "steps": steps, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
