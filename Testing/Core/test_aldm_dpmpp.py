"""DPM-Solver++ (2M), the ``dpmpp`` sampler: the bundle's exact schedule, agreement with DDIM, the choice by bundle
and by ``medtrans translate --sampler``."""

from __future__ import annotations

import json

import pytest
import SimpleITK as sitk
import torch
from torch import nn

from MedTransCore.bundles import Bundle
from MedTransCore.cli.main import main
from MedTransCore.errors import BundleError, CancelledError, InputError
from MedTransCore.models.aldm import ALDMTranslator, build_scheduler, ddim_sample, dpmpp_sample, sample
from MedTransCore.models.aldm.sampler import dpmpp_timesteps, initial_noise
from MedTransCore.phantoms import generate_phantom

from .test_aldm_sampler import ConditionEcho, OracleDenoiser
from .test_aldm_translator import tiny_aldm_bundle


def _cond(shape=(1, 4, 3, 4, 5)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers 0.42 + numpy 2: __array__(copy=...)
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 25])
def test_dpmpp_takes_the_same_steps_as_diffusers_dpm_solver_multistep_on_the_bundles_exact_betas(steps):
    diffusers = pytest.importorskip("diffusers")  # the maintained reference implementation (test extra)
    scheduler, cond = build_scheduler("ddim"), _cond()
    reference = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=scheduler.num_train_timesteps,
        trained_betas=scheduler.betas.numpy(),
        solver_order=2,
        prediction_type="epsilon",
        thresholding=False,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        timestep_spacing="linspace",
    )
    reference.set_timesteps(steps)
    torch.testing.assert_close(reference.alphas_cumprod, scheduler.alphas_cumprod, rtol=0, atol=0)
    assert [int(t) for t in reference.timesteps] == dpmpp_timesteps(scheduler.num_train_timesteps, steps)
    model = ConditionEcho()
    x = initial_noise((1, 2, 3, 4, 5), 0, "cpu", torch.float32)
    for t in reference.timesteps:
        x = reference.step(model(x, t.view(1), cond, None), t, x).prev_sample
    ours = dpmpp_sample(model, cond, torch.tensor([0]), scheduler, steps, seed=0)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_dpmpp_with_an_ideal_denoiser_recovers_a_latent_far_outside_minus_one_to_one_in_exactly_steps_calls(steps):
    clean = torch.linspace(-6, 6, 2 * 3 * 4 * 5).reshape(1, 2, 3, 4, 5)
    scheduler = build_scheduler("ddim")
    oracle = OracleDenoiser(clean, scheduler.alphas_cumprod)
    out = dpmpp_sample(oracle, torch.zeros(1, 4, 3, 4, 5), torch.tensor([0]), scheduler, steps, seed=1)
    torch.testing.assert_close(out, clean, rtol=1e-4, atol=1e-4)
    assert oracle.calls == steps


def test_one_dpmpp_step_is_one_ddim_step():
    scheduler, cond = build_scheduler("ddim"), _cond()
    ddim = ddim_sample(ConditionEcho(), cond, torch.tensor([0]), scheduler, 1, seed=3)
    dpmpp = dpmpp_sample(ConditionEcho(), cond, torch.tensor([0]), scheduler, 1, seed=3)
    torch.testing.assert_close(dpmpp, ddim, rtol=1e-5, atol=1e-5)


def test_dpmpp_converges_to_the_ddim_sample_and_gets_there_in_far_fewer_steps():
    scheduler, cond = build_scheduler("ddim"), _cond()
    run = lambda fn, steps: fn(ConditionEcho(), cond, torch.tensor([0]), scheduler, steps, seed=0)  # noqa: E731
    converged = run(ddim_sample, 1000)
    error = lambda x: float((x - converged).norm() / converged.norm())  # noqa: E731
    assert error(run(dpmpp_sample, 200)) < 0.01 and error(run(ddim_sample, 200)) < 0.02
    assert error(run(dpmpp_sample, 10)) < error(run(ddim_sample, 10)) / 5  # the second-order correction


