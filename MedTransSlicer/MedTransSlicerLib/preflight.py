"""Guard rails before a run, shared by every front end: may it run, which model will, and what to watch out for.

:func:`preflight` answers, for the inputs a user has chosen so far, what the desktop panel and the browser app show
beside them before Translate: a refusal (Translate stays off, the line says why and what to do), the model that will
run with its training domain, intended use and limitations, the input's domain, and the plausibility warnings. The
core decides (:func:`MedTransCore.bundles.choose_bundle`, :func:`MedTransCore.domain.classify_domain`,
:func:`MedTransCore.plausibility.check_plausibility`); this module only asks it, cheaply: no torch, a strided look
at the voxels (well under a second for a 240x240x155 volume), so a GUI calls it whenever an input changes.

:func:`referenceCheck` says whether a reference volume can score the result: it must overlap the source in physical
space, and a different field of view is worth a warning (metrics are computed only where both volumes exist).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from MedTransCore.bundles import choose_bundle, installed_bundles
from MedTransCore.domain import InputDomain, bundle_domain_words, classify_domain, domain_hints
from MedTransCore.errors import InputError, MedTransError
from MedTransCore.modalities import get_modality
from MedTransCore.plausibility import check_plausibility

from . import guess, volumes

# The reference should cover at least this share of the source's field of view; below, a warning.
MIN_REFERENCE_COVERAGE = 0.9
# A reference whose field of view is more than this many times the source's gets a warning too.
MAX_REFERENCE_SIZE_RATIO = 2.0
# Points per axis sampled in each field of view to measure how much of it the other volume covers.
COVERAGE_SAMPLES = 20
# What the domain check needs (scipy) is installed with the other dependencies on the first Translate in Slicer.
DOMAIN_UNCHECKED = (
    "the input's anatomy and kind (real scan or phantom) are checked once MedTrans's Python packages are installed; "
    "until then the model shown is chosen by the modalities alone"
)


@dataclass(frozen=True)
class Preflight:
    """What a front end shows before a run (see :func:`preflight`).

    Attributes:
        refusal: non-empty: Translate must not run; one line saying why and what to do.
        warnings: plausibility and domain warnings about the inputs, to show beside them before a run.
        model: name of the bundle that will run (``""`` when there is none).
        automatic: True when no model was named (the core's domain-aware choice).
        modelDomain: the bundle's training domain in words (:func:`MedTransCore.domain.bundle_domain_words`).
        intendedUse: the bundle's metadata ``description``.
        limitations: the bundle's metadata ``limitations``.
        inputDomain: the source's domain in words (:meth:`MedTransCore.domain.InputDomain.describe`).
    """

    refusal: str = ""
    warnings: tuple[str, ...] = ()
    model: str = ""
    automatic: bool = True
    modelDomain: str = ""
    intendedUse: str = ""
    limitations: str = ""
    inputDomain: str = ""

    @property
    def ok(self) -> bool:
        return not self.refusal

    def modelText(self) -> str:
        """``"Automatic: <name>"`` or the named model's name (``""`` when none will run)."""
        if not self.model:
            return ""
        return f"Automatic: {self.model}" if self.automatic else self.model

    def modelSummary(self) -> str:
        """Lines about the model that will run: name, training domain, intended use, limitations (``""``: none)."""
        if not self.model:
            return ""
        lines = [f"{self.modelText()} (trained on {self.modelDomain})"]
        if self.intendedUse:
            lines.append(f"Intended use: {self.intendedUse}")
        if self.limitations:
            lines.append(f"Limitations: {self.limitations}")
        return "\n".join(lines)

    def inputSummary(self) -> str:
        """Lines about the inputs: the source's domain, then one line per warning (``""``: nothing to say)."""
        lines = [f"Source: {self.inputDomain}"] if self.inputDomain else []
        lines += [f"Warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def checkModalities(sourceModality: str, targetModality: str) -> None:
    """Raise ``InputError`` for an unknown modality or a target that is the source's own modality.

    A CT-to-CT "translation" runs the identity and labels the source SYNTHETIC: refused, whatever the model.
    """
    get_modality(sourceModality), get_modality(targetModality)
    if sourceModality == targetModality:
        raise InputError(f"the source is already {targetModality}: choose another target modality")


def checkExtraSources(sourceNode, sourceModality: str, targetModality: str, extraSources) -> dict:
    """The additional sources as an ordered ``{modality: node}``; raises ``InputError`` for a bad one.

    Args:
        extraSources: ``{modality: node}`` or ``(modality, node)`` rows as a GUI lists them (duplicates in rows are
            refused instead of silently dropped); ``None`` or empty for none.
    """
    if not extraSources:
        return {}
    rows = list(extraSources.items() if isinstance(extraSources, Mapping) else extraSources)
    extras: dict[str, object] = {}
    for row in rows:
        try:
            modality, node = row
        except (TypeError, ValueError):
            raise InputError(f"an additional source is a (modality, volume) pair, got {row!r}") from None
        get_modality(modality)
        what = f"additional {modality} source"
        if node is None:
            raise InputError(f"choose a volume for the {what}")
        volumes.checkScalarVolume(node, what)
        if modality == targetModality:
            raise InputError(f"{modality} is the target modality: it cannot also be a source")
        if modality == sourceModality or modality in extras:
            raise InputError(f"{modality} is given twice as a source; each source modality can be used once")
        if node is sourceNode:
            raise InputError(f"the {what} is the source volume {node.GetName()!r} itself; choose another volume")
        for other, used in extras.items():
            if node is used:
                raise InputError(f"volume {node.GetName()!r} is given both as {other} and as {modality}")
        extras[modality] = node
    if sourceModality == targetModality:
        raise InputError(f"{targetModality} is the target modality: it cannot also be a source")
    return extras


def nodeDomain(node, modality: str, array: np.ndarray | None = None) -> InputDomain:
    """:func:`~MedTransCore.domain.classify_domain` of a volume node, with its phantom marker as the core sees it.

    The exported file carries the node's :data:`~MedTransSlicerLib.volumes.PHANTOM_NOTE_ATTRIBUTE` in its notes, so
    the hints are the ones the core's CLI will read; the spacing is the node's (the exported file's).

    Args:
        array: the node's voxels when the caller has them already (else they are read).

    Raises:
        ImportError: the domain check's dependency (scipy) is not installed yet.
    """
    note = node.GetAttribute(volumes.PHANTOM_NOTE_ATTRIBUTE)
    hints = domain_hints({"ITK_FileNotes": note}) if note else {}
    array = volumes.arrayFromVolume(node) if array is None else array
    return classify_domain(array, modality, node.GetSpacing(), **hints)


def inputWarnings(
    node, modality: str, bundle=None, domain: InputDomain | None = None, array: np.ndarray | None = None
) -> list[str]:
    """The core's plausibility warnings for a volume node (with the model's field of view and domain when given)."""
    return check_plausibility(
        volumes.arrayFromVolume(node) if array is None else array,
        modality,
        size=node.GetImageData().GetDimensions(),
        spacing=node.GetSpacing(),
        bundle=bundle,
        dicom_modality=guess.dicomModalityOfNode(node),
        domain=domain,
    )


def _forPanels(text: str) -> str:
    """The core's words for the command line, said for a panel with a model list."""
    return text.replace("name it with --model NAME", "choose it in the model list").replace(
        "with --model", "in the model list"
    )


def _unique(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_forPanels(t) for t in texts if t))


def _noModel(sources: list[str], targetModality: str) -> str:
    request = " + ".join(sources) + f" -> {targetModality}"
    return (
        f"no installed model translates {request}: choose another target modality or source set, "
        "or install a model that does"
    )


def preflight(
    sourceNode, sourceModality: str, targetModality: str, model=None, referenceNode=None, extraSources=None
) -> Preflight:
    """Whether a translation may run, which model will run it, and the warnings to show before it does.

    Never raises for a user's choice: a bad one is a refusal. Refused are: no (valid) source volume; a target that is
    the source's modality; a bad additional source (the target, a modality or a volume twice, the source itself); a
    reference that is the source or lies elsewhere (:func:`referenceCheck`); a request no installed model supports;
    no named model and none that fits the input's domain (the core's message); a named model that does not support
    the request or does not load.

    Args:
        sourceNode: the source volume node (``None``: nothing chosen yet).
        sourceModality, targetModality: registry keys.
        model: a bundle name or folder; ``None`` or ``""``: the core's domain-aware choice.
        referenceNode: the optional reference volume (its refusal and warnings are included here).
        extraSources: additional sources, as for ``MedTransLogic.translate``.

    Returns:
        the :class:`Preflight`; its ``warnings`` gather the source's (and any additional source's) plausibility and
        domain warnings, a named model's misfit warning and the reference's warnings.
    """
    automatic = model is None or model == ""
    model = None if automatic else model
    try:
        volumes.checkScalarVolume(sourceNode, "source")
        get_modality(sourceModality), get_modality(targetModality)
    except MedTransError as error:
        return Preflight(refusal=str(error), automatic=automatic)

    array = volumes.arrayFromVolume(sourceNode)
    domain, notes = None, []
    try:
        domain = nodeDomain(sourceNode, sourceModality, array)
    except ImportError:
        notes.append(DOMAIN_UNCHECKED)
    inputDomain = domain.describe() if domain is not None else ""

    def refused(message: str) -> Preflight:
        """A refusal that still shows what the source looks like (its domain and plausibility warnings)."""
        warnings = [*inputWarnings(sourceNode, sourceModality, domain=domain, array=array), *notes]
        return Preflight(refusal=message, warnings=_unique(warnings), automatic=automatic, inputDomain=inputDomain)

    try:
        extras = checkExtraSources(sourceNode, sourceModality, targetModality, extraSources)
        checkModalities(sourceModality, targetModality)
    except MedTransError as error:
        return refused(str(error))
    referenceRefusal, referenceWarnings = referenceCheck(referenceNode, sourceNode)
    if referenceRefusal:
        return refused(referenceRefusal)

    sources = [sourceModality, *extras]
    if automatic and not any(b.supports_sources(sources, targetModality) for b in installed_bundles()):
        return refused(_noModel(sources, targetModality))
    try:
        bundle, modelWarnings = choose_bundle(sources, targetModality, model, domain=domain)
    except MedTransError as error:
        return refused(_forPanels(str(error)))

    warnings = [*inputWarnings(sourceNode, sourceModality, bundle, domain, array), *notes, *modelWarnings]
    for modality, node in extras.items():
        warnings += [f"{modality} source: {text}" for text in inputWarnings(node, modality, bundle)]
    warnings += referenceWarnings
    return Preflight(
        warnings=_unique(warnings),
        model=bundle.name,
        automatic=automatic,
        modelDomain=bundle_domain_words(bundle.domain),
        intendedUse=str(bundle.metadata.get("description") or ""),
        limitations=str(bundle.metadata.get("limitations") or ""),
        inputDomain=inputDomain,
    )


# -- the reference -------------------------------------------------------------------------------------------------


def _gridPoints(shape_xyz: tuple[int, int, int]) -> np.ndarray:
    """Continuous IJK points (N, 4) spread evenly over a grid's field of view (voxel faces included)."""
    axes = []
    for n in shape_xyz:
        k = min(int(n), COVERAGE_SAMPLES)
        axes.append(-0.5 + (np.arange(k) + 0.5) * (n / k))
    i, j, k = np.meshgrid(*axes, indexing="ij")
    return np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)], axis=1)


