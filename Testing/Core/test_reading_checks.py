"""Inputs that once gave a traceback or passed silently: a broken NIfTI data offset, unreadable files, NaN and Inf
voxels in every format (NIfTI included, which SimpleITK reads as 0), through ``translate`` and ``evaluate``."""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.errors import InputError
from MedTransCore.io import read_image, read_mask, reading

from .helpers import ct_like_volume
from .test_cli import run_cli, translate_args


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def refused(tmp_path, capsys, source, *extra) -> str:
    """Run ``medtrans translate`` on ``source``; it must fail in one line and write nothing."""
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli(*translate_args(source, out / "synthetic.nrrd", "--model", "identity", *extra)) == 1
    assert list(out.iterdir()) == []
    return one_line_error(capsys)


def write(array: np.ndarray, path) -> str:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))
    return str(path)


def ct_array(seed: int = 0) -> np.ndarray:
    return sitk.GetArrayFromImage(ct_like_volume(size=(12, 10, 8), oblique=False, seed=seed))


@pytest.mark.parametrize("offset", [float("nan"), float("inf")])
def test_a_nifti_whose_data_offset_is_nan_or_infinite_is_refused_in_one_line(tmp_path, capsys, offset):
    path = write(ct_array(), tmp_path / "ct.nii")
    raw = bytearray((tmp_path / "ct.nii").read_bytes())
    raw[108:112] = struct.pack("<f", offset)  # vox_offset
    (tmp_path / "ct.nii").write_bytes(bytes(raw))
    assert "invalid data offset (vox_offset" in refused(tmp_path, capsys, path)


def test_garbage_behind_a_gzip_header_with_a_nifti_name_is_refused_in_one_line(tmp_path, capsys):
    # A gzip member header, then a deflate block of the reserved type: zlib raises its own error, not an OSError.
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 3000)
    with pytest.raises(zlib.error):
        gzip.decompress(path.read_bytes())
    assert "scan.nii.gz: not a readable NIfTI file" in refused(tmp_path, capsys, path)


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".nii.gz"])
def test_an_input_that_cannot_be_opened_is_refused_in_one_line(tmp_path, capsys, monkeypatch, ext):
    path = write(ct_array(), tmp_path / f"ct{ext}")

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    # Running as root, chmod cannot deny a read: make the reader's first open fail as it would for a user.
    monkeypatch.setattr(reading, "open", denied, raising=False)
    assert "Permission denied" in refused(tmp_path, capsys, path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions that apply to this user")
def test_a_file_without_read_permission_is_refused_in_one_line(tmp_path, capsys):
    path = write(ct_array(), tmp_path / "ct.nrrd")
    os.chmod(path, 0)
    try:
        assert "Permission denied" in refused(tmp_path, capsys, path)
    finally:
        os.chmod(path, 0o600)


def test_a_header_key_that_is_not_text_is_skipped_instead_of_a_traceback(tmp_path):
    data = ct_array().astype(np.int16)
    header = b"ObjectType = Image\nNDims = 3\nDimSize = 12 10 8\nElementType = MET_SHORT\nBad\xffKey = 1\n"
    (tmp_path / "odd.mha").write_bytes(header + b"ElementDataFile = LOCAL\n" + data.tobytes())
    image, info = read_image(tmp_path / "odd.mha")
    assert image.GetSize() == (12, 10, 8) and not any("Key" in key for key in info.metadata)


def nifti_with(tmp_path, value: float, name: str = "ct.nii.gz") -> str:
    array = ct_array()
    array[4, 5, 6] = value
    return write(array, tmp_path / name)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii"])
def test_a_nifti_with_one_nan_or_infinite_voxel_is_refused(tmp_path, capsys, value, name):
    path = nifti_with(tmp_path, value, name)
    assert sitk.GetArrayFromImage(sitk.ReadImage(path))[4, 5, 6] == 0  # what SimpleITK alone would translate
    assert f"1 of {12 * 10 * 8} voxels are NaN or infinite" in refused(tmp_path, capsys, path)


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.mha", "ct.nrrd"])
def test_every_format_refuses_nan_with_the_same_rule_and_words(tmp_path, name):
    path = nifti_with(tmp_path, np.nan, name)
    with pytest.raises(InputError, match=rf"{name}: 1 of 960 voxels are NaN or infinite; replace them"):
        read_image(path)


def test_an_integer_nifti_is_not_scanned_for_nan_and_reads_as_before(tmp_path):
    path = write(ct_array().astype(np.int16), tmp_path / "ct.nii.gz")
    image, _ = read_image(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), ct_array().astype(np.int16))


@pytest.mark.parametrize("role", ["prediction", "reference", "mask"])
def test_evaluate_refuses_nan_in_the_prediction_the_reference_or_the_mask(tmp_path, capsys, role):
    files = {"prediction": write(ct_array(1), tmp_path / "prediction.nii.gz")}
    files["reference"] = write(ct_array(2), tmp_path / "reference.nii.gz")
    files["mask"] = write((ct_array(3) > -500).astype(np.float32), tmp_path / "mask.nii.gz")
    files[role] = nifti_with(tmp_path, np.nan, f"bad-{role}.nii.gz")
    argv = ["evaluate", "--prediction", files["prediction"], "--reference", files["reference"]]
    argv += ["--modality", "CT", "--mask", files["mask"]]
    assert run_cli(*argv) == 1
    assert f"bad-{role}.nii.gz: 1 of 960 voxels are NaN or infinite" in one_line_error(capsys)


def test_a_mask_with_nan_is_refused(tmp_path):
    path = nifti_with(tmp_path, np.nan, "mask.nii")
    with pytest.raises(InputError, match="NaN or infinite"):
        read_mask(path)
