"""What each slice view says at its edges: the patient directions (L/R/A/P/S/I), the slice number and position in mm.

Pure functions of the slice node's ``SliceToRAS`` matrix and the shown volume's ``RASToIJK`` matrix and size, so
the rules are tested without a view. RAS: +x points to the patient's Right, +y Anterior, +z Superior.
"""

from __future__ import annotations

import numpy as np

POSITIVE, NEGATIVE = "RAS", "LPI"


def direction_letter(vector) -> str:
    """The patient direction (``R``, ``L``, ``A``, ``P``, ``S`` or ``I``) a RAS vector points to most."""
    v = np.asarray(vector, dtype=float)[:3]
    axis = int(np.argmax(np.abs(v)))
    return POSITIVE[axis] if v[axis] >= 0 else NEGATIVE[axis]


def orientation_labels(slice_to_ras) -> dict[str, str]:
    """``{"left", "right", "top", "bottom"}``: the patient direction at each edge of a slice view.

    Args:
        slice_to_ras: the slice node's 4x4 ``SliceToRAS`` (column 0: screen right, column 1: screen up).
    """
    m = np.asarray(slice_to_ras, dtype=float)
    right, up = m[:3, 0], m[:3, 1]
    return {
        "left": direction_letter(-right),
        "right": direction_letter(right),
        "top": direction_letter(up),
        "bottom": direction_letter(-up),
    }


def slice_position(slice_to_ras) -> str:
    """The slice plane's position along its normal in mm, named by direction: ``S 12.0 mm``, ``I 3.5 mm``."""
    m = np.asarray(slice_to_ras, dtype=float)
    normal, centre = m[:3, 2], m[:3, 3]
    axis = int(np.argmax(np.abs(normal)))
    value = float(centre[axis])
    letter = POSITIVE[axis] if value >= 0 else NEGATIVE[axis]
    return f"{letter} {abs(value):.1f} mm"


def slice_number(slice_to_ras, ras_to_ijk, size_ijk) -> tuple[int, int] | None:
    """``(number, count)`` of the volume slice a view shows (1-based), or ``None`` when the plane is outside it.

    Args:
        slice_to_ras: the slice node's 4x4 ``SliceToRAS``.
        ras_to_ijk: the volume's 4x4 ``RASToIJK``.
        size_ijk: the volume's ``(i, j, k)`` size.
    """
    m = np.asarray(slice_to_ras, dtype=float)
    to_ijk = np.asarray(ras_to_ijk, dtype=float)
    centre = to_ijk @ np.append(m[:3, 3], 1.0)
    normal = to_ijk[:3, :3] @ m[:3, 2]
    axis = int(np.argmax(np.abs(normal)))
    count = int(size_ijk[axis])
    index = int(np.floor(centre[axis] + 0.5))
    if not 0 <= index < count:
        return None
    return index + 1, count


def slice_text(slice_to_ras, ras_to_ijk=None, size_ijk=None) -> str:
    """``slice 33/64 · S 1.5 mm`` (just the position without a volume or outside it)."""
    position = slice_position(slice_to_ras)
    if ras_to_ijk is None or size_ijk is None:
        return position
    number = slice_number(slice_to_ras, ras_to_ijk, size_ijk)
    if number is None:
        return f"outside the volume · {position}"
    return f"slice {number[0]}/{number[1]} · {position}"
