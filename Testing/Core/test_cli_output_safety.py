"""Outputs through the command line: never an input, never an unchecked existing file, all of a run or nothing."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore import translate as core
from MedTransCore.io import write_dicom_series

from .helpers import ct_like_volume
from .test_cli import run_cli, translate_args, write


def tree(folder) -> list[str]:
    """Every path under ``folder`` (hidden ones too), relative, sorted: what a run left behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_error_line(capsys, *words) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def fake_translation(monkeypatch) -> None:
    """Make ``translate_image`` instant: the source as the result and as the uncertainty map."""

    def translate_image(image, source, target, **kwargs):
        settings = {
            "model": "identity",
            "version": "0",
            "family": "identity",
            "steps": 0,
            "seed": 0,
            "device": "cpu",
            "source_modality": source,
            "target_modality": target,
            "uncertainty_samples": kwargs.get("uncertainty_samples", 0),
        }
        bundle = core.select_model(source, target, "identity")
        return core.TranslationResult(image, sitk.Image(image), bundle, settings, [])

    monkeypatch.setattr(core, "translate_image", translate_image)


@pytest.fixture
def source(tmp_path):
    return write(ct_like_volume(), tmp_path / "in.nii.gz")


# --- outputs that reach an input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_output_reaching_the_input_through_a_missing_folder_is_refused(tmp_path, source, capsys, overwrite):
    before = open(source, "rb").read()
    output = f"{tmp_path}/x/../in.nii.gz"
    assert run_cli(*translate_args(source, output, "--model", "identity", *overwrite)) == 1
    one_error_line(capsys, "is the input")
    assert open(source, "rb").read() == before and tree(tmp_path) == ["in.nii.gz"]


def test_an_output_that_reads_as_the_input_is_refused_even_where_a_link_leads_elsewhere(tmp_path, source, capsys):
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    (tmp_path / "x").symlink_to(tmp_path / "elsewhere" / "deeper")
    assert run_cli(*translate_args(source, f"{tmp_path}/x/../in.nii.gz", "--model", "identity")) == 1
    one_error_line(capsys, "is the input")
    assert tree(tmp_path / "elsewhere") == ["deeper"]


@pytest.mark.parametrize("output", ["x/../series", "series/out.nii.gz", "x/../series/out.nii.gz"])
def test_an_output_reaching_an_input_dicom_folder_is_refused(tmp_path, capsys, output):
    series = write_dicom_series(ct_like_volume(), tmp_path / "series", series_description="source")
    before = {p.name: p.read_bytes() for p in series.iterdir()}
    args = translate_args(series, f"{tmp_path}/{output}", "--model", "identity", "--overwrite")
    assert run_cli(*args) == 1
    one_error_line(capsys, "input")
    assert {p.name: p.read_bytes() for p in series.iterdir()} == before
    assert tree(tmp_path) == sorted(["series", *(f"series/{name}" for name in before)])


def test_an_existing_file_reached_through_a_missing_folder_is_replaced_only_with_overwrite(tmp_path, source, capsys):
    (tmp_path / "other.nii.gz").write_text("precious")
    output = f"{tmp_path}/x/../other.nii.gz"
    assert run_cli(*translate_args(source, output, "--model", "identity")) == 1
    one_error_line(capsys, "--overwrite")
    assert (tmp_path / "other.nii.gz").read_text() == "precious" and tree(tmp_path) == ["in.nii.gz", "other.nii.gz"]
    assert run_cli(*translate_args(source, output, "--model", "identity", "--overwrite")) == 0
    assert sitk.ReadImage(str(tmp_path / "other.nii.gz")).GetSize() == ct_like_volume().GetSize()
    assert tree(tmp_path) == ["in.nii.gz", "other.nii.gz"], "no folder x is left behind"


