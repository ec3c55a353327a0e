"""Reading and writing image files: geometry kept exactly, bad inputs refused with a clear message, atomic writes."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.errors import InputError
from MedTransCore.io import SUPPORTED_EXTENSIONS, ImageInfo, read_image, read_mask, write_image
from MedTransCore.io.writing import atomic_folder

SPACING = (0.7, 0.9, 2.5)
ORIGIN = (-12.5, 30.25, 7.75)


def oblique_image(array: np.ndarray) -> sitk.Image:
    """``array`` (z, y, x) with anisotropic spacing and a direction rotated 20 degrees about two axes."""
    image = sitk.GetImageFromArray(array)
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(np.deg2rad(20.0), np.deg2rad(20.0), 0.0)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(rotation.GetMatrix())
    return image


def ct_like(shape=(6, 7, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1000.0, 2000.0, shape).astype(np.float32)


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tol: float) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=tol)


def nrrd_with_header(path, extra: str) -> None:
    """A 4x3x2 int16 NRRD whose geometry lines are ``extra`` (SimpleITK cannot write broken headers)."""
    header = f"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nencoding: raw\nendian: little\n{extra}\n"
    path.write_bytes(header.encode() + np.arange(24, dtype="<i2").tobytes())


def nifti_with_patch(path, offset: int, fmt: str, value) -> None:
    """A small int16 NIfTI with one header field overwritten (and qform/sform off, so pixdim is used)."""
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5) * 40), str(path))
    raw = bytearray(path.read_bytes())
    raw[252:256] = struct.pack("<hh", 0, 0)
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_every_format_keeps_an_oblique_anisotropic_geometry_and_the_values(tmp_path, ext):
    image = oblique_image(ct_like())
    path = write_image(image, tmp_path / f"ct{ext}")
    back, info = read_image(path)
    assert isinstance(info, ImageInfo) and info.path == path
    assert info.format == {".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd"}.get(ext, "mha")
    assert back.GetPixelID() == sitk.sitkFloat32
    assert_same_geometry(back, image, tol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


def test_an_integer_image_is_read_as_float32_with_the_same_values(tmp_path):
    array = np.random.default_rng(1).integers(-1024, 3000, (5, 6, 7)).astype(np.int16)
    sitk.WriteImage(oblique_image(array), str(tmp_path / "ct.nrrd"))
    image, info = read_image(tmp_path / "ct.nrrd")
    assert image.GetPixelID() == sitk.sitkFloat32
    assert info.pixel_type == "16-bit signed integer" and not info.is_label_like
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array.astype(np.float32))


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_key_value_formats_store_the_metadata_and_the_synthetic_flag(tmp_path, ext):
    meta = {"DICOM_Modality": "CT", "SeriesDescription": "sCT from MR", "MedTrans_model": "tiny"}
    _, info = read_image(write_image(oblique_image(ct_like()), tmp_path / f"s{ext}", metadata=meta))
    assert info.metadata["MedTrans_Synthetic"] == "true" and info.metadata["MedTrans_model"] == "tiny"
    assert info.dicom_modality == "CT" and info.series_description == "sCT from MR"
    _, plain = read_image(write_image(oblique_image(ct_like()), tmp_path / f"p{ext}", synthetic=False))
    assert "MedTrans_Synthetic" not in plain.metadata


def test_writing_leaves_the_callers_image_and_its_metadata_alone(tmp_path):
    image = oblique_image(ct_like())
    image.SetMetaData("source_note", "kept")
    write_image(image, tmp_path / "a.nrrd", metadata={"MedTrans_model": "tiny"})
    assert image.GetMetaDataKeys() == ("source_note",)
    _, info = read_image(tmp_path / "a.nrrd")
    assert "source_note" not in info.metadata and info.metadata["MedTrans_model"] == "tiny"


def test_a_synthetic_nifti_says_so_in_its_description(tmp_path):
    path = write_image(oblique_image(ct_like()), tmp_path / "s.nii.gz", metadata={"MedTrans_target_modality": "CT"})
    _, info = read_image(path)
    assert info.series_description == "MedTrans SYNTHETIC CT"


def test_writing_refuses_an_existing_file_unless_overwrite(tmp_path):
    path = write_image(oblique_image(ct_like(seed=1)), tmp_path / "a.mha")
    with pytest.raises(InputError, match="--overwrite"):
        write_image(oblique_image(ct_like(seed=2)), path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)[0]), ct_like(seed=1))
    write_image(oblique_image(ct_like(seed=2)), path, overwrite=True)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)[0]), ct_like(seed=2))


def test_a_failing_writer_leaves_nothing_behind(tmp_path):
    # NIfTI-1 stores sizes as int16: a 70000-voxel axis makes the writer fail after it started.
    with pytest.raises(InputError, match="could not write"):
        write_image(sitk.Image([70000, 2, 2], sitk.sitkUInt8), tmp_path / "wide.nii")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_inside_an_atomic_folder_write_leaves_nothing_behind(tmp_path):
    with (
        pytest.raises(RuntimeError, match="half way"),
        atomic_folder(tmp_path / "series", overwrite=False, replaceable="*.dcm") as staging,
    ):
        (staging / "IM00001.dcm").write_bytes(b"partial")
        raise RuntimeError("half way")
    assert list(tmp_path.iterdir()) == []


def test_writing_to_an_unknown_extension_lists_the_supported_ones(tmp_path):
    with pytest.raises(InputError, match=r"unknown image format; use one of \.nii\.gz"):
        write_image(oblique_image(ct_like()), tmp_path / "ct.png")


def test_a_missing_path_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_image(tmp_path / "nope.nii.gz")


def test_an_unknown_extension_is_refused_with_the_supported_ones(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=r"unknown image format.*\.nrrd.*\.mha.*DICOM"):
        read_image(tmp_path / "scan.png")


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_an_empty_file_is_refused(tmp_path, ext):
    (tmp_path / f"empty{ext}").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / f"empty{ext}")


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_a_truncated_file_is_refused(tmp_path, ext):
    path = tmp_path / f"ct{ext}"
    sitk.WriteImage(oblique_image(ct_like((10, 10, 10))), str(path))  # uncompressed, so half the data is missing
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(path)


def test_garbage_with_an_image_extension_is_refused(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not an image" * 100))
    with pytest.raises(InputError, match="NIfTI|not a readable"):
        read_image(tmp_path / "junk.nii.gz")


@pytest.mark.parametrize("size", [(8, 8), (8, 8, 1), (1, 8, 8)])
def test_a_2d_image_is_refused(tmp_path, size):
    sitk.WriteImage(sitk.Image(size, sitk.sitkFloat32), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="need a 3D volume"):
        read_image(tmp_path / "flat.nrrd")


def test_a_4d_image_is_refused(tmp_path):
    sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32), str(tmp_path / "fmri.nii.gz"))
    with pytest.raises(InputError, match="4D image"):
        read_image(tmp_path / "fmri.nii.gz")


@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz", ".mha"])
def test_a_vector_image_is_refused(tmp_path, ext):
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), str(tmp_path / f"rgb{ext}"))
    with pytest.raises(InputError, match="3 components per voxel"):
        read_image(tmp_path / f"rgb{ext}")


def test_nan_and_inf_voxels_are_refused_with_their_count(tmp_path):
    array = ct_like()
    array[0, 0, :2] = np.nan
    array[1, 1, 1] = np.inf
    sitk.WriteImage(oblique_image(array), str(tmp_path / "nan.mha"))  # NIfTI would not keep NaN
    with pytest.raises(InputError, match=f"3 of {array.size} voxels are NaN or infinite"):
        read_image(tmp_path / "nan.mha")


def test_a_constant_image_is_refused(tmp_path):
    sitk.WriteImage(oblique_image(np.full((4, 5, 6), 40.0, np.float32)), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="constant"):
        read_image(tmp_path / "flat.nrrd")


@pytest.mark.parametrize(
    "geometry",
    [
        "spacings: 1 0 1",
        "spacings: 1 -1 1",
        "spacings: 1 nan 1",
        "space: left-posterior-superior\nspace directions: (1,0,0) (0,0,0) (0,0,1)\nspace origin: (0,0,0)",
        "space: left-posterior-superior\nspace directions: (1,0,0) (0,nan,0) (0,0,1)\nspace origin: (0,0,0)",
    ],
)
def test_a_nrrd_with_zero_negative_or_nan_spacing_is_refused(tmp_path, geometry):
    nrrd_with_header(tmp_path / "bad.nrrd", geometry + "\n")
    with pytest.raises(InputError, match="invalid voxel spacing"):
        read_image(tmp_path / "bad.nrrd")


@pytest.mark.parametrize("spacing", ["1 0 1", "1 -1 1", "1 nan 1"])
def test_a_metaimage_with_zero_negative_or_nan_spacing_is_refused(tmp_path, spacing):
    header = f"ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementSpacing = {spacing}\nElementType = MET_SHORT\n"
    data = np.arange(24, dtype="<i2").tobytes()
    (tmp_path / "bad.mha").write_bytes((header + "ElementDataFile = LOCAL\n").encode() + data)
    with pytest.raises(InputError, match="invalid voxel spacing"):
        read_image(tmp_path / "bad.mha")


@pytest.mark.parametrize("pixdim", [0.0, -2.0, float("nan"), float("inf")])
def test_a_nifti_with_zero_negative_or_nan_pixdim_is_refused(tmp_path, pixdim):
    # SimpleITK would silently read these as spacing 1 (or flip the axis).
    nifti_with_patch(tmp_path / "bad.nii", 80, "<f", pixdim)
    with pytest.raises(InputError, match="invalid voxel spacing"):
        read_image(tmp_path / "bad.nii")


def test_a_label_map_is_refused_unless_allowed(tmp_path):
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:4, 2:5, 2:6] = 1
    labels[2, 3, 3] = 7
    sitk.WriteImage(oblique_image(labels), str(tmp_path / "seg.nrrd"))
    with pytest.raises(InputError, match=r"looks like a label map \(3 distinct values\); translate an intensity image"):
        read_image(tmp_path / "seg.nrrd")
    image, info = read_image(tmp_path / "seg.nrrd", allow_label_map=True)
    assert info.is_label_like and image.GetPixelID() == sitk.sitkFloat32


def test_a_nifti_whose_intent_says_label_is_refused(tmp_path):
    nifti_with_patch(tmp_path / "atlas.nii", 68, "<h", 1002)  # intent_code = NIFTI_INTENT_LABEL
    with pytest.raises(InputError, match=r"looks like a label map \(60 distinct values\)"):
        read_image(tmp_path / "atlas.nii")


def test_a_folder_without_dicom_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


def test_a_mask_is_read_as_zero_one_on_the_image_grid(tmp_path):
    image = oblique_image(ct_like((6, 8, 8)))
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[2:4, 2:6, 2:6] = 3
    write_image(oblique_image(labels), tmp_path / "mask.nii.gz", synthetic=False)
    mask = read_mask(tmp_path / "mask.nii.gz", like=image)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert (mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) == (
        image.GetSpacing(),
        image.GetOrigin(),
        image.GetDirection(),
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), labels > 0)


def test_a_mask_on_another_grid_is_resampled_and_an_empty_one_refused(tmp_path):
    image = oblique_image(ct_like((6, 8, 8)))
    coarse = sitk.Image([5, 5, 4], sitk.sitkUInt8) + 1  # twice the spacing, covering the image
    coarse.SetSpacing([2 * s for s in SPACING])
    coarse.SetOrigin(ORIGIN)
    coarse.SetDirection(image.GetDirection())
    write_image(coarse, tmp_path / "coarse.nrrd", synthetic=False)
    mask = read_mask(tmp_path / "coarse.nrrd", like=image)
    assert mask.GetSize() == image.GetSize() and sitk.GetArrayFromImage(mask).all()
    far = sitk.Image(coarse)
    far.SetOrigin((500.0, 500.0, 500.0))
    write_image(far, tmp_path / "far.nrrd", synthetic=False)
    with pytest.raises(InputError, match="mask is empty"):
        read_mask(tmp_path / "far.nrrd", like=image)
