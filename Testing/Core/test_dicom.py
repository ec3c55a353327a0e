"""DICOM series: a synthetic CT written one file per slice reads back in HU and geometry, marked synthetic."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.errors import InputError
from MedTransCore.io import read_image, write_dicom_series

SPACING = (0.7, 0.9, 2.5)
ORIGIN = (-12.5, 30.25, 7.75)


def oblique_ct(shape=(5, 8, 9), seed=0, left_handed=False) -> sitk.Image:
    """Non-integer HU values on an oblique (20 degrees about two axes), anisotropic grid."""
    image = sitk.GetImageFromArray(np.random.default_rng(seed).uniform(-1024.0, 3000.0, shape).astype(np.float32))
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(np.deg2rad(20.0), np.deg2rad(20.0), 0.0)
    direction = np.array(rotation.GetMatrix()).reshape(3, 3)
    if left_handed:
        direction[:, 2] *= -1
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(direction.ravel().tolist())
    return image


def slice_tags(folder, tag: str) -> list[str]:
    values = []
    for path in sorted(folder.glob("*.dcm")):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        values.append(reader.GetMetaData(tag).strip())
    return values


def test_a_synthetic_ct_round_trips_within_one_hu_and_keeps_its_oblique_geometry(tmp_path):
    image = oblique_ct()
    folder = write_dicom_series(image, tmp_path / "sct", series_description="sCT from MR")
    assert len(list(folder.glob("*.dcm"))) == image.GetDepth()
    back, info = read_image(folder)
    assert info.format == "dicom" and info.dicom_modality == "CT"
    assert "SYNTHETIC" in info.series_description
    assert np.abs(sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(image)).max() <= 0.5 + 1e-3
    for got, want in (
        (back.GetSpacing(), SPACING),
        (back.GetOrigin(), ORIGIN),
        (back.GetDirection(), image.GetDirection()),
    ):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_the_series_is_marked_derived_and_synthetic(tmp_path):
    # A DICOM read first: it once changed how GDCM wrote SpacingBetweenSlices afterwards.
    read_image(write_dicom_series(oblique_ct(), tmp_path / "first", series_description="sCT"))
    folder = write_dicom_series(oblique_ct(), tmp_path / "sct", series_description="sCT", patient_id="P-17")
    _, info = read_image(folder)
    tags = info.metadata
    assert tags["0008|0008"].split("\\") == ["DERIVED", "SECONDARY", "SYNTHETIC"]
    assert tags["0008|103e"] == "SYNTHETIC sCT"
    assert "SYNTHETIC" in tags["0018|1030"] and "SYNTHETIC" in tags["0008|2111"]
    assert tags["0008|0060"] == "CT" and tags["0028|1054"] == "HU" and tags["0010|0020"] == "P-17"
    assert tags["0008|0016"] == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    assert (tags["0028|0100"], tags["0028|0103"]) == ("16", "1")  # int16
    assert float(tags["0018|0050"]) == pytest.approx(2.5) and float(tags["0018|0088"]) == pytest.approx(2.5)
    assert slice_tags(folder, "0020|0013") == ["1", "2", "3", "4", "5"]
    assert len(set(slice_tags(folder, "0008|0018"))) == 5  # one SOP instance UID per slice


def test_every_write_gets_new_uids_unless_a_study_is_given(tmp_path):
    first = read_image(write_dicom_series(oblique_ct(), tmp_path / "a", series_description="sCT"))[1].metadata
    second = read_image(write_dicom_series(oblique_ct(), tmp_path / "b", series_description="sCT"))[1].metadata
    for tag in ("0020|000d", "0020|000e", "0020|0052", "0008|0018"):
        assert first[tag] != second[tag] and first[tag].startswith("2.25.")
    study = first["0020|000d"]
    third = write_dicom_series(oblique_ct(), tmp_path / "c", series_description="sCT", study_uid=study)
    assert read_image(third)[1].metadata["0020|000d"] == study


def test_a_left_handed_volume_is_written_with_the_same_voxels_in_physical_space(tmp_path):
    image = oblique_ct(left_handed=True)
    back, _ = read_image(write_dicom_series(image, tmp_path / "sct", series_description="sCT"))
    # DICOM slices are stacked along row x column: the same volume, in reverse slice order.
    assert np.abs(sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(image)[::-1]).max() <= 0.5 + 1e-3
    last = image.TransformIndexToPhysicalPoint((0, 0, image.GetDepth() - 1))
    np.testing.assert_allclose(back.GetOrigin(), last, rtol=0, atol=1e-4)
    np.testing.assert_allclose(back.GetDirection()[2::3], -np.array(image.GetDirection()[2::3]), atol=1e-4)


def test_values_beyond_int16_and_mr_are_scaled_with_a_rescale_slope(tmp_path):
    wide = oblique_ct() * 20.0  # up to 60000 HU: does not fit int16 with slope 1
    back, info = read_image(write_dicom_series(wide, tmp_path / "wide", series_description="sCT"))
    slope = float(info.metadata["0028|1053"])
    assert slope > 1.0
    assert np.abs(sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(wide)).max() <= slope / 2 + 1e-3
    mr = sitk.Abs(oblique_ct()) / 3000.0
    back, info = read_image(write_dicom_series(mr, tmp_path / "mr", modality="MR", series_description="sT2"))
    assert info.dicom_modality == "MR"
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(mr), atol=1e-4)


def test_an_existing_series_is_replaced_only_with_overwrite(tmp_path):
    folder = write_dicom_series(oblique_ct(seed=1), tmp_path / "sct", series_description="sCT")
    with pytest.raises(InputError, match="--overwrite"):
        write_dicom_series(oblique_ct(seed=2), folder, series_description="sCT")
    write_dicom_series(oblique_ct(seed=2), folder, series_description="sCT", overwrite=True)
    back, _ = read_image(folder)
    assert np.abs(sitk.GetArrayFromImage(back) - sitk.GetArrayFromImage(oblique_ct(seed=2))).max() <= 0.501
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sct"]


def test_a_folder_with_other_files_is_never_replaced(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.docx").write_text("precious")
    with pytest.raises(InputError, match="refusing to replace"):
        write_dicom_series(oblique_ct(), tmp_path / "home", series_description="sCT", overwrite=True)
    assert (tmp_path / "home" / "thesis.docx").read_text() == "precious"


def test_unsupported_modalities_2d_images_and_nan_values_are_refused(tmp_path):
    with pytest.raises(InputError, match="modality 'PT'"):
        write_dicom_series(oblique_ct(), tmp_path / "pet", modality="PT", series_description="x")
    with pytest.raises(InputError, match="need a 3D volume"):
        write_dicom_series(sitk.Image([8, 8], sitk.sitkFloat32), tmp_path / "flat", series_description="x")
    broken = sitk.Image(oblique_ct())
    broken[1, 1, 1] = float("nan")
    with pytest.raises(InputError, match="1 of 360 voxels are NaN"):
        write_dicom_series(broken, tmp_path / "nan", series_description="x")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_several_series_is_refused_with_each_series_listed(tmp_path):
    small = write_dicom_series(oblique_ct(shape=(3, 8, 9)), tmp_path / "small", series_description="small")
    large = write_dicom_series(oblique_ct(shape=(6, 8, 9)), tmp_path / "large", series_description="large")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder in (small, large):
        for path in folder.glob("*.dcm"):
            shutil.copy(path, mixed / f"{folder.name}_{path.name}")
    # Reading the larger one silently once hid the other; the user picks the series by its folder instead.
    with pytest.raises(InputError, match=r"holds 2 DICOM series.*'SYNTHETIC large' \(6 files\).*'SYNTHETIC small' \(3"):
        read_image(mixed)
