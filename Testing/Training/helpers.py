"""Tiny paired volumes and configs the training tests build for themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from MedTransCore.bundles import Bundle, save_bundle
from MedTransCore.models.unet import build_unet_network

SPACING = (2.0, 2.0, 2.0)
#: A three-level 4-8-16 UNet over CT, CBCT and MR_T1 (runs in milliseconds).
TINY_UNET = {"num_modalities": 3, "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def head_arrays(seed: int = 0, size: int = 20) -> dict[str, np.ndarray]:
    """A ball with a core in a dark background: T1-like, T2-like (inverted core) and PD-like arrays ``(Z, Y, X)``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size] - (size - 1) / 2
    r = np.sqrt(x**2 + (1.2 * y) ** 2 + z**2)
    body, core = r < size * 0.4 + rng.uniform(-1, 1), r < size * 0.2
    noise = rng.normal(0, 5, r.shape)
    return {
        "t1": np.where(body, 400 + 300 * core + noise, 0.0),
        "t2": np.where(body, 900 - 500 * core + noise, 0.0),
        "pd": np.where(body, 700 + 100 * core + noise, 0.0),
    }


def write_volume(path: Path, array: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def write_simple_cases(root: Path, count: int = 3, size: int = 20, names=("t1", "t2")) -> Path:
    """``root/case<i>/{t1,t2}.nii.gz`` (the simple layout)."""
    for index in range(count):
        arrays = head_arrays(index, size)
        for name in names:
            write_volume(root / f"case{index}" / f"{name}.nii.gz", arrays[name])
    return root


def tiny_config(root: Path, **sections) -> dict:
    """A unet config that trains in about a second: 16^3 patches, a 3-level 4-8-16 UNet."""
    config = {
        "stage": "unet",
        "seed": 0,
        "data": {
            "source": "folder",
            "root": str(root),
            "modalities": ["MR_T1", "MR_T2"],
            "spacing": list(SPACING),
            "patch": [16, 16, 16],
            "val_cases": ["case2"],
        },
        "model": {"network": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}},
        "train": {"steps": 3, "batch_size": 2, "log_every": 1, "val_every": 2, "save_every": 2, "val_batches": 1},
        "export": {"name": "tiny-unet", "limitations": "test model"},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config


def tiny_unet_bundle(
    path: Path,
    network: torch.nn.Module | None = None,
    config: dict | None = None,
    standardisation: dict[str, torch.Tensor] | None = None,
) -> Bundle:
    """An (untrained unless ``network`` is given) ``unet`` bundle for CBCT->CT and MR_T1->CT on a 2 mm, 16^3 grid.

    ``config`` is the network's keyword config (default :data:`TINY_UNET`); ``standardisation`` reference quantiles
    per modality make it a histogram-standardised bundle.
    """
    config = config or TINY_UNET
    network = network or build_unet_network(**config)
    weights = {"model.safetensors": network.state_dict()}
    if standardisation is not None:
        weights["standardisation.safetensors"] = standardisation
    metadata = {
        "name": "tiny-unet",
        "family": "unet",
        "version": "0.0.1",
        "description": "untrained test network",
        "modalities": ["CT", "CBCT", "MR_T1"],
        "pairs": [["CBCT", "CT"], ["MR_T1", "CT"]],
        "spacing": [2.0, 2.0, 2.0],
        "grid": [16, 16, 16],
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": config,
        "training": {},
        "metrics": {},
        "licence": "Apache-2.0",
        "input_standardisation": "histogram_matching" if standardisation is not None else None,
    }
    return save_bundle(path, metadata, weights)
