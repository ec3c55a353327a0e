"""The physics of a cone-beam scan on its detector, in numpy: attenuation, beam hardening, scatter and quantum noise.

Everything here works on line integrals ``p = ∫ mu dl`` (dimensionless) laid out as the projection stack
``(views, rows v, columns u)``; the ray tracing and the reconstruction are RTK's (:mod:`.cone_beam_rtk`).

Beam hardening is material dependent: a scanner's water calibration (linearisation) removes water's own hardening,
but bone and metal harden the beam more than the water-equivalent path they stand for, and that residual is
nonlinear in their line integral. Attenuation above soft tissue's (:func:`dense_mu`) is projected on its own, and
its line integral ``d`` is measured as ``d / (1 + b d / d_ref)`` (:func:`detect`), ``d_ref`` that of 2 cm of cortical
bone. A ray through two dense objects then loses more than the two rays through each one: dark streaks between them.
"""

from __future__ import annotations

import numpy as np

# NIST XCOM mass attenuation coefficient of liquid water (cm^2/g, coherent scattering included) by photon energy (keV);
# density 1 g/cm^3, so these are also mu in 1/cm. Interpolated log-log in between.
_WATER_KEV = np.array([30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
_WATER_MU_PER_CM = np.array([0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505])
ENERGY_RANGE_KEV = (float(_WATER_KEV[0]), float(_WATER_KEV[-1]))

# Scatter reaching a flat panel is a wide halo: a Gaussian of this width on the detector (FWHM ~24 cm) stands in for
# the measured pencil-beam scatter kernels of water. Narrower kernels (60 mm, measured) let the thin edges of a large
# body dominate and give a bright spot instead of a cup at its centre.
SCATTER_SIGMA_MM = 100.0
# The SPR setting is the scatter-to-primary ratio behind a wide 20 cm water slab; thinner or smaller objects get less.
SCATTER_REFERENCE_WATER_MM = 200.0
# Dense material: attenuation above that of soft tissue at this HU (bone, metal, contrast); below it, none.
DENSE_THRESHOLD_HU = 200.0
# The reference dense path of the beam_hardening setting: 2 cm of cortical bone (1500 HU).
REFERENCE_BONE_HU, REFERENCE_BONE_MM = 1500.0, 20.0
# Detected photons per mm^2 of panel per mAs of the scan, at the panel (1.5 m), after filtration, bowtie and the
# detector's quantum efficiency: ~1e4 makes a 1000 mAs pelvis scan as noisy as a clinical one (tens of HU).
PHOTONS_PER_MAS_MM2 = 1.0e4
# A detector pixel that counts no photon is read as this many (log of zero); photon starvation shows as streaks.
MIN_COUNTS = 0.5


def water_mu_per_mm(energy_kev: float) -> float:
    """Linear attenuation coefficient of water (1/mm) at a monoenergetic ``energy_kev`` (30 to 150 keV)."""
    low, high = ENERGY_RANGE_KEV
    if not low <= energy_kev <= high:
        raise ValueError(f"energy_kev must be from {low:g} to {high:g} keV, got {energy_kev}")
    log_mu = np.interp(np.log(energy_kev), np.log(_WATER_KEV), np.log(_WATER_MU_PER_CM))
    return float(np.exp(log_mu)) / 10.0


def hu_to_mu(hu: np.ndarray, mu_water: float) -> np.ndarray:
    """``mu = mu_water (1 + HU / 1000)``, clipped at 0 (below -1000 HU is air), as float32 (1/mm)."""
    return np.clip(mu_water * (1.0 + np.asarray(hu, dtype=np.float32) / 1000.0), 0.0, None).astype(np.float32)


def dense_mu(mu: np.ndarray, mu_water: float) -> np.ndarray:
    """The dense part of attenuation ``mu`` (1/mm): its excess over soft tissue at :data:`DENSE_THRESHOLD_HU`."""
    floor = np.float32(mu_water * (1.0 + DENSE_THRESHOLD_HU / 1000.0))
    return np.maximum(np.asarray(mu, dtype=np.float32) - floor, np.float32(0.0))


def reference_dense_line_integral(mu_water: float) -> float:
    """``d_ref``: the dense line integral of 2 cm of cortical bone (1500 HU) at this water attenuation (1/mm)."""
    return mu_water * (REFERENCE_BONE_HU - DENSE_THRESHOLD_HU) / 1000.0 * REFERENCE_BONE_MM


def photons_per_pixel(mas: float, views: int, pixel_mm: float) -> float:
    """Unattenuated photons per detector pixel per view when the scan's ``mas`` is spread over ``views``."""
    return PHOTONS_PER_MAS_MM2 * pixel_mm**2 * mas / views


def _gaussian_matrix(n: int, sigma_px: float) -> np.ndarray:
    """Row-normalised Gaussian blur as an ``(n, n)`` matrix; near an edge it averages the pixels it has."""
    x = np.arange(n, dtype=np.float64)
    g = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma_px) ** 2)
    return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


