"""The keys a run config may have, section by section and stage by stage, so that a misspelled key is an error.

``check_keys(config)`` walks the config against a schema: a ``dict`` schema lists the allowed keys (values are
sub-schemas), :data:`ANY` accepts any value, and a callable checks a value itself (the networks' keyword configs are
checked by the same ``resolve_*`` functions that build them). A stage that is not in :data:`MODEL_SCHEMAS` (a stage
of your own) may set ``model_schema`` on its class; otherwise its ``model`` section is not checked.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from MedTransCore.errors import InputError

#: Any value is accepted (a leaf of the schema).
ANY = None
Schema = dict[str, Any] | Callable[[Any, str], None] | None

OPTIMISER = {"lr": ANY, "betas": ANY, "weight_decay": ANY}
EXPORT = {
    **{key: ANY for key in ("name", "version", "description", "licence", "limitations")},
    # the bundle's training domain, copied as is (MedTransCore.bundles.validate_metadata checks its words)
    "domain": {"anatomy": ANY, "preprocessing": ANY, "training_data": ANY},
}


def _leaves(*names: str) -> dict[str, None]:
    return dict.fromkeys(names, ANY)


def _per_module(value: Any, path: str) -> None:
    """``model.optim``: ``{module name: {lr, betas, weight_decay}}`` (module names are the stage's own)."""
    if not isinstance(value, dict):
        raise InputError(f"{path} must be a mapping of module name -> optimiser settings")
    for module, settings in value.items():
        check_keys(settings, OPTIMISER, f"{path}.{module}")


def _augment(value: Any, path: str) -> None:
    from .data.dataset import AUGMENT_DEFAULTS

    if not isinstance(value, bool):
        check_keys(value, _leaves(*AUGMENT_DEFAULTS), path)


def _resolved_by(resolve: Callable[..., Any]) -> Callable[[Any, str], None]:
    """A check that calls a network's ``resolve_*_config(**value)`` (it names unknown keywords)."""

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise InputError(f"{path} must be a mapping of keyword -> value")
        try:
            resolve(**value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: {exc}") from exc

    return check


def _unet_network() -> dict[str, None]:
    from MedTransCore.models.unet import build_unet_network

    return _leaves(*(set(inspect.signature(build_unet_network).parameters) - {"num_modalities"}))


def _cbct_simulation(value: Any, path: str) -> None:
    """``data.cbct_simulation``: ``ConeBeamSettings`` fields and ``cache`` (checked by the code that reads them)."""
    if value is None:
        return  # in an extra source: no simulation there
    from .data.cbct_cache import simulation_settings

    simulation_settings(value, path)


def _source() -> dict[str, Any]:
    """The keys that say where cases come from (``data`` and each ``data.extra_sources`` entry)."""
    return {
        **_leaves(
            "source",
            "root",
            "layout",
            "mr_modality",
            "flat_modality",  # layout: flat: the modality of every file
            "manifest",
            "val_cases",
            "val_fraction",
            "test_cases",
            "test_fraction",
        ),  # fmt: skip
        "phantom": _leaves("anatomy", "shape", "spacing", "train_seeds", "val_seeds", "test_seeds"),
        "cbct_simulation": _cbct_simulation,  # CBCT simulated from each case's CT, cached (data.cbct_cache)
    }


def _extra_sources(value: Any, path: str) -> None:
    """``data.extra_sources``: a list of source mappings (more cases in the same run)."""
    if not isinstance(value, list):
        raise InputError(f"{path} must be a list of mappings with keys among: {', '.join(_source())}")
    for index, entry in enumerate(value):
        check_keys(entry, _source(), f"{path}[{index}]")


def _data() -> dict[str, Any]:
    return {
        **_source(),
        **_leaves(
            "modalities",
            "pairs",
            "spacing",
            "patch",
            "all_targets",
            "standardise",
            "repeats",
            "val_repeats",
            "sampling",
            "context",
            "normalisation",
            "intensity_window",  # HU window per CT-like modality (data.intensity_windows checks it)
            "balance",
        ),  # fmt: skip
        "augment": _augment,
        "extra_sources": _extra_sources,  # more sources of cases in the same run (data.case_loaders)
    }


def _train() -> dict[str, None]:
    from .config import TRAIN_DEFAULTS

    # betas and weight_decay are read by every optimiser (Stage.configure_optimizers) unless model.optim overrides.
    return _leaves(*TRAIN_DEFAULTS, "betas", "weight_decay")


def _model_schema(stage: str) -> Schema:
    """The ``model`` section of ``stage`` (imports the stage's defaults, so new loss keys follow the code)."""
    discriminator = _leaves("channels", "num_layers_d")
    if stage == "unet":
        from .stages.unet import LOSS_DEFAULTS

        return {
            "network": _unet_network(),
            "zero_init_output": ANY,
            "loss": _leaves(*LOSS_DEFAULTS),
            "discriminator": discriminator,
            "optim": _per_module,
        }
    if stage.startswith("aldm_"):
        from MedTransCore.models.aldm import networks
        from MedTransCore.models.aldm.sampler import SCHEDULE_DEFAULTS

        from .stages import aldm_autoencoder

        schemas = {
            "aldm_autoencoder": {
                "network": _resolved_by(networks.resolve_autoencoder_config),
                "loss": _leaves(*aldm_autoencoder.LOSS_DEFAULTS),
                "discriminator": discriminator,
                "codebook_reset": _leaves(*aldm_autoencoder.RESET_DEFAULTS),
                "optim": _per_module,
            },
            "aldm_spade": {
                **_leaves("autoencoder_run", "latent_cache"),
                "network": _resolved_by(networks.resolve_spade_config),
                "optim": _per_module,
            },
            "aldm_diffusion": {
                **_leaves(
                    "autoencoder_run",
                    "spade_run",
                    "default_sampler",
                    "default_steps",
                    "val_steps",
                    "latent_cache",
                    "latent_crop",
                    "grid",
                ),
                "network": _resolved_by(networks.resolve_diffusion_config),
                "scheduler": _leaves(*SCHEDULE_DEFAULTS),
                "optim": _per_module,
            },
        }
        if stage in schemas:
            return schemas[stage]
    from .stages.base import get_stage_class

    return getattr(get_stage_class(stage), "model_schema", ANY)


def config_schema(stage: str) -> dict[str, Any]:
    """The whole schema of a run config of ``stage``."""
    return {
        "stage": ANY,
        "seed": ANY,
        "data": _data(),
        "model": _model_schema(stage),
        "train": _train(),
        "export": EXPORT,
    }


def check_keys(value: Any, schema: Schema, path: str) -> None:
    """Raise ``InputError`` for the first key of ``value`` that ``schema`` does not allow.

    Args:
        value: a config section (or any value below one).
        schema: a dict of allowed keys -> sub-schemas, :data:`ANY`, or a callable ``check(value, path)``.
        path: the dotted name of ``value`` for the message (e.g. ``"train"``).

    Raises:
        InputError: ``unknown key train.stepz; allowed keys of train: ...; did you mean train.steps?``.
    """
    if schema is ANY:
        return
    if callable(schema):
        schema(value, path)
        return
    if not isinstance(value, dict):
        raise InputError(f"{path} must be a mapping with keys among: {', '.join(schema)}")
    for key, sub in value.items():
        name = f"{path}.{key}" if path else str(key)
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"; did you mean {f'{path}.' if path else ''}{close[0]}?" if close else ""
            where = f"of {path}" if path else "(sections)"
            raise InputError(f"unknown key {name}; allowed keys {where}: {', '.join(sorted(schema))}{hint}")
        check_keys(sub, schema[key], name)
