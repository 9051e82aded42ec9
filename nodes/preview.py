"""Live sampling previews: the current estimate of a few frames, side by side, from a linear latent->RGB map.

Sent through ComfyUI's own preview channel (the sampler node's progress bar), and only when ComfyUI runs with a
preview method (``--preview-method auto`` or ``latent2rgb``); ``none`` turns them off.
"""
import torch
from comfy.cli_args import LatentPreviewMethod, args
from latent_preview import MAX_PREVIEW_RESOLUTION
from PIL import Image

MAX_FRAMES = 8


def strip_previewer(latent_format):
    """``render(denoised [B, C, F, h, w]) -> ("JPEG", image, max size)``, or None when previews are off."""
    if args.preview_method == LatentPreviewMethod.NoPreviews or latent_format.latent_rgb_factors is None:
        return None
    factors = torch.tensor(latent_format.latent_rgb_factors)  # [C, 3]

    def render(denoised):
        frames = denoised.shape[2]
        picked = torch.linspace(0, frames - 1, min(frames, MAX_FRAMES)).round().long()
        latents = denoised[0, :, picked.to(denoised.device)].float().cpu()  # [C, n, h, w]
        rgb = torch.einsum("cnhw,cr->hnwr", latents, factors)  # -> [h, n, w, 3]
        strip = ((rgb.flatten(1, 2) + 1) * 127.5).clamp(0, 255).to(torch.uint8)  # -> [h, n*w, 3]
        return "JPEG", Image.fromarray(strip.numpy()), MAX_PREVIEW_RESOLUTION

    return render
