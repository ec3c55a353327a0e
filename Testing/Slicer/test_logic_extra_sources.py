"""Several sequences in: additional sources of ``MedTransLogic.translate`` on real MRML nodes, and the model's
limitations in the status of a result.

The command line and the exported files are checked with the real ``SubprocessRunner`` running a stand-in for the
core's CLI (``pythonExecutable`` is a script that records what it was given and answers with the CLI's progress
lines); the tests marked "core" run the real CLI.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from MedTransCore.bundles import find_bundle
from MedTransCore.errors import InputError
from MedTransSlicerLib import MedTransLogic, SubprocessRunner

from .helpers import IDENTITY, addVolume, headArray, nodeArray, nodeIDs, nodeMatrix, obliqueMatrix, rotation

LPS = np.diag([-1.0, -1.0, 1.0])
TWO_SOURCE_LIMITATIONS = "An UNTRAINED two-source test model: its output means nothing."
STAND_IN_WARNING = "the FLAIR looks dim"

# A stand-in for `python -m MedTransCore translate --input MOD=PATH ... --output OUT ...`: it keeps a copy of each
# input, records its command line, writes the first input as the output and prints the CLI's machine-readable lines.
STAND_IN = """\
#!{python}
import json, shutil, sys
from pathlib import Path
import SimpleITK as sitk

