"""The memory guard: it judges a run from the header, before any voxel is read or whole-volume buffer allocated, and
its estimate is checked against the measured peak of a fresh process."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

import MedTransCore.translate as translate_module
from MedTransCore.benchmark_memory import estimate_rows, estimate_table
from MedTransCore.benchmark_table import format_table
from MedTransCore.bundles import find_bundle
from MedTransCore.errors import MemoryGuardError
from MedTransCore.io import read_header, reading
from MedTransCore.memory import ENV_LIMIT, check_memory, resident_mb
from MedTransCore.translate import estimate_memory, translate_image

from .test_cli import run_cli, translate_args
from .test_translate import tiny_identity_bundle


@pytest.fixture
def no_voxels_read(monkeypatch):
    """Reading any voxel fails the test: the guard must decide from the header."""

    def read_voxels(header):
        raise AssertionError(f"the voxels of {header.path} were read")

    monkeypatch.setattr(reading, "_read_voxels", read_voxels)


def limit_above_what_this_process_holds(monkeypatch, spare_mb: float) -> None:
    """``$MEDTRANS_MEMORY_LIMIT_MB`` leaving ``spare_mb`` for the run on top of this test process."""
    import torch  # noqa: F401  (imported before measuring, as the CLI has it before its check)

    import MedTransCore.models.baselines  # noqa: F401

    monkeypatch.setenv(ENV_LIMIT, str(resident_mb() + spare_mb))


def write_bomb(path) -> str:
    """A NRRD declaring 1500^3 doubles (25 GiB) in a few kB of gzip: the data stream ends long before that."""
    header = "NRRD0004\ntype: double\ndimension: 3\nsizes: 1500 1500 1500\nspacings: 1 1 1\nencoding: gzip\nendian: little\n\n"
    path.write_bytes(header.encode() + gzip.compress(bytes(3 * 2**20)))
    return str(path)


def write_volume(path, size) -> str:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(0, 300, size[::-1]).astype(np.int16) - 500)
    sitk.WriteImage(image, str(path))
    return str(path)


def test_a_gzip_nrrd_bomb_is_refused_from_its_header_before_a_voxel_is_read(
    tmp_path, capsys, monkeypatch, no_voxels_read
):
    monkeypatch.setenv(ENV_LIMIT, "4000")
    bomb = write_bomb(tmp_path / "bomb.nrrd")
    header = read_header(bomb)
    assert header.size == (1500, 1500, 1500) and header.voxels * header.pixel_bytes / 2**30 > 25
    assert run_cli(*translate_args(bomb, tmp_path / "out.nrrd", "--model", "identity")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "1500x1500x1500" in err and "memory limit is 4,000 MB" in err
    assert not (tmp_path / "out.nrrd").exists()


def test_evaluate_refuses_the_bomb_too(tmp_path, capsys, monkeypatch, no_voxels_read):
    monkeypatch.setenv(ENV_LIMIT, "4000")
    bomb = write_bomb(tmp_path / "bomb.nrrd")
    assert run_cli("evaluate", "--prediction", bomb, "--reference", bomb, "--modality", "CT") == 1
    assert "reading " in capsys.readouterr().err


def test_a_256_cubed_volume_is_refused_with_200_mb_to_spare_but_a_small_one_runs(tmp_path, capsys, monkeypatch):
    big, small = write_volume(tmp_path / "big.nrrd", (256, 256, 256)), write_volume(tmp_path / "small.nrrd", (24,) * 3)
    limit_above_what_this_process_holds(monkeypatch, 200.0)
    assert run_cli(*translate_args(small, tmp_path / "small-out.nrrd", "--model", "identity")) == 0
    capsys.readouterr()

    def read_voxels(header):
        raise AssertionError("the 256^3 voxels were read")

    monkeypatch.setattr(reading, "_read_voxels", read_voxels)
    assert run_cli(*translate_args(big, tmp_path / "big-out.nrrd", "--model", "identity")) == 1
    err = capsys.readouterr().err
    assert "translating a 256x256x256 volume with 'identity' needs about" in err and ENV_LIMIT in err


def test_translate_image_checks_before_its_first_copy_of_an_image_in_memory(monkeypatch):
    image = sitk.Image([256, 256, 256], sitk.sitkFloat32)  # what Slicer or the web app hand over
    limit_above_what_this_process_holds(monkeypatch, 100.0)

    def too_late(*args, **kwargs):
        raise AssertionError("a whole-volume step ran before the memory guard")

    for step in ("load_translator", "body_mask", "affine_image", "check_plausibility"):
        monkeypatch.setattr(translate_module, step, too_late)
    with pytest.raises(MemoryGuardError, match=r"256x256x256 volume .* needs about"):
        translate_image(image, "CBCT", "CT", model="identity")


@pytest.mark.parametrize(
    "source_spacing, model_spacing, grid",
    # A 6 m source through a 3 mm model; a 0.1 mm model (the finest a bundle may declare) on a 5 mm source.
    [((100.0,) * 3, (3.0,) * 3, "2133x2133x2133"), ((5.0,) * 3, (0.1,) * 3, "3200x3200x3200")],
    ids=["6 m source", "0.1 mm model"],
)
def test_a_huge_resampling_grid_is_refused_before_it_is_allocated(
    tmp_path, capsys, monkeypatch, source_spacing, model_spacing, grid
):
    bundle = tiny_identity_bundle(tmp_path / "bundle", spacing=model_spacing)
    image = sitk.ReadImage(write_volume(tmp_path / "source.nrrd", (64, 64, 64)))
    image.SetSpacing(source_spacing)
    sitk.WriteImage(image, str(tmp_path / "source.nrrd"))

    def too_late(*args, **kwargs):
        raise AssertionError("the resampling grid was allocated")

    monkeypatch.setattr(translate_module, "resample_to_spacing", too_late)
    monkeypatch.delenv(ENV_LIMIT, raising=False)  # the default limit: a share of the available memory
    assert run_cli(*translate_args(tmp_path / "source.nrrd", tmp_path / "out.nrrd", "--model", bundle.path)) == 1
    err = capsys.readouterr().err
    assert f"({grid} on its grid) needs about" in err and "of the available memory" in err


def test_the_estimate_counts_every_full_volume_copy_not_only_the_model_grid():
    bundle = find_bundle("phantom-head-cbct-ct-unet")
    # The CBCT of the issue: 512x512x400 int16 at 0.5 mm. The old guard counted the 3 mm model grid (394 MB).
    estimate = estimate_memory((512, 512, 400), (0.5, 0.5, 0.5), bundle, read_bytes_per_voxel=8.0, write=True)
    voxels = 512 * 512 * 400
    assert estimate.needed_mb * 2**20 > 20 * voxels  # measured: about 20 bytes per source voxel on top of imports
    assert estimate.peak_stage == "back" and estimate.model_voxels < voxels / 100


def test_a_limit_that_is_not_a_positive_number_is_refused(monkeypatch):
    for value in ("lots", "0", "-5", "nan"):
        monkeypatch.setenv(ENV_LIMIT, value)
        with pytest.raises(MemoryGuardError, match="not a positive number"):
            check_memory(1.0, "anything")


@pytest.mark.slow
def test_the_estimate_is_not_below_the_measured_peak_of_a_fresh_process():
    rows = estimate_rows([find_bundle("histogram-matching")], shapes=((96, 96, 64),))
    (row,) = rows
    assert row["kind"] == "memory_estimate" and row["size"] == "96x96x64"
    assert 0.5 < row["ratio"] <= 1.0, row  # measured / estimated: no underestimate, and not wildly above
    table = "\n".join(estimate_table(rows))
    assert "estimate versus measured peak" in table and "| histogram-matching | CBCT->CT | 96x96x64 |" in table


def test_the_benchmark_table_shows_the_estimate_rows_as_their_own_table():
    row = {"kind": "memory_estimate", "model": "m", "pair": "CBCT->CT", "size": "128x128x128", "model_grid": "43x43x43"}
    row |= {"estimate_mb": 600.0, "measured_mb": 700.0, "ratio": 1.167, "peak_stage": "back"}
    table = format_table([row])
    assert "## Memory guard: estimate versus measured peak" in table
    assert "| m | CBCT->CT | 128x128x128 | 43x43x43 | 600.0 | 700.0 | 1.167 | back |" in table
    assert "UNDERESTIMATED" in table
