"""The extension's packaging: CMake lists match the files, the .ui matches the widget, dependencies are sane."""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from MedTransSlicerLib import dependencies

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "MedTransSlicer"


def _cmakeList(text: str, variable: str) -> list[str]:
    body = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return [entry.replace("${MODULE_NAME}", "MedTransSlicer") for entry in body.split()]


def test_every_file_the_module_cmake_lists_exists_and_every_module_file_is_listed():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts, resources = _cmakeList(text, "MODULE_PYTHON_SCRIPTS"), _cmakeList(text, "MODULE_PYTHON_RESOURCES")
    listed = set(scripts) | set(resources)
    assert all((MODULE / entry).is_file() for entry in listed), [e for e in listed if not (MODULE / e).is_file()]
    onDisk = {
        str(path.relative_to(MODULE))
        for path in MODULE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.name != "CMakeLists.txt"
    }
    assert onDisk == listed
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text


def test_the_extension_cmake_has_the_metadata_and_depends_on_pytorch():
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"', text), key
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert "find_package(Slicer REQUIRED)" in text and "add_subdirectory(MedTransSlicer)" in text


def _parameterNames() -> set[str]:
    tree = ast.parse((MODULE / "MedTransSlicer.py").read_text())
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedTransSlicerParameterNode")
    return {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}


def test_the_ui_binds_only_parameters_the_parameter_node_declares_and_has_every_widget_the_module_uses():
    ui = ET.parse(MODULE / "Resources" / "UI" / "MedTransSlicer.ui")
    widgets = {w.get("name") for w in ui.iter("widget")}
    bound = {p.find("string").text for p in ui.iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound <= _parameterNames()
    assert _parameterNames() - bound == {"model"}  # the model list is dynamic: filled by the widget
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "MedTransSlicer.py").read_text()))
    assert used <= widgets, used - widgets


def test_the_icon_is_a_128_pixel_png():
    data = (MODULE / "Resources" / "Icons" / "MedTransSlicer.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


def test_the_requirements_never_replace_what_slicer_ships():
    names = {r.name for r in dependencies.readRequirements()}
    assert names and not names & set(dependencies.PROVIDED_BY_SLICER)


def test_nothing_needs_installing_where_every_requirement_is_met():
    assert dependencies.installPlan().empty


def test_a_missing_package_is_planned_and_the_message_says_what_and_why(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=1\nmonai==1.6.1\nmedtrans-no-such-package==1.0  # missing\nscipy>=999\n")
    plan = dependencies.installPlan(requirements)
    assert [str(r) for r in plan.packages] == ["medtrans-no-such-package==1.0", "scipy>=999"]
    text = plan.describe()
    assert "medtrans-no-such-package==1.0" in text and "SimpleITK" in text and "left as they are" in text


def test_a_malformed_requirement_is_reported_with_its_file(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("monai >= = 1\n")
    with pytest.raises(ValueError, match="requirements.txt"):
        dependencies.readRequirements(requirements)


def test_a_source_checkout_provides_the_core():
    assert dependencies.checkoutRoot() == ROOT
    assert dependencies.makeCoreImportable()


def test_the_logic_loads_without_torch_monai_or_scipy_so_slicer_can_show_the_module_before_installing():
    script = (
        f"import sys; sys.path.insert(0, {str(MODULE)!r}); import MedTransSlicerLib; "
        "heavy = {'torch', 'monai', 'scipy'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
