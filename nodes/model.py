"""t2v_core networks handed to ComfyUI's model management.

The UNet becomes a core ``BaseModel`` (epsilon prediction, SD's beta schedule, a 3-D latent format), so core
samplers can drive it too; the text encoder and the VAE become core's CLIP and VAE (``clip``, ``vae``).
"""
import logging
from typing import NamedTuple

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import comfy.supported_models_base
import torch
from torch import nn

from .. import t2v_core
from .clip import TextEncoder
from .layers import OPS
from .patcher import Patcher
from .patches import block_patches
from .types import FRAMES
from .vae import VAE
from .validation import require_channels

log = logging.getLogger(__name__)
FRAMES_AXIS = 2  # of the latents [B, C, F, h, w]


class T2VLatentFormat(comfy.latent_formats.SD15):
    """LATENT samples [B, 4, F, h, w] are the VAE's own latents, as in core; the sampler sees them multiplied by the
    VAE's ``scaling_factor`` (0.18215 in every published checkpoint)."""

    latent_dimensions = 3

    def __init__(self, scale_factor=t2v_core.VAEConfig.scaling_factor):
        super().__init__(scale_factor=scale_factor)
        self.taesd_decoder_name = None


class T2VModelConfig(comfy.supported_models_base.BASE):
    """The host's view of a loaded checkpoint: its noise schedule and UNet width come from the checkpoint itself."""

    unet_config = {"disable_unet_model_creation": True}  # the UNet is ours, built by t2v_core
    unet_extra_config = {}
    latent_format = T2VLatentFormat

    def __init__(self, unet, schedule, latent_scale):
        # model_channels: what core patch nodes (FreeU, FreeU_V2) read to find the UNet's levels
        super().__init__({"disable_unet_model_creation": True, "model_channels": unet.config.block_out_channels[0]})
        self.latent_format = T2VLatentFormat(latent_scale)
        # core's "linear" betas are sqrt-linear: the schedule's "scaled_linear"
        self.sampling_settings = {"beta_schedule": "linear", "linear_start": schedule.beta_start,
                                  "linear_end": schedule.beta_end, "timesteps": schedule.num_train_timesteps}


class LCMSampling(comfy.model_sampling.EPS, comfy.model_sampling.ModelSamplingDiscrete):
    """The checkpoint's schedule with LCM's boundary condition on every estimate of the clean latents, as diffusers'
    LCMScheduler applies it (t2v_core ``lcm_denoised``, MCM's timestep scaling 4.0, on the variance-preserving x_t)."""

    def calculate_denoised(self, sigma, model_output, model_input):
        x0 = super().calculate_denoised(sigma, model_output, model_input)
        shape = sigma.shape[:1] + (1,) * (model_output.ndim - 1)
        return t2v_core.lcm_denoised(x0, t2v_core.variance_preserving(model_input, sigma.view(shape)),
                                     self.timestep(sigma).to(model_output.dtype).view(shape))


def lcm_sampling(model):
    """``model`` sampling with LCM's boundary condition, unless a model sampling node (core ModelSamplingDiscrete,
    e.g. its lcm) already set one, which is kept."""
    if "model_sampling" in model.object_patches:
        return model
    model = model.clone()
    model.add_object_patch("model_sampling", LCMSampling(model.model.model_config))
    return model


class DiffusionModel(nn.Module):
    """The ``diffusion_model`` interface core samplers call, over the t2v_core UNet: inside core's DIFFUSION_MODEL
    wrappers (EasyCache, ...) as core's UNets run them, with the MODEL's block patches (FreeU, FreeU_V2) applied."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    @property
    def dtype(self):
        return self.unet.dtype

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, **kwargs):
        if control is not None:
            raise ValueError(f"positive/negative: {CONTROL_REFUSED}")
        transformer_options = {} if transformer_options is None else transformer_options
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                            transformer_options)
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timesteps, context, None, control, transformer_options, **kwargs)

    def _forward(self, x, timesteps, context, y, control, transformer_options, t2v_frames=None, **kwargs):
        """Core UNet's argument order, for wrappers that read it (``y``, ``control``: none for this model)."""
        # t2v_frames: (frames, tokens): the first ``tokens`` of the context hold that many frames' tokens in a row
        # (a prompt schedule; core's batching may have repeated them to a longer length).
        if t2v_frames is not None:
            frames, tokens = t2v_frames
            context = frame_contexts(context[:, :tokens], frames, x.shape[2])
        return self.unet(x, timesteps, context, patches=block_patches(transformer_options))


