"""Geometry at the edges: sizes that are no multiple of the model spacing, DICOM series whose slices do not make one
regular volume, and volumes far smaller than the model's field of view."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedTransCore.io import read_image, write_dicom_series
from MedTransCore.io.dicom import generate_uid
from MedTransCore.models.baselines import IdentityTranslator
from MedTransCore.models.unet import build_unet_network
from MedTransCore.preprocess import resample_to_spacing
from MedTransCore.translate import translate_image
from Testing.Training.helpers import TINY_UNET, tiny_unet_bundle

from .test_cli import run_cli, translate_args
from .test_translate import tiny_identity_bundle


def gradient_body(size, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    """Soft tissue filling every voxel, brighter along x, y and z (HU): no background anywhere."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in size[::-1]], indexing="ij")
    image = sitk.GetImageFromArray(100.0 + 8.0 * x + 6.0 * y + 4.0 * z)
    image.SetSpacing(spacing)
    return image


def last_slices(array: np.ndarray) -> dict[str, np.ndarray]:
    """The far-edge slice along x, y and z of a (Z, Y, X) array."""
    return {"x": array[:, :, -1], "y": array[:, -1, :], "z": array[-1]}


def translate_file(tmp_path, image: sitk.Image, bundle_path, source="CBCT", target="CT") -> np.ndarray:
    sitk.WriteImage(image, str(tmp_path / "source.nrrd"))
    out = tmp_path / "synthetic.nrrd"
    argv = translate_args(tmp_path / "source.nrrd", out, "--model", bundle_path)
    argv[argv.index("--source-modality") + 1], argv[argv.index("--target-modality") + 1] = source, target
    assert run_cli(*argv) == 0
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out)))


def test_the_far_edge_keeps_the_body_when_no_axis_is_a_multiple_of_the_model_spacing(tmp_path):
    # 31, 29 and 25 mm at 3 mm: the model grid's last voxel centre stops 1-3 mm short of the source's on every axis.
    bundle = tiny_identity_bundle(tmp_path / "coarse", spacing=(3.0, 3.0, 3.0))
    image = gradient_body((31, 29, 25))
    out = translate_file(tmp_path, image, bundle.path)
    source = sitk.GetArrayFromImage(image)
    for axis, (got, want) in zip("xyz", zip(last_slices(out).values(), last_slices(source).values())):
        # The clamped border is off by the gradient times how far the model grid stops short on each axis
        # (8 HU/mm x 3 mm + 6 x 1 + 4 x 3 = 42 HU at the far corner); the old constant fill put the volume's
        # minimum (100 HU) there, 240 HU and more below the truth.
        assert np.abs(got - want).max() <= 42.5, f"far-edge slice along {axis} is off"


def test_the_far_edge_of_a_tiny_unet_output_is_no_constant_fill(tmp_path):
    torch.manual_seed(0)
    bundle = tiny_unet_bundle(tmp_path / "tiny-unet", build_unet_network(**TINY_UNET).eval())
    # 25, 29 and 21 mm at the bundle's 2 mm: 12.5, 14.5 and 10.5 model voxels, rounded down on every axis.
    out = translate_file(tmp_path, gradient_body((25, 29, 21)), bundle.path, source="CBCT")
    for axis, edge in last_slices(out).items():
        assert np.ptp(edge) > 0.0, f"the last slice along {axis} is a constant fill"
        assert not np.all(edge == out.min())


def test_upsampling_gives_the_network_no_fake_background_slab_at_the_far_edge(tmp_path, monkeypatch):
    seen = []
    original = IdentityTranslator.prepare

    def record(self, source, mask, *args):
        seen.append(source.clone())
        return original(self, source, mask, *args)

    monkeypatch.setattr(IdentityTranslator, "prepare", record)
    bundle = tiny_identity_bundle(tmp_path / "fine", spacing=(1.0, 1.0, 1.0))
    translate_image(gradient_body((10, 9, 8), spacing=(3.0, 3.0, 3.0)), "CBCT", "CT", model=bundle.path, device="cpu")
    # The body fills every source voxel, so nothing the network sees may be background (-1 normalised).
    assert seen and seen[0].min() > -0.9


def test_resampling_to_a_finer_spacing_extends_the_border_instead_of_a_constant():
    fine = resample_to_spacing(gradient_body((10, 9, 8), spacing=(3.0, 3.0, 3.0)), (1.0, 1.0, 1.0), default_value=-1e4)
    assert sitk.GetArrayFromImage(fine).min() >= 100.0


# --- DICOM series -------------------------------------------------------------------------------------------------


