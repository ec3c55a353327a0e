"""Lazy installation of MedTrans's Python dependencies inside Slicer (asked for on the first Translate).

What is installed and why:

* PyTorch, through the PyTorch extension (``PyTorchUtils``), which picks the build matching the GPU driver;
  a plain ``pip install torch`` would fetch an arbitrary (often multi-GB CUDA) build.
* ``Resources/requirements.txt`` (MONAI networks and schedulers, safetensors weights, einops, scipy, tqdm)
  without touching what Slicer ships: SimpleITK, numpy and torch are skipped, never replaced.

The ``MedTransCore`` package itself ships inside the extension (top-level ``CMakeLists.txt``) or comes from the
source checkout this module lives in (``Add module path``); it is never pip-installed here.

Checking is Qt-free and tested; installing needs the Slicer application and is called by the widget only after
the user agreed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # older Slicer: only pip's vendored copy
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
# Packages Slicer (or the PyTorch extension) provides: never installed or replaced from requirements.
PROVIDED_BY_SLICER = ("SimpleITK", "numpy", "torch")
TORCH_REQUIREMENT = ">=2.4"


def checkoutRoot() -> Path | None:
    """The source checkout holding ``MedTransCore`` next to ``MedTransSlicer`` (``Add module path`` installs)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "MedTransCore" / "__init__.py").is_file() else None


def makeCoreImportable() -> bool:
    """Put a source checkout's ``MedTransCore`` on ``sys.path`` if needed; True when it can be imported."""
    if importlib.util.find_spec("MedTransCore") is None:
        root = checkoutRoot()
        if root is not None and str(root) not in sys.path:
            sys.path.insert(0, str(root))
            importlib.invalidate_caches()
    return importlib.util.find_spec("MedTransCore") is not None


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """The requirements of a requirements file (comments and blank lines skipped).

    Raises:
        ValueError: a line is not a valid requirement.
    """
    requirements = []
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            requirements.append(Requirement(text))
        except InvalidRequirement as exc:
            raise ValueError(f"{path}: invalid requirement {text!r} ({exc})") from exc
    return requirements


def isSatisfied(requirement: Requirement) -> bool:
    """Whether an installed distribution satisfies ``requirement`` (name and version)."""
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(version, prereleases=True)


@dataclass
class InstallPlan:
    """What the first Translate has to install (empty when everything is there)."""

    torch: bool = False
    packages: list[Requirement] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.torch or self.packages)

    def describe(self) -> str:
        """The message shown before installing: what and why."""
        lines = ["MedTrans needs some Python packages that are not installed yet:"]
        if self.torch:
            lines.append(
                f"- PyTorch ({TORCH_REQUIREMENT}) through the PyTorch extension, which picks the build for your "
                "GPU driver (or the CPU build): the models run on it. This may download a few GB."
            )
        if self.packages:
            names = ", ".join(str(r) for r in self.packages)
            lines.append(f"- {names}: the networks, samplers and weight files of the models.")
        lines.append("Packages Slicer already provides (SimpleITK, numpy) are left as they are.")
        lines.append("Install now? This is needed once; Slicer may ask to restart afterwards.")
        return "\n".join(lines)


def installPlan(requirementsFile: Path = REQUIREMENTS_FILE) -> InstallPlan:
    """Compare the requirements with what is installed (no network, no Slicer application needed)."""
    missing = [r for r in readRequirements(requirementsFile) if r.name not in PROVIDED_BY_SLICER and not isSatisfied(r)]
    return InstallPlan(torch=importlib.util.find_spec("torch") is None, packages=missing)


def install(plan: InstallPlan) -> None:
    """Carry out ``plan`` inside the Slicer application (the caller has asked the user).

    Raises:
        MedTransError: the PyTorch extension is missing, or an installation failed.
    """
    import slicer.util

    from MedTransCore.errors import MedTransError

    if plan.torch:
        try:
            import PyTorchUtils
        except ImportError:
            raise MedTransError(
                "MedTrans needs the PyTorch extension: install it from the Extensions Manager, restart, retry"
            ) from None
        if (
            PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT
            )
            is None
        ):
            raise MedTransError("PyTorch was not installed")
    if plan.packages:
        ensure = _pipEnsure()
        if ensure is not None:
            ensure(plan.packages, skip_packages=list(PROVIDED_BY_SLICER), requester="MedTrans")
        else:  # older Slicer: torch/SimpleITK/numpy are already satisfied, so pip leaves them alone
            slicer.util.pip_install(" ".join(str(r) for r in plan.packages))
    importlib.invalidate_caches()


def _pipEnsure():
    """``pip_ensure`` of Slicer's packaging helpers (``slicer.pydeps``, 5.11+; ``slicer.packaging``), if any."""
    for name in ("slicer.pydeps", "slicer.packaging"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "pip_ensure"):
            return module.pip_ensure
    return None
