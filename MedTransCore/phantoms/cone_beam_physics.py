"""The physics of a cone-beam scan on its detector, in numpy: attenuation, beam hardening, scatter and quantum noise.

Everything here works on line integrals ``p = ∫ mu dl`` (dimensionless) laid out as the projection stack
``(views, rows v, columns u)``; the ray tracing and the reconstruction are RTK's (:mod:`.cone_beam_rtk`).
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
# Beam hardening: measured p' = p / (1 + b p / BEAM_HARDENING_SCALE); with b = 0.05 a 30 cm water path loses ~3 %.
BEAM_HARDENING_SCALE = 10.0
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
) -> np.ndarray:
    """What the scanner measures: ``-log((primary + scatter) / I0)`` with beam hardening and Poisson noise.

    Args:
        line_integrals: ``(views, v, u)`` float32 line integrals of the object (dimensionless).
        mu_water: water attenuation (1/mm) at the effective energy.
        u_mm: ``(u,)`` column positions on the panel (mm, 0 on the central ray).
        pixel_mm: detector pixel pitch (mm).
        spr: scatter scale (see :func:`scatter`).
        beam_hardening: ``b`` in ``p' = p / (1 + b p / 10)`` (0: monoenergetic).
        photons: unattenuated photons per pixel per view (``None``: noise-free).
        rng: random stream of the noise (needed when ``photons`` is given).

    Returns:
        ``(views, v, u)`` float32 measured line integrals, ready for FDK (no scatter or beam-hardening correction:
        like an uncorrected clinical CBCT, the artefacts stay in the image).
    """
    p = np.asarray(line_integrals, dtype=np.float32)
    if beam_hardening > 0:
        p = p / (1.0 + np.float32(beam_hardening / BEAM_HARDENING_SCALE) * p)
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