def scatter(line_integrals: np.ndarray, spr: float, u_mm: np.ndarray, pixel_mm: float, mu_water: float) -> np.ndarray:
    """Scatter reaching the panel, as a fraction of the unattenuated beam, for each view.

    Each ray scatters in proportion to ``p exp(-p)`` (what is removed from the beam and still leaves the object, in
    the single-scatter approximation), spread over the panel by a wide Gaussian. The scatter-to-primary ratio grows
    with the thickness crossed and is largest behind the middle of the body, which the reconstruction shows as cupping.
    A shifted panel (half fan) also gets the scatter of the body's other half: its rays are not measured, so the
    panel's own rays are mirrored about the central ray to stand in for them (a smooth estimate needs no more).

    Args:
        line_integrals: ``(views, v, u)`` line integrals.
        spr: scatter-to-primary ratio behind a wide 20 cm water slab (0: none).
        u_mm: ``(u,)`` column positions on the panel (mm, 0 on the central ray).
        pixel_mm: detector pixel pitch (mm).
        mu_water: water attenuation (1/mm) at the effective energy (sets the reference thickness).
    """
    if spr <= 0:
        return np.zeros_like(line_integrals)
    source = line_integrals * np.exp(-line_integrals)
    source *= np.float32(spr / (mu_water * SCATTER_REFERENCE_WATER_MM))
    u_mm = np.asarray(u_mm, dtype=np.float64)
    missing = -u_mm[::-1][-u_mm[::-1] < u_mm[0] - pixel_mm / 2]  # mirror positions left of the panel
    if len(missing):
        mirrored = np.clip(np.round((-missing - u_mm[0]) / pixel_mm).astype(int), 0, len(u_mm) - 1)
        source = np.concatenate([source[:, :, mirrored], source], axis=2)
    sigma_px = SCATTER_SIGMA_MM / pixel_mm
    out = source @ _gaussian_matrix(source.shape[2], sigma_px).T  # along u: one BLAS call for all rows
    out = np.matmul(_gaussian_matrix(source.shape[1], sigma_px), out)  # along v, per view
    return np.ascontiguousarray(out[:, :, len(missing) :])


def detect(
    line_integrals: np.ndarray,
    *,
    mu_water: float,
    u_mm: np.ndarray,
    pixel_mm: float,
    spr: float,
    beam_hardening: float,
    photons: float | None,
    rng: np.random.Generator | None,
    dense: np.ndarray | None = None,
) -> np.ndarray:
    """What the scanner measures: ``-log((primary + scatter) / I0)`` with beam hardening and Poisson noise.

    Beam hardening (``b > 0``) after the scanner's water calibration, which removes water's (and soft tissue's)
    own hardening: only the dense line integral ``d`` (of :func:`dense_mu`) is under-estimated,
    ``p' = p - d + d / (1 + b d / d_ref)`` (``~ p - b d^2 / d_ref`` for small ``d``), where ``d_ref`` is 2 cm of
    cortical bone's (:func:`reference_dense_line_integral`): that path is measured ``1 / (1 + b)`` of itself, a
    ``~b`` under-estimate. The loss grows as the square of the dense path, so rays through two dense objects lose
    more than the sum of each: dark streaks between them, a cupped bone or metal. Without ``dense``: no dense
    material, nothing to harden.

    Args:
        line_integrals: ``(views, v, u)`` float32 line integrals of the object (dimensionless).
        mu_water: water attenuation (1/mm) at the effective energy.
        u_mm: ``(u,)`` column positions on the panel (mm, 0 on the central ray).
        pixel_mm: detector pixel pitch (mm).
        spr: scatter scale (see :func:`scatter`).
        beam_hardening: ``b`` above (0: monoenergetic; ``dense`` is then ignored).
        photons: unattenuated photons per pixel per view (``None``: noise-free).
        rng: random stream of the noise (needed when ``photons`` is given).
        dense: ``(views, v, u)`` line integrals of the dense part of the object (``None``: none).

    Returns:
        ``(views, v, u)`` float32 measured line integrals, ready for FDK (no scatter or beam-hardening correction:
        like an uncorrected clinical CBCT, the artefacts stay in the image).
    """
    p = np.asarray(line_integrals, dtype=np.float32)
    if beam_hardening > 0 and dense is not None:
        d = np.clip(np.asarray(dense, dtype=np.float32), np.float32(0.0), None)
        rate = np.float32(beam_hardening / reference_dense_line_integral(mu_water))
        p = np.maximum(p - rate * d * d / (1.0 + rate * d), np.float32(0.0))
    intensity = np.exp(-p)
    intensity += scatter(p, spr, u_mm, pixel_mm, mu_water)
    if photons is not None:
        counts = rng.poisson(intensity.astype(np.float64) * photons).astype(np.float32)
        intensity = np.maximum(counts, MIN_COUNTS) / np.float32(photons)
    return (-np.log(intensity)).astype(np.float32)


def cylinder_line_integrals(
    radius_mm: float, mu: float, u_mm: np.ndarray, v_mm: np.ndarray, sid: float, sdd: float
) -> np.ndarray:
    """Exact line integrals ``(v, u)`` through a long water cylinder on the rotation axis (the same for every view).

    Args:
        radius_mm: the cylinder's radius.
        mu: its attenuation (1/mm).
        u_mm: detector column positions (lateral, mm at the detector, offset included).
        v_mm: detector row positions (along the axis, mm at the detector).
        sid: source to isocentre distance (mm).
        sdd: source to detector distance (mm).
    """
    u, v = np.asarray(u_mm, dtype=np.float64)[None, :], np.asarray(v_mm, dtype=np.float64)[:, None]
    fan = np.sqrt(sdd**2 + u**2)
    distance = sid * np.abs(u) / fan  # from the axis to the ray, across the axis
    chord = 2 * np.sqrt(np.clip(radius_mm**2 - distance**2, 0, None))
    return (mu * chord * np.sqrt(fan**2 + v**2) / fan).astype(np.float32)
