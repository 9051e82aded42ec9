"""Samplers for an epsilon-prediction model, written as pure functions with one signature (after k-diffusion).

    latents = sample_x(model, x, timesteps, schedule, *, generator=None, callback=None, eta=...)

``model(x, t)`` returns the predicted noise for the noisy latents ``x`` at the integer timestep ``t``; ``x`` is
noised to ``timesteps[0]`` on the variance-preserving scale; ``timesteps`` is ``NoiseSchedule.grid(sampler, ...)``.
After each step ``callback({"i", "total", "t", "x", "denoised"})`` is called: it can report progress, show a
preview of ``denoised`` (the current estimate of the clean latents), or raise to cancel the run.
Random draws (ancestral noise, DDIM with eta > 0, LCM's re-noising) come from ``generator`` on the CPU; ``step_noise``
draws them for a host's sampler the same way.
"""
import math

import torch

from .schedule import lcm_denoised
from .settings import SETTINGS


def _noise_like(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x)


def _frame_noise_like(x, generator):
    """Noise for [B, C, F, h, w] latents drawn frame after frame, [B*F, C, h, w], as diffusers' video pipelines step
    their schedulers."""
    batch, channels, frames, height, width = x.shape
    noise = torch.randn((batch * frames, channels, height, width), generator=generator, dtype=torch.float32)
    return noise.unflatten(0, (batch, frames)).transpose(1, 2).to(x)


def _report(callback, i, total, t, x, denoised):
    if callback is not None:
        callback({"i": i, "total": total, "t": int(t), "x": x, "denoised": denoised})


def sample_ddim(model, x, timesteps, schedule, *, generator=None, callback=None, eta=0.0):
    """DDIM, Song et al. 2020, eq. 12; ``eta`` = 0 is deterministic, 1 is DDPM-like."""
    alphas = schedule.alphas_cumprod
    total = len(timesteps) - 1
    for i in range(total):
        t, t_prev = timesteps[i], timesteps[i + 1]
        a, a_prev = alphas[t].item(), alphas[t_prev].item()
        eps = model(x, t)
        denoised = math.sqrt(1 / a) * x - math.sqrt(1 / a - 1) * eps
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        x = math.sqrt(a_prev) * denoised + math.sqrt(1 - a_prev - sigma ** 2) * eps
        if sigma > 0:
            x = x + sigma * _noise_like(x, generator)
        _report(callback, i, total, t, x, denoised)
    return x


def _karras_denoiser(model, schedule, timesteps):
    """The model on the variance-exploding scale x = x0 + sigma * eps (Karras et al. 2022, table 1, VP column)."""
    sigmas = schedule.sigmas(timesteps[:-1]).tolist() + [0.0]

    def denoise(x, i):
        eps = model(x / math.sqrt(sigmas[i] ** 2 + 1), timesteps[i])
        return x - sigmas[i] * eps

    return denoise, sigmas


def sample_euler(model, x, timesteps, schedule, *, generator=None, callback=None):
    """Euler's method on the probability-flow ODE, Karras et al. 2022, algorithm 2 without churn."""
    denoise, sigmas = _karras_denoiser(model, schedule, timesteps)
    x = x * math.sqrt(sigmas[0] ** 2 + 1)
    total = len(sigmas) - 1
    for i in range(total):
        denoised = denoise(x, i)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        _report(callback, i, total, timesteps[i], x, denoised)
    return x


def sample_euler_ancestral(model, x, timesteps, schedule, *, generator=None, callback=None, eta=1.0):
    """Euler steps to sigma_down plus fresh noise of sigma_up (k-diffusion's ``sample_euler_ancestral``)."""
    denoise, sigmas = _karras_denoiser(model, schedule, timesteps)
    x = x * math.sqrt(sigmas[0] ** 2 + 1)
    total = len(sigmas) - 1
    for i in range(total):
        denoised = denoise(x, i)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_up = min(sigma_next, eta * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
        sigma_down = math.sqrt(sigma_next ** 2 - sigma_up ** 2)
        x = x + (x - denoised) / sigma * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + _noise_like(x, generator) * sigma_up
        _report(callback, i, total, timesteps[i], x, denoised)
    return x


def sample_dpmpp_2m(model, x, timesteps, schedule, *, generator=None, callback=None):
    """DPM-Solver++(2M), Lu et al. 2022, algorithm 2; first order on the first and the last step."""
    denoise, sigmas = _karras_denoiser(model, schedule, timesteps)
    x = x * math.sqrt(sigmas[0] ** 2 + 1)
    total = len(sigmas) - 1
    old_denoised, h_last = None, None
    for i in range(total):
        denoised = denoise(x, i)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)  # step in lambda = -log(sigma)
            if old_denoised is not None:
                r = h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            else:
                denoised_d = denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * denoised_d
            h_last = h
        old_denoised = denoised
        _report(callback, i, total, timesteps[i], x, denoised)
    return x


def sample_lcm(model, x, timesteps, schedule, *, generator=None, callback=None, timestep_scaling=4.0):
    """Multistep latent consistency sampling, Luo et al. 2023, algorithm 3, as diffusers' ``LCMScheduler``: each step
    takes the boundary-conditioned estimate of the clean latents and noises it afresh to the next timestep."""
    alphas = schedule.alphas_cumprod
    total = len(timesteps) - 1
    for i in range(total):
        t, t_next = timesteps[i], timesteps[i + 1]
        a = alphas[t].item()
        eps = model(x, t)
        denoised = lcm_denoised((x - math.sqrt(1 - a) * eps) / math.sqrt(a), x, float(t), timestep_scaling)
        if i < total - 1:
            a_next = alphas[t_next].item()
            x = math.sqrt(a_next) * denoised + math.sqrt(1 - a_next) * _frame_noise_like(denoised, generator)
        else:
            x = denoised
        _report(callback, i, total, t, x, denoised)
    return x


# The samplers the settings offer, each the function named after it (as ComfyUI finds k-diffusion's samplers).
SAMPLERS = {name: globals()[f"sample_{name}"] for name in SETTINGS["sampler"].choices}
# How each sampler draws its per-step noise.
STEP_NOISE = {"lcm": _frame_noise_like}


def get_sampler(name):
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}") from None


def step_noise(sampler, shape, generator, device="cpu"):
    """A k-diffusion ``noise_sampler(sigma, sigma_next)`` drawing ``sampler``'s per-step noise for latents of
    ``shape`` from ``generator`` as t2v_core's samplers draw it, so a host's sampler gets the same noise on ``device``."""
    like = torch.empty(shape, dtype=torch.float32)
    draw = STEP_NOISE.get(sampler, _noise_like)
    return lambda sigma, sigma_next: draw(like, generator).to(device)
