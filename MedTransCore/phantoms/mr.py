"""MR from tissue labels through the signal equations, with gadolinium, bias field and Rician noise.

* spin echo:           S = PD (1 - exp(-TR/T1)) exp(-TE/T2)
* inversion recovery:  S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)   (FLAIR: TI nulls CSF)
* gadolinium (T1c):    1/T1' = 1/T1 + r1 C,  1/T2' = 1/T2 + r2 C

Relaxivities of Gd-DTPA in plasma at 1.5 T: r1 = 4.1, r2 = 4.6 /mM/s (Rohrer M et al., Invest Radiol
2005;40:715-724). Sequence timings are typical clinical 1.5 T protocols. Flowing blood leaves the slice
between excitation and echo in spin-echo images (flow void), so native sequences scale vessel signal
down; the T1c is modelled like a 3D gradient-echo T1c, where enhanced vessels are bright. Intensities are
scaled so that fully relaxed water (PD 1) reads ``MR_CANONICAL_HIGH``; air is 0 plus the Rician floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..modalities import MR_CANONICAL_HIGH
from .fields import partial_volume
from .tissues import Label, Tissue, lookup

R1_GD, R2_GD = 4.1e-3, 4.6e-3  # per mM per ms
FLOW_VOID = {Label.ARTERY: 0.1, Label.VEIN: 0.35, Label.PORTAL_VEIN: 0.35}  # remaining fraction of the vessel signal


@dataclass(frozen=True)
class Sequence:
    """Timing (ms) of one MR sequence; ``ti > 0`` means inversion recovery; ``contrast``: post-gadolinium."""

    tr: float
    te: float
    ti: float = 0.0
    contrast: bool = False


def _flair_ti(tr: float, t1_csf: float) -> float:
    """Inversion time that nulls CSF: 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0."""
    return float(t1_csf * np.log(2.0 / (1.0 + np.exp(-tr / t1_csf))))


SEQUENCES: dict[str, Sequence] = {
    "MR_T1": Sequence(tr=500.0, te=15.0),
    "MR_T1C": Sequence(tr=500.0, te=15.0, contrast=True),
    "MR_T2": Sequence(tr=4000.0, te=100.0),
    "MR_FLAIR": Sequence(tr=9000.0, te=120.0, ti=round(_flair_ti(9000.0, 4070.0))),  # ~2400 ms
    "MR_PD": Sequence(tr=3000.0, te=15.0),
}


def signal_lut(tissues: dict[int, Tissue], seq: Sequence) -> np.ndarray:
    """Signal of each label (PD units) under ``seq``: a float32 look-up table indexed by label."""
    t1, t2 = (lookup(tissues, f, fill=1.0).astype(np.float64) for f in ("t1", "t2"))
    pd = lookup(tissues, "pd").astype(np.float64)
    if seq.contrast:
        gd = lookup(tissues, "gd").astype(np.float64)
        t1, t2 = 1.0 / (1.0 / t1 + R1_GD * gd), 1.0 / (1.0 / t2 + R2_GD * gd)
    recovery = np.exp(-seq.tr / t1)
    longitudinal = np.abs(1 - 2 * np.exp(-seq.ti / t1) + recovery) if seq.ti > 0 else 1 - recovery
    s = pd * longitudinal * np.exp(-seq.te / t2)
    if not seq.contrast:
        for label, fraction in FLOW_VOID.items():
            s[label] *= fraction
    return s.astype(np.float32)


def mr_image(
    labels: np.ndarray,
    tissues: dict[int, Tissue],
    seq: Sequence,
    texture: np.ndarray,
    bias: tuple[np.ndarray, ...],
    noise: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """One MR magnitude image.

    Args:
        labels: uint8 label map (z, y, x).
        tissues: the case's tissue table.
        seq: sequence timing.
        texture: unit-variance smooth noise (z, y, x) shared by all modalities.
        bias: multiplicative receive-coil bias as 1D profiles broadcasting to (z, y, x).
        noise: two unit white-noise fields (z, y, x): the real and imaginary channel noise.
        rng: this modality's random stream (noise level).

    Returns:
        float32 image (z, y, x), non-negative.
    """
    lut = signal_lut(tissues, seq)
    image = lookup(tissues, "texture")[labels]
    image *= texture
    image += 1
    image *= lut[labels]
    image = partial_volume(image)
    for profile in bias:
        image *= profile
    image *= np.float32(MR_CANONICAL_HIGH)
    sigma = np.float32(rng.uniform(0.01, 0.025) * MR_CANONICAL_HIGH * lut.max())
    real = noise[0] * sigma
    real += image
    imag = noise[1] * sigma
    real *= real
    imag *= imag
    real += imag
    return np.sqrt(real, out=real)  # Rician magnitude
