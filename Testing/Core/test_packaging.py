"""Packaging and boundaries: the core imports no front end, ``medtrans web`` comes from MedTransWeb's entry point,
a missing extra is a one-line error naming it, and a built wheel works without the source checkout."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from MedTransCore.cli.main import main

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "MedTransCore"
SLICER_LIB = REPO / "MedTransSlicer" / "MedTransSlicerLib"
# What MedTransCore must never import (DESIGN.md): front ends, GUI toolkits, rendering, training.
FORBIDDEN_ROOTS = ("MedTransWeb", "MedTransSlicerLib", "MedTransSlicer", "slicer", "qt", "vtk", "vtkmodules")
FORBIDDEN_PREFIXES = ("trame", "medtrans_training")
WEB_OPTIONS = ("--host", "--port", "--max-upload-mb")
WEB_EXTRA_ERROR = 'error: the browser front end needs the web extra: pip install "medtrans[web]"'
# Run in a child Python before the code under test: drop the editable install's finders, so that only what
# PYTHONPATH (the installed wheel) and the venv's site-packages hold can be imported, never the checkout.
WITHOUT_CHECKOUT = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in str(f)]\n"


def run_cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code


def imported_modules(path: Path) -> list[str]:
    """Every module a source file imports: import statements anywhere (also inside functions) and
    ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    return names


def is_forbidden(module: str) -> bool:
    root = module.split(".")[0]
    return root in FORBIDDEN_ROOTS or root.startswith(FORBIDDEN_PREFIXES)


def test_the_core_imports_no_front_end_no_gui_toolkit_and_no_training_code():
    sources = sorted(CORE.rglob("*.py"))
    assert len(sources) > 30  # the whole package was scanned
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for path in sources
        for module in imported_modules(path)
        if is_forbidden(module)
    ]
    assert offenders == []


def test_the_import_scan_sees_imports_inside_functions_and_import_module_calls(tmp_path):
    source = tmp_path / "sneaky.py"
    source.write_text(
        "import importlib\n"
        "def run():\n"
        "    from MedTransWeb.app import main\n"
        "    import trame_server\n"
        "    return importlib.import_module('vtkmodules.vtkCommonCore')\n"
    )
    assert [m for m in imported_modules(source) if is_forbidden(m)] == [
        "MedTransWeb.app",
        "trame_server",
        "vtkmodules.vtkCommonCore",
    ]


def test_medtrans_web_lists_every_option_of_the_browser_app(capsys):
    from MedTransWeb.app import build_parser

    assert run_cli("web", "--help") == 0
    shown = capsys.readouterr().out
    app_options = [o for action in build_parser()._actions for o in action.option_strings if o.startswith("--")]
    assert set(WEB_OPTIONS) <= set(app_options)
    assert [o for o in app_options if o not in shown] == []


def test_medtrans_web_refuses_a_non_positive_upload_limit_before_starting(capsys):
    assert run_cli("web", "--max-upload-mb", "0") == 2
    assert "positive number of MB" in capsys.readouterr().err


def run_python(script: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "call",
    [
        "from MedTransCore.cli.main import main; main(['web', '--port', '0'])",
        "from MedTransWeb.app import main; main()",
    ],
    ids=["medtrans web", "medtrans-web"],
)
@pytest.mark.parametrize("missing", ["trame", "vtkmodules", "slicer"])
def test_the_browser_app_without_the_web_extra_names_the_extra_to_install(tmp_path, call, missing):
    # None in sys.modules makes `import <missing>` fail exactly as if the package were not installed.
    result = run_python(f"import sys; sys.modules[{missing!r}] = None\n{call}\n", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"{WEB_EXTRA_ERROR} (missing: {missing})"]
    assert result.stdout == ""


