"""Model family name -> ``Translator`` class, imported lazily (a family's heavy imports load only when used).

A bundle's ``family`` field picks its class here. To add a family, add one ``"name": "module:Class"`` line
to ``_FAMILY_PATHS``. Importing this module is cheap (no torch): ``MedTransCore.bundles`` checks a bundle's family
against :data:`FAMILY_NAMES` when it loads the metadata.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from ..errors import BundleError

if TYPE_CHECKING:
    from .base import Translator

_FAMILY_PATHS: dict[str, str] = {
    # trained families
    "unet": "MedTransCore.models.unet:UNetTranslator",
    "aldm": "MedTransCore.models.aldm:ALDMTranslator",
    "slice_unet": "MedTransCore.models.slice_unet:SliceUNetTranslator",
    "vid2vid": "MedTransCore.models.vid2vid:Vid2VidTranslator",
    "vae_transformer": "MedTransCore.models.vae_transformer:VAETransformerTranslator",
    "s2ldm": "MedTransCore.models.s2ldm:S2LDMTranslator",
    # baselines (no training)
    "identity": "MedTransCore.models.baselines:IdentityTranslator",
    "histogram_matching": "MedTransCore.models.baselines:HistogramMatchingTranslator",
}
#: The families this version of MedTrans can run.
FAMILY_NAMES: tuple[str, ...] = tuple(_FAMILY_PATHS)


class _LazyFamilies(Mapping):
    """A read-only ``{family: Translator subclass}`` mapping that imports each class on first access."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = paths
        self._loaded: dict[str, type[Translator]] = {}

    def __getitem__(self, family: str) -> type[Translator]:
        from .base import Translator  # torch loads with the first family that is used

        if family not in self._loaded:
            module_name, class_name = self._paths[family].split(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            if not (isinstance(cls, type) and issubclass(cls, Translator)):
                raise TypeError(f"{self._paths[family]} is not a Translator subclass")
            self._loaded[family] = cls
        return self._loaded[family]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


FAMILIES: Mapping[str, type[Translator]] = _LazyFamilies(_FAMILY_PATHS)


def get_translator_class(family: str) -> type[Translator]:
    """The ``Translator`` class of a bundle family.

    Raises:
        BundleError: the family is not known to this version of MedTrans.
    """
    if family not in FAMILIES:
        raise BundleError(f"unknown model family {family!r}; this MedTrans knows: {', '.join(FAMILIES)}")
    return FAMILIES[family]
