"""Latent nodes: the seeded noise video, and VAE decode / encode of whole videos."""
import math

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from .. import t2v_core
from .loader import CATEGORY
from .settings import limits
from .vae import STRIPE_ROWS, require_t2v_vae
from .validation import require_choices, require_finite, require_multiple, require_video_samples

SCALE = 8  # pixels per latent cell of every published checkpoint's VAE
NOISE, ZEROS = "noise", "zeros"
# The LATENT key that marks the noise video: its samples are the start noise itself, not a video to noise
# (docs/comfyui-surface.md). The pack's sampler reads it; its output does not carry it.
NOISE_KEY = "t2v_noise"
MEMORY_ADVICE = "Use fewer frames, a smaller width and height, or a smaller batch_size."
# The UNet of every published checkpoint (ModelScope, zeroscope): the noise node's estimate of what sampling needs.
PUBLISHED_UNET = t2v_core.UNet3DConfig()


def video_latents(latent, input_name, channels=None, dtype=None):
    """The [B, C, F, h, w] samples of a LATENT input, or an error naming the input (``require_video_samples``)."""
    return require_video_samples(latent["samples"], input_name, channels, dtype)


def require_sampler_inputs(t2v, latent, sampler_name, samplers, cfg, eta):
    """The sampler's checks ComfyUI does not make: NaN numbers, a sampler name (one of ``samplers``) on ComfyUI
    0.3.75, a latent of another model (``t2v``: the MODEL's T2VModel)."""
    require_finite(cfg=cfg, eta=eta)
    require_choices(sampler_name=(sampler_name, samplers))
    video_latents(latent, "latent", t2v.diffusion_model.unet.config.in_channels, t2v.compute_dtype)


def check_sampling_memory(shape):
    """Refuse, before the noise is drawn, a video that no sampling could fit: one CFG step of the published UNet
    in fp16 against all the memory of the device ComfyUI samples on (the sampler checks what is free, for the
    model it gets)."""
    batch, _, frames, height, width = shape
    needed = t2v_core.sampling_bytes(PUBLISHED_UNET, 2 * batch, frames, height, width, torch.float16)
    device = mm.get_torch_device()
    total = mm.get_total_memory(device)
    if needed > total:
        raise ValueError(f"length: {batch} x {frames} frames at {width * SCALE}x{height * SCALE} need about "
                         f"{needed / 2 ** 30:.0f} GiB of working memory to sample, more than the {total / 2 ** 30:.1f} "
                         f"GiB of {device}. {MEMORY_ADVICE}")


class EmptyLatentVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VEmptyLatentVideo",
            display_name="ModelScope Text-to-Video Noise Video",
            category=CATEGORY,
            description="The seeded Gaussian noise video the ModelScope T2V sampler starts from. With the same seed, "
                        "sampler (ddim, denoise 1.0) and VAE decode reproduce t2v_core.generate exactly.",
            inputs=[
                io.Int.Input("width", **limits("width"), step=SCALE,
                             tooltip="Video width in pixels, a multiple of 8. ModelScope: 256; zeroscope 576w: 576; XL: 1024."),
                io.Int.Input("height", **limits("height"), step=SCALE,
                             tooltip="Video height in pixels, a multiple of 8. ModelScope: 256; zeroscope 576w: 320; XL: 576."),
                io.Int.Input("length", **limits("num_frames"),
                             tooltip="Number of frames. 16 frames at 8 fps are 2 seconds; zeroscope was trained on 24."),
                io.Int.Input("batch_size", **limits("batch_size"), tooltip="Videos made at once."),
                io.Int.Input("seed", **limits("seed"), control_after_generate=True,
                             tooltip="Seed of the noise; the same seed gives the same video."),
                io.Combo.Input("fill", options=[NOISE, ZEROS], default=NOISE, optional=True,
                               tooltip="noise: for the ModelScope T2V sampler. zeros: an empty latent for core samplers "
                                       "(KSampler), which add their own noise."),
            ],
            outputs=[io.Latent.Output(tooltip="[batch, 4, length, height/8, width/8].")],
        )

    @classmethod
    def execute(cls, width, height, length, batch_size, seed, fill=NOISE) -> io.NodeOutput:
        require_multiple(SCALE, width=width, height=height)
        require_choices(fill=(fill, [NOISE, ZEROS]))
        shape = (batch_size, 4, length, height // SCALE, width // SCALE)
        check_sampling_memory(shape)
        try:
            t2v_core.check_fits(4 * math.prod(shape), "cpu", f"length: {batch_size} x {length} frames at {width}x{height}")
        except t2v_core.NotEnoughMemory as error:
            raise ValueError(error.with_advice(MEMORY_ADVICE)) from error
        if fill == ZEROS:
            return io.NodeOutput({"samples": torch.zeros(shape)})
        noise, _ = t2v_core.initial_noise(seed, length, height, width, SCALE, batch_size=batch_size)
        return io.NodeOutput({"samples": noise, NOISE_KEY: True})


TILED_TOOLTIP = ("Compute each frame in stripes of 64 rows: memory on the device stays that of one stripe whatever "
                 "the frame size (1024x576 zeroscope XL frames on a small GPU), and the frames are the untiled ones "
                 "(GroupNorm sees the whole frame).")


class Decode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VDecode",
            display_name="ModelScope Text-to-Video VAE Decode",
            category=CATEGORY,
            description="Decodes video latents into frames, a few frames at a time so memory does not grow with length.",
            inputs=[
                io.Vae.Input("vae", tooltip="The VAE from the ModelScope T2V checkpoint loader."),
                io.Latent.Input("samples", tooltip="Video latents [batch, 4, frames, h, w] from the sampler."),
                io.Boolean.Input("tiled", default=False, optional=True, tooltip=TILED_TOOLTIP),
            ],
            outputs=[io.Image.Output(tooltip="All frames of all videos, [batch*frames, height, width, 3].")],
        )

    @classmethod
    def execute(cls, vae, samples, tiled=False) -> io.NodeOutput:
        video = require_t2v_vae(vae).decode_video(samples["samples"], stripe_rows=STRIPE_ROWS if tiled else None)
        return io.NodeOutput(video.flatten(0, 1))  # [B, F, H, W, 3] -> [B x F, H, W, 3]


class Encode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VEncode",
            display_name="ModelScope Text-to-Video VAE Encode",
            category=CATEGORY,
            description="Encodes frames into one video latent, for video-to-video and zeroscope XL upscaling.",
            inputs=[
                io.Vae.Input("vae", tooltip="The VAE from the ModelScope T2V checkpoint loader."),
                io.Image.Input("images", tooltip="The frames of one video, in order; width and height multiples of 8."),
                io.Boolean.Input("tiled", default=False, optional=True, tooltip=TILED_TOOLTIP),
            ],
            outputs=[io.Latent.Output(tooltip="[1, 4, frames, height/8, width/8] latents (the posterior mean), the "
                                              "VAE's own as core VAE Encode gives them.")],
        )

    @classmethod
    def execute(cls, vae, images, tiled=False) -> io.NodeOutput:
        latents = require_t2v_vae(vae).encode_video(images, "images", stripe_rows=STRIPE_ROWS if tiled else None)
        return io.NodeOutput({"samples": latents})