CONTROL_REFUSED = ("the conditioning carries a ControlNet (Apply ControlNet), and no ControlNet exists for the "
                   "ModelScope T2V UNet; remove the ControlNet node from the prompt's path.")


def frame_contexts(context, frames, latent_frames, input_name="positive"):
    """A prompt schedule's [B, F x N, D] context as [B, F, N, D], or an error naming the input when the latent has
    other frames or the context is not whole frames (a schedule concatenated with another prompt)."""
    if frames != latent_frames:
        raise ValueError(f"{input_name}: the prompt schedule is for {frames} frames, the latent has {latent_frames} "
                         f"(context windows split the clip; use one pass or a schedule of the latent's length)")
    if context.shape[1] % frames:
        raise ValueError(f"{input_name}: a prompt schedule's context ({context.shape[1]} tokens) is not {frames} "
                         f"frames' worth; a schedule cannot be concatenated with another prompt")
    return context.unflatten(1, (frames, -1))


class T2VModel(comfy.model_base.BaseModel):
    """A ModelScope T2V UNet as a core model; ``schedule`` and ``compute_dtype`` are what our sampler needs,
    ``latent_scale`` the VAE's scaling factor (the latent format's)."""

    def __init__(self, unet, schedule, compute_dtype, latent_scale, device=None):
        config = T2VModelConfig(unet, schedule, latent_scale)
        if unet.dtype != compute_dtype:
            config.manual_cast_dtype = compute_dtype  # 16-bit weights computed in a wider dtype
        super().__init__(config, comfy.model_base.ModelType.EPS, device=device)
        self.diffusion_model = DiffusionModel(unet)
        self.schedule = schedule
        self.compute_dtype = compute_dtype

    def extra_conds(self, **kwargs):
        """Core's conditions, and a prompt schedule's frame and token counts for ``DiffusionModel`` (equal counts
        are what lets core batch two schedules)."""
        out = super().extra_conds(**kwargs)
        if kwargs.get(FRAMES) is not None:
            out[FRAMES] = comfy.conds.CONDConstant((kwargs[FRAMES], kwargs["cross_attn"].shape[1]))
        return out

    def memory_required(self, input_shape, cond_shapes={}):
        """Working memory of one UNet call on latents [B, C, F, h, w] (ComfyUI frees this much before sampling and
        sizes its cond/uncond batches by it): t2v_core's estimate, the one its own sampler checks."""
        batch, _, frames, height, width = input_shape
        return t2v_core.sampling_bytes(self.diffusion_model.unet.config, batch, frames, height, width,
                                       self.compute_dtype)


def check_sampling(executor, noise, latent_image, *args, **kwargs):
    """Core's OUTER_SAMPLE wrapper on the pack's MODEL, so that core KSampler and the pack's sampler alike refuse,
    before any step, a latent of another model and context windows on another axis than the frames (core's
    handler would window the batch or the width, or fail on a missing axis)."""
    unet = executor.class_obj.model_patcher.model.diffusion_model.unet
    require_channels("latent", latent_image.shape, unet.config.in_channels)
    dim = getattr(executor.class_obj.model_options.get("context_handler"), "dim", FRAMES_AXIS)
    if dim != FRAMES_AXIS:
        raise ValueError(f"model: context windows on dim {dim}; set ContextWindowsManual's dim to {FRAMES_AXIS}, the "
                         f"frames axis of this model's latents [batch, channels, frames, height, width]")
    return executor(noise, latent_image, *args, **kwargs)


