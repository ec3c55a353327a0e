"""Physics-based phantoms: paired, co-registered multi-modal volumes of one simulated anatomy.

Tissue labels (head, pelvis or abdomen, with random shape, size, pose and lesions per seed) become CT in HU,
CBCT with its artefacts, contrast-enhanced CT phases and MR T1 / T1c / T2 / FLAIR / PD through the
signal equations, all on one grid::

    from MedTransCore.phantoms import generate_phantom
    case = generate_phantom(anatomy="head", seed=0, shape=(64, 64, 64), spacing=(3.0, 3.0, 3.0))
    case.images["CT"], case.images["MR_T2"], case.labels, case.body_mask
    case.save("out/")

A cone-beam CT simulated from any CT with RTK (the ``cbct`` extra): :func:`simulate_cbct`.
"""

from .anatomy import ANATOMIES
from .cone_beam import ConeBeamResult, ConeBeamSettings, simulate_cbct
from .generate import PHANTOM_MODALITIES, PhantomCase, generate_phantom
from .tissues import Label

__all__ = [
    "ANATOMIES",
    "PHANTOM_MODALITIES",
    "ConeBeamResult",
    "ConeBeamSettings",
    "Label",
    "PhantomCase",
    "generate_phantom",
    "simulate_cbct",
]