seen = Path({seen!r})
args = sys.argv[1:]
inputs = [args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--input"]
for modality, path in inputs:
    shutil.copy(path, seen / (modality + ".nrrd"))
(seen / "argv.json").write_text(json.dumps(sys.argv))
output = args[args.index("--output") + 1]
target = args[args.index("--target-modality") + 1]
sitk.WriteImage(sitk.ReadImage(inputs[0][1], sitk.sitkFloat32), output)
print("PROGRESS 0.5 translating (stand-in)", flush=True)
print("WARNING {warning}", flush=True)
settings = dict(model="identity", version="0.0.0", family="identity", steps=None, seed=0, device="cpu",
                source_modality=inputs[0][0], target_modality=target, source_modalities=[m for m, _ in inputs])
print("RESULT " + json.dumps(dict(output=output, uncertainty=None, **settings)), flush=True)
"""


def saveTwoSourceBundle(folder: Path):
    """A real, tiny, untrained ``slice_unet`` bundle that takes MR_T1 + MR_FLAIR -> MR_T2 (and MR_T1 -> MR_T2)."""
    import torch

    from MedTransCore.bundles import save_bundle
    from MedTransCore.models.slice_unet import build_slice_unet

    network = {
        "input_modalities": ["MR_T1", "MR_FLAIR"],
        "modalities": ["MR_T2"],
        "context": 0,
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
    }
    torch.manual_seed(0)
    weights = {k: v.contiguous() for k, v in build_slice_unet(**network).state_dict().items()}
    metadata = {
        "name": "two-source-test",
        "family": "slice_unet",
        "version": "0.0.1",
        "description": "test bundle taking two sequences",
        "modalities": ["MR_T1", "MR_FLAIR", "MR_T2"],
        "pairs": [["MR_T1", "MR_T2"]],
        "source_sets": [{"sources": ["MR_T1", "MR_FLAIR"], "target": "MR_T2"}],
        "spacing": None,
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": network,
        "training": {},
        "metrics": {},
        "licence": "Apache-2.0",
        "limitations": TWO_SOURCE_LIMITATIONS,
    }
    return save_bundle(folder / "two-source-test", metadata, {"model.safetensors": weights})


class RecordingRunner(SubprocessRunner):
    """The real runner, keeping the command lines it starts."""

    started: list[list[str]] = []

    def start(self, args, env=None):
        RecordingRunner.started.append(list(args))
        super().start(args, env)


@pytest.fixture
def standIn(tmp_path) -> tuple[Path, Path]:
    """``(script, folder where it leaves copies of its inputs and its argv)``."""
    seen = tmp_path / "seen"
    seen.mkdir()
    script = tmp_path / "stand_in_python"
    script.write_text(STAND_IN.format(python=sys.executable, seen=str(seen), warning=STAND_IN_WARNING))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, seen


@pytest.fixture
def standInLogic(scene, standIn):
    RecordingRunner.started = []
    return MedTransLogic(scene, runnerFactory=RecordingRunner, pythonExecutable=str(standIn[0]))


def _flair(scene, source):
    """A FLAIR of the same patient on another grid, under a linear transform (as after a registration)."""
    matrix = obliqueMatrix(spacing=(1.1, 1.0, 2.0), origin=(10.0, -28.0, 45.0))
    matrix[:3, :3] = rotation(1, 6.0) @ matrix[:3, :3]
    node = addVolume(scene, 2.0 * headArray((18, 26, 20)), matrix, "patient FLAIR")
    shift = np.eye(4)
    shift[:3, :3], shift[:3, 3] = rotation(2, 3.0), [2.0, -1.5, 4.0]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "FLAIR to T1")
    vtkShift = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vtkShift.SetElement(r, c, shift[r, c])
    transform.SetMatrixTransformToParent(vtkShift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    return node, shift @ matrix


def _assertGeometry(image: sitk.Image, ijkToRas: np.ndarray) -> None:
    """``image`` (LPS) lies where the IJK-to-RAS matrix says."""
    spacing = np.linalg.norm(ijkToRas[:3, :3], axis=0)
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), LPS @ ijkToRas[:3, 3], atol=1e-4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction, LPS @ ijkToRas[:3, :3] / spacing, atol=1e-5)


def test_every_additional_source_reaches_the_translation_process_as_an_input_in_the_source_frame(
    scene, source, standIn, standInLogic
):
    flair, flairInSourceFrame = _flair(scene, source)
    t2 = addVolume(scene, 3.0 * headArray(), obliqueMatrix(), "patient T2")
    _, seen = standIn

    standInLogic.translate(
        source, "MR_T1", "MR_T1C", model=IDENTITY, device="cpu", extraSources={"MR_FLAIR": flair, "MR_T2": t2}
    )

    argv = json.loads((seen / "argv.json").read_text())
    assert RecordingRunner.started == [argv]
    folder = Path(argv[argv.index("--output") + 1]).parent
    assert argv == [
        argv[0], "-m", "MedTransCore", "translate",
        "--input", f"MR_T1={folder / 'source.nrrd'}",  # the source first: the grid of the result
        "--input", f"MR_FLAIR={folder / 'source-MR_FLAIR.nrrd'}",
        "--input", f"MR_T2={folder / 'source-MR_T2.nrrd'}",
        "--output", str(folder / "synthetic.nrrd"), "--target-modality", "MR_T1C",
        "--seed", "0", "--device", "cpu", "--progress-format", "lines", "--overwrite",
        "--model", str(find_bundle(IDENTITY).path),
    ]  # fmt: skip
    assert "--source-modality" not in argv
    exported = {m: sitk.ReadImage(str(seen / f"{m}.nrrd")) for m in ("MR_T1", "MR_FLAIR", "MR_T2")}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(exported["MR_T1"]), headArray())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(exported["MR_FLAIR"]), 2.0 * headArray((18, 26, 20)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(exported["MR_T2"]), 3.0 * headArray())
    _assertGeometry(exported["MR_T1"], obliqueMatrix())
    _assertGeometry(exported["MR_FLAIR"], flairInSourceFrame)  # its parent transform applied
    _assertGeometry(exported["MR_T2"], obliqueMatrix())
    np.testing.assert_array_equal(nodeArray(flair), 2.0 * headArray((18, 26, 20)))  # never modified


def test_the_result_records_every_source_and_its_status_gives_the_models_limitations_and_warnings(
    scene, source, standInLogic
):
    flair, _ = _flair(scene, source)

    outputs = standInLogic.translate(source, "MR_T1", "MR_T1C", model=IDENTITY, extraSources=[("MR_FLAIR", flair)])

    limitations = find_bundle(IDENTITY).metadata["limitations"]
    node = outputs.syntheticNode
    assert outputs.settings["source_modalities"] == ["MR_T1", "MR_FLAIR"]
    assert node.GetAttribute("MedTrans.SourceModalities") == "MR_T1,MR_FLAIR"
    assert json.loads(node.GetAttribute("MedTrans.SourceVolumes")) == {
        "MR_T1": "patient CBCT",
        "MR_FLAIR": "patient FLAIR",
    }
    assert node.GetAttribute("MedTrans.SourceModality") == "MR_T1"
    assert node.GetAttribute("MedTrans.Limitations") == limitations == outputs.limitations
    assert "from MR_T1 + MR_FLAIR" in node.GetDescription() and limitations in node.GetDescription()
    status = outputs.statusText()
    assert status.startswith("Made patient CBCT -> MR_T1C (synthetic) from MR_T1 + MR_FLAIR with identity")
    assert f"Model limitations: {limitations}" in status
    assert status.endswith(f"Warnings: {STAND_IN_WARNING}")


def _second(scene):
    return addVolume(scene, headArray(), obliqueMatrix(), "second volume")


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        (lambda s, src: [("MR_FLAIR", _second(s)), ("MR_FLAIR", _second(s))], "MR_FLAIR is given twice"),
        (lambda s, src: {"MR_T1": _second(s)}, "MR_T1 is given twice"),
        (lambda s, src: {"MR_T1C": _second(s)}, "MR_T1C is the target modality"),
        (lambda s, src: {"MR_FLAIR": src}, "is the source volume 'patient CBCT' itself"),
        (lambda s, src: [("MR_FLAIR", (n := _second(s))), ("MR_T2", n)], "given both as MR_FLAIR and as MR_T2"),
        (lambda s, src: {"MR_FLAIR": None}, "choose a volume for the additional MR_FLAIR source"),
        (lambda s, src: {"PET": _second(s)}, "unknown modality 'PET'"),
        (
            lambda s, src: {"MR_FLAIR": addVolume(s, headArray(), np.eye(4), "lesions", "vtkMRMLLabelMapVolumeNode")},
            "additional MR_FLAIR source 'lesions' is a label map",
        ),
    ],
    ids=["duplicate", "the-source-modality-again", "the-target", "the-source-node", "one-node-twice", "no-volume",
         "unknown-modality", "label-map"],
)  # fmt: skip
def test_bad_additional_sources_are_refused_before_anything_starts(scene, source, standInLogic, extras, message):
    extraSources = extras(scene, source)
    before, errors = nodeIDs(scene), []
    standInLogic.errorOccurred.connect(errors.append)

    with pytest.raises(InputError, match=message):
        standInLogic.translateAsync(source, "MR_T1", "MR_T1C", model=IDENTITY, extraSources=extraSources)

    assert len(errors) == 1 and message in errors[0]
    assert RecordingRunner.started == [] and nodeIDs(scene) == before


def test_a_target_that_is_the_source_modality_is_refused_with_additional_sources(scene, source, standInLogic):
    with pytest.raises(InputError, match="MR_T1 is the target modality"):
        standInLogic.translate(source, "MR_T1", "MR_T1", model=IDENTITY, extraSources={"MR_FLAIR": _second(scene)})
    assert RecordingRunner.started == []


def test_without_additional_sources_the_command_line_is_the_single_source_one(scene, source, standIn, standInLogic):
    with pytest.raises(Exception, match="exit code 1"):  # the stand-in only reads --input: it fails, after the start
        standInLogic.translate(source, "CBCT", "CT", model=IDENTITY, extraSources={})
    argv = RecordingRunner.started[0]
    assert "--input" not in argv and argv[argv.index("--source-modality") + 1] == "CBCT"
    assert argv[4].endswith("source.nrrd")


# -- with the real core CLI ---------------------------------------------------------------------------------------


def test_the_status_after_a_translation_gives_the_models_limitations(scene, logic, source):
    outputs = logic.translate(source, "CBCT", "CT", model=IDENTITY)

    limitations = find_bundle(IDENTITY).metadata["limitations"]
    assert limitations and outputs.limitations == limitations
    assert outputs.syntheticNode.GetAttribute("MedTrans.Limitations") == limitations
    assert outputs.syntheticNode.GetAttribute("MedTrans.SourceModalities") == "CBCT"
    assert f"Model limitations: {limitations}" in outputs.statusText()


def test_the_core_receives_the_additional_sources_and_a_single_source_model_refuses_them(scene, logic, source):
    """Needs the core CLI's ``--input MODALITY=PATH`` (issue 15): identity takes one source and refuses the set."""
    flair, _ = _flair(scene, source)
    before, errors = nodeIDs(scene), []
    logic.errorOccurred.connect(errors.append)

    run = logic.translateAsync(source, "MR_T1", "MR_T2", model=IDENTITY, extraSources={"MR_FLAIR": flair})
    with pytest.raises(Exception, match=r"identity.*MR_T1( \+|,) MR_FLAIR"):  # the core names both sources it got
        run.wait()

    assert run.state == "failed" and "MR_FLAIR" in errors[0]
    assert nodeIDs(scene) == before
    assert not run._folder.exists()


def test_a_two_source_model_translates_the_source_with_an_additional_sequence_on_the_source_grid(
    scene, logic, source, tmp_path
):
    """Needs the core's several-source translation (issue 15)."""
    model = saveTwoSourceBundle(tmp_path).path
    flair, _ = _flair(scene, source)

    outputs = logic.translate(source, "MR_T1", "MR_T2", model=model, device="cpu", extraSources={"MR_FLAIR": flair})

    node = outputs.syntheticNode
    np.testing.assert_array_equal(nodeMatrix(node), obliqueMatrix())  # exactly the source geometry
    assert node.GetImageData().GetDimensions() == (22, 24, 20)
    assert np.isfinite(nodeArray(node)).all()
    assert outputs.settings["model"] == "two-source-test"
    assert outputs.settings["source_modalities"] == ["MR_T1", "MR_FLAIR"]
    assert node.GetAttribute("MedTrans.SourceModalities") == "MR_T1,MR_FLAIR"
    assert outputs.limitations == TWO_SOURCE_LIMITATIONS
    assert f"from MR_T1 + MR_FLAIR with two-source-test 0.0.1 on cpu. Model limitations: {TWO_SOURCE_LIMITATIONS}" in (
        outputs.statusText()
    )


def test_the_status_text_is_plain_without_limitations_or_warnings():
    from MedTransSlicerLib import TranslationOutputs

    class Named:
        def GetName(self):
            return "x -> CT (synthetic)"

    settings = {"model": "m", "version": "1", "device": "cpu", "source_modality": "CBCT"}
    text = TranslationOutputs(Named(), settings=settings).statusText()
    assert text == "Made x -> CT (synthetic) from CBCT with m 1 on cpu."