def ct_series(folder, depth: int = 16, spacing: float = 3.0):
    array = np.random.default_rng(0).uniform(-1000.0, 1000.0, (depth, 8, 8)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, spacing))
    return write_dicom_series(image, folder, series_description="axial CT")


def retag(path, tags: dict[str, str]) -> None:
    """Rewrite one slice file with some tags changed (everything else, UIDs included, as it was)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image = reader.Execute()
    for key in reader.GetMetaDataKeys():
        image.SetMetaData(key, reader.GetMetaData(key))
    for key, value in tags.items():
        image.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(image)


def refused_dicom(tmp_path, capsys, folder) -> str:
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli(*translate_args(folder, out / "synthetic.nrrd", "--model", "identity")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "WARNING: In" not in err, err
    assert list(out.iterdir()) == []
    return err


def test_a_series_with_missing_slices_is_refused_saying_where(tmp_path, capsys):
    folder = ct_series(tmp_path / "gap", depth=64)
    for k in range(20, 28):
        (folder / f"IM{k:05d}.dcm").unlink()  # 8 of 64 slices
    err = refused_dicom(tmp_path, capsys, folder)
    assert "not evenly spaced: 27.00 mm between IM00019.dcm and IM00028.dcm" in err
    assert "about 8 slice(s) missing" in err and "refused" in err


def test_a_series_with_half_its_slices_tilted_is_refused(tmp_path, capsys):
    folder = ct_series(tmp_path / "tilted")
    tilted = f"1\\0\\0\\0\\{np.cos(np.radians(30)):.6f}\\{np.sin(np.radians(30)):.6f}"
    for path in sorted(folder.glob("*.dcm"))[8:]:
        retag(path, {"0020|0037": tilted})
    err = refused_dicom(tmp_path, capsys, folder)
    assert "do not share one orientation: 8 of 16" in err and "30.0 degrees" in err


def test_a_series_with_every_position_duplicated_is_refused(tmp_path, capsys):
    folder = ct_series(tmp_path / "twice")
    for path in sorted(folder.glob("*.dcm")):
        copy = path.with_name(f"copy_{path.name}")
        shutil.copy(path, copy)
        retag(copy, {"0008|0018": generate_uid()})  # another instance at the same place
    assert "16 slice(s) share a position with another" in refused_dicom(tmp_path, capsys, folder)


def test_a_series_with_a_truncated_slice_file_is_refused_naming_it(tmp_path, capsys):
    folder = ct_series(tmp_path / "truncated")
    path = folder / "IM00007.dcm"
    path.write_bytes(path.read_bytes()[:-200])
    err = refused_dicom(tmp_path, capsys, folder)
    assert "cannot be read as part of a series" in err and "IM00007.dcm" in err


def test_a_folder_with_two_series_is_refused_listing_both(tmp_path, capsys):
    mixed = tmp_path / "mixed"
    for name, depth in (("a", 5), ("b", 7)):
        series = ct_series(tmp_path / name, depth=depth)
        mixed.mkdir(exist_ok=True)
        for path in series.glob("*.dcm"):
            shutil.copy(path, mixed / f"{name}_{path.name}")
    err = refused_dicom(tmp_path, capsys, mixed)
    assert "holds 2 DICOM series" in err and "(7 files)" in err and "(5 files)" in err
    assert err.count("'SYNTHETIC axial CT'") == 2 and err.count("2.25.") == 2


def test_itk_warnings_stay_out_of_the_terminal_for_a_series_within_tolerance(tmp_path, capfd):
    folder = ct_series(tmp_path / "jitter")
    retag(folder / "IM00006.dcm", {"0020|0032": "0\\0\\15.2"})  # 0.2 mm off its place: accepted
    image, _ = read_image(folder)
    assert image.GetDepth() == 16
    assert "WARNING" not in capfd.readouterr().err


# --- far smaller than the model's field of view --------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, spacing", [((2, 2, 2), (1.0, 1.0, 1.0)), ((20, 18, 12), (1e-4, 1e-4, 1e-4))], ids=["2x2x2", "0.1um"]
)
def test_a_volume_far_smaller_than_the_model_gets_a_warning(tmp_path, capsys, size, spacing):
    bundle = tiny_identity_bundle(tmp_path / "coarse", spacing=(3.0, 3.0, 3.0))
    image = gradient_body(size, spacing)
    sitk.WriteImage(image, str(tmp_path / "tiny.nrrd"))
    argv = translate_args(tmp_path / "tiny.nrrd", tmp_path / "out.nrrd", "--model", bundle.path)
    assert run_cli(*argv) == 0
    err = capsys.readouterr().err
    assert "warning: the image is tiny for the model" in err and "close to constant" in err
    assert run_cli(*argv, "--strict", "--overwrite") == 1
