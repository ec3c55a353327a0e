"""What the slice views show, as rules: window presets per modality, edge labels and slice numbers, the difference
overlay's labels (pure functions, no server, no view)."""

from __future__ import annotations

import numpy as np
import pytest

from MedTransWeb import windows
from MedTransWeb.annotations import orientation_labels, slice_number, slice_position, slice_text
from MedTransWeb.difference_overlay import DEAD_ZONE, ZERO_LABEL, difference_labels, label_colour

# Slicer's axial view with the patient's right on the screen's left (radiological convention).
AXIAL = np.array([[-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 12.0], [0, 0, 0, 1]])
CORONAL = np.array([[-1.0, 0, 0, 0], [0, 0, 1.0, -7.5], [0, 1.0, 0, 0], [0, 0, 0, 1]])


def test_a_ct_preset_changes_only_ct_views_and_an_mr_preset_only_mr_views():
    mr = windows.VolumeStats.of(np.concatenate([np.zeros(1000), np.linspace(100.0, 1000.0, 9000)]))
    default = (500.0, 250.0)
    assert windows.preset_window("bone", True, mr, default) == (1800.0, 400.0)
    assert windows.preset_window("bone", False, mr, default) is None
    assert windows.preset_window("brain mr", True, mr, default) is None
    window, level = windows.preset_window("brain mr", False, mr, default)
    low, high = level - window / 2, level + window / 2
    assert 100.0 < low < 300.0 and 980.0 < high <= 1000.0  # the head's voxels, not the black background
    assert windows.preset_window("auto", False, mr, default) == default
    assert windows.preset_window("full range", True, mr, default) == pytest.approx((1000.0, 500.0))
    with pytest.raises(ValueError, match="unknown window preset"):
        windows.preset_window("soft", True, mr, default)


def test_the_window_list_offers_the_presets_of_the_modalities_shown():
    titles = {frozenset(): None, frozenset({True}): "CT", frozenset({False}): "MR"}
    for shown, family in titles.items():
        listed = [item["title"] for item in windows.window_items(set(shown))]
        assert listed[:2] == ["Modality default", "Full range (darkest to brightest voxel)"]
        assert ("Bone (CT) · W 1800 / L 400" in listed) == (family in (None, "CT"))
        assert ("Brain (MR)" in listed) == (family in (None, "MR"))


def test_each_edge_of_a_view_names_the_patient_direction_it_faces():
    assert orientation_labels(AXIAL) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert orientation_labels(CORONAL) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}


def test_the_slice_is_named_by_its_number_in_the_volume_and_its_position_in_mm():
    ras_to_ijk = np.diag([1 / 3.0, 1 / 3.0, 1 / 3.0, 1.0])
    ras_to_ijk[:3, 3] = [10.0, 10.0, 10.0]  # voxel 10 at 0 mm, 3 mm apart
    assert slice_position(AXIAL) == "S 12.0 mm" and slice_position(CORONAL) == "P 7.5 mm"
    assert slice_number(AXIAL, ras_to_ijk, (24, 24, 24)) == (15, 24)  # 12 mm: voxel 14, the 15th
    assert slice_text(AXIAL, ras_to_ijk, (24, 24, 24)) == "slice 15/24 · S 12.0 mm"
    assert slice_text(AXIAL, ras_to_ijk, (24, 24, 12)) == "outside the volume · S 12.0 mm"
    assert slice_text(AXIAL) == "S 12.0 mm"


def test_the_difference_overlay_is_transparent_where_the_volumes_agree():
    labels = difference_labels(np.array([0.0, 0.1, -0.1, 50.0, -50.0, 400.0, np.nan]), span=100.0)
    assert labels[0] == 0 and labels[-1] == 0  # agreement and unknown: no label
    assert labels[3] == ZERO_LABEL + 64 and labels[4] == ZERO_LABEL - 64 and labels[5] == 255
    assert label_colour(0)[3] == 0.0
    assert label_colour(ZERO_LABEL + 2)[3] == 0.0  # within the dead zone: noise is not drawn
    assert 2 / 127 < DEAD_ZONE
    red, green, blue, alpha = label_colour(255)
    assert (red, green, blue) == (1.0, 0.0, 0.0) and alpha > 0.8
    assert label_colour(1)[:3] == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="positive span"):
        difference_labels(np.zeros(3), 0.0)
