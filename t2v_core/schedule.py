"""The DDPM noise schedule of ModelScopeT2V and the timestep grid its samplers walk."""
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

    def sigmas(self, timesteps):
        """Noise-to-signal ratios sqrt((1 - a) / a) at ``timesteps``, in float64."""
        a = self.alphas_cumprod[timesteps]
        return ((1 - a) / a).sqrt()

    def add_noise(self, latents, noise, t):
        """q(x_t | x_0): sqrt(a) * latents + sqrt(1 - a) * noise."""
        a = self.alphas_cumprod[t].item()
        return a ** 0.5 * latents + (1 - a) ** 0.5 * noise
