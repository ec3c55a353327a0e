"""Finding the DICOM series in a folder and checking that its slices make one regular volume.

GDCM sorts a series' slices by position and ITK stacks them at one spacing, whatever the positions say: a series
with missing slices comes out evenly spaced (slices then sit millimetres from where they were acquired), tilted
or duplicated slices are stacked as if they belonged, a truncated slice file is dropped and a second series in
the folder is ignored, with at most a raw ITK warning. So every slice's ImagePositionPatient (projected on the
slice normal) and ImageOrientationPatient are checked here, from the tags alone, before a voxel is read; what
does not make one regular volume is refused with the files and positions concerned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ._sitk import error_line, quiet_itk

POSITION = "0020|0032"
ORIENTATION = "0020|0037"
DESCRIPTION = "0008|103e"
#: Largest difference between direction cosines of two slices of one orientation (DICOM stores ~6-10 digits).
ORIENTATION_TOLERANCE = 1e-3
#: Largest distance of a slice from the evenly spaced grid through the first and last slice, in slice spacings.
POSITION_TOLERANCE = 0.1
#: Largest sideways drift of a slice (gantry tilt, shear), in in-plane pixel spacings.
DRIFT_TOLERANCE = 0.5
#: Two slices closer than this (mm, along the normal) share a position.
DUPLICATE_MM = 1e-3
_EXCLUDED_NAMES = {"DICOMDIR"}


@dataclass(frozen=True)
class DicomSeries:
    """One checked DICOM series of a folder, from the slices' tags (no voxel read).

    Attributes:
        folder: the folder.
        uid: SeriesInstanceUID.
        files: the slice files, ordered along the slice normal.
        size: ``(columns, rows, slices)``; spacing: ``(x, y, z)`` mm; pixel_id: SimpleITK pixel type of a slice.
        metadata: the first slice's tags.
    """

    folder: Path
    uid: str
    files: tuple[Path, ...]
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    pixel_id: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Slice:
    path: Path
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    pixel_id: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    tags: dict[str, str]


def find_series(folder: Path) -> DicomSeries:
    """The one DICOM series directly inside ``folder``, its slices checked (sub-folders are not searched).

    Raises:
        InputError: no series; several series (listed with their UIDs, descriptions and slice counts);
            DICOM files that no series could read (truncated or corrupt); slices without a position or
            orientation, of several orientations, duplicated positions, uneven gaps or a sideways drift.
    """
    try:
        with quiet_itk():
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
            series = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in ids}
    except RuntimeError as err:
        raise InputError(f"{folder}: cannot list the DICOM files: {error_line(err)}") from None
    _refuse_unread_files(folder, series)
    if not series:
        raise InputError(
            f"{folder}: no DICOM series in this folder (sub-folders are not searched); give the folder of one "
            "series or an image file"
        )
    if len(series) > 1:
        listed = "; ".join(
            f"{uid} {_description(files[0])!r} ({len(files)} files)"
            for uid, files in sorted(series.items(), key=lambda item: -len(item[1]))
        )
        raise InputError(
            f"{folder}: holds {len(series)} DICOM series; give a folder with one series (move the others out): "
            + listed
        )
    uid, names = next(iter(series.items()))
    slices = [_read_slice(Path(name)) for name in names]
    ordered, spacing = _check_geometry(folder, slices)
    first = ordered[0]
    depth = len(ordered) if len(ordered) > 1 else first.size[2] if len(first.size) > 2 else 1
    return DicomSeries(
        folder=folder,
        uid=uid,
        files=tuple(s.path for s in ordered),
        size=(int(first.size[0]), int(first.size[1]), int(depth)),
        spacing=(float(first.spacing[0]), float(first.spacing[1]), float(spacing)),
        pixel_id=first.pixel_id,
        metadata=first.tags,
    )


def _refuse_unread_files(folder: Path, series: dict[str, tuple[str, ...]]) -> None:
    """Refuse DICOM-looking files that no series took in: GDCM drops a truncated slice without a word."""
    taken = {Path(name).resolve() for names in series.values() for name in names}
    try:
        candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.name.upper() not in _EXCLUDED_NAMES)
    except OSError as err:
        raise InputError(f"{folder}: cannot list the folder ({err.strerror or err})") from None
    unread = [p for p in candidates if p.resolve() not in taken and _looks_like_dicom(p)]
    if unread:
        names = ", ".join(p.name for p in unread[:5]) + (f" and {len(unread) - 5} more" if len(unread) > 5 else "")
        raise InputError(
            f"{folder}: {len(unread)} DICOM file(s) cannot be read as part of a series (truncated or corrupt?): "
            f"{names}; refused rather than reading the series without them: replace or remove them"
        )


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _description(name: str) -> str:
    try:
        return _read_slice(Path(name)).tags.get(DESCRIPTION, "").strip() or "no description"
    except InputError:
        return "unreadable"


def _read_slice(path: Path) -> _Slice:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOn()
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"{path}: not a readable DICOM slice ({error_line(err)}); replace or remove it") from None
    tags = {}
    for key in reader.GetMetaDataKeys():
        try:
            tags[key] = reader.GetMetaData(key).strip()
        except (RuntimeError, TypeError, UnicodeDecodeError):  # binary or badly encoded values
            continue
    return _Slice(
        path=path,
        size=reader.GetSize(),
        spacing=reader.GetSpacing(),
        pixel_id=reader.GetPixelID(),
        position=_numbers(tags.get(POSITION), 3),
        orientation=_numbers(tags.get(ORIENTATION), 6),
        tags=tags,
    )


def _numbers(value: str | None, count: int) -> np.ndarray | None:
    try:
        numbers = np.array([float(v) for v in (value or "").split("\\")])
    except ValueError:
        return None
    return numbers if numbers.size == count and np.all(np.isfinite(numbers)) else None


def _check_geometry(folder: Path, slices: list[_Slice]) -> tuple[list[_Slice], float]:
    """The slices in order along their normal, and their spacing; refuse what is not one regular volume."""
    first = slices[0]
    if len(slices) == 1:  # one file holding every frame: its own header says where they are
        return slices, float(first.spacing[2]) if len(first.spacing) > 2 else 1.0
    for s in slices:
        if s.position is None or s.orientation is None:
            tag = "ImagePositionPatient (0020,0032)" if s.position is None else "ImageOrientationPatient (0020,0037)"
            raise InputError(f"{s.path}: has no valid {tag}; the slices of {folder} cannot be placed in space")
    _check_orientation(folder, slices)
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    along = np.array([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(along, kind="stable")
    slices, along = [slices[i] for i in order], along[order]
    gaps = np.diff(along)
    _check_duplicates(folder, slices, along, gaps)
    spacing = float((along[-1] - along[0]) / (len(slices) - 1))
    _check_gaps(folder, slices, along, gaps, spacing)
    _check_drift(folder, slices, normal)
    return slices, spacing


def _check_orientation(folder: Path, slices: list[_Slice]) -> None:
    reference = slices[0]
    other = [s for s in slices if np.abs(s.orientation - reference.orientation).max() > ORIENTATION_TOLERANCE]
    if not other:
        return
    angle = max(_angle(reference.orientation, s.orientation) for s in other)
    raise InputError(
        f"{folder}: the slices do not share one orientation: {len(other)} of {len(slices)} differ from "
        f"{reference.path.name} by up to {angle:.1f} degrees (ImageOrientationPatient, e.g. {other[0].path.name}); "
        "refused: give a folder holding one stack of parallel slices"
    )


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """Largest angle in degrees between the row, column or normal directions of two orientations."""
    a_axes = (a[:3], a[3:], np.cross(a[:3], a[3:]))
    b_axes = (b[:3], b[3:], np.cross(b[:3], b[3:]))
    cosines = [abs(np.dot(u, v)) / (np.linalg.norm(u) * np.linalg.norm(v)) for u, v in zip(a_axes, b_axes)]
    return float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))


def _check_duplicates(folder: Path, slices: list[_Slice], along: np.ndarray, gaps: np.ndarray) -> None:
    same = np.flatnonzero(gaps < DUPLICATE_MM)
    if same.size == 0:
        return
    i = int(same[0])
    raise InputError(
        f"{folder}: {same.size} slice(s) share a position with another (e.g. {slices[i].path.name} and "
        f"{slices[i + 1].path.name}, both at {along[i]:.2f} mm along the slice normal): several volumes in one "
        "series (echoes, phases, a copy)?; refused: give a folder holding one volume"
    )


def _check_gaps(folder: Path, slices: list[_Slice], along: np.ndarray, gaps: np.ndarray, spacing: float) -> None:
    off = np.abs(along - (along[0] + spacing * np.arange(len(along))))
    if off.max() <= POSITION_TOLERANCE * spacing:
        return
    typical = float(np.median(gaps))
    i = int(np.argmax(np.abs(gaps - typical)))
    missing = round(gaps[i] / typical) - 1 if typical > 0 else 0
    hint = f" (about {missing} slice(s) missing)" if missing >= 1 else ""
    raise InputError(
        f"{folder}: the slices are not evenly spaced: {gaps[i]:.2f} mm between {slices[i].path.name} and "
        f"{slices[i + 1].path.name} (at {along[i]:.2f} and {along[i + 1]:.2f} mm along the slice normal) where "
        f"most are {typical:.2f} mm apart{hint}; one spacing for all would put slices up to {off.max():.1f} mm "
        "from where they were acquired; refused: give the complete series (or resample it onto an even grid)"
    )


def _check_drift(folder: Path, slices: list[_Slice], normal: np.ndarray) -> None:
    offsets = np.array([s.position - slices[0].position for s in slices])
    sideways = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    pixel = float(min(slices[0].spacing[:2]))
    if sideways.max() <= DRIFT_TOLERANCE * pixel:
        return
    i = int(np.argmax(sideways))
    raise InputError(
        f"{folder}: the slice positions drift sideways ({sideways[i]:.2f} mm at {slices[i].path.name}), so the "
        "slices are not stacked along their normal (gantry tilt or a sheared volume); refused: resample it "
        "onto an orthogonal grid first"
    )
