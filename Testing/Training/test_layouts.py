"""Paired cases are discovered from the folder layouts users have, and from manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtrans_training.data.layouts import discover_cases, read_manifest
from MedTransCore.errors import InputError

from .helpers import write_volume

VOXELS = np.arange(27, dtype=np.float32).reshape(3, 3, 3)


def touch(path):
    return write_volume(path, VOXELS)


def test_synthrad_cases_are_found_at_any_depth_with_their_masks(tmp_path):
    for name in ("ct", "mr", "mask"):
        touch(tmp_path / "Task1" / "brain" / "1BA001" / f"{name}.nii.gz")
    for name in ("ct", "cbct", "mask"):
        touch(tmp_path / "Task2" / "pelvis" / "2PA001" / f"{name}.mha")
    cases = {c.case: c for c in discover_cases(tmp_path, "synthrad", mr_modality="MR_T1C")}
    assert set(cases) == {"1BA001", "2PA001"}
    assert set(cases["1BA001"].images) == {"CT", "MR_T1C"}
    assert set(cases["2PA001"].images) == {"CT", "CBCT"}
    assert cases["2PA001"].mask.name == "mask.mha"
    assert [c.case for c in discover_cases(tmp_path)] == ["1BA001", "2PA001"]  # auto-detected


@pytest.mark.parametrize(
    "case, names",
    [
        ("BraTS-GLI-00001-000", {"t1n": "MR_T1", "t1c": "MR_T1C", "t2w": "MR_T2", "t2f": "MR_FLAIR"}),
        ("BraTS20_Training_001", {"t1": "MR_T1", "t1ce": "MR_T1C", "t2": "MR_T2", "flair": "MR_FLAIR"}),
    ],
)
def test_brats_cases_are_found_in_the_2023_and_the_older_naming(tmp_path, case, names):
    separator = "-" if case.startswith("BraTS-") else "_"
    for suffix in [*names, "seg"]:
        touch(tmp_path / case / f"{case}{separator}{suffix}.nii.gz")
    (found,) = discover_cases(tmp_path)
    assert found.case == case
    assert {k: p.name for k, p in found.images.items()} == {
        key: f"{case}{separator}{suffix}.nii.gz" for suffix, key in names.items()
    }


def test_the_simple_layout_of_the_shared_brain_mr_folder_is_found(tmp_path):
    for case in ("A", "B"):
        for name in ("t1", "t1c", "t2", "flair"):
            touch(tmp_path / case / f"{name}.nii.gz")
    cases = discover_cases(tmp_path, "simple")
    assert [c.case for c in cases] == ["A", "B"]
    assert set(cases[0].images) == {"MR_T1", "MR_T1C", "MR_T2", "MR_FLAIR"}


def test_ixi_per_modality_folders_are_paired_by_subject(tmp_path):
    for folder, suffix in (("IXI-T1", "T1"), ("IXI-T2", "T2"), ("IXI-PD", "PD")):
        touch(tmp_path / folder / f"IXI002-Guys-0828-{suffix}.nii.gz")
    touch(tmp_path / "IXI-T1" / "IXI012-HH-1211-T1.nii.gz")  # no partner: not a pair
    (case,) = discover_cases(tmp_path)
    assert case.case == "IXI002-Guys-0828"
    assert {k: p.parent.name for k, p in case.images.items()} == {
        "MR_T1": "IXI-T1",
        "MR_T2": "IXI-T2",
        "MR_PD": "IXI-PD",
    }


def test_a_csv_and_a_json_manifest_give_the_same_cases_and_splits(tmp_path):
    rows = []
    for case, split in (("p1", "train"), ("p2", "val")):
        touch(tmp_path / "img" / f"{case}_ct.nii.gz")
        touch(tmp_path / "img" / f"{case}_cbct.nii.gz")
        rows.append({"case": case, "CT": f"img/{case}_ct.nii.gz", "CBCT": f"img/{case}_cbct.nii.gz", "split": split})
    (tmp_path / "cases.csv").write_text(
        "case,CT,CBCT,split\n" + "".join(f"{r['case']},{r['CT']},{r['CBCT']},{r['split']}\n" for r in rows)
    )
    (tmp_path / "cases.json").write_text(json.dumps({"cases": rows}))
    from_csv, from_json = read_manifest(tmp_path / "cases.csv"), read_manifest(tmp_path / "cases.json")
    assert [(c.case, c.split, sorted(c.images)) for c in from_csv] == [
        ("p1", "train", ["CBCT", "CT"]),
        ("p2", "val", ["CBCT", "CT"]),
    ]
    assert [(c.case, c.split, c.images) for c in from_json] == [(c.case, c.split, c.images) for c in from_csv]
    assert from_csv[0].images["CT"] == (tmp_path / "img" / "p1_ct.nii.gz").resolve()


def test_a_manifest_with_a_missing_file_or_an_unknown_column_is_a_clear_error(tmp_path):
    (tmp_path / "missing.csv").write_text("case,CT,CBCT\np1,nope.nii.gz,nope2.nii.gz\n")
    with pytest.raises(InputError, match="missing file"):
        read_manifest(tmp_path / "missing.csv")
    (tmp_path / "unknown.csv").write_text("case,T1\np1,a.nii.gz\n")
    with pytest.raises(InputError, match="unknown column"):
        read_manifest(tmp_path / "unknown.csv")


def test_a_folder_without_pairs_is_a_clear_error(tmp_path):
    touch(tmp_path / "lonely" / "t1.nii.gz")
    with pytest.raises(InputError, match="no paired cases"):
        discover_cases(tmp_path)
    with pytest.raises(InputError, match="unknown layout"):
        discover_cases(tmp_path, "nifti-zoo")