def test_dpmpp_is_seeded_reports_progress_and_cancels():
    scheduler, cond = build_scheduler("ddim"), _cond((2, 4, 3, 3, 3))
    run = lambda seed: dpmpp_sample(ConditionEcho(), cond, torch.tensor([0, 1]), scheduler, 4, seed=seed)  # noqa: E731
    torch.testing.assert_close(run(7), run(7), rtol=0, atol=0)
    assert not torch.allclose(run(7), run(8))
    fractions = []
    dpmpp_sample(ConditionEcho(), cond, torch.tensor([0, 1]), scheduler, 4, progress=fractions.append)
    assert fractions == pytest.approx([0.25, 0.5, 0.75, 1.0])
    oracle = OracleDenoiser(torch.zeros(2, 2, 3, 3, 3), scheduler.alphas_cumprod)
    with pytest.raises(CancelledError):
        dpmpp_sample(oracle, cond, torch.tensor([0, 1]), scheduler, 5, cancel=lambda: oracle.calls >= 2)
    assert oracle.calls == 2
    with pytest.raises(ValueError):
        dpmpp_sample(oracle, cond, torch.tensor([0, 1]), scheduler, 0)


def test_an_unknown_sampler_is_an_input_error_naming_the_choices():
    with pytest.raises(InputError, match="ddim, dpmpp"):
        sample(nn.Identity(), _cond(), torch.tensor([0]), build_scheduler("ddim"), 2, sampler="euler")


def test_the_bundle_names_its_default_sampler_and_a_caller_may_choose_the_other(tmp_path):
    bundle = tiny_aldm_bundle(tmp_path / "tiny-aldm")
    meta_path = bundle.path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["sampler"]["scheduler"] = "dpmpp"
    meta_path.write_text(json.dumps(meta))
    translator = ALDMTranslator(Bundle(bundle.path, meta))
    assert translator.sampler == "dpmpp"
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = translator.autoencoder.encode(x)
        cond = torch.cat([z, translator.spade(z, "MR_T1")], dim=1) * 1.5
        z_dpmpp = dpmpp_sample(translator.diffusion, cond, torch.tensor([1]), translator.scheduler, 3)
        z_ddim = ddim_sample(translator.diffusion, cond, torch.tensor([1]), translator.scheduler, 3)
    torch.testing.assert_close(
        translator.translate(x, "CT", "MR_T1", steps=3), translator.autoencoder.decode(z_dpmpp / 1.5)
    )
    translator.use_sampler("ddim")
    torch.testing.assert_close(
        translator.translate(x, "CT", "MR_T1", steps=3), translator.autoencoder.decode(z_ddim / 1.5)
    )
    with pytest.raises(InputError, match="euler"):
        translator.use_sampler("euler")
    meta["sampler"]["scheduler"] = "euler"
    with pytest.raises(BundleError, match="sampler.scheduler"):
        ALDMTranslator(Bundle(bundle.path, meta))


def test_medtrans_translate_takes_the_sampler_and_records_it_in_the_output(tmp_path, isolated_user_models, capsys):
    tiny_aldm_bundle(isolated_user_models / "tiny-aldm")
    case = generate_phantom("head", seed=3, shape=(16, 16, 16), spacing=(12.0, 12.0, 12.0), modalities=["MR_T1"])
    source = tmp_path / "t1.mha"
    sitk.WriteImage(case.images["MR_T1"], str(source))
    common = ["translate", str(source), "--source-modality", "MR_T1", "--target-modality", "CT", "--model", "tiny-aldm"]
    written = {}
    for sampler in ("ddim", "dpmpp"):
        out = tmp_path / f"{sampler}.mha"
        with pytest.raises(SystemExit) as done:
            main([*common, "--output", str(out), "--sampler", sampler, "--steps", "3", "--device", "cpu"])
        assert done.value.code == 0
        written[sampler] = sitk.ReadImage(str(out))
        assert written[sampler].GetMetaData("MedTrans_sampler") == sampler
        assert written[sampler].GetMetaData("MedTrans_steps") == "3"
    ddim, dpmpp = (sitk.GetArrayFromImage(written[k]) for k in ("ddim", "dpmpp"))
    assert (ddim != dpmpp).any()  # three steps: the second-order correction changes the result
    with pytest.raises(SystemExit) as done:
        main([*common, "--output", str(tmp_path / "x.mha"), "--sampler", "euler"])
    assert done.value.code == 2 and "invalid choice: 'euler'" in capsys.readouterr().err
    assert not (tmp_path / "x.mha").exists()