def model_patcher(pipe):
    """The MODEL of a loaded pipeline: its UNet as a core model under a ModelPatcher."""
    load_device = mm.get_torch_device()
    latent_scale = (pipe.vae.config if pipe.vae is not None else t2v_core.VAEConfig).scaling_factor
    patcher = Patcher(T2VModel(pipe.unet, pipe.schedule, pipe.dtype, latent_scale,
                                                        device=load_device),
                                               load_device=load_device, offload_device=mm.unet_offload_device())
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "modelscope_t2v", check_sampling)
    return patcher


class Checkpoint(NamedTuple):
    """The three outputs of one loaded checkpoint (``clip`` or ``vae`` None when the files have none)."""

    model: comfy.model_patcher.ModelPatcher
    clip: TextEncoder | None
    vae: VAE | None


DTYPES = t2v_core.DTYPES
# The loader's weight_dtype, as core UNETLoader names them: the UNet's matrices stored in 8 bits.
WEIGHT_DTYPES = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def compute_dtype(name):
    if name != "auto":
        return DTYPES[name]
    dtype = mm.unet_dtype(supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if dtype not in DTYPES.values():  # ComfyUI's --fp8-*/--fp64-unet flags: not formats this model computes in
        dtype = torch.float16 if mm.get_torch_device().type == "cuda" else torch.float32
    return dtype


def load_pipeline(path, dtype_name, vae_path, weight_dtype_name, text_encoder_path):
    dtype, weight_dtype = compute_dtype(dtype_name), WEIGHT_DTYPES[weight_dtype_name]
    pipe = t2v_core.load_pipeline(path, device=mm.unet_offload_device(), dtype=dtype, vae=vae_path, ops=OPS,
                                  weight_dtype=weight_dtype, text_encoder=text_encoder_path)
    log.info("Loaded %s (compute dtype %s, UNet weights %s)", path, dtype, pipe.unet.dtype)
    return pipe


def load_checkpoint(path, dtype_name="auto", vae_path=None, weight_dtype_name="default", text_encoder_path=None):
    """Load ``path`` (any t2v_core layout). ComfyUI's execution cache keeps the loader node's outputs, so a second
    loader on the same files, or a later prompt, gets this copy again; the MODEL can reload its UNet alone through
    core's ``cached_patcher_init`` (multi-GPU clones)."""
    settings = (path, dtype_name, vae_path, weight_dtype_name, text_encoder_path)
    pipe = load_pipeline(*settings)
    model = model_patcher(pipe)
    model.cached_patcher_init = (load_model, settings)
    clip = TextEncoder(pipe) if pipe.text_encoder is not None else None
    vae = VAE(pipe) if pipe.vae is not None else None
    return Checkpoint(model, clip, vae)


def load_model(path, dtype_name, vae_path, weight_dtype_name, text_encoder_path, disable_dynamic=False):
    """A MODEL freshly loaded from the checkpoint, with weights of its own: core's ``cached_patcher_init`` factory,
    which multi-GPU clones and device selection reload a model with (``disable_dynamic``: core's flag for a plain
    ModelPatcher, which this always is)."""
    return model_patcher(load_pipeline(path, dtype_name, vae_path, weight_dtype_name, text_encoder_path))


def require_t2v_model(model, input_name="model"):
    """The T2VModel inside a MODEL input, or an error saying what was wired in instead."""
    inner = getattr(model, "model", None)
    if not isinstance(inner, T2VModel):
        kind = type(getattr(inner, "model_config", inner)).__name__
        raise ValueError(f"{input_name}: expected a ModelScope text-to-video MODEL from the ModelScope T2V checkpoint "
                         f"loader, got a {kind} model. Image models (SD 1.5, SDXL, ...) cannot make videos here.")
    return inner
