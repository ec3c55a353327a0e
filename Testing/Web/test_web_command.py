"""``medtrans web --help`` as a user types it: the installed console scripts, in a subprocess (no server starts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from MedTransWeb.app import DEFAULT_HOST, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT, build_parser

SCRIPTS = Path(sys.executable).parent


def app_options() -> list[str]:
    return [o for action in build_parser()._actions for o in action.option_strings if o.startswith("--")]


@pytest.mark.parametrize("command", [["medtrans", "web"], ["medtrans-web"]], ids=" ".join)
def test_the_help_lists_every_option_of_the_browser_app_with_its_default(command):
    script = SCRIPTS / command[0]
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    shown = subprocess.run([str(script), *command[1:], "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    usage = " ".join(shown.stdout.split())  # argparse wraps lines at the terminal width
    assert usage.startswith(f"usage: {' '.join(command)} ")
    assert {"--host", "--port", "--max-upload-mb"} <= set(app_options())
    assert [o for o in app_options() if o not in usage] == []
    for default in (f"default {DEFAULT_HOST}", f"default {DEFAULT_PORT}", f"default {DEFAULT_MAX_UPLOAD_MB}"):
        assert default in usage
    assert re.search(r"example: medtrans web --port \d+ --max-upload-mb \d+", usage)
