"""What the page shows of a dose check, from ``dose.json`` and the DVH table (no browser)."""

from __future__ import annotations

import re

from MedTransWeb.dose_check import dvh_rows, dvh_svg, rate_rows

SUMMARY = {
    "gamma_pass_rate": {"1%/1mm": 91.26, "2%/2mm": 99.5, "3%/3mm": 100.0},
    "dvh": {"TARGET": {"D98": {"ct": 59.1, "sct": 58.55, "difference": -0.55}}},
}


def test_pass_rates_and_dvh_metrics_become_rows_with_their_units_rounding():
    assert rate_rows(SUMMARY)[0] == {"criterion": "1%/1mm", "text": "91.3 %", "value": 91.26}
    assert dvh_rows(SUMMARY) == [
        {
            "key": "TARGET D98",
            "structure": "TARGET",
            "metric": "D98",
            "ct": "59.10",
            "sct": "58.55",
            "difference": "-0.55",
        }
    ]


def test_the_dvh_chart_has_one_polyline_per_column_dashed_for_the_sct_and_escapes_names():
    columns = {
        "Dose (Gy)": [0.0, 30.0, 60.0],
        "TARGET CT (%)": [100.0, 100.0, 0.0],
        "TARGET sCT (%)": [100.0, 99.0, 0.0],
        "<b> CT (%)": [100.0, 10.0, 0.0],
        "<b> sCT (%)": [100.0, 10.0, 0.0],
    }
    svg = dvh_svg(columns)
    lines = re.findall(r"<polyline [^>]*>", svg)
    assert len(lines) == 4 and sum("stroke-dasharray" in line for line in lines) == 2
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    first = re.search(r'points="([^"]+)"', lines[0]).group(1).split()
    assert len(first) == 3 and float(first[0].split(",")[1]) < float(first[-1].split(",")[1])  # 100 % above 0 %
    assert "60 Gy" in svg


def test_the_dose_wash_hides_low_doses_and_runs_blue_to_red_half_transparent():
    import numpy as np

    from MedTransWeb.dose_overlay import LEVELS, dose_colour, dose_labels

    labels = dose_labels(np.array([0.0, 5.9, 6.0, 33.0, 60.0, 75.0]), 60.0)
    assert labels.tolist()[:2] == [0, 0] and labels[2] == 1 and labels[4] == LEVELS and labels[5] == LEVELS
    assert 1 < labels[3] < LEVELS
    assert dose_colour(0)[3] == 0.0
    low, high = dose_colour(1), dose_colour(LEVELS)
    assert low[2] > low[0] and high[0] > high[2] and low[3] == high[3] == 0.55


def test_the_gamma_overlay_hides_unevaluated_voxels_and_marks_failures():
    import numpy as np

    from MedTransWeb.dose_overlay import gamma_colour, gamma_labels

    labels = gamma_labels(np.array([np.nan, -1.0, 0.0, 0.9, 1.5, 3.0]))
    assert labels[:2].tolist() == [0, 0] and labels[2] == 1 and labels[5] == 255
    assert gamma_colour(0)[3] == 0.0
    passing, failing = gamma_colour(int(labels[3])), gamma_colour(int(labels[4]))
    assert passing[1] > passing[0] and failing[0] == 1.0 and failing[1] < passing[1]