def _inside(points_ijk: np.ndarray, shape_xyz: tuple[int, int, int]) -> np.ndarray:
    upper = np.asarray(shape_xyz, dtype=float) - 0.5
    return np.all((points_ijk[:, :3] >= -0.5) & (points_ijk[:, :3] < upper), axis=1)


def _coverage(fromMatrix: np.ndarray, fromShape, toMatrix: np.ndarray, toShape) -> float:
    """The share of one grid's field of view that lies inside another's (both IJK-to-RAS in one frame)."""
    points = _gridPoints(fromShape) @ fromMatrix.T @ np.linalg.inv(toMatrix).T
    return float(_inside(points, toShape).mean())


def _fieldOfViewMl(matrix: np.ndarray, shape_xyz) -> float:
    return abs(float(np.linalg.det(matrix[:3, :3]))) * float(np.prod(shape_xyz)) / 1000.0


def referenceCheck(referenceNode, sourceNode) -> tuple[str, tuple[str, ...]]:
    """Can ``referenceNode`` score a translation of ``sourceNode``? ``(refusal, warnings)``.

    Refused: a reference that is not a scalar volume, that is the source volume itself, or whose field of view does
    not overlap the source's in physical space (parent transforms applied; a non-linear one must be hardened).
    Warned: a reference covering less than :data:`MIN_REFERENCE_COVERAGE` of the source's field of view, or more
    than :data:`MAX_REFERENCE_SIZE_RATIO` times its volume: metrics are computed only where both exist.

    Args:
        referenceNode: the reference volume (``None``: no reference, nothing to say).
        sourceNode: the source volume (``None`` or invalid: only the reference itself is checked).
    """
    if referenceNode is None:
        return "", ()
    try:
        volumes.checkScalarVolume(referenceNode, "reference")
    except MedTransError as error:
        return str(error), ()
    if referenceNode is sourceNode:
        return (
            f"the reference {referenceNode.GetName()!r} is the source volume itself: choose a real scan of the "
            "target modality of the same patient, or no reference",
            (),
        )
    try:
        volumes.checkScalarVolume(sourceNode, "source")
    except MedTransError:
        return "", ()  # nothing to compare with yet: the source's own refusal says why
    try:
        referenceMatrix = volumes.ijkToRasInFrameOf(referenceNode, sourceNode)
    except MedTransError as error:  # a non-linear transform between the two
        return str(error), ()
    sourceMatrix = volumes.ijkToRas(sourceNode)
    sourceShape = sourceNode.GetImageData().GetDimensions()
    referenceShape = referenceNode.GetImageData().GetDimensions()
    covered = _coverage(sourceMatrix, sourceShape, referenceMatrix, referenceShape)
    if covered == 0.0 and _coverage(referenceMatrix, referenceShape, sourceMatrix, sourceShape) == 0.0:
        return (
            f"the reference {referenceNode.GetName()!r} does not overlap the source {sourceNode.GetName()!r} in "
            "physical space: choose a scan of the same patient and position, or move it (Transforms) onto the source",
            (),
        )
    warnings = []
    if covered < MIN_REFERENCE_COVERAGE:
        warnings.append(
            f"the reference {referenceNode.GetName()!r} covers only {covered:.0%} of the source's field of view: "
            "the metrics are computed only where both exist"
        )
    ratio = _fieldOfViewMl(referenceMatrix, referenceShape) / max(_fieldOfViewMl(sourceMatrix, sourceShape), 1e-12)
    if ratio > MAX_REFERENCE_SIZE_RATIO:
        warnings.append(
            f"the reference {referenceNode.GetName()!r} has a field of view {ratio:.1f} times the source's: "
            "the metrics are computed only where both exist"
        )
    return "", tuple(warnings)
