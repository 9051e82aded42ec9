"""The spatio-temporal UNet sampler node.

Without a core scheduler it walks t2v_core's samplers on the reference DDIM grid (diffusers' and the original's
results). With one it samples through ComfyUI's own ``comfy.sample.sample``, as core KSampler does, so the
MODEL's patches (context windows, CFG functions, model sampling overrides) and the latent's ``noise_mask`` apply
and core KSampler's result comes out for the same noise, sampler, scheduler and seed. A MODEL with such patches
or a masked latent on the reference grid takes ComfyUI's sampling too, on the grid's own sigmas. The UNet's block
and attention patches (FreeU, PerturbedAttentionGuidance) apply on every path.
"""
import logging
import math

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io

from .. import t2v_core
from .latent import require_sampler_inputs, video_latents
from .loader import CATEGORY
from .model import frame_contexts, require_t2v_model
from .patches import attention_patches, block_patches
from .preview import strip_previewer
from .types import FRAMES
from .validation import check_choices

MEMORY_ADVICE = ("Use fewer frames or a smaller size, dtype fp16 on a GPU, the loader's weight_dtype fp8, or "
                 "ContextWindowsManual on the MODEL with a core scheduler.")
REFERENCE = "modelscope"  # the reference grid: the node's behaviour before core schedulers were offered
SCHEDULERS = [REFERENCE, *comfy.samplers.KSampler.SCHEDULERS]
# model_options that only ComfyUI's sampling applies (set by ContextWindowsManual, RescaleCFG, CFG guiders, ...).
SAMPLING_HOOKS = ("context_handler", "sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function",
                  "sampler_calc_cond_batch_function", "model_function_wrapper")
# CONDITIONING options t2v_core's samplers apply (a prompt schedule) or that mean nothing to this model (the pooled
# text embedding of core CLIPTextEncode, which only image models with an ADM input read).
PLAIN_OPTIONS = (FRAMES, "pooled_output")
# The reference grid's samplers in ComfyUI's sampling (DDIM with eta 0 is Euler's method in sigma).
CORE_SAMPLERS = {"ddim": "euler", "euler": "euler", "euler_ancestral": "euler_ancestral", "dpmpp_2m": "dpmpp_2m"}
log = logging.getLogger(__name__)


def check_conditioning(conditioning, input_name, width):
    """An error naming the input unless every entry of a CONDITIONING input is text context this model reads."""
    if not conditioning:
        raise ValueError(f"{input_name}: empty conditioning; connect a ModelScope T2V Text Encode node")
    for context, _ in conditioning:
        if context.ndim != 3 or context.shape[-1] != width:
            raise ValueError(f"{input_name}: the conditioning is {list(context.shape)}, this model reads "
                             f"[batch, tokens, {width}] text context; encode the prompt with ModelScope T2V Text "
                             f"Encode (not an image model's CLIP)")


def plain_contexts(positive, negative, latent_frames):
    """(negative, positive) contexts for t2v_core's samplers ([1, N, D], or [1, F, N, D] for a prompt schedule), or
    None when the conditioning means more than one context per prompt: several entries (ConditioningCombine),
    options such as timestep ranges or strength, or prompts of different lengths (ConditioningConcat), which only
    ComfyUI's sampling applies."""
    entries = (negative, positive)
    if any(len(c) != 1 or any(v is not None for k, v in c[0][1].items() if k not in PLAIN_OPTIONS) for c in entries):
        return None
    contexts = [context if options.get(FRAMES) is None else frame_contexts(context, options[FRAMES], latent_frames, name)
                for name, ((context, options),) in zip(("negative", "positive"), entries)]
    if contexts[0].ndim != contexts[1].ndim:  # one side a schedule: the other's context for every frame
        contexts = [c if c.ndim == 4 else c[:, None].expand(-1, latent_frames, -1, -1) for c in contexts]
    return contexts if contexts[0].shape == contexts[1].shape else None


def start_noise(latent, noise, denoise, generator):
    """The noise a run starts from, and the clean latents to noise when ``denoise`` < 1."""
    samples = video_latents(latent, "latent")
    if noise is not None:
        noise_samples = video_latents(noise, "noise")
        if noise_samples.shape != samples.shape:
            raise ValueError(f"noise: shape {list(noise_samples.shape)} (frames {noise_samples.shape[2]}) does not match "
                             f"latent {list(samples.shape)} (frames {samples.shape[2]}); make both with the same width, "
                             f"height, length and batch size.")
        return noise_samples, (samples if denoise < 1 else None)
    if denoise < 1:
        return torch.randn(samples.shape, generator=generator), samples
    if not latent.get("t2v_noise") and not samples.any():
        raise ValueError("latent: this latent is all zeros (an empty latent for core samplers); at denoise 1.0 the "
                         "ModelScope T2V sampler starts from the noise video itself: set fill to 'noise'.")
    return samples, None


class Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VSampler",
            display_name="ModelScope Text-to-Video Sampler",
            category=CATEGORY,
            description="Denoises a video latent with the spatio-temporal UNet and classifier-free guidance "
                        "(cond and uncond in one batch).",
            inputs=[
                io.Model.Input("model", tooltip="The UNet from the ModelScope T2V checkpoint loader."),
                io.Conditioning.Input("positive", tooltip="The prompt, from ModelScope T2V Text Encode."),
                io.Conditioning.Input("negative", tooltip="The negative prompt; an empty text is the model's default."),
                io.Latent.Input("latent", tooltip="At denoise 1.0: the noise video to start from. Below 1.0: the "
                                                  "encoded video to change (video-to-video, zeroscope XL upscaling)."),
                io.Int.Input("steps", default=50, min=1, max=999, tooltip="Sampling steps; the paper uses 50."),
                io.Float.Input("cfg", default=9.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale; the paper uses 9. 1.0 turns guidance off."),
                io.Combo.Input("sampler_name", options=list(t2v_core.SAMPLERS), default="ddim",
                               tooltip="ddim reproduces the original and diffusers; dpmpp_2m needs fewer steps; "
                                       "euler_ancestral adds fresh noise each step."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="1.0 makes a new video from noise. Lower values keep more of the input latent "
                                       "(zeroscope XL upscaling: 0.66-0.85)."),
                io.Latent.Input("noise", optional=True,
                                tooltip="Optional noise video (ModelScope T2V Noise Video) to use instead of noise "
                                        "drawn from seed; its shape must match latent."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, optional=True, control_after_generate=True,
                             tooltip="Seed of the noise added below denoise 1.0 without a noise input, and of "
                                     "euler_ancestral / eta noise."),
                io.Float.Input("eta", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="DDIM only: 0 is deterministic (the original), 1 adds DDPM-like noise each step."),
                io.Combo.Input("scheduler", options=SCHEDULERS, default=REFERENCE, optional=True,
                               tooltip="modelscope: the original's timestep grid and samplers (diffusers' results). "
                                       "A core scheduler (karras, normal, ...) samples as core KSampler does, with "
                                       "the same result for the same seed; eta is then not used. The MODEL's patches "
                                       "(context windows, CFG functions) apply with either."),
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
        require_sampler_inputs(t2v, latent, sampler_name, cfg, eta)
        width = t2v.diffusion_model.unet.config.context_dim
        check_conditioning(positive, "positive", width)
        check_conditioning(negative, "negative", width)
        check_context_windows(model)
        check_noise_mask(latent)
        if scheduler != REFERENCE:
            return io.NodeOutput(sample_as_core(model, t2v, positive, negative, latent, noise, steps, cfg, sampler_name,
                                                scheduler, denoise, seed))
        contexts = plain_contexts(positive, negative, video_latents(latent, "latent").shape[2])
        if (sampling_hooks(model) or attention_patches(model.model_options.get("transformer_options", {}))
                or latent.get("noise_mask") is not None or contexts is None):
            return io.NodeOutput(sample_reference_as_core(model, t2v, positive, negative, latent, noise, steps, cfg,
                                                          sampler_name, denoise, seed, eta))
        generator = torch.Generator("cpu").manual_seed(seed)  # the starting noise, then any per-step noise
        noise_samples, init = start_noise(latent, noise, denoise, generator)
        context = torch.cat(contexts)
        mm.load_models_gpu([model])
        unet = t2v.diffusion_model.unet
        total = len(t2v.schedule.timesteps(steps, denoise)) - 1
        bar = comfy.utils.ProgressBar(total)
        preview = strip_previewer(t2v.latent_format)

        def callback(step):
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(step["i"] + 1, total, preview(step["denoised"]) if preview else None)

        try:
            latents = t2v_core.sample(
                unet, t2v.schedule, noise_samples, context.to(t2v.compute_dtype), steps=steps, guidance_scale=cfg,
                sampler=sampler_name, eta=eta, denoise=denoise, init_latents=init,
                generator=generator, callback=callback, device=model.load_device,
                patches=block_patches(dict(model.model_options.get("transformer_options", {}))))
        except t2v_core.NotEnoughMemory as error:
            raise ValueError(error.with_advice(MEMORY_ADVICE)) from error
        return io.NodeOutput({"samples": latents.to(mm.intermediate_device())})


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
    count = mask.shape[2] if mask.ndim == 5 else math.prod(mask.shape[:-2])
    if count not in (1, frames):
        raise ValueError(f"latent: its noise_mask has masks for {count} frames, the latent has {frames} frames; "
                         f"give one mask for every frame or one per frame (ModelScope T2V Keyframes makes one per "
                         f"frame).")


def sampling_hooks(model):
    """The MODEL's model_options that only ComfyUI's sampling applies."""
    return [name for name in SAMPLING_HOOKS if model.model_options.get(name)]


def core_noise(latent, noise, denoise, seed):
    """(noise, latent image) for ComfyUI's sampling. The pack's noise video at denoise 1.0 is the noise itself
    (core's ``prepare_noise`` draws the same bits from the same seed) on an empty latent."""
    samples = video_latents(latent, "latent")
    if noise is not None:
        return start_noise(latent, noise, denoise, None)[0], samples
    if latent.get("t2v_noise") and denoise == 1.0:
        return samples, torch.zeros_like(samples)
    return comfy.sample.prepare_noise(samples, seed, latent.get("batch_index")), samples


def run_core_sampling(model, t2v, latent, noise_samples, samples, steps, cfg, sampler_name, scheduler, positive,
                      negative, denoise, seed, sigmas=None):
    """``comfy.sample.sample`` as core KSampler calls it (``sigmas``: custom ones instead of the scheduler's), with
    the pack's progress bar and preview; the LATENT that comes out."""
    bar = comfy.utils.ProgressBar(steps)
    preview = strip_previewer(t2v.latent_format)

    def callback(step, denoised, x, total):
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(step + 1, total, preview(denoised) if preview else None)

    result = comfy.sample.sample(model, noise_samples, steps, cfg, sampler_name, scheduler, positive, negative, samples,
                                 denoise=denoise, noise_mask=latent.get("noise_mask"), sigmas=sigmas,
                                 callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    out = {key: value for key, value in latent.items() if key != "t2v_noise"}
    out["samples"] = result.to(mm.intermediate_device())
    return out


def sample_as_core(model, t2v, positive, negative, latent, noise, steps, cfg, sampler_name, scheduler, denoise, seed):
    noise_samples, samples = core_noise(latent, noise, denoise, seed)
    return run_core_sampling(model, t2v, latent, noise_samples, samples, steps, cfg, sampler_name, scheduler, positive,
                             negative, denoise, seed)


def sample_reference_as_core(model, t2v, positive, negative, latent, noise, steps, cfg, sampler_name, denoise, seed,
                             eta):
    """The reference grid through ComfyUI's sampling, for what only that applies: the MODEL's sampling hooks or
    attention patches, a noise mask, conditioning with several entries or options. The grid's sigmas become custom
    sigmas: DDIM (eta 0) is Euler's method on them ending at alpha_bar[0], as the original; the others end at 0, as
    t2v_core's. Without such patches these are the reference frames; ancestral noise comes from ComfyUI's seeded
    sampler noise instead of the pack's."""
    if sampler_name == "ddim" and eta > 0:
        log.warning("ModelScope T2V Sampler: eta %.2f is not applied: this run takes ComfyUI's sampling (for the "
                    "MODEL's patches, a noise mask or combined conditioning), which has no DDIM with eta; use "
                    "euler_ancestral for per-step noise.", eta)
    timesteps = t2v.schedule.timesteps(steps, denoise)
    sigmas = t2v.schedule.sigmas(timesteps)
    if sampler_name != "ddim":
        sigmas[-1] = 0.0
    if latent.get("noise_mask") is not None:  # inpainting: the latent holds what is kept
        noise_samples, samples = core_noise(latent, noise, denoise, seed)
    else:  # the reference path's start (start_noise), in ComfyUI's terms
        noise_samples, samples = start_noise(latent, noise, denoise, torch.Generator("cpu").manual_seed(seed))
        if samples is None:  # x_T on the variance-preserving scale; ComfyUI scales noise by sigma below sigma_max
            noise_samples = noise_samples * float((1 + sigmas[0] ** 2).sqrt() / sigmas[0])
            samples = torch.zeros_like(noise_samples)
    out = run_core_sampling(model, t2v, latent, noise_samples, samples, len(sigmas) - 1, cfg,
                            CORE_SAMPLERS[sampler_name], "normal", positive, negative, denoise, seed,
                            sigmas=sigmas.float())
    if sampler_name == "ddim":  # ComfyUI returns x0 + sigma * eps at alpha_bar[0]; the original, its VP form
        out["samples"] = out["samples"] / float((1 + sigmas[-1] ** 2).sqrt())
    return out
