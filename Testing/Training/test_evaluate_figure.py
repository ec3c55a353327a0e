"""``medtrans-train evaluate --figure`` draws what each method made of a few cases from the slices kept while
scoring (no second translation), and ``cbct_figure`` draws a run's simulated CBCTs from its cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from matplotlib.image import imread

import medtrans_training.evaluate as evaluate_module
from medtrans_training.cli import main as train_main
from medtrans_training.evaluate import evaluate_cases
from medtrans_training.evaluate_figure import central_slices, evaluation_figure

from .helpers import head_arrays, tiny_unet_bundle, write_volume


@pytest.fixture
def ct_cases(tmp_path):
    """Three CBCT/CT cases (simple layout) at 2 mm in-plane and 4 mm along z."""
    for index in range(3):
        arrays = head_arrays(index)
        for name, offset in (("ct", -1000), ("cbct", -950)):
            write_volume(tmp_path / "ct" / f"p{index}" / f"{name}.nii.gz", arrays["t1"] * 2 + offset, (2.0, 2.0, 4.0))
    return tmp_path / "ct"


@pytest.fixture
def translations(monkeypatch):
    """Counts ``translate_image`` calls made by the evaluation."""
    calls = []
    real = evaluate_module.translate_image

    def counting(*args, **kwargs):
        calls.append(args[1:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "translate_image", counting)
    return calls


def test_central_slices_are_lps_oriented_with_the_head_up_on_the_coronal_slice():
    array = np.zeros((6, 5, 4), np.float32)  # (Z, Y, X)
    array[-1] = 7.0  # the most superior slice
    array[:, 0, :] += 1.0  # the most anterior row
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 2.0, 3.0))
    slices = central_slices(image)
    assert slices.axial.shape == (5, 4) and slices.coronal.shape == (6, 4) and slices.spacing == (1.0, 2.0, 3.0)
    assert slices.coronal[0, 0] >= 7 and slices.axial[0, 0] == 1.0  # head up; anterior up
    reordered = sitk.DICOMOrient(image, "RAI")  # the same voxels in space, stored right-to-left etc.
    assert reordered.GetDirection() != image.GetDirection()
    again = central_slices(reordered)
    np.testing.assert_array_equal(again.axial, slices.axial)
    np.testing.assert_array_equal(again.coronal, slices.coronal)


def test_evaluate_with_a_figure_draws_every_case_and_method_without_translating_twice(
    tmp_path, ct_cases, translations, capsys
):
    bundle = tiny_unet_bundle(tmp_path / "tiny")
    args = ["evaluate", str(bundle.path), "--data", str(ct_cases), "--device", "cpu"]
    train_main([*args, "--out", str(tmp_path / "plain.md")])
    without = len(translations)
    figure = tmp_path / "eval" / "figure.png"
    train_main([*args, "--out", str(tmp_path / "table.md"), "--figure", str(figure), "--figure-cases", "2"])
    assert len(translations) == 2 * without == 2 * 3 * 3  # 3 cases x (model, identity, histogram matching)
    assert "figure:" in capsys.readouterr().err
    height, width = imread(figure).shape[:2]
    assert 500 < width < 1500 and 1.0 < height / width < 4.0  # 5 columns, 2 cases x (axial + coronal) rows

    keep: dict = {}
    rows = evaluate_cases(bundle, _cases(ct_cases, bundle), device="cpu", keep=keep)
    assert {k[3] for k in keep} == {"source", "truth", "tiny-unet", "identity", "histogram-matching"}
    assert keep[("p0", "CBCT", "CT", "source")].coronal.shape == (20, 20)  # 20 slices of 4 mm: not squashed
    layout = evaluation_figure(rows, keep, tmp_path / "all.png", max_cases=4, title="test")
    assert layout["pair"] == ("CBCT", "CT")
    assert layout["columns"] == ["source", "tiny-unet", "identity", "histogram-matching", "truth"]
    assert layout["rows"] == [f"p{i} {view}" for i in range(3) for view in ("axial", "coronal")]


def _cases(root, bundle):
    from medtrans_training.data import cases_from_spec

    return cases_from_spec(str(root), bundle.metadata["modalities"], bundle.metadata.get("spacing"))


def test_cbct_figure_draws_each_case_of_a_config_from_its_cache(tmp_path):
    pytest.importorskip("MedTransCore.phantoms.cone_beam")
    pytest.importorskip("itk", reason="the cone-beam simulation needs itk-rtk (the cbct extra)")
    from medtrans_training.cbct_figure import main

    z, y, x = np.mgrid[:24, :24, :24] - 11.5
    body = (x / 11.5) ** 2 + (y / 9.0) ** 2 < 1
    write_volume(tmp_path / "cts" / "ct0.nii.gz", np.where(body, 20.0, -1000.0) + 900.0 * (x**2 + y**2 < 4), (4.0,) * 3)
    cache = tmp_path / "cache"
    config = {
        "stage": "unet",
        "data": {
            "source": "folder",
            "root": str(tmp_path / "cts"),
            "layout": "flat",
            "modalities": ["CBCT", "CT"],
            "pairs": [["CBCT", "CT"]],
            "cbct_simulation": {"views": 36, "panel_mm": [120, 120], "pixel_mm": 4.0, "cache": str(cache)},
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "docs" / "cbct.png"
    main([str(path), "--out", str(out)])
    height, width = imread(out).shape[:2]
    assert 1000 <= width <= 1200 and height > 150
    (entry,) = cache.glob("*.json")
    assert json.loads(entry.read_text())["metadata"]["settings"]["views"] == 36
    with pytest.raises(SystemExit):
        main([str(path), "--out", str(out), "--cases", "nope"])
