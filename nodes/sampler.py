"""The spatio-temporal UNet sampler node, over ComfyUI's own sampling.

Every run goes through ``comfy.sample.sample_custom``, as core's samplers do, so every core sampler works and the
MODEL's patches, wrappers and hooks (LoRA, FreeU, context windows, CFG functions, EasyCache, multi-GPU work units)
apply as under core KSampler. The scheduler picks the sigmas: ``modelscope`` is the original's timestep grid
(t2v_core's ``NoiseSchedule.reference_sigmas``; with ``ddim`` the original's and diffusers' frames, with ``lcm``
diffusers' LCMScheduler), a core scheduler gives core KSampler's result for the same noise, sampler and seed.
"""
import logging

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io

from .. import t2v_core
from .latent import NOISE_KEY, require_sampler_inputs, video_latents
from .loader import CATEGORY
from .model import CONTROL_REFUSED, lcm_sampling, require_t2v_model
from .preview import strip_previewer
from .settings import limits
from .validation import check_choices

MEMORY_ADVICE = ("Use fewer frames or a smaller size, dtype fp16 on a GPU, the loader's weight_dtype fp8, or "
                 "ContextWindowsManual on the MODEL.")
REFERENCE = "modelscope"  # the original's grid: the node's behaviour before core schedulers were offered
SCHEDULERS = [REFERENCE, *comfy.samplers.KSampler.SCHEDULERS]
SAMPLERS = list(comfy.samplers.KSampler.SAMPLERS)
# Core's samplers that walk the original's grid as its own samplers did. DDIM (eta 0) is Euler's method in sigma,
# and with eta > 0 Euler's ancestral step with the same eta; the others are core's samplers of the same name.
REFERENCE_SAMPLERS = {"ddim": "euler", "euler": "euler", "euler_ancestral": "euler_ancestral", "dpmpp_2m": "dpmpp_2m",
                      "lcm": "lcm"}
# The reference samplers that draw fresh noise each step: on the original's grid they draw it from a CPU generator
# seeded with ``seed``, after the start noise, as t2v_core and diffusers draw it, so the video is the same on every
# device. Core's other samplers draw their own noise on the device, as under core KSampler.
CPU_NOISE_SAMPLERS = ("euler_ancestral", "lcm")
log = logging.getLogger(__name__)


class ReferenceSampler(comfy.samplers.KSAMPLER):
    """A core sampler on the original's grid, with the original's two ends. A run from pure noise starts from
    x_T ~ N(0, I) on the variance-preserving scale (core's max-denoise scaling, though the grid's top, 981 for 50
    steps, is below the schedule's last timestep); a grid that ends above sigma 0 (DDIM's alpha_bar[0]) returns the
    latents on that scale, as the original does."""

    def __init__(self, sampler_function, extra_options, from_pure_noise):
        super().__init__(sampler_function, extra_options)  # no random inpainting noise: core's ddim has it, euler not
        self.from_pure_noise = from_pure_noise

    def max_denoise(self, model_wrap, sigmas):
        return self.from_pure_noise or super().max_denoise(model_wrap, sigmas)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        samples = super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                                 disable_pbar)
        if sigmas[-1] == 0:
            return samples
        samples = t2v_core.variance_preserving(samples, sigmas[-1])
        if denoise_mask is not None:  # kept frames as given, not noised to the grid's end
            samples = samples * denoise_mask + latent_image * (1 - denoise_mask)
        return samples


def reference_sampler(sampler_name, eta, generator, shape, device, from_pure_noise):
    """The core sampler object that walks the original's grid as ``sampler_name`` (see REFERENCE_SAMPLERS),
    fresh noise drawn from ``generator``."""
    name = REFERENCE_SAMPLERS.get(sampler_name, sampler_name)
    options = {}
    if sampler_name == "ddim" and eta > 0:
        name, options = "euler_ancestral", {"eta": eta}
    if name in CPU_NOISE_SAMPLERS:
        options["noise_sampler"] = t2v_core.step_noise(sampler_name, shape, generator, device)
    core = comfy.samplers.sampler_object(name)
    return ReferenceSampler(core.sampler_function, {**core.extra_options, **options}, from_pure_noise)


def check_conditioning(conditioning, input_name, width):
    """An error naming the input unless every entry of a CONDITIONING input is text context this model reads."""
    if not conditioning:
        raise ValueError(f"{input_name}: empty conditioning; connect a ModelScope T2V Text Encode node")
    for context, options in conditioning:
        if options.get("control") is not None:
            raise ValueError(f"{input_name}: {CONTROL_REFUSED}")
        if context.ndim != 3 or context.shape[-1] != width:
            raise ValueError(f"{input_name}: the conditioning is {list(context.shape)}, this model reads "
                             f"[batch, tokens, {width}] text context; encode the prompt with ModelScope T2V Text "
                             f"Encode (not an image model's CLIP)")


