"""Shared test set-up: every test sees only the shipped bundles plus its own user model folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_user_models(tmp_path_factory, monkeypatch):
    """Point $MEDTRANS_MODELS and ~ at empty folders so a developer's own bundles never leak into tests."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MEDTRANS_MODELS", str(home / "models"))
    return home / "models"
