"""The DDPM noise schedule of ModelScopeT2V, the timestep grids its samplers walk, and those grids as the sigmas of
the variance-exploding view (x = x0 + sigma * eps) that k-diffusion-style samplers walk."""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoiseSchedule:
    """"scaled_linear" betas (sqrt-linear from ``beta_start`` to ``beta_end``), computed in float64 as the original."""

    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000

    @property
    def alphas_cumprod(self):
        betas = torch.linspace(self.beta_start ** 0.5, self.beta_end ** 0.5, self.num_train_timesteps, dtype=torch.float64) ** 2
        return torch.cumprod(1 - betas, dim=0)

    def timesteps(self, steps, denoise=1.0):
        """The 'leading' grid with offset 1, then a final 0: [981, 961, ..., 1, 0] for 50 steps.

        Step i moves from ``timesteps[i]`` to ``timesteps[i + 1]``; the final 0 stands for alpha_bar[0], which is
        where the original sampler (and diffusers' DDIM with ``set_alpha_to_one=False``) ends. With ``denoise`` < 1
        only the last ``int(steps * denoise)`` steps are kept (vid2vid).
        """
        n = self.num_train_timesteps
        if not 1 <= steps < n:  # 1000 steps would visit t=999 twice
            raise ValueError(f"steps must be between 1 and {n - 1}, got {steps}")
        if not 0.0 < denoise <= 1.0:
            raise ValueError(f"denoise must be in (0, 1], got {denoise}")
        ratio = n // steps
        grid = (1 + torch.arange(0, steps) * ratio).clamp(max=n - 1).flip(0)
        grid = torch.cat([grid, grid.new_zeros(1)])
        kept = max(int(steps * denoise), 1)
        return grid[steps - kept:]

    def lcm_timesteps(self, steps, denoise=1.0, origin_steps=50):
        """LCM's grid (Luo et al. 2023; diffusers' ``LCMScheduler``): ``steps`` evenly spaced entries of the
        ``origin_steps``-step grid [999, 979, ..., 19] the consistency model was distilled on, then a final 0 that
        stands for the clean latents: [999, 759, 499, 259, 0] for 4 steps, diffusers' at denoise 1.0. ``denoise``
        < 1 keeps the last ``int(steps * denoise)`` steps, as ``timesteps`` does (diffusers' img2img ``strength``
        spaces a shorter grid instead)."""
        n = self.num_train_timesteps
        if not 1 <= steps <= origin_steps:
            raise ValueError(f"steps must be between 1 and {origin_steps} for LCM, got {steps}")
        if not 0.0 < denoise <= 1.0:
            raise ValueError(f"denoise must be in (0, 1], got {denoise}")
        origin = (torch.arange(origin_steps, 0, -1) * (n // origin_steps) - 1)  # [999, 979, ..., 19]
        indices = torch.floor(torch.arange(steps, dtype=torch.float64) * origin_steps / steps).long()
        grid = torch.cat([origin[indices], origin.new_zeros(1)])
        kept = max(int(steps * denoise), 1)
        return grid[steps - kept:]

    def grid(self, sampler, steps, denoise=1.0):
        """The timesteps ``sampler`` walks: LCM's grid for "lcm", the 'leading' DDIM grid for every other."""
        return self.lcm_timesteps(steps, denoise) if sampler == "lcm" else self.timesteps(steps, denoise)

    def reference_sigmas(self, sampler, steps, denoise=1.0):
        """``grid`` as float32 sigmas, one more than the steps kept. "ddim" ends at alpha_bar[0], where the
        original stops; the others end at sigma 0, the clean latents."""
        sigmas = self.sigmas(self.grid(sampler, steps, denoise))
        if sampler != "ddim":
            sigmas[-1] = 0.0
        return sigmas.float()

    def sigmas(self, timesteps):
        """Noise-to-signal ratios sqrt((1 - a) / a) at ``timesteps``, in float64."""
        a = self.alphas_cumprod[timesteps]
        return ((1 - a) / a).sqrt()

    def add_noise(self, latents, noise, t):
        """q(x_t | x_0): sqrt(a) * latents + sqrt(1 - a) * noise."""
        a = self.alphas_cumprod[t].item()
        return a ** 0.5 * latents + (1 - a) ** 0.5 * noise


def variance_preserving(latents, sigma):
    """Latents x0 + sigma * eps of the variance-exploding view on the original's variance-preserving scale,
    sqrt(a) * x0 + sqrt(1 - a) * eps with a = 1 / (1 + sigma^2)."""
    return latents / (1 + sigma ** 2) ** 0.5


def lcm_denoised(x0, latents, timesteps, timestep_scaling=4.0, sigma_data=0.5):
    """LCM's boundary condition (Luo et al. 2023, eq. 9; diffusers' ``LCMScheduler``): the consistency estimate
    c_out * x0 + c_skip * x_t from the model's estimate ``x0`` and the ``latents`` x_t (variance-preserving scale) at
    ``timesteps``. 4.0 is the scaling MCM's LoRAs were distilled with (core ComfyUI's LCM uses 10)."""
    scaled = timesteps * timestep_scaling
    c_skip = sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)
    c_out = scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5
    return c_out * x0 + c_skip * latents