def test_a_front_end_command_that_cannot_be_imported_fails_in_one_line_and_spares_the_others(tmp_path):
    # A distribution on sys.path whose `medtrans.commands` entry point names a module that does not exist.
    info = tmp_path / "site" / "brokenfrontend-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenfrontend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[medtrans.commands]\nbroken = no_such_frontend.cli:add_parser\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    script = "import sys; from MedTransCore.cli.main import main; main(sys.argv[1:])"
    broken = subprocess.run(
        [sys.executable, "-c", script, "broken", "--flag"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert broken.returncode == 1
    assert broken.stderr.strip().splitlines() == [
        "error: the 'broken' command is installed but no_such_frontend.cli:add_parser cannot be imported: "
        "No module named 'no_such_frontend'"
    ]
    models = subprocess.run(
        [sys.executable, "-c", script, "models", "--json"], cwd=tmp_path, env=env, capture_output=True
    )
    assert models.returncode == 0 and b"identity" in models.stdout


def copy_sources(destination: Path) -> Path:
    """The files the wheel is built from, without build leftovers (setuptools reuses a stale ``build/``)."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in ("MedTransCore", "MedTransWeb", "MedTransSlicer"):
        shutil.copytree(REPO / name, destination / name, ignore=ignore)
    return destination


def expected_wheel_files() -> set[str]:
    """Every module of the three packages and every file of the shipped bundles, as wheel paths."""
    files = {p.relative_to(REPO).as_posix() for p in CORE.rglob("*.py")}
    files |= {p.relative_to(REPO).as_posix() for p in (REPO / "MedTransWeb").rglob("*.py")}
    files |= {f"MedTransSlicerLib/{p.relative_to(SLICER_LIB).as_posix()}" for p in SLICER_LIB.rglob("*.py")}
    bundles = CORE / "models" / "bundles"
    files |= {
        p.relative_to(REPO).as_posix() for pattern in ("*/*.json", "*/*.safetensors") for p in bundles.glob(pattern)
    }
    return {f for f in files if "__pycache__" not in f}


@pytest.mark.slow
def test_a_built_wheel_installs_a_working_medtrans_web_without_the_checkout(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    source = copy_sources(tmp_path / "src")
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path)], check=True)
    (wheel,) = tmp_path.glob("medtrans-*.whl")

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points_file,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(entry_points_file).decode()
    assert sorted(expected_wheel_files() - names) == []
    assert any(n.endswith(".safetensors") for n in names) and "MedTransSlicerLib/logic.py" in names
    assert not any(n.startswith(("Testing/", "training/", "MedTransSlicer/")) for n in names)
    assert "medtrans = MedTransCore.cli.main:main" in entry_points
    assert "medtrans-web = MedTransWeb.app:main" in entry_points
    assert "[medtrans.commands]\nweb = MedTransWeb.command:add_parser" in entry_points

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"  # a cwd outside the checkout: `python -c` puts the cwd on sys.path
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))

    imported = run_python(
        WITHOUT_CHECKOUT + "import MedTransWeb.webapp, MedTransCore, MedTransSlicerLib\n"
        "for m in (MedTransWeb.webapp, MedTransCore, MedTransSlicerLib): print(m.__file__)\n",
        cwd=elsewhere,
        env=env,
    )
    assert imported.returncode == 0, imported.stderr
    files = [Path(line) for line in imported.stdout.split()]
    assert len(files) == 3 and all(f.is_relative_to(site) for f in files), files

    # `medtrans web --help` as the installed console script runs it: both entry points read from the metadata.
    helped = run_python(
        WITHOUT_CHECKOUT + "import sys; from importlib.metadata import distribution\n"
        "dist = distribution('medtrans'); print(dist.locate_file(''))\n"
        "(script,) = [e for e in dist.entry_points if e.group == 'console_scripts' and e.name == 'medtrans']\n"
        "sys.argv = ['medtrans', 'web', '--help']; script.load()()\n",
        cwd=elsewhere,
        env=env,
    )
    assert helped.returncode == 0, helped.stderr
    metadata_folder, _, usage = helped.stdout.partition("\n")
    assert Path(metadata_folder) == site
    assert usage.startswith("usage: medtrans web") and all(option in usage for option in WEB_OPTIONS)
