"""Trainable stages; the stage named ``X`` lives in ``X.py`` and sets ``STAGE`` (see ``base``)."""

from .base import Stage, get_stage_class, load_run_state

__all__ = ["Stage", "get_stage_class", "load_run_state"]
