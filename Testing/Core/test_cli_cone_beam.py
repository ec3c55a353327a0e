"""``medtrans phantom --cbct-from``: a CBCT simulated from a CT, written next to it, labelled, never over a file."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from .helpers import assert_same_geometry
from .test_cli import run_cli, write
from .test_cone_beam import water_cylinder

pytest.importorskip("itk")

QUICK = ["--views", "24", "--mas", "none", "--scatter", "0", "--recon-spacing", "4"]


@pytest.fixture
def ct_file(tmp_path):
    return write(water_cylinder(70.0, size=48, slices=8), tmp_path / "ct.nii.gz")


def test_cbct_from_writes_the_labelled_cbct_the_ct_its_field_of_view_and_the_settings(tmp_path, ct_file, capsys):
    out = tmp_path / "pair"
    assert run_cli("phantom", "--cbct-from", ct_file, "--out", out, *QUICK, "--progress-format", "lines") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("PROGRESS 0.0000") and any(line.startswith("PROGRESS 1.0000") for line in lines)
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["synthetic"] == "simulated CBCT" and result["out"] == str(out)

    ct = sitk.ReadImage(ct_file)
    cbct = sitk.ReadImage(str(out / "CBCT.nii.gz"))
    assert_same_geometry(cbct, ct)
    assert "SYNTHETIC CBCT" in cbct.GetMetaData("descrip")
    copy = sitk.ReadImage(str(out / "CT.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(copy), sitk.GetArrayFromImage(ct))
    assert "SYNTHETIC" not in copy.GetMetaData("descrip") if copy.HasMetaDataKey("descrip") else True
    fov = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "field_of_view.nii.gz")))
    assert set(np.unique(fov)) == {0, 1}
    report = json.loads((out / "cbct_simulation.json").read_text())
    assert report["settings"]["views"] == 24 and report["settings"]["mas"] is None
    assert report["source"] == ct_file and report["calibration"]["mu_water_per_mm"] > 0
    water = sitk.GetArrayFromImage(cbct)[2:6, 20:28, 20:28]
    assert abs(water.mean()) < 20


def test_cbct_from_refuses_to_replace_its_outputs_without_overwrite(tmp_path, ct_file, capsys):
    out = tmp_path / "pair"
    assert run_cli("phantom", "--cbct-from", ct_file, "--out", out, *QUICK) == 0
    assert "SYNTHETIC CBCT" in capsys.readouterr().out
    before = (out / "CBCT.nii.gz").stat().st_mtime_ns
    assert run_cli("phantom", "--cbct-from", ct_file, "--out", out, *QUICK, "--seed", "3") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "CBCT.nii.gz").stat().st_mtime_ns == before
    assert run_cli("phantom", "--cbct-from", ct_file, "--out", out, *QUICK, "--overwrite") == 0


def test_a_missing_ct_or_a_bad_setting_is_a_one_line_error(tmp_path, ct_file, capsys):
    out = tmp_path / "pair"
    assert run_cli("phantom", "--cbct-from", tmp_path / "nowhere.nii.gz", "--out", out) == 1
    assert "no such file" in capsys.readouterr().err
    assert run_cli("phantom", "--cbct-from", ct_file, "--out", out, "--energy", "500") == 1
    assert "energy_kev" in capsys.readouterr().err
    assert not out.exists()
    assert run_cli("phantom", "--cbct-from", ct_file, "--out", out, "--views", "3") == 2  # argparse's range check


def test_a_phantom_can_take_its_cbct_from_the_rtk_simulation(tmp_path):
    args = ["--anatomy", "head", "--size", "32", "--spacing", "5", "--cbct-physics", *QUICK]
    assert run_cli("phantom", "--out", tmp_path, *args) == 0
    cbct = sitk.ReadImage(str(tmp_path / "CBCT.nii.gz"))
    assert cbct.GetSize() == (32, 32, 32)
    info = json.loads((tmp_path / "phantom.json").read_text())["parameters"]["cbct_physics"]
    assert info["synthetic"] == "simulated CBCT" and info["settings"]["views"] == 24


def test_the_scan_options_default_to_the_simulators_own_settings(tmp_path):
    from MedTransCore.cli.main import build_parser
    from MedTransCore.cli.phantom import _scan_settings
    from MedTransCore.phantoms import ConeBeamSettings

    args = build_parser().parse_args(["phantom", "--cbct-from", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path)])
    assert _scan_settings(args) == ConeBeamSettings()
