"""``medtrans benchmark --cbct-simulation --quick``: rows of every kind, finite numbers, every table section.

One quick run (tiny grids, a few seconds after RTK's ~20 s first load) serves every test; no timing is asserted.
"""

import contextlib
import io
import json
import math

import pytest

from MedTransCore.benchmark_cone_beam import format_cone_beam_table
from MedTransCore.cli.main import build_parser

from .test_cli import run_cli

pytest.importorskip("itk")

KINDS = {"rtk_load", "speed", "water", "cupping", "noise", "streaks"}
SECTIONS = ("## Speed", "## Water", "## Cupping", "## Noise vs mAs", "## Streaks")


def numbers(value):
    """Every number inside a row (nested dicts and lists included)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``(rows from --json, printed table)`` of one quick run through the command line."""
    rows_file = tmp_path_factory.mktemp("cbct") / "rows.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # capsys is per test; this run serves the whole module
        assert run_cli("benchmark", "--cbct-simulation", "--quick", "--json", rows_file) == 0
    return json.loads(rows_file.read_text()), printed.getvalue()


def test_the_quick_benchmark_gives_rows_of_every_kind_with_finite_numbers(quick_run):
    rows, _ = quick_run
    assert {r["kind"] for r in rows} == KINDS
    assert all(math.isfinite(x) for row in rows for x in numbers(row))
    by_kind = {k: [r for r in rows if r["kind"] == k] for k in KINDS}
    assert [r["fan"] for r in by_kind["water"]] == ["full", "half"]
    assert [r["scatter_to_primary"] for r in by_kind["cupping"]] == [0.0, 0.1, 0.2]
    assert [r["mas"] for r in by_kind["noise"]] == [250.0, 1000.0]
    assert {r["rods"] for r in by_kind["streaks"]} == {"bone", "metal"}
    speed = by_kind["speed"][0]
    assert speed["forward_projection_s"] > 0 and speed["fdk_s"] > 0 and speed["total_s"] > 0


def test_the_table_prints_every_section_and_the_verdicts(quick_run):
    rows, printed = quick_run
    assert printed == format_cone_beam_table(rows) + "\n"
    for section in SECTIONS:
        assert printed.count(section) == 1, section
    for words in ("forward projection", "FDK", "total (all stages)", "loading ITK/RTK", "1/sqrt(mAs)"):
        assert words in printed, words
    assert "| half |" in printed and "| metal (3000) |" in printed


def test_the_cbct_simulation_flag_parses_and_excludes_the_dose_benchmark(capsys):
    args = build_parser().parse_args(["benchmark", "--cbct-simulation", "--quick"])
    assert args.cbct_simulation and args.quick and not args.dose
    assert not build_parser().parse_args(["benchmark"]).cbct_simulation
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--cbct-simulation", "--dose"])
    assert "not allowed with" in capsys.readouterr().err
