"""Text to video: prompt encoding, seeded noise, a guided sampler and decoding, as the reference pipelines do."""
from functools import partial

import torch

from .memory import check_fits, sampling_bytes
from .pipeline import module_device
from .samplers import get_sampler
from .settings import DEFAULT


def initial_noise(seed, num_frames, height, width, scale_factor, batch_size=1, channels=4):
    """The seeded starting noise [B, C, F, H/s, W/s], drawn in float32 on the CPU so every device gets the same video."""
    generator = torch.Generator("cpu").manual_seed(seed)
    shape = (batch_size, channels, num_frames, height // scale_factor, width // scale_factor)
    return torch.randn(shape, generator=generator), generator


def check_video_size(num_frames, height, width, scale_factor):
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    for name, value in (("height", height), ("width", width)):
        if value < scale_factor or value % scale_factor:
            raise ValueError(f"{name} must be a positive multiple of {scale_factor}, got {value}")


def context_windows(num_frames, window, overlap):
    """Overlapping frame windows covering the clip, each with blend weights normalised so that every frame's
    weights sum to 1. They are core ComfyUI's context windows with the ``standard_static`` schedule and the
    ``overlap-linear`` fuse, so the two give the same frames: windows start ``window - overlap`` apart, the last
    moved back to end with the clip; the first ``overlap`` frames of every window but the first ramp up from ~0 to
    1, the last ``overlap`` of every window but the last ramp down."""
    if window is None or window >= num_frames:
        return [(0, num_frames, torch.ones(num_frames))]
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"context_overlap must be in [0, context_frames), got {overlap} for {window} frames")
    starts = list(range(0, num_frames - window + 1, window - overlap))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    coverage, weights = torch.zeros(num_frames), []
    for start in starts:
        w = torch.ones(window)
        if start > 0 and overlap:
            w[:overlap] = torch.linspace(1e-37, 1, overlap)
        if start + window < num_frames and overlap:
            w[-overlap:] = torch.linspace(1, 1e-37, overlap)
        coverage[start:start + window] += w
        weights.append(w)
    return [(start, start + window, w / coverage[start:start + window]) for start, w in zip(starts, weights)]


def windowed(unet, window, overlap):
    """The UNet over a long clip as overlapping windows of ``window`` frames, blended (an approximation: frames
    in different windows never attend to each other, unlike one pass over the whole clip)."""
    if window is None:
        return unet

    def run(x, t, context):
        eps = torch.zeros_like(x, dtype=torch.float32)
        for start, end, weight in context_windows(x.shape[2], window, overlap):
            part_context = context[:, start:end] if context.ndim == 4 else context  # a context per frame
            part = unet(x[:, :, start:end], t, part_context).float()
            eps[:, :, start:end] += part * weight.to(x.device)[None, None, :, None, None]
        return eps

    return run


def guided_model(unet, context, guidance_scale):
    """eps(x, t) with classifier-free guidance (Ho & Salimans 2022): ``context`` is [uncond, cond] stacked, and both
    run in one batch: eps = eps_u + g * (eps_c - eps_u). With g == 1 only the conditional half runs."""
    uncond, cond = context.chunk(2)

    def model(x, t):
        batch = x.shape[0]
        t = t.reshape(1).to(x.device)
        if guidance_scale == 1.0:
            return unet(x, t.expand(batch), cond.expand(batch, *cond.shape[1:])).float()
        eps = unet(torch.cat([x, x]), t.expand(2 * batch),
                   torch.cat([uncond.expand(batch, *uncond.shape[1:]), cond.expand(batch, *cond.shape[1:])])).float()
        eps_uncond, eps_cond = eps.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    return model


@torch.no_grad()
def sample(unet, schedule, noise, context, *, steps=DEFAULT.steps, guidance_scale=DEFAULT.guidance_scale,
           sampler=DEFAULT.sampler, eta=DEFAULT.eta, denoise=DEFAULT.denoise, init_latents=None, generator=None,
           callback=None, context_frames=DEFAULT.context_frames, context_overlap=DEFAULT.context_overlap, device=None,
           patches=None):
    """Run a sampler from ``noise`` (or from ``init_latents`` noised to the ``denoise`` level) to clean latents.

    ``context``: [2, 77, D], the negative prompt then the prompt, in the compute dtype; [2, F, 77, D] for a context
    per frame (``interpolate_contexts``). Runs where ``unet`` is;
    latents stay float32 between steps. ``context_frames``: opt-in sliding window for clips longer than memory
    allows (see ``windowed``); None runs the whole clip at once, as the model was trained. ``device``: where to
    compute, when a host keeps part of the weights elsewhere (default: where the UNet's weights are).
    ``patches``: ``BlockPatches`` for every UNet call (``freeu``, a host's block patches).
    """
    sample_fn = get_sampler(sampler)
    timesteps = schedule.grid(sampler, steps, denoise)
    device = device or module_device(unet)
    batch, _, frames, height, width = noise.shape
    run_frames = frames if context_frames is None else min(frames, context_frames)
    check_fits(sampling_bytes(unet.config, batch * (2 if guidance_scale != 1.0 else 1), run_frames, height, width,
                              context.dtype), device, f"Sampling {frames} frames of {width}x{height} latents")
    x = noise.to(device, torch.float32)
    if init_latents is not None:
        x = schedule.add_noise(init_latents.to(device, torch.float32), x, timesteps[0])
    net = partial(unet, patches=patches) if patches is not None else unet
    model = guided_model(windowed(net, context_frames, context_overlap), context.to(device), guidance_scale)
    extra = {"eta": eta} if sampler == "ddim" else {}  # euler_ancestral keeps its own full ancestral noise
    return sample_fn(model, x, timesteps, schedule, generator=generator, callback=callback, **extra)


def generate(pipe, prompt, negative_prompt=DEFAULT.negative_prompt, num_frames=DEFAULT.num_frames,
             height=DEFAULT.height, width=DEFAULT.width, steps=DEFAULT.steps, guidance_scale=DEFAULT.guidance_scale,
             seed=DEFAULT.seed, sampler=DEFAULT.sampler, eta=DEFAULT.eta, callback=None,
             context_frames=DEFAULT.context_frames, context_overlap=DEFAULT.context_overlap, patches=None):
    """A video [F, H, W, 3] float in 0..1 for ``prompt``; "ddim" reproduces diffusers' TextToVideoSDPipeline.
    Each setting's default, range and help: ``SETTINGS`` (the defaults are the paper's).
    ``patches``: e.g. ``freeu(pipe.unet.config, s1=0.9, s2=0.2, b1=1.1, b2=1.2)``."""
    scale_factor = pipe.vae_scale_factor
    check_video_size(num_frames, height, width, scale_factor)
    noise, generator = initial_noise(seed, num_frames, height, width, scale_factor)
    context = pipe.encode_prompt([negative_prompt, prompt])
    latents = sample(pipe.unet, pipe.schedule, noise, context, steps=steps, guidance_scale=guidance_scale,
                     sampler=sampler, eta=eta, generator=generator, callback=callback, context_frames=context_frames,
                     context_overlap=context_overlap, patches=patches)
    return pipe.decode(latents)[0]
