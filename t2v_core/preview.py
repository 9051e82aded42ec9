"""A cheap look at latents during sampling: a linear latent->RGB map of a few frames, side by side."""
import torch

# The SD latent->RGB factors (ComfyUI's SD15 latent format), for latents in sampler space.
LATENT_RGB_FACTORS = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))


def latent_strip(latents, max_frames=8, factors=LATENT_RGB_FACTORS):
    """[B, C, F, h, w] -> uint8 [h, n*w, 3]: up to ``max_frames`` evenly spaced frames of the first video."""
    frames = latents.shape[2]
    picked = torch.linspace(0, frames - 1, min(frames, max_frames)).round().long().to(latents.device)
    x = latents[0, :, picked].float().cpu()  # [C, n, h, w]
    rgb = torch.einsum("cnhw,cr->hnwr", x, torch.tensor(factors))  # -> [h, n, w, 3]
    return ((rgb.flatten(1, 2) + 1) * 127.5).clamp(0, 255).to(torch.uint8)