@pytest.mark.parametrize(("name", "data"), [("out.nhdr", "out.raw.gz"), ("out.mhd", "out.zraw")])
def test_a_detached_output_whose_data_file_exists_needs_overwrite(tmp_path, source, capsys, name, data):
    (tmp_path / data).write_text("precious")
    assert run_cli(*translate_args(source, tmp_path / name, "--model", "identity")) == 1
    one_error_line(capsys, data, "--overwrite")
    assert (tmp_path / data).read_text() == "precious" and not (tmp_path / name).exists()
    assert run_cli(*translate_args(source, tmp_path / name, "--model", "identity", "--overwrite")) == 0
    assert sitk.ReadImage(str(tmp_path / name)).GetSize() == ct_like_volume().GetSize()


@pytest.mark.parametrize("ext", [".nhdr", ".mhd"])
def test_an_output_may_not_replace_the_data_file_of_a_detached_input(tmp_path, capsys, ext):
    # The input's header points at the data file an output "out<ext>" would write.
    sitk.WriteImage(ct_like_volume(), str(tmp_path / f"out{ext}"), useCompression=True)
    (tmp_path / f"out{ext}").rename(tmp_path / f"in{ext}")
    data = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = translate_args(tmp_path / f"in{ext}", tmp_path / f"out{ext}", "--model", "identity", "--overwrite")
    assert run_cli(*args) == 1
    one_error_line(capsys, "data file of the input")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == data


# --- evaluate --json -----------------------------------------------------------------------------------------------


@pytest.fixture
def scored_pair(tmp_path):
    reference = ct_like_volume(oblique=False)
    return write(reference, tmp_path / "p.nrrd"), write(reference, tmp_path / "r.nrrd")


@pytest.mark.parametrize("json_name", ["p.nrrd", "x/../p.nrrd"])
def test_evaluate_json_may_not_replace_the_prediction(tmp_path, scored_pair, capsys, json_name):
    prediction, reference = scored_pair
    before = open(prediction, "rb").read()
    args = ["evaluate", "--prediction", prediction, "--reference", reference, "--modality", "CT"]
    assert run_cli(*args, "--json", f"{tmp_path}/{json_name}", "--overwrite") == 1
    one_error_line(capsys, "is the input")
    assert open(prediction, "rb").read() == before and tree(tmp_path) == ["p.nrrd", "r.nrrd"]


def test_evaluate_json_replaces_an_existing_file_only_with_overwrite(tmp_path, scored_pair, capsys):
    prediction, reference = scored_pair
    (tmp_path / "m.json").write_text("precious")
    args = ["evaluate", "--prediction", prediction, "--reference", reference, "--modality", "CT", "--json"]
    assert run_cli(*args, tmp_path / "m.json") == 1
    one_error_line(capsys, "--overwrite")
    assert (tmp_path / "m.json").read_text() == "precious"
    assert run_cli(*args, tmp_path / "m.json", "--overwrite") == 0
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["MAE"] == pytest.approx(0.0)


# --- batch ---------------------------------------------------------------------------------------------------------


