"""Live sampling previews through ComfyUI's own preview channel (the sampler node's progress bar).

Sent only when ComfyUI runs with a preview method (``--preview-method auto`` or ``latent2rgb``); ``none``, the
default, turns them off.
"""
from comfy.cli_args import LatentPreviewMethod, args
from latent_preview import MAX_PREVIEW_RESOLUTION
from PIL import Image

from .. import t2v_core


def strip_previewer(latent_format):
    """``render(denoised [B, C, F, h, w]) -> ("JPEG", image, max size)``, or None when previews are off."""
    if args.preview_method == LatentPreviewMethod.NoPreviews or latent_format.latent_rgb_factors is None:
        return None

    def render(denoised):
        strip = t2v_core.latent_strip(denoised, factors=latent_format.latent_rgb_factors)
        return "JPEG", Image.fromarray(strip.numpy()), MAX_PREVIEW_RESOLUTION

    return render
