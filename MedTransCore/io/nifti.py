"""NIfTI checks SimpleITK cannot make for us.

SimpleITK "repairs" a broken NIfTI header (a ``pixdim`` of 0 or NaN becomes 1, a truncated ``.nii.gz`` is
zero-filled) and reads NaN and infinite voxels as 0, silently. So the raw header is checked here before
SimpleITK sees the file, and the voxels are counted with nibabel, which keeps them as they are.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError

# A gzip stream or a damaged one raises any of these while it is decompressed.
_STREAM_ERRORS = (OSError, EOFError, zlib.error)
# Voxels per slab when the data are scanned for NaN/Inf (bounded memory for any volume).
SLAB_VOXELS = 2**22


def _opener(path: Path):
    return gzip.open if path.name.lower().endswith(".gz") else open


def check_nifti_header(path: Path, check_spacing) -> None:
    """Refuse a NIfTI-1/2 header SimpleITK would misread, and a file shorter than its header promises.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        check_spacing: ``check_spacing(path, values, what)`` of the reader (refuses non-positive spacings).

    Raises:
        InputError: not a NIfTI file, a corrupt gzip stream, invalid sizes, spacing or data offset
            (``vox_offset`` NaN or infinite), or a truncated file.
    """
    opener = _opener(path)
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
    except _STREAM_ERRORS:
        raise InputError(f"{path}: not a readable NIfTI file (truncated or corrupt)") from None
    for endian in "<>":
        if len(raw) >= 348 and struct.unpack(endian + "i", raw[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(endian + "8h", raw[40:56])
            bitpix = struct.unpack(endian + "h", raw[72:74])[0]
            pixdim = struct.unpack(endian + "8f", raw[76:108])
            offset = struct.unpack(endian + "f", raw[108:112])[0]
            break
        if len(raw) >= 540 and struct.unpack(endian + "i", raw[:4])[0] == 540:  # NIfTI-2
            dims = struct.unpack(endian + "8q", raw[16:80])
            bitpix = struct.unpack(endian + "h", raw[14:16])[0]
            pixdim = struct.unpack(endian + "8d", raw[104:168])
            offset = struct.unpack(endian + "q", raw[168:176])[0]
            break
    else:
        raise InputError(f"{path}: not a NIfTI file (bad header size)")
    if not np.isfinite(offset) or offset < 0:
        raise InputError(f"{path}: invalid data offset (vox_offset {offset}) in the NIfTI header; fix the header")
    ndim = max(1, min(int(dims[0]), 7))
    if bitpix <= 0 or min(dims[1 : ndim + 1]) < 1:
        raise InputError(f"{path}: not a readable NIfTI file (invalid sizes in the header)")
    check_spacing(path, pixdim[1 : min(ndim, 3) + 1], "spacing (pixdim)")
    expected = int(offset) + int(np.prod(dims[1 : ndim + 1], dtype=np.int64)) * bitpix // 8
    if not _has_bytes(path, opener, expected):
        raise InputError(f"{path}: the file is truncated (its header promises {expected} bytes)")


def _has_bytes(path: Path, opener, expected: int) -> bool:
    if opener is open:
        return path.stat().st_size >= expected
    try:  # a gzip stream has no size field to trust: decompress up to the last promised byte
        with gzip.open(path, "rb") as f:
            f.seek(expected - 1)
            return len(f.read(1)) == 1
    except _STREAM_ERRORS:
        return False


def count_nonfinite(path: Path) -> int:
    """How many voxels of a NIfTI file are NaN or infinite, read slab by slab with nibabel.

    Integer data cannot hold either, so only floating-point files are scanned.

    Raises:
        InputError: nibabel cannot read the data.
    """
    import nibabel  # only NIfTI inputs need it

    try:
        image = nibabel.load(str(path))
        if image.get_data_dtype().kind not in "fc":
            return 0
        proxy, shape = image.dataobj, image.shape
        depth = shape[2] if len(shape) >= 3 else 1
        step = max(1, SLAB_VOXELS // max(1, int(np.prod(shape[:2]))))
        bad = 0
        for z in range(0, depth, step):
            slab = np.asanyarray(proxy[:, :, z : z + step, ...] if len(shape) >= 3 else proxy[...])
            bad += int(slab.size - np.count_nonzero(np.isfinite(slab)))
        return bad
    except (*_STREAM_ERRORS, ValueError, nibabel.filebasedimages.ImageFileError) as err:
        raise InputError(f"{path}: cannot read the voxel data ({err})") from None