def start(latent, noise, denoise, seed):
    """(noise, latent image, generator) as core KSampler forms them: noise from core's ``prepare_noise`` for the
    sampler's seed (``batch_index`` honoured) and the LATENT's samples as the image it noises. The noise node's
    LATENT (``t2v_noise``, docs/comfyui-surface.md) is the noise itself, on an empty image; a ``noise`` input
    replaces the noise. The draw is always made, and ``generator`` is the seed's CPU stream where it ended
    (``prepare_noise`` draws from the generator ``torch.manual_seed`` returns), so the fresh noise a sampler draws
    later follows the start noise in the seed's stream, as in t2v_core and diffusers, and never repeats it."""
    samples = video_latents(latent, "latent")
    drawn = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    generator = torch.Generator("cpu")
    generator.set_state(torch.random.get_rng_state())
    is_noise = bool(latent.get(NOISE_KEY))
    if is_noise and denoise < 1.0:
        raise ValueError(f"latent: the noise video is noise, not a video to change at denoise {denoise}; give the "
                         f"sampler a VAE-encoded video (ModelScope T2V VAE Encode), or set denoise to 1.0.")
    image = torch.zeros_like(samples) if is_noise else samples
    if noise is not None:
        noise_samples = video_latents(noise, "noise")
        if noise_samples.shape != samples.shape:
            raise ValueError(f"noise: shape {list(noise_samples.shape)} (frames {noise_samples.shape[2]}) does not match "
                             f"latent {list(samples.shape)} (frames {samples.shape[2]}); make both with the same width, "
                             f"height, length and batch size.")
        return noise_samples, image, generator
    return (samples if is_noise else drawn), image, generator


def check_memory(t2v, model, shape, cfg):
    """Refuse a run whose UNet calls cannot fit (context windows: one window's), after ComfyUI has made room for it
    as it would for sampling; nothing of the run is allocated yet."""
    batch, _, frames, height, width = shape
    window = getattr(model.model_options.get("context_handler"), "context_length", None)
    run_frames = min(frames, window) if isinstance(window, int) else frames
    needed = t2v_core.sampling_bytes(t2v.diffusion_model.unet.config, batch * (1 if cfg == 1.0 else 2), run_frames,
                                     height, width, t2v.compute_dtype)
    mm.load_models_gpu([model], memory_required=needed)
    try:
        t2v_core.check_fits(needed, model.load_device, f"Sampling {frames} frames of {width}x{height} latents")
    except t2v_core.NotEnoughMemory as error:
        raise ValueError(error.with_advice(MEMORY_ADVICE)) from error


def check_context_windows(model):
    """Core's context handler with an overlap not smaller than its windows fails deep in sampling (range() with a
    step of 0, or no windows and NaN frames); say so first, naming the inputs."""
    handler = model.model_options.get("context_handler")
    length, overlap = getattr(handler, "context_length", None), getattr(handler, "context_overlap", None)
    if isinstance(length, int) and isinstance(overlap, int) and overlap >= length:
        raise ValueError(f"model: its context windows overlap by {overlap} frames but are {length} long; set "
                         f"ContextWindowsManual's context_overlap below its context_length (e.g. 4 for 16).")


def check_noise_mask(latent):
    """ComfyUI stretches any mask over the latent, frames included; for a video one mask for every frame or one per
    frame is meant, and another count is a mistake that would be stretched over the clip."""
    mask = latent.get("noise_mask")
    if mask is None:
        return
    frames = video_latents(latent, "latent").shape[2]
    if not isinstance(mask, torch.Tensor) or mask.ndim < 2:
        raise ValueError("latent: its noise_mask is not a mask; expected [frames, height, width] or the "
                         "[1, 1, frames, h, w] of ModelScope T2V Keyframes.")
    count = mask.shape[2] if mask.ndim == 5 else mask.shape[:-2].numel()
    if count not in (1, frames):
        raise ValueError(f"latent: its noise_mask has masks for {count} frames, the latent has {frames} frames; "
                         f"give one mask for every frame or one per frame (ModelScope T2V Keyframes makes one per "
                         f"frame).")


def progress_callback(t2v, steps):
    """ComfyUI's progress bar with live previews; stops on /interrupt."""
    bar = comfy.utils.ProgressBar(steps)
    preview = strip_previewer(t2v.latent_format)

    def callback(step, denoised, x, total):
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(step + 1, total, preview(denoised) if preview else None)

    return callback


class Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VSampler",
            display_name="ModelScope Text-to-Video Sampler",
            category=CATEGORY,
            description="Denoises a video latent with the spatio-temporal UNet and classifier-free guidance, through "
                        "ComfyUI's sampling: every core sampler, and the MODEL's patches and wrappers.",
            inputs=[
                io.Model.Input("model", tooltip="The UNet from the ModelScope T2V checkpoint loader."),
                io.Conditioning.Input("positive", tooltip="The prompt, from ModelScope T2V Text Encode."),
                io.Conditioning.Input("negative", tooltip="The negative prompt; an empty text is the model's default."),
                io.Latent.Input("latent", tooltip="At denoise 1.0: the noise video to start from (or any latent, "
                                                  "noised from seed as core KSampler does). Below 1.0: the encoded "
                                                  "video to change (video-to-video, zeroscope XL upscaling)."),
                io.Int.Input("steps", **limits("steps"), tooltip="Sampling steps; the paper uses 50, "
                                                                  "few-step LoRAs (MCM) 4 with lcm."),
                io.Float.Input("cfg", **limits("guidance_scale"), step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale; the paper uses 9. 1.0 turns guidance off "
                                       "(one UNet call per step; few-step LoRAs use 1.0)."),
                io.Combo.Input("sampler_name", options=SAMPLERS, default=t2v_core.SETTINGS["sampler"].default,
                               tooltip="Any core sampler. With scheduler modelscope: ddim reproduces the original "
                                       "and diffusers; lcm is diffusers' LCMScheduler for few-step LoRAs (MCM); "
                                       "dpmpp_2m needs fewer steps; euler_ancestral adds fresh noise each step."),
                io.Float.Input("denoise", **limits("denoise"), step=0.01,
                               tooltip="1.0 makes a new video from noise. Lower values keep more of the input latent "
                                       "(zeroscope XL upscaling: 0.66-0.85)."),
                io.Latent.Input("noise", optional=True,
                                tooltip="Optional noise video (ModelScope T2V Noise Video) to use instead of noise "
                                        "drawn from seed; its shape must match latent."),
                io.Int.Input("seed", **limits("seed"), optional=True, control_after_generate=True,
                             tooltip="Seed of the noise when the latent is not the noise video, and of the fresh "
                                     "noise samplers add each step (on scheduler modelscope, euler_ancestral, lcm and "
                                     "ddim's eta draw it on the CPU, the same on every device)."),
                io.Float.Input("eta", **limits("eta"), step=0.01, optional=True,
                               tooltip="ddim with scheduler modelscope only: 0 is deterministic (the original), 1 "
                                       "adds DDPM-like noise each step (Euler's ancestral step with this eta)."),
                io.Combo.Input("scheduler", options=SCHEDULERS, default=REFERENCE, optional=True,
                               tooltip="modelscope: the original's timestep grid (diffusers' results; LCM's grid for "
                                       "lcm). A core scheduler (karras, normal, ...) samples as core KSampler does, "
                                       "with the same result for the same seed."),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised video latents.")],
        )

    @classmethod
    def validate_inputs(cls, scheduler=REFERENCE):
        return check_choices(scheduler=(scheduler, SCHEDULERS))

    @classmethod
    def execute(cls, model, positive, negative, latent, steps, cfg, sampler_name, denoise, noise=None, seed=0,
                eta=0.0, scheduler=REFERENCE) -> io.NodeOutput:
        t2v = require_t2v_model(model)
        require_sampler_inputs(t2v, latent, sampler_name, SAMPLERS, cfg, eta)
        width = t2v.diffusion_model.unet.config.context_dim
        check_conditioning(positive, "positive", width)
        check_conditioning(negative, "negative", width)
        check_context_windows(model)
        check_noise_mask(latent)
        noise_samples, image, generator = start(latent, noise, denoise, seed)
        check_memory(t2v, model, noise_samples.shape, cfg)
        if eta > 0 and (sampler_name, scheduler) != ("ddim", REFERENCE):
            log.warning("ModelScope T2V Sampler: eta %.2f is used by ddim on scheduler %s only; %s on %s ignores it.",
                        eta, REFERENCE, sampler_name, scheduler)
        if scheduler == REFERENCE:
            try:
                sigmas = t2v.schedule.reference_sigmas(sampler_name, steps, denoise)
            except ValueError as error:
                raise ValueError(f"steps: {error}") from error
            sampler = reference_sampler(sampler_name, eta, generator, noise_samples.shape, model.load_device,
                                        from_pure_noise=denoise == 1.0)
            if sampler_name == "lcm":
                model = lcm_sampling(model)
        else:
            sigmas = comfy.samplers.KSampler(model, steps, model.load_device, sampler_name, scheduler, denoise,
                                             model_options=model.model_options).sigmas
            sampler = comfy.samplers.sampler_object(sampler_name)
        samples = comfy.sample.sample_custom(model, noise_samples, cfg, sampler, sigmas, positive, negative, image,
                                             noise_mask=latent.get("noise_mask"),
                                             callback=progress_callback(t2v, len(sigmas) - 1),
                                             disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = {key: value for key, value in latent.items() if key != NOISE_KEY}  # the output is no longer noise
        out["samples"] = samples.to(mm.intermediate_device())
        return io.NodeOutput(out)
