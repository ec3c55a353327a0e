"""What kind of scan is this? Anatomy, preprocessing and real-or-phantom, from the voxels and the file's marker.

A model is only as good as its training data: ``brain-mr-slice-unet`` saw skull-stripped brains, the ``phantom-head-*``
models saw simulated whole-head phantoms. :func:`classify_domain` describes an input so that the default model can be
one trained on data like it (:func:`domain_misfits`, used by :func:`MedTransCore.bundles.choose_bundle`), and a patient
scan is never handed to a phantom-trained model without a warning.

Rules (measured on the repository's real data and on ``medtrans phantom`` output, strided to about 2 mm):

* **skull-stripped brain** (MR): at least :data:`ZERO_BACKGROUND_FRACTION` of the voxels exactly 0 and the volume's
  outer shell almost all 0; the non-zero voxels form one dominant 3D component (:data:`DOMINANT_SHARE`) of brain size
  (:data:`BRAIN_EXTENT_MM` per axis, :data:`BRAIN_VOLUME_ML`) and of a rounded shape (:data:`BRAIN_FILL`: its share of
  its bounding box; an ellipsoid fills pi/6 = 0.52). Ten skull-stripped subjects (BraTS 2013/2023, TCGA, IXI):
  74-88 % zeros, extents 130-190 mm, 1.2-1.8 L, fill 0.37-0.52. A whole head with a zeroed (masked) background
  (an SPM-processed T1: 44 % zeros) is 3.0 L with a 225 mm extent.
* **whole head**: not skull-stripped, and the body (largest component above a threshold: MR ``0.1 x`` its 99.5th
  percentile, CT -500 HU) is larger than a brain yet head-sized (:data:`HEAD_VOLUME_ML`, :data:`HEAD_EXTENT_MM`);
  a CT body cut by most faces of the volume (:data:`MAX_CUT_FACES_CT`) is a trunk seen through a small field of
  view. The generator scales its phantoms to the field of view (a 192 mm one holds a 1.4 L head), so a phantom's
  anatomy comes from its marker, not from its size.
* **phantom**: the generator (:mod:`MedTransCore.phantoms`) marks every image it makes with :data:`PHANTOM_MARKER`
  in the image's notes (NIfTI ``descrip``, NRRD/MetaImage notes); :func:`domain_hints` reads it. Nothing in the
  voxels is proof: phantom CTs have air at exactly -1000 HU, but so has any real CT clipped at -1000, and a
  phantom MR's noisy background looks like a real one. Without a marker or a caller's ``phantom=`` the kind stays
  ``"unknown"`` (a voxel signature only adds a reason), and an unknown kind never fits a phantom-trained model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .modalities import get_modality

PREPROCESSING = ("skull-stripped", "whole-head", "unknown")
KINDS = ("real", "phantom", "unknown")
# What a bundle's metadata ``domain`` may say (validated in MedTransCore.bundles.validate_metadata).
BUNDLE_ANATOMIES = ("brain", "head", "pelvis", "thorax", "abdomen", "any")
BUNDLE_PREPROCESSING = ("skull-stripped", "whole-head", "any")
# "simulated": real anatomy whose source images were simulated (a CBCT forward-projected from a real CT), with or
# without phantoms; like "phantom", it fits only inputs known to be phantoms by default.
BUNDLE_TRAINING_DATA = ("real", "phantom", "simulated", "none")
_TRAINING_DATA_WORDS = {
    "real": "real data",
    "phantom": "phantom data",
    "simulated": "simulated sources of real and phantom anatomy",
    "none": "no training data",
}

# The generator's marker: "MedTrans PHANTOM <anatomy> seed <n> (simulated, not a patient)" (fits NIfTI's 80 chars).
PHANTOM_MARKER = "MedTrans PHANTOM"
_MARKER_RE = re.compile(r"MedTrans PHANTOM\s+(\w+)")
_NOTE_KEYS = ("ITK_FileNotes", "descrip")

# The classification looks at a strided copy: voxels at least this far apart (mm) and at most this many of them.
STEP_MM = 2.0
MAX_SAMPLE_VOXELS = 2**21
# Skull-stripped: share of voxels exactly 0, share of the outer shell exactly 0, share of the non-zero voxels in the
# largest component, its size and shape.
ZERO_BACKGROUND_FRACTION = 0.3
ZERO_BORDER_FRACTION = 0.9
DOMINANT_SHARE = 0.95
BRAIN_EXTENT_MM = (90.0, 215.0)
BRAIN_VOLUME_ML = (600.0, 2200.0)
BRAIN_FILL = (0.3, 0.75)
# A head (with skull, face, some neck): larger than a brain, smaller than a trunk.
HEAD_VOLUME_ML = (2200.0, 9000.0)
HEAD_EXTENT_MM = (120.0, 320.0)
MR_BODY_FRACTION = 0.1
# A CT body touching more faces of the volume than this is a field of view inside a trunk (both thorax CTs touch
# all 6); a head CT reaches the lower face (neck) and perhaps one more. Not used for MR: a whole-head T1 with a
# tight field of view touches 5 faces.
MAX_CUT_FACES_CT = 3
CT_BODY_HU = -500.0


@dataclass(frozen=True)
class InputDomain:
    """What an input looks like.

    Attributes:
        anatomy: ``"brain"``, ``"head"``, another anatomy a hint gave, or ``"unknown"``.
        preprocessing: ``"skull-stripped"``, ``"whole-head"`` or ``"unknown"``.
        kind: ``"real"``, ``"phantom"`` or ``"unknown"`` (only a marker or the caller says phantom or real).
        reasons: the measurements behind the verdict, in words.
        phantom_signature: the voxels look like the generator's (CT air at exactly -1000 HU, non-integer tissue)
            although nothing marked the input as a phantom (a hint for the user, never a verdict).
    """

    anatomy: str
    preprocessing: str
    kind: str
    reasons: tuple[str, ...] = ()
    phantom_signature: bool = False

    def describe(self) -> str:
        """``"skull-stripped brain, real data"``-style words for messages."""
        what = {"skull-stripped": "skull-stripped", "whole-head": "whole-head"}.get(self.preprocessing, "")
        anatomy = self.anatomy if self.anatomy != "unknown" else "unknown anatomy"
        if what and self.anatomy in ("brain", "head"):
            words = "skull-stripped brain" if what == "skull-stripped" else "whole head"
        else:
            words = f"{anatomy}" + (f", {what}" if what else "")
        kind = {"real": "real data", "phantom": "a simulated phantom", "unknown": "not marked as a phantom"}[self.kind]
        return f"{words} ({kind})"


def domain_hints(source) -> dict:
    """Keyword arguments for :func:`classify_domain` from an image's (or a file's) metadata.

    Args:
        source: a ``SimpleITK.Image`` (its metadata dictionary) or a ``{key: value}`` mapping such as
            ``ImageInfo.metadata`` of :func:`MedTransCore.io.read_image`.

    Returns:
        ``{"phantom": True, "anatomy": "<anatomy>"}`` when the notes carry :data:`PHANTOM_MARKER`, else ``{}``.
    """
    if isinstance(source, Mapping):
        notes = [str(source[k]) for k in _NOTE_KEYS if k in source]
    else:
        notes = [source.GetMetaData(k) for k in _NOTE_KEYS if source.HasMetaDataKey(k)]
    for note in notes:
        match = _MARKER_RE.search(note)
        if match:
            return {"phantom": True, "anatomy": match.group(1).lower()}
    return {}


def phantom_note(anatomy: str, seed: int) -> str:
    """The marker text the generator writes into every image it makes."""
    return f"{PHANTOM_MARKER} {anatomy} seed {int(seed)} (simulated, not a patient)"[:80]


def _strided(array: np.ndarray, spacing_xyz: Sequence[float]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A strided copy (no averaging: exact zeros stay exact) and its spacing, ``(z, y, x)`` order."""
    spacing_zyx = [float(s) for s in spacing_xyz[::-1]]
    steps = [max(1, int(round(STEP_MM / s))) if s > 0 else 1 for s in spacing_zyx]
    while np.prod([-(-n // k) for n, k in zip(array.shape, steps)]) > MAX_SAMPLE_VOXELS:
        steps = [k + 1 for k in steps]
    sample = np.asarray(array[:: steps[0], :: steps[1], :: steps[2]], dtype=np.float32)
    return sample, tuple(s * k for s, k in zip(spacing_zyx, steps))


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray | None, float]:
    """The largest 6-connected component and its share of the mask's voxels."""
    from scipy import ndimage  # here: MedTransCore.bundles imports this module and stays light

    labels, count = ndimage.label(mask)
    if count == 0:
        return None, 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (sizes.argmax() + 1), float(sizes.max() / sizes.sum())


@dataclass(frozen=True)
class _Shape:
    extents_mm: tuple[float, float, float]  # z, y, x
    volume_ml: float
    fill: float
    faces: int  # faces of the volume the component touches (a body cut by the field of view touches several)

    def words(self) -> str:
        ext = " x ".join(f"{e:.0f}" for e in self.extents_mm[::-1])
        cut = f", cut by {self.faces} faces of the volume" if self.faces else ""
        return f"{ext} mm, {self.volume_ml / 1000:.2f} L, fills {self.fill:.2f} of its box{cut}"


def _shape(component: np.ndarray, spacing_zyx: tuple[float, float, float]) -> _Shape:
    bounds = [np.flatnonzero(component.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    spans = [int(b[-1] - b[0] + 1) for b in bounds]
    count = int(component.sum())
    faces = sum(int(b[0] == 0) + int(b[-1] == n - 1) for b, n in zip(bounds, component.shape))
    return _Shape(
        extents_mm=tuple(n * s for n, s in zip(spans, spacing_zyx)),
        volume_ml=count * float(np.prod(spacing_zyx)) / 1000.0,
        fill=count / float(np.prod(spans)),
        faces=faces,
    )


def _border(sample: np.ndarray) -> np.ndarray:
    faces = [sample[0], sample[-1], sample[:, 0], sample[:, -1], sample[:, :, 0], sample[:, :, -1]]
    return np.concatenate([f.ravel() for f in faces])


def _brain_sized(shape: _Shape) -> bool:
    low, high = BRAIN_EXTENT_MM
    return (
        all(low <= e <= high for e in shape.extents_mm)
        and BRAIN_VOLUME_ML[0] <= shape.volume_ml <= BRAIN_VOLUME_ML[1]
        and BRAIN_FILL[0] <= shape.fill <= BRAIN_FILL[1]
    )


def _head_sized(shape: _Shape) -> bool:
    low, high = HEAD_EXTENT_MM
    larger_than_brain = shape.volume_ml > BRAIN_VOLUME_ML[1] or max(shape.extents_mm) > BRAIN_EXTENT_MM[1]
    return (
        larger_than_brain
        and max(shape.extents_mm) <= high
        and sorted(shape.extents_mm)[1] >= low
        and shape.volume_ml <= HEAD_VOLUME_ML[1]
    )


def _phantom_ct_signature(sample: np.ndarray) -> bool:
    """Air at exactly -1000 HU and non-integer tissue values, like the generator's CT (a hint, never proof)."""
    air = sample == -1000.0
    tissue = sample > -500.0
    if air.mean() < 0.2 or not tissue.any():
        return False
    values = sample[tissue]
    return bool(np.mean(values != np.round(values)) > 0.5)


def classify_domain(
    array: np.ndarray,
    modality: str,
    spacing: Sequence[float],
    *,
    phantom: bool | None = None,
    anatomy: str | None = None,
) -> InputDomain:
    """Describe an input's anatomy, preprocessing and kind (see the module's rules).

    Args:
        array: ``(Z, Y, X)`` intensities (a view is fine: only a strided copy of about 2 mm voxels is made).
        modality: the declared modality key (CT-like or MR rules).
        spacing: ``(x, y, z)`` voxel size in mm.
        phantom: ``True``: a simulated phantom (the file's marker, :func:`domain_hints`); ``False``: the caller
            knows it is real data; ``None``: unknown.
        anatomy: an anatomy the caller knows (a phantom marker names it); it overrides the measured one.

    Returns:
        the :class:`InputDomain`; a 240x240x155 volume takes well under a second.
    """
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"expected a (Z, Y, X) volume, got shape {array.shape}")
    is_ct = get_modality(modality).is_ct
    sample, step = _strided(array, spacing)
    sample = np.nan_to_num(sample, nan=0.0, posinf=0.0, neginf=0.0)
    reasons: list[str] = []
    preprocessing, measured_anatomy = "unknown", "unknown"

    zero = float(np.mean(sample == 0))
    border_zero = float(np.mean(_border(sample) == 0))
    if not is_ct and zero >= ZERO_BACKGROUND_FRACTION and border_zero >= ZERO_BORDER_FRACTION:
        component, share = _largest_component(sample != 0)
        shape = _shape(component, step)
        if share >= DOMINANT_SHARE and _brain_sized(shape):
            preprocessing, measured_anatomy = "skull-stripped", "brain"
            reasons.append(
                f"{zero:.0%} of the voxels are exactly 0 and the rest is one brain-sized component ({shape.words()})"
            )
        else:
            reasons.append(
                f"{zero:.0%} of the voxels are exactly 0 (a masked background), but the largest component "
                f"({share:.0%} of the rest: {shape.words()}) is not a brain"
            )
            if _head_sized(shape):
                preprocessing, measured_anatomy = "whole-head", "head"
                reasons.append("it is head-sized: a whole head with its background zeroed")
    else:
        if is_ct:
            threshold = CT_BODY_HU
        else:
            threshold = MR_BODY_FRACTION * float(np.percentile(sample, 99.5))
            reasons.append(f"the background is not zero ({zero:.0%} of the voxels are exactly 0)")
        component, _ = _largest_component(sample > threshold)
        if component is None:
            reasons.append("no body above the threshold")
        else:
            shape = _shape(component, step)
            if is_ct and shape.faces > MAX_CUT_FACES_CT:
                reasons.append(f"the body is cut by the field of view on most sides ({shape.words()}): anatomy unknown")
            elif _head_sized(shape):
                preprocessing, measured_anatomy = "whole-head", "head"
                reasons.append(f"the body is head-sized and larger than a brain ({shape.words()})")
            else:
                reasons.append(f"the body is not head-sized ({shape.words()})")
    signature = is_ct and phantom is None and _phantom_ct_signature(sample)
    if signature:
        reasons.append(
            "air is exactly -1000 HU with non-integer tissue values, like a MedTrans phantom, but the image carries "
            "no phantom marker: treated as not a phantom"
        )

    if phantom:
        kind = "phantom"
        reasons.append("marked as a simulated phantom")
        if preprocessing == "unknown" and (anatomy or measured_anatomy) == "head":
            preprocessing = "whole-head"  # the generator writes the whole head, never a stripped brain
    elif phantom is False:
        kind = "real"
    else:
        kind = "unknown"
    return InputDomain(anatomy or measured_anatomy, preprocessing, kind, tuple(reasons), signature)


def bundle_domain_words(domain: Mapping | None) -> str:
    """``"brain, skull-stripped, real data"`` for a bundle's metadata ``domain`` (``None``: not declared)."""
    if not domain:
        return "domain not declared"
    data = _TRAINING_DATA_WORDS[domain["training_data"]]
    return f"{domain['anatomy']}, {domain['preprocessing']}, {data}"


def domain_misfits(domain: InputDomain, bundle_domain: Mapping | None) -> list[str]:
    """Why an input does not fit a model's training domain (empty: it fits).

    An unknown input property fits only a bundle that accepts ``"any"``, except the kind: a real-data bundle
    fits real and unknown inputs (and phantoms), a phantom-data or simulated-source bundle fits only inputs known
    to be phantoms (a simulated CBCT is not a scanner's, even of real anatomy).
    A bundle that declares no domain fits nothing by default (it may be phantom-trained).
    """
    if not bundle_domain:
        return ["the model does not declare its training domain"]
    misfits = []
    if bundle_domain["training_data"] == "phantom" and domain.kind != "phantom":
        what = "real data" if domain.kind == "real" else "an input not marked as a phantom"
        misfits.append(f"it was trained only on simulated phantoms and this is {what}")
    if bundle_domain["training_data"] == "simulated" and domain.kind != "phantom":
        what = "real data" if domain.kind == "real" else "an input not marked as a phantom"
        misfits.append(f"its training sources were simulated (not a scanner's) and this is {what}")
    if bundle_domain["anatomy"] != "any" and bundle_domain["anatomy"] != domain.anatomy:
        seen = f"this looks like {domain.anatomy}" if domain.anatomy != "unknown" else "this input's anatomy is unknown"
        misfits.append(f"it was trained on {bundle_domain['anatomy']}, {seen}")
    if bundle_domain["preprocessing"] != "any" and bundle_domain["preprocessing"] != domain.preprocessing:
        misfits.append(
            f"it expects {bundle_domain['preprocessing']} inputs, this looks {domain.preprocessing}"
            if domain.preprocessing != "unknown"
            else f"it expects {bundle_domain['preprocessing']} inputs, this input's preprocessing is unknown"
        )
    return misfits


def misfit_warning(model_name: str, bundle_domain: Mapping | None, domain: InputDomain) -> str | None:
    """The warning for running a model on an input outside its training domain (``None``: it fits)."""
    misfits = domain_misfits(domain, bundle_domain)
    if not misfits:
        return None
    return (
        f"model {model_name!r} was trained on {bundle_domain_words(bundle_domain)}, but this input looks like "
        f"{domain.describe()}: {'; '.join(misfits)}; its output is unreliable here"
    )
