"""The PNG report and the metrics JSON: valid files of sensible size, correct orientation, NaN -> null."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from MedTransCore.errors import InputError
from MedTransCore.metrics import compute_metrics
from MedTransCore.report import _aspects, _oriented, _slices, write_metrics_json, write_report


def ct_volume(shape=(20, 24, 28), spacing=(1.5, 1.5, 3.0)) -> sitk.Image:
    """A body ellipse of soft tissue with a bone rod, in HU, (z, y, x) = shape."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    array = np.where((x / 0.8) ** 2 + (y / 0.6) ** 2 < 1, 40.0, -1000.0)
    array[(x / 0.15) ** 2 + ((y - 0.3) / 0.15) ** 2 < 1] = 700.0
    image = sitk.GetImageFromArray((array + 5 * z).astype(np.float32))
    image.SetSpacing(spacing)
    return image


def png_size(path) -> tuple[int, int]:
    pixels = imread(path)
    assert pixels.std() > 0.05  # not a blank page
    return pixels.shape[1], pixels.shape[0]


def test_a_report_with_a_reference_is_a_wide_png_with_four_columns_and_metrics(tmp_path):
    reference = ct_volume()
    synthetic = sitk.Cast(reference + 15.0, sitk.sitkFloat32)
    source = sitk.Cast(reference * 0.9, sitk.sitkFloat32)
    arrays = [sitk.GetArrayFromImage(im) for im in (synthetic, source, reference)]
    metrics = compute_metrics(arrays[0], arrays[2], "CT")
    baseline = compute_metrics(arrays[1], arrays[2], "CT")

    path = write_report(
        tmp_path / "out" / "report.png",
        source=source,
        synthetic=synthetic,
        reference=reference,
        source_modality="CBCT",
        target_modality="CT",
        metrics=metrics,
        baseline_metrics=baseline,
        title="case 001",
        notes=["a note long enough to be wrapped over more than one line of the metrics panel"],
    )
    width, height = png_size(path)
    assert 1500 <= width <= 1700 and 900 <= height <= 1250
    assert [p.name for p in path.parent.iterdir()] == ["report.png"]  # the temporary file was moved into place


def test_a_report_without_a_reference_has_only_source_and_synthetic_columns(tmp_path):
    synthetic = ct_volume()
    source = sitk.Cast(synthetic * 0.5 + 300.0, sitk.sitkFloat32)
    with_ref = write_report(
        tmp_path / "with.png",
        source=source,
        synthetic=synthetic,
        reference=synthetic,
        source_modality="MR_T1",
        target_modality="CT",
    )
    without = write_report(
        tmp_path / "without.png",
        source=source,
        synthetic=synthetic,
        reference=None,
        source_modality="MR_T1",
        target_modality="CT",
    )
    width, height = png_size(without)
    assert 700 <= width < png_size(with_ref)[0] - 400 and height > 700


def test_an_mr_report_with_a_reference_on_another_grid_is_resampled_for_display(tmp_path):
    mr = sitk.Cast(ct_volume() + 1000.0, sitk.sitkFloat32)
    coarse = sitk.Resample(mr, [14, 12, 10], sitk.Transform(), sitk.sitkLinear, mr.GetOrigin(), [3.0, 3.0, 6.0])
    path = write_report(
        tmp_path / "mr.png",
        source=mr,
        synthetic=mr * 2.0,
        reference=coarse,
        source_modality="MR_T1",
        target_modality="MR_T2",
        metrics={"MAE": 0.05, "SSIM": math.nan},
    )
    assert png_size(path)[0] >= 1500


def test_views_are_shown_in_radiological_orientation_whatever_the_storage_order():
    """Markers at the patient's right, anterior and superior ends land left, top and top in every view."""
    array = np.zeros((12, 10, 8), dtype=np.float32)  # LPS storage: x -> left, y -> posterior, z -> superior
    array[6, 5, 0] = 1.0  # patient's right
    array[6, 0, 4] = 2.0  # anterior
    array[11, 5, 4] = 3.0  # superior
    lps = sitk.GetImageFromArray(array)
    lps.SetSpacing((1.0, 2.0, 3.0))
    ras = sitk.DICOMOrient(lps, "RAS")  # the same patient stored with flipped axes
    assert ras.GetDirection() != lps.GetDirection()

    for image in (lps, ras):
        oriented, spacing = _oriented(image, image)
        views = _slices(oriented, (6, 5, 4))
        assert views["axial"][:, 0].max() == 1.0  # patient's right on the viewer's left
        assert views["axial"][0, :].max() == 2.0  # anterior up
        assert views["coronal"][:, 0].max() == 1.0 and views["coronal"][0, :].max() == 3.0  # head up
        assert views["sagittal"][:, 0].max() == 2.0 and views["sagittal"][0, :].max() == 3.0  # anterior left
        assert _aspects(spacing) == {"axial": 2.0, "coronal": 3.0, "sagittal": 1.5}


def test_unknown_modalities_and_non_volume_images_raise_an_input_error(tmp_path):
    image = ct_volume()
    with pytest.raises(InputError, match="unknown modality"):
        write_report(
            tmp_path / "r.png",
            source=image,
            synthetic=image,
            reference=None,
            source_modality="PET",
            target_modality="CT",
        )
    with pytest.raises(InputError, match="3D"):
        write_report(
            tmp_path / "r.png",
            source=sitk.Image(8, 8, sitk.sitkFloat32),
            synthetic=image,
            reference=None,
            source_modality="CT",
            target_modality="CT",
        )
    assert not list(tmp_path.iterdir())


def test_metrics_json_round_trips_with_nan_and_inf_as_null_and_sorted_keys(tmp_path):
    metrics = {"PSNR": math.inf, "MAE": np.float64(12.5), "MAE_bone": math.nan, "voxels": 1000.0}
    path = write_metrics_json(tmp_path / "m.json", metrics, case="001", spacing=(1.0, 1.0, 2.5), model=None)
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    loaded = json.loads(text)
    assert loaded == {
        "case": "001",
        "metrics": {"MAE": 12.5, "MAE_bone": None, "PSNR": None, "voxels": 1000.0},
        "model": None,
        "spacing": [1.0, 1.0, 2.5],
    }
    write_metrics_json(path, {"MAE": 1.0})  # replaces the file
    assert json.loads(path.read_text()) == {"metrics": {"MAE": 1.0}}
