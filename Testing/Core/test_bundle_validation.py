"""Bundle metadata is checked when it is read: a bad field is one clear error naming the bundle and the field, and a
broken installed bundle is listed and named as broken (never skipped in silence)."""

from __future__ import annotations

import json

import pytest

from MedTransCore.bundles import broken_bundles, installed_bundles, load_bundle
from MedTransCore.errors import BundleError

from .helpers import ct_like_volume
from .test_cli import run_cli, write
from .test_translate import tiny_identity_bundle


def rewrite(bundle_dir, change) -> None:
    path = bundle_dir / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


BAD_METADATA = {
    "spacing of 0.001 mm": (lambda m: m.update(spacing=[0.001, 0.001, 0.001]), "field 'spacing'"),
    "spacing of 50 mm": (lambda m: m.update(spacing=[50.0, 1.0, 1.0]), "field 'spacing'"),
    "a float grid": (lambda m: m.update(grid=[8.5, 8, 8]), "field 'grid'"),
    "a boolean in the grid": (lambda m: m.update(grid=[True, 8, 8]), "field 'grid'"),
    "empty normalisation": (lambda m: m.update(normalisation={}), "field 'normalisation' is empty"),
    "a list as a modality": (lambda m: m.update(modalities=[["CT"]]), "field 'modalities'"),
    "an unknown family": (lambda m: m.update(family="cyclegan"), "field 'family': unknown model family 'cyclegan'"),
}


@pytest.mark.parametrize("change, words", BAD_METADATA.values(), ids=BAD_METADATA.keys())
def test_a_bad_metadata_field_is_an_error_naming_the_bundle_and_the_field(tmp_path, change, words):
    bundle = tiny_identity_bundle(tmp_path / "bad-bundle")
    rewrite(bundle.path, change)
    with pytest.raises(BundleError, match=words) as error:
        load_bundle(bundle.path)
    assert "bad-bundle" in str(error.value)


def write_undecodable(bundle_dir) -> None:
    text = (bundle_dir / "metadata.json").read_text().replace("coarse grid", "coarse gr\u00efd")
    (bundle_dir / "metadata.json").write_bytes(text.encode("latin-1"))


def write_deeply_nested(bundle_dir) -> None:
    (bundle_dir / "metadata.json").write_text("[" * 100_000 + "]" * 100_000)


def write_nested_inside_a_field(bundle_dir) -> None:
    text = (bundle_dir / "metadata.json").read_text()
    (bundle_dir / "metadata.json").write_text(text.replace('"metrics": {}', '"metrics": ' + "[" * 200 + "]" * 200))


UNREADABLE = {
    "not UTF-8": (write_undecodable, "not UTF-8"),
    "nested 100,000 deep": (write_deeply_nested, "nested more than"),
    "a field nested 200 deep": (write_nested_inside_a_field, "nested more than"),
}


@pytest.mark.parametrize("damage, words", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_an_unreadable_metadata_file_is_one_error_line_through_the_cli(tmp_path, capsys, damage, words):
    bundle = tiny_identity_bundle(tmp_path / "damaged")
    damage(bundle.path)
    source, out = write(ct_like_volume(), tmp_path / "ct.nrrd"), tmp_path / "out.nrrd"
    code = run_cli(
        "translate", source, "--source-modality", "CBCT", "--target-modality", "CT", "--output", out,
        "--model", bundle.path,
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert "damaged" in err[0] and not out.exists()


def test_a_broken_user_bundle_named_by_model_says_why_it_is_broken(tmp_path, capsys, isolated_user_models):
    bundle = tiny_identity_bundle(isolated_user_models / "my-coarse")
    rewrite(bundle.path, lambda m: m.update(grid=[8.5, 8, 8]))
    source, out = write(ct_like_volume(), tmp_path / "ct.nrrd"), tmp_path / "out.nrrd"
    code = run_cli(
        "translate", source, "--source-modality", "CBCT", "--target-modality", "CT", "--output", out,
        "--model", "my-coarse",
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: model 'my-coarse' is broken: ") and "field 'grid'" in err[0]
    assert "no model named" not in err[0] and not out.exists()


def test_medtrans_models_lists_a_broken_bundle_with_its_reason(capsys, isolated_user_models):
    bundle = tiny_identity_bundle(isolated_user_models / "my-coarse")
    write_deeply_nested(bundle.path)  # used to crash every command that lists the installed bundles
    assert run_cli("models") == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("my-coarse"))
    assert "BROKEN" in line and "nested more than" in line
    assert run_cli("models", "--json") == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "nested more than" in rows["my-coarse"]["broken"] and "family" in rows["identity"]
    assert [b.name for b in broken_bundles()] == ["my-coarse"]
    assert "my-coarse" not in {b.name for b in installed_bundles()}


def test_the_shipped_bundles_pass_the_checks():
    assert broken_bundles() == []
