"""Bad arguments and unwritable outputs through the command line: one ``error:`` line, no traceback, no work done."""

import errno
import os
import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore import translate as core

from .helpers import ct_like_volume
from .test_cli import run_cli, translate_args, write
from .test_cli_output_safety import case, one_error_line, tree, write_manifest


@pytest.fixture
def source(tmp_path):
    return write(ct_like_volume(), tmp_path / "in.nii.gz")


@pytest.fixture
def no_translation(monkeypatch):
    """Fail the test if anything is translated: these errors must come before any work."""

    def translate_image(*args, **kwargs):
        raise AssertionError("translated before refusing the arguments")

    monkeypatch.setattr(core, "translate_image", translate_image)


def usage_error(capsys, option: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"error: argument {option}" in err, err
    return err


@pytest.fixture
def read_only(tmp_path):
    """A folder this process cannot write in: chmod for a user, a read-only tmpfs for root (who ignores modes)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


# --- unwritable outputs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sct.nii.gz", "sct_dicom", "new/sct.nii.gz"])
def test_translating_into_a_read_only_folder_is_refused_up_front(read_only, source, capsys, no_translation, name):
    assert run_cli(*translate_args(source, read_only / name, "--model", "identity")) == 1
    one_error_line(capsys, "read-only")


def test_evaluate_json_into_a_read_only_folder_is_refused(read_only, tmp_path, source, capsys):
    args = ["evaluate", "--prediction", source, "--reference", source, "--modality", "CT"]
    assert run_cli(*args, "--json", read_only / "m.json") == 1
    one_error_line(capsys, "read-only")


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_an_output_whose_parent_is_a_file_is_refused(tmp_path, source, capsys, no_translation, command):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    output = tmp_path / "notes.txt" / "out.nii.gz"
    if command == "translate":
        args = translate_args(source, output, "--model", "identity")
    else:
        args = ["evaluate", "--prediction", source, "--reference", source, "--modality", "CT", "--json", output]
    assert run_cli(*args) == 1
    one_error_line(capsys, "is a file")


@pytest.mark.parametrize("command", ["batch", "phantom"])
def test_an_out_folder_that_is_an_existing_file_is_refused(tmp_path, capsys, command):
    (tmp_path / "results").write_text("a file")
    if command == "batch":
        write(ct_like_volume(oblique=False), tmp_path / "in.nrrd")
        args = ["batch", write_manifest(tmp_path / "cohort.csv", [case("a")]), "--model", "identity"]
    else:
        args = ["phantom", "--size", "16"]
    assert run_cli(*args, "--out", tmp_path / "results") == 1
    one_error_line(capsys, "is a file")
    assert (tmp_path / "results").read_text() == "a file"


def test_a_247_byte_output_name_is_written(tmp_path, source, capsys):
    name = "a" * 240 + ".nii.gz"
    args = translate_args(source, tmp_path / name, "--model", "identity", "--progress-format", "lines")
    assert run_cli(*args) == 0
    assert sitk.ReadImage(str(tmp_path / name)).GetSize() == ct_like_volume().GetSize()
    assert tree(tmp_path) == sorted(["in.nii.gz", name])


def test_a_long_evaluate_json_name_is_written(tmp_path, source, capsys):
    name = "m" * 245 + ".json"
    args = ["evaluate", "--prediction", source, "--reference", source, "--modality", "CT", "--json", tmp_path / name]
    assert run_cli(*args) == 0
    assert tree(tmp_path) == sorted(["in.nii.gz", name])


@pytest.mark.parametrize("name", ["a" * 249 + ".nii.gz", "a" * 249 + ".nhdr"])
def test_a_name_too_long_for_the_file_system_is_refused_up_front(tmp_path, source, capsys, no_translation, name):
    # 256 bytes, or a header that fits with a data file (.raw.gz) that does not.
    assert run_cli(*translate_args(source, tmp_path / name, "--model", "identity")) == 1
    one_error_line(capsys, "bytes long")
    assert tree(tmp_path) == ["in.nii.gz"]


# --- options out of range ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", ["0", "-1", "100000", "many"])
def test_steps_outside_1_to_1000_are_a_usage_error(tmp_path, source, capsys, steps):
    assert run_cli(*translate_args(source, tmp_path / "o.nii.gz", "--model", "identity", "--steps", steps)) == 2
    usage_error(capsys, "--steps")
    assert tree(tmp_path) == ["in.nii.gz"]


@pytest.mark.parametrize("seed", [str(2**64), str(2**32), "-1"])
def test_a_seed_outside_0_to_2_32_is_a_usage_error(tmp_path, source, capsys, seed):
    assert run_cli(*translate_args(source, tmp_path / "o.nii.gz", "--model", "identity", "--seed", seed)) == 2
    assert "4294967295" in usage_error(capsys, "--seed")


def test_the_help_says_the_ranges(capsys):
    assert run_cli("translate", "--help") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 to 1000" in out and "0 to 4294967295" in out


@pytest.mark.parametrize("size", [["5000"], ["4"], ["16", "16"]])
def test_a_phantom_size_out_of_bounds_is_refused_before_allocating(tmp_path, capsys, size):
    code = run_cli("phantom", "--out", tmp_path / "p", "--size", *size)
    err = capsys.readouterr().err
    assert code in (1, 2) and "--size" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("spacing", ["0", "-2", "inf", "nan"])
def test_a_phantom_spacing_that_is_not_a_positive_number_is_a_usage_error(tmp_path, capsys, spacing):
    assert run_cli("phantom", "--out", tmp_path / "p", "--size", "16", "--spacing", spacing) == 2
    usage_error(capsys, "--spacing")


@pytest.mark.parametrize(
    "args",
    [
        ["translate", "in.nii.gz", "--source-modality", "ct", "--target-modality", "CT", "--output", "o.nii.gz"],
        ["translate", "in.nii.gz", "--source-modality", "CT", "--target-modality", "MRT2", "--output", "o.nii.gz"],
        ["evaluate", "--prediction", "p.nii.gz", "--reference", "r.nii.gz", "--modality", "ct"],
    ],
)
def test_an_unknown_or_lower_case_modality_is_a_usage_error(capsys, args):
    assert run_cli(*args) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_an_unknown_modality_in_a_manifest_is_refused_naming_the_line(tmp_path, capsys):
    write(ct_like_volume(oblique=False), tmp_path / "in.nrrd")
    manifest = write_manifest(tmp_path / "cohort.csv", [case("a"), {**case("b"), "source_modality": "ct"}])
    assert run_cli("batch", manifest, "--out", tmp_path / "out", "--model", "identity") == 1
    one_error_line(capsys, "line 3", "source_modality 'ct'")
    assert not (tmp_path / "out").exists()


# --- uncertainty and output names are checked before translating ---------------------------------------------------


@pytest.mark.parametrize("samples", ["0", "1"])
def test_uncertainty_with_fewer_than_two_samples_is_refused_up_front(tmp_path, source, capsys, samples):
    args = translate_args(source, tmp_path / "o.nii.gz", "--uncertainty", tmp_path / "s.nii.gz", "--samples", samples)
    assert run_cli(*args) == 2
    usage_error(capsys, "--samples")
    assert tree(tmp_path) == ["in.nii.gz"]


@pytest.mark.parametrize(
    ("uncertainty", "words"),
    [
        ("std.png", "unknown image format"),
        ("std.NII.GZ", "lower case"),
        ("o.nii.gz", "same place"),
        ("in.nii.gz", "is the input"),
    ],
)
def test_a_bad_uncertainty_path_is_refused_before_translating(
    tmp_path, source, capsys, no_translation, uncertainty, words
):
    args = translate_args(source, tmp_path / "o.nii.gz", "--uncertainty", tmp_path / uncertainty, "--overwrite")
    assert run_cli(*args) == 1
    one_error_line(capsys, words)


def test_an_existing_uncertainty_file_needs_overwrite(tmp_path, source, capsys, no_translation):
    (tmp_path / "s.nii.gz").write_text("precious")
    assert run_cli(*translate_args(source, tmp_path / "o.nii.gz", "--uncertainty", tmp_path / "s.nii.gz")) == 1
    one_error_line(capsys, "--overwrite")


@pytest.mark.parametrize(
    ("output", "target", "words"),
    [
        ("o.png", "CT", "unknown output extension '.png'"),
        ("o.NII.GZ", "CT", "lower case"),
        ("o.MHA", "CT", "lower case"),
        ("t2_dicom", "MR_T2", "only for CT-like targets"),
    ],
)
def test_an_output_name_that_cannot_be_written_is_refused_before_translating(
    tmp_path, source, capsys, no_translation, output, target, words
):
    args = ["translate", source, "--source-modality", "CT", "--target-modality", target, "--output", tmp_path / output]
    assert run_cli(*args) == 1
    one_error_line(capsys, words)
    assert tree(tmp_path) == ["in.nii.gz"]


# --- failures while writing ----------------------------------------------------------------------------------------


def test_a_failed_move_into_place_is_one_error_line_and_leaves_nothing(tmp_path, source, capsys, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    args = translate_args(source, tmp_path / "out" / "o.nii.gz", "--model", "identity", "--progress-format", "lines")
    assert run_cli(*args) == 1
    one_error_line(capsys, "could not move", "permission denied")
    assert tree(tmp_path) == ["in.nii.gz"]


def test_any_other_os_error_is_one_error_line(tmp_path, source, capsys, monkeypatch):
    def translate_image(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/scratch/cache")

    monkeypatch.setattr(core, "translate_image", translate_image)
    assert run_cli(*translate_args(source, tmp_path / "o.nii.gz")) == 1
    one_error_line(capsys, "/scratch/cache: No space left on device")


# --- evaluate ------------------------------------------------------------------------------------------------------


def test_registering_volumes_too_small_to_register_is_refused(tmp_path, capsys):
    tiny = sitk.GetImageFromArray(np.arange(8, dtype=np.float32).reshape(2, 2, 2) * 100.0 - 1000.0)
    p, r = write(tiny, tmp_path / "p.nrrd"), write(tiny, tmp_path / "r.nrrd")
    args = ["evaluate", "--prediction", p, "--reference", r, "--modality", "CT", "--register", "rigid"]
    assert run_cli(*args, "--json", tmp_path / "m.json") == 1
    one_error_line(capsys, "too small to register", "8 voxels")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("which", ["prediction", "mask"])
def test_nan_in_the_prediction_or_the_mask_is_refused(tmp_path, capsys, ext, which):
    reference = ct_like_volume(oblique=False)
    array = sitk.GetArrayFromImage(reference)
    mask = (array > -500).astype(np.float32)
    (array if which == "prediction" else mask)[2, 3, 4] = np.nan
    paths = {}
    for name, values in (("prediction", array), ("mask", mask)):
        image = sitk.GetImageFromArray(values)
        image.CopyInformation(reference)
        paths[name] = write(image, tmp_path / f"{name}{ext}")
    r = write(reference, tmp_path / "r.nrrd")
    prediction = paths["prediction"] if which == "prediction" else r
    args = ["evaluate", "--prediction", prediction, "--reference", r, "--modality", "CT", "--mask", paths["mask"]]
    assert run_cli(*args) == 1
    one_error_line(capsys, "NaN")


# --- the batch manifest and status ---------------------------------------------------------------------------------


def test_a_latin_1_manifest_is_refused_naming_the_encoding(tmp_path, capsys):
    write(ct_like_volume(oblique=False), tmp_path / "in.nrrd")
    manifest = write_manifest(tmp_path / "cohort.csv", [case("Müller")], encoding="latin-1")
    assert run_cli("batch", manifest, "--out", tmp_path / "out", "--model", "identity") == 1
    one_error_line(capsys, "not UTF-8")
    assert not (tmp_path / "out").exists()


def test_a_manifest_with_a_byte_order_mark_is_read(tmp_path, capsys):
    write(ct_like_volume(oblique=False), tmp_path / "in.nrrd")
    manifest = write_manifest(tmp_path / "cohort.csv", [case("Müller")], encoding="utf-8-sig")  # as Excel writes it
    assert run_cli("batch", manifest, "--out", tmp_path / "out", "--model", "identity") == 0
    assert (tmp_path / "out" / "Müller" / "synthetic_CT.nii.gz").is_file()


def test_a_truncated_status_file_from_an_earlier_batch_is_one_error_line(tmp_path, capsys):
    write(ct_like_volume(oblique=False), tmp_path / "in.nrrd")
    manifest = write_manifest(tmp_path / "cohort.csv", [case("a")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "status.json").write_text('{"a": {"status": "do')
    assert run_cli("batch", manifest, "--out", tmp_path / "out", "--model", "identity") == 1
    one_error_line(capsys, "status.json", "not valid JSON", "delete it")
    assert tree(tmp_path / "out") == ["status.json"]
