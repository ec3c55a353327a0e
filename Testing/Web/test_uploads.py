"""Browser uploads are checked before any pixel is read: real files, as the browser sends them (no server)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.errors import InputError
from MedTransCore.io import write_dicom_series
from MedTransWeb.uploads import UploadLimits, check_volume_header, read_upload, store_client_files


def client_file(name: str, content: bytes) -> dict:
    """A file dict as trame's client sends it (``content`` may arrive in chunks)."""
    half = len(content) // 2
    return {"name": name, "size": len(content), "type": "", "content": [content[:half], content[half:]]}


def volume(size=(12, 10, 8), spacing=(0.8, 0.9, 2.5), origin=(-10.0, 5.0, 30.0)) -> sitk.Image:
    array = np.linspace(-1000, 1500, int(np.prod(size)), dtype=np.float32).reshape(size[::-1])
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def file_bytes(image: sitk.Image, tmp_path, name: str) -> bytes:
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path.read_bytes()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


@pytest.fixture
def scratch(tmp_path):
    folder = tmp_path / "scratch"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_a_volume_file_is_read_with_its_geometry_and_named_after_the_file(tmp_path, scratch, suffix):
    image = volume()
    upload = read_upload([client_file(f"patient 7{suffix}", file_bytes(image, tmp_path, f"v{suffix}"))], scratch)
    assert upload.name == "patient 7"
    assert upload.image.GetSize() == image.GetSize()
    np.testing.assert_allclose(upload.image.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(upload.image.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(upload.image), sitk.GetArrayFromImage(image))


def test_a_zipped_dicom_series_in_subfolders_is_read_as_one_volume(tmp_path, scratch):
    image = volume(size=(16, 16, 6), spacing=(0.7, 0.7, 3.0))
    series = write_dicom_series(image, tmp_path / "series", modality="CT", series_description="test")
    archive = zipped({f"study/series/{f.name}": f.read_bytes() for f in sorted(series.iterdir())})
    upload = read_upload([client_file("cbct.zip", archive)], scratch)
    assert upload.image.GetSize() == (16, 16, 6)
    np.testing.assert_allclose(upload.image.GetSpacing(), (0.7, 0.7, 3.0), rtol=1e-4)
    assert upload.info.format == "dicom" and upload.info.dicom_modality == "CT"
    np.testing.assert_allclose(sitk.GetArrayFromImage(upload.image), sitk.GetArrayFromImage(image), atol=1.0)


def test_a_file_that_is_no_image_is_refused_with_the_accepted_formats(scratch):
    with pytest.raises(InputError, match=r"'notes.txt' is not a supported image file; upload a NIfTI"):
        read_upload([client_file("notes.txt", b"hello")], scratch)


def test_a_corrupt_volume_file_is_refused_before_reading(scratch):
    with pytest.raises(InputError, match="'scan.nii.gz' could not be read as an image"):
        read_upload([client_file("scan.nii.gz", b"\x00" * 400)], scratch)


def test_a_2d_image_is_refused(tmp_path, scratch):
    flat = sitk.GetImageFromArray(np.ones((20, 30), np.float32))
    with pytest.raises(InputError, match=r"2D image of size 30x20; MedTrans needs a 3D volume"):
        read_upload([client_file("xray.nrrd", file_bytes(flat, tmp_path, "f.nrrd"))], scratch)


def test_a_single_slice_volume_is_refused_as_2d(tmp_path, scratch):
    single = volume(size=(12, 10, 1))
    with pytest.raises(InputError, match="3D image of size 12x10x1; MedTrans needs a 3D volume"):
        read_upload([client_file("one.mha", file_bytes(single, tmp_path, "o.mha"))], scratch)


def test_a_volume_above_the_voxel_limit_is_refused_from_its_header(tmp_path):
    path = tmp_path / "big.nrrd"
    sitk.WriteImage(volume(size=(20, 20, 20)), str(path))
    with pytest.raises(InputError, match="more than this server's limit"):
        check_volume_header(path, UploadLimits(max_voxels=20 * 20 * 19))
    assert check_volume_header(path, UploadLimits(max_voxels=20 * 20 * 20)) == (20, 20, 20)


def test_an_upload_above_the_byte_limit_is_refused_before_it_is_written(scratch):
    with pytest.raises(InputError, match="larger than the server's limit of 1 MB"):
        store_client_files([client_file("big.nii", b"\x00" * (1024**2 + 1))], scratch, UploadLimits(max_bytes=1024**2))
    assert not any(scratch.iterdir())


def test_a_zip_that_unpacks_beyond_the_limit_is_refused(scratch):
    bomb = zipped({"a.dcm": b"\x00" * 3 * 1024**2})  # compresses to a few kB
    with pytest.raises(InputError, match="unpacks to more than 1 MB"):
        store_client_files([client_file("bomb.zip", bomb)], scratch, UploadLimits(max_bytes=1024**2))


def test_zip_entries_cannot_write_outside_the_upload_folder(tmp_path, scratch):
    archive = zipped({"../../escaped.dcm": b"x", "/abs/also.dcm": b"y"})
    with pytest.raises(InputError, match="no DICOM image found among the 2 uploaded file"):
        read_upload([client_file("evil.zip", archive)], scratch)
    assert not (tmp_path / "escaped.dcm").exists() and not list(tmp_path.glob("**/also.dcm"))[1:]
    assert sorted(p.name for p in (scratch / "series").iterdir()) == ["000000_escaped.dcm", "000001_also.dcm"]


def test_an_invalid_zip_is_refused(scratch):
    with pytest.raises(InputError, match="'broken.zip' is not a valid zip archive"):
        read_upload([client_file("broken.zip", b"PK\x03\x04 not really")], scratch)


def test_an_empty_upload_is_refused(scratch):
    with pytest.raises(InputError, match="no file received"):
        read_upload([], scratch)
    with pytest.raises(InputError, match="'empty.nii' is empty"):
        read_upload([client_file("empty.nii", b"")], scratch)