def write_manifest(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def case(name, source="in.nrrd"):
    return {"case": name, "input": source, "source_modality": "CBCT", "target_modality": "CT"}


@pytest.fixture
def cohort(tmp_path):
    write(ct_like_volume(oblique=False), tmp_path / "in.nrrd")
    return tmp_path


@pytest.mark.parametrize("name", ["../escaped", "ABSOLUTE", "a/b", "..", "a\\b", "summary.csv"])
def test_a_case_name_that_is_not_a_plain_folder_inside_out_is_refused(cohort, capsys, name):
    name = str(cohort / "escaped") if name == "ABSOLUTE" else name
    rows = [case("good"), case(name)]
    manifest = write_manifest(cohort / "cohort.csv", rows)
    assert run_cli("batch", manifest, "--out", cohort / "out", "--model", "identity") == 1
    one_error_line(capsys, "line 3")
    assert tree(cohort) == ["cohort.csv", "in.nrrd"], "nothing written, inside --out or outside it"


def test_two_rows_with_the_same_case_name_are_refused_naming_both_lines(cohort, capsys):
    manifest = write_manifest(cohort / "cohort.csv", [case("a"), case("b"), case("a")])
    assert run_cli("batch", manifest, "--out", cohort / "out", "--model", "identity") == 1
    one_error_line(capsys, "'a'", "lines 2, 4")
    assert not (cohort / "out").exists()


@pytest.mark.parametrize("existing", ["summary.csv", "good/synthetic_CT.nii.gz"])
def test_batch_replaces_existing_outputs_only_with_overwrite(cohort, capsys, existing):
    manifest = write_manifest(cohort / "cohort.csv", [case("good")])
    out = cohort / "out"
    (out / existing).parent.mkdir(parents=True, exist_ok=True)
    (out / existing).write_text("precious")
    assert run_cli("batch", manifest, "--out", out, "--model", "identity") == 1
    one_error_line(capsys, "--overwrite")
    assert (out / existing).read_text() == "precious" and not (out / "status.json").exists()
    assert run_cli("batch", manifest, "--out", out, "--model", "identity", "--overwrite") == 0
    assert {r["status"] for r in csv.DictReader(open(out / "summary.csv"))} == {"done"}


def test_a_batch_output_may_not_replace_an_input_of_another_case(cohort, capsys):
    # Case "b" reads what case "a" would write.
    out = cohort / "out"
    (out / "a").mkdir(parents=True)
    write(ct_like_volume(oblique=False), out / "a" / "synthetic_CT.nii.gz")
    rows = [case("a"), case("b", str(out / "a" / "synthetic_CT.nii.gz"))]
    manifest = write_manifest(cohort / "cohort.csv", rows)
    assert run_cli("batch", manifest, "--out", out, "--model", "identity", "--overwrite") == 1
    one_error_line(capsys, "is the input")


# --- phantom -------------------------------------------------------------------------------------------------------


def test_phantom_replaces_existing_files_only_with_overwrite(tmp_path, capsys):
    (tmp_path / "CT.nii.gz").write_text("precious")
    args = ["phantom", "--out", tmp_path, "--size", "16", "--spacing", "8"]
    assert run_cli(*args) == 1
    one_error_line(capsys, "CT.nii.gz", "--overwrite")
    assert tree(tmp_path) == ["CT.nii.gz"] and (tmp_path / "CT.nii.gz").read_text() == "precious"
    assert run_cli(*args, "--overwrite") == 0
    assert sitk.ReadImage(str(tmp_path / "CT.nii.gz")).GetSize() == (16, 16, 16)
    assert not [p for p in tree(tmp_path) if p.startswith(".")], "no staging folder left"


# --- a full disk ---------------------------------------------------------------------------------------------------


def test_a_short_write_is_an_error_and_leaves_nothing_behind(tmp_path, source, capsys, monkeypatch):
    # SimpleITK's NIfTI writer returns normally when the disk fills up, leaving a cut file: simulate exactly that.
    real_write = sitk.WriteImage

    def short_write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    monkeypatch.setattr(sitk, "WriteImage", short_write)
    out = tmp_path / "out"
    args = translate_args(source, out / "sct.nii.gz", "--model", "identity", "--progress-format", "lines")
    assert run_cli(*args) == 1
    one_error_line(capsys, "could not write", "incomplete")
    assert not out.exists(), "no partial file, staging folder or new folder is left"


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs (needs root; skipped otherwise)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def noisy_source(tmp_path):
    """2 MiB of float32 noise: too big for the 1 MiB disk, compressed or not."""
    array = np.random.default_rng(0).normal(0.0, 300.0, (64, 64, 128)).astype(np.float32) - 500.0
    return write(sitk.GetImageFromArray(array), tmp_path / "noise.nrrd")


@pytest.mark.parametrize("name", ["sct.nii.gz", "sct.nii", "sct.nrrd", "sct.mhd"])
def test_a_full_disk_is_one_error_line_and_leaves_no_partial_file(full_disk, noisy_source, capsys, name):
    args = translate_args(noisy_source, full_disk / name, "--model", "identity", "--progress-format", "lines")
    assert run_cli(*args) == 1
    one_error_line(capsys, "no space left")
    assert tree(full_disk) == []


# --- interrupts ----------------------------------------------------------------------------------------------------


def test_an_interrupt_while_the_uncertainty_map_is_written_leaves_neither_output(tmp_path, source, capsys, monkeypatch):
    fake_translation(monkeypatch)
    real_write = sitk.WriteImage

    def interrupted_write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        if "std" in os.path.basename(str(path)):
            raise KeyboardInterrupt  # Ctrl+C after "done", while the second output is written

    monkeypatch.setattr(sitk, "WriteImage", interrupted_write)
    args = translate_args(source, tmp_path / "sct.nii.gz", "--uncertainty", tmp_path / "std.nii.gz", "--samples", "2")
    assert run_cli(*args) == 130
    one_error_line(capsys, "interrupted")
    assert tree(tmp_path) == ["in.nii.gz"]


@pytest.fixture
def sigint_delivered():
    """Ctrl+C as a terminal delivers it, even when the test run was started with SIGINT ignored (nohup, a
    background job): the CLI rightly keeps an inherited "ignore", so the test sets Python's default handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_while_outputs_are_moved_into_place_undoes_them_all(
    tmp_path, source, capsys, monkeypatch, sigint_delivered
):
    fake_translation(monkeypatch)
    (tmp_path / "sct.nii.gz").write_text("previous")
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        if os.path.basename(str(dst)) == "std.nii.gz":
            os.kill(os.getpid(), signal.SIGINT)  # held back until every move is done, then undone

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    args = translate_args(source, tmp_path / "sct.nii.gz", "--uncertainty", tmp_path / "std.nii.gz", "--overwrite")
    assert run_cli(*args) == 130
    one_error_line(capsys, "interrupted")
    assert tree(tmp_path) == ["in.nii.gz", "sct.nii.gz"] and (tmp_path / "sct.nii.gz").read_text() == "previous"


# A real process: Ctrl+C while the uncertainty map is written, and again while the run cleans up.
INTERRUPTED_RUN = """
import os, shutil, signal, sys
import SimpleITK as sitk
from MedTransCore import translate as core
from MedTransCore.cli.main import main

def translate_image(image, source, target, **kwargs):
    settings = dict(model="identity", version="0", family="identity", steps=0, seed=0, device="cpu",
                    source_modality=source, target_modality=target, uncertainty_samples=2)
    return core.TranslationResult(image, sitk.Image(image), core.select_model(source, target, "identity"), settings, [])

core.translate_image = translate_image
real_write, real_rmtree = sitk.WriteImage, shutil.rmtree

def write(image, path, *args, **kwargs):
    real_write(image, path, *args, **kwargs)
    if "std" in os.path.basename(str(path)):
        os.kill(os.getpid(), signal.SIGINT)

def rmtree(path, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    real_rmtree(path, *args, **kwargs)

sitk.WriteImage, shutil.rmtree = write, rmtree
main(sys.argv[1:])
"""


def test_a_second_interrupt_during_the_clean_up_does_not_stop_it(tmp_path, source):
    args = translate_args(source, tmp_path / "sct.nii.gz", "--uncertainty", tmp_path / "std.nii.gz", "--samples", "2")
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_RUN, *map(str, args)],
        capture_output=True,
        encoding="utf-8",
        timeout=300,
        # Ctrl+C reaches the run even when this test run was started with SIGINT ignored (nohup, &), which a child
        # would inherit, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "error: interrupted"
    assert tree(tmp_path) == ["in.nii.gz"]
