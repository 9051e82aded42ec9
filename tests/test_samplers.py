"""Samplers against diffusers' schedulers and the original ModelScope DDIM loop, on a deterministic dummy model.

Tolerance: 1e-4 max abs error. Our schedule is computed in float64 as the original's is; diffusers' in float32,
which accounts for differences of about 5e-5 over 50 steps.
"""
import math

import pytest
import torch

from t2v_core.samplers import SAMPLERS, sample_ddim
from t2v_core.schedule import NoiseSchedule

TOL = 1e-4
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
W = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 0.3


def dummy_eps(x, t):
    """A smooth, timestep-dependent stand-in for the UNet: eps = tanh(W x (1 + t/1000)) + 0.1 sin(t/50)."""
    t = float(t.reshape(-1)[0]) if torch.is_tensor(t) else float(t)
    return torch.tanh(torch.einsum("ij,bjfhw->bifhw", W, x) * (1 + t / 1000)) + 0.1 * math.sin(t / 50)


@pytest.fixture
def noise():
    return torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))


def run_diffusers(scheduler, noise, steps=None, timesteps=None, generator=None, **step_kwargs):
    scheduler.set_timesteps(steps) if timesteps is None else scheduler.set_timesteps(timesteps=timesteps)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = dummy_eps(scheduler.scale_model_input(x, t), t)
        kwargs = {"generator": generator} if generator is not None else {}
        x = scheduler.step(eps, t, x, **kwargs, **step_kwargs).prev_sample
    return x


def test_timestep_grid_is_the_originals():
    grid = NoiseSchedule().timesteps(50)
    assert grid[:3].tolist() == [981, 961, 941] and grid[-3:].tolist() == [21, 1, 0] and len(grid) == 51


@pytest.mark.parametrize("steps", [50, 7])
def test_ddim_matches_diffusers(steps, noise):
    from diffusers import DDIMScheduler

    ref = run_diffusers(DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1), noise, steps)
    ours = sample_ddim(dummy_eps, noise, NoiseSchedule().timesteps(steps), NoiseSchedule())
    assert (ours - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("steps", [50, 20])
def test_ddim_matches_original_loop(steps, noise):
    from modelscope.models.multi_modal.video_synthesis.diffusion import GaussianDiffusion, beta_schedule

    diffusion = GaussianDiffusion(betas=beta_schedule("linear_sd", 1000, init_beta=0.00085, last_beta=0.012),
                                  mean_type="eps", var_type="fixed_small", loss_type="mse", rescale_timesteps=False)
    ref = diffusion.ddim_sample_loop(noise=noise.clone(), model=dummy_eps, ddim_timesteps=steps, eta=0.0)
    ours = sample_ddim(dummy_eps, noise, NoiseSchedule().timesteps(steps), NoiseSchedule())
    assert (ours - ref).abs().max().item() <= TOL


def test_ddim_with_eta_matches_diffusers(noise):
    from diffusers import DDIMScheduler

    ref = run_diffusers(DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1), noise, 10,
                        generator=torch.Generator().manual_seed(7), eta=1.0)
    ours = sample_ddim(dummy_eps, noise, NoiseSchedule().timesteps(10), NoiseSchedule(), eta=1.0,
                       generator=torch.Generator().manual_seed(7))
    assert (ours - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "dpmpp_2m"])
@pytest.mark.parametrize("steps", [30, 7])
def test_karras_samplers_match_diffusers(name, steps, noise):
    """The same discrete timestep grid as DDIM, then down to sigma 0."""
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    grid = NoiseSchedule().timesteps(steps)
    generator = torch.Generator().manual_seed(3) if name == "euler_ancestral" else None
    if name == "dpmpp_2m":
        scheduler = DPMSolverMultistepScheduler(**BETAS, algorithm_type="dpmsolver++", solver_order=2,
                                                final_sigmas_type="zero", lower_order_final=True)
        ref = run_diffusers(scheduler, noise, timesteps=grid[:-1].tolist())
    else:
        cls = EulerDiscreteScheduler if name == "euler" else EulerAncestralDiscreteScheduler
        ref = run_diffusers(cls(**BETAS, timestep_spacing="leading", steps_offset=1), noise, steps, generator=generator)
    kwargs = {"generator": torch.Generator().manual_seed(3)} if generator is not None else {}
    ours = SAMPLERS[name](dummy_eps, noise, grid, NoiseSchedule(), **kwargs)
    assert (ours - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_reports_each_step_and_can_cancel(name, noise):
    seen, calls = [], []

    class Cancelled(Exception):
        pass

    def model(x, t):
        calls.append(int(t))
        return dummy_eps(x, t)

    def callback(step):
        seen.append((step["i"], step["total"], step["t"], step["denoised"].shape))
        if step["i"] == 2:
            raise Cancelled

    grid = NoiseSchedule().timesteps(10)
    with pytest.raises(Cancelled):
        SAMPLERS[name](model, noise, grid, NoiseSchedule(), callback=callback, generator=torch.Generator())
    assert [s[:3] for s in seen] == [(0, 10, 901), (1, 10, 801), (2, 10, 701)]
    assert len(calls) == 3 and seen[0][3] == noise.shape


def test_denoise_keeps_the_last_steps_as_diffusers_video_to_video():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    scheduler.set_timesteps(50)
    kept = int(50 * 0.6)
    grid = NoiseSchedule().timesteps(50, denoise=0.6)
    assert grid[:-1].tolist() == scheduler.timesteps[50 - kept:].tolist()


@pytest.mark.parametrize("steps, denoise", [(0, 1.0), (1000, 1.0), (10, 0.0), (10, 1.5)])
def test_bad_steps_or_denoise_are_refused(steps, denoise):
    with pytest.raises(ValueError, match="steps|denoise"):
        NoiseSchedule().timesteps(steps, denoise)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6, 8])
def test_lcm_grid_is_diffusers_lcm_scheduler(steps):
    from diffusers import LCMScheduler

    scheduler = LCMScheduler(**BETAS, original_inference_steps=50)
    scheduler.set_timesteps(steps)
    assert NoiseSchedule().lcm_timesteps(steps)[:-1].tolist() == scheduler.timesteps.tolist()


def frames_as_images(x):
    """[B, C, F, h, w] -> [B*F, C, h, w], as TextToVideoSDPipeline hands latents to its scheduler's step."""
    return x.transpose(1, 2).flatten(0, 1)


@pytest.mark.parametrize("steps", [4, 2])
def test_lcm_matches_diffusers_lcm_scheduler(steps, noise):
    """MCM's setting: LCMScheduler with timestep_scaling 4.0; its re-noising draws from the generator frame by frame,
    as the video pipeline steps it."""
    from diffusers import LCMScheduler

    scheduler = LCMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_scaling=4.0)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(5)
    x = noise.clone()
    for t in scheduler.timesteps:
        eps = dummy_eps(x, t)
        x = scheduler.step(frames_as_images(eps), t, frames_as_images(x), generator=generator).prev_sample
        x = x.unflatten(0, (noise.shape[0], noise.shape[2])).transpose(1, 2)
    ours = SAMPLERS["lcm"](dummy_eps, noise, NoiseSchedule().lcm_timesteps(steps), NoiseSchedule(),
                           generator=torch.Generator().manual_seed(5))
    assert x.abs().max() > 0.1
    assert (ours - x).abs().max().item() <= TOL
