"""Finding the model's files in every published layout and loading them into a ``Pipeline``.

Layouts: (a) the original ModelScope folder, (b) a diffusers folder, (c) a zeroscope v2 folder (the original
layout without the VAE), (d) a single UNet file, and the project's own one-file safetensors (``convert``). Each
network's file, as published (``unet/diffusion_pytorch_model.fp16.safetensors``, ``text2video_pytorch_model.pth``,
...), also loads on its own under any name: its layout is read from its keys.
"""
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import CheckpointError, is_safetensors, read_json, read_safetensors_metadata, read_state_dict
from . import keymaps
from . import ops as default_ops
from .components import build_text_encoder, build_unet, build_vae, export_state, noise_schedule, text_keymap
from .files import write_files
from .pipeline import Pipeline
from .schedule import NoiseSchedule
from .vae import VAEConfig

log = logging.getLogger(__name__)

ORIGINAL_FILES = {"config": "configuration.json", "unet": "text2video_pytorch_model.pth",
                  "vae": "VQGAN_autoencoder.pth", "text_encoder": "open_clip_pytorch_model.bin"}
# A folder holding any of these is one checkpoint (the diffusers index, or the original configuration or UNet).
FOLDER_MARKERS = ("model_index.json", ORIGINAL_FILES["config"], ORIGINAL_FILES["unet"])
SINGLE_FILE_TAG = "t2v_core"
_UNET_PREFIX = "model.diffusion_model."
_VAE_PREFIX = "first_stage_model."
_HF_TEXT_PREFIX = "text_model."


def _strip_prefix(state, prefix):
    """Keys under ``prefix`` with it removed, when there are any; otherwise ``state`` as it is."""
    if not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# --- One component from one file -------------------------------------------------------------------------------

def unet_from_state(state, source, dtype, head_dim=None, norm_groups=32, ops=default_ops, weight_dtype=None,
                    config_source=None):
    state = _strip_prefix(state, _UNET_PREFIX)
    layout = "original" if any(k.startswith("input_blocks.") for k in state) else "diffusers"
    return build_unet(state, layout, source, dtype, head_dim, norm_groups, ops, weight_dtype, config_source)


def vae_from_state(state, source, dtype, norm_groups=32, scaling_factor=VAEConfig.scaling_factor, ops=default_ops,
                   config_source=None):
    state = _strip_prefix(state, _VAE_PREFIX)
    layout = "ldm" if any(k.startswith("encoder.down.") for k in state) else "diffusers"
    return build_vae(state, layout, source, dtype, norm_groups, scaling_factor, ops=ops, config_source=config_source)


def text_encoder_from_state(state, source, dtype, heads=None, ops=default_ops):
    state = _strip_prefix(state, _HF_TEXT_PREFIX)
    layout = "openclip" if "token_embedding.weight" in state else "hf"
    return build_text_encoder(state, layout, source, dtype, heads, ops=ops)


# --- Layouts ----------------------------------------------------------------------------------------------------

def detect_format(path):
    """"original", "diffusers", "single_file" or "unet_file"; a clear error for anything else."""
    path = Path(path)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return "diffusers"
        if any((path / marker).is_file() for marker in FOLDER_MARKERS):
            return "original"
        raise CheckpointError(
            f"{path}: not a text-to-video checkpoint folder: expected either the ModelScope files "
            f"({', '.join(ORIGINAL_FILES.values())}) or a diffusers folder (model_index.json, unet/, vae/, text_encoder/)")
    if path.is_file():
        if is_safetensors(path) and SINGLE_FILE_TAG in read_safetensors_metadata(path):
            return "single_file"
        return "unet_file"
    raise CheckpointError(f"{path}: no such file or folder")


def _pick_weights(folder, stems, variant):
    """The weights file in a diffusers component folder: safetensors before .bin, the requested variant first."""
    variants = [variant, None] if variant else [None, "fp16"]
    for v in variants:
        for stem, suffix in stems:
            name = f"{stem}.{v}{suffix}" if v else f"{stem}{suffix}"
            if (folder / name).is_file():
                return folder / name
    expected = " or ".join(f"{stem}[.fp16]{suffix}" for stem, suffix in stems)
    raise CheckpointError(f"{folder}: no weights file found; expected {expected}")


def _config(folder, name="config.json"):
    return read_json(folder / name) if (folder / name).is_file() else {}


DIFFUSERS_WEIGHTS = [("diffusion_pytorch_model", ".safetensors"), ("diffusion_pytorch_model", ".bin")]


def _vae_from_folder(folder, dtype, variant=None, ops=default_ops):
    """A diffusers ``vae/`` folder: its weights and config.json."""
    cfg = _config(folder)
    file = _pick_weights(folder, DIFFUSERS_WEIGHTS, variant)
    return vae_from_state(read_state_dict(file), file, dtype, norm_groups=cfg.get("norm_num_groups", 32),
                          scaling_factor=cfg.get("scaling_factor") or VAEConfig.scaling_factor, ops=ops,
                          config_source=folder / "config.json")


def _load_diffusers(path, dtype, variant, own_vae, ops, weight_dtype):
    path = Path(path)
    variant = variant or ("fp16" if dtype != torch.float32 else None)
    text_weights = [("model", ".safetensors"), ("pytorch_model", ".bin")]
    unet_cfg = _config(path / "unet")
    text_cfg, sched_cfg = _config(path / "text_encoder"), _config(path / "scheduler", "scheduler_config.json")
    unet_file = _pick_weights(path / "unet", DIFFUSERS_WEIGHTS, variant)
    unet = unet_from_state(read_state_dict(unet_file), unet_file, dtype, head_dim=unet_cfg.get("attention_head_dim"),
                           norm_groups=unet_cfg.get("norm_num_groups", 32), ops=ops, weight_dtype=weight_dtype,
                           config_source=path / "unet" / "config.json")
    vae = _vae_from_folder(path / "vae", dtype, variant, ops) if own_vae else None
    text_file = _pick_weights(path / "text_encoder", text_weights, variant)
    text_encoder = text_encoder_from_state(read_state_dict(text_file), text_file, dtype,
                                           heads=text_cfg.get("num_attention_heads"), ops=ops)
    schedule = noise_schedule(sched_cfg, path / "scheduler" / "scheduler_config.json")
    return unet, vae, text_encoder, schedule


def _load_original(path, dtype, vae_path, ops, weight_dtype):
    """The ModelScope folder; zeroscope v2 folders are the same without the VAE (and often without the config)."""
    path = Path(path)
    config = _config(path, ORIGINAL_FILES["config"]).get("model", {})
    args, model_cfg = config.get("model_args", {}), config.get("model_cfg", {})
    files = {part: path / args.get(f"ckpt_{key}", ORIGINAL_FILES[part])
             for part, key in (("unet", "unet"), ("vae", "autoencoder"), ("text_encoder", "clip"))}
    if vae_path is None and not files["vae"].is_file():
        raise CheckpointError(
            f"{path}: has no {files['vae'].name}. Zeroscope v2 folders ship only the UNet and the text encoder: copy "
            f"{ORIGINAL_FILES['vae']} (and {ORIGINAL_FILES['config']}) from the ModelScope text-to-video download "
            f"into this folder, or pass a VAE (an SD-2.x KL-f8 VAE file or diffusers vae/ folder) separately.")
    unet = unet_from_state(read_state_dict(files["unet"]), files["unet"], dtype, head_dim=model_cfg.get("unet_head_dim"),
                           ops=ops, weight_dtype=weight_dtype)
    vae = None if vae_path is not None else vae_from_state(read_state_dict(files["vae"]), files["vae"], dtype, ops=ops)
    text_encoder = text_encoder_from_state(read_state_dict(files["text_encoder"]), files["text_encoder"], dtype, ops=ops)
    schedule = noise_schedule(model_cfg, path / ORIGINAL_FILES["config"], {"num_train_timesteps": "num_timesteps"})
    return unet, vae, text_encoder, schedule


def _load_single_file(path, dtype, ops, weight_dtype):
    meta = json.loads(read_safetensors_metadata(path)[SINGLE_FILE_TAG])
    state = read_state_dict(path)
    parts = {}
    for part in ("unet", "vae", "text_encoder"):
        part_state = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
        parts[part] = part_state or None
    if parts["unet"] is None:
        raise CheckpointError(f"{path}: a {SINGLE_FILE_TAG} file without UNet weights (no 'unet.' keys)")
    unet = build_unet(parts["unet"], "diffusers", path, dtype, **meta.get("unet", {}), ops=ops, weight_dtype=weight_dtype)
    vae = build_vae(parts["vae"], "diffusers", path, dtype, **meta.get("vae", {}), ops=ops) if parts["vae"] else None
    text_encoder = (build_text_encoder(parts["text_encoder"], "native", path, dtype, **meta.get("text_encoder", {}), ops=ops)
                    if parts["text_encoder"] else None)
    return unet, vae, text_encoder, noise_schedule(meta.get("schedule", {}), path)


def load_vae(path, dtype=torch.float32, ops=default_ops):
    """A VAE on its own: an LDM/``VQGAN_autoencoder.pth`` file, a diffusers VAE file or ``vae/`` folder."""
    path = Path(path)
    if path.is_dir():
        return _vae_from_folder(path / "vae" if (path / "vae").is_dir() else path, dtype, ops=ops)
    return vae_from_state(read_state_dict(path), path, dtype, ops=ops)


def load_text_encoder(path, dtype=torch.float32, ops=default_ops):
    """A text encoder on its own: an OpenCLIP file (``open_clip_pytorch_model.bin``) or a Hugging Face
    ``CLIPTextModel`` file (diffusers' ``text_encoder/model.fp16.safetensors``)."""
    return text_encoder_from_state(read_state_dict(path), Path(path), dtype, ops=ops)


def load_unet(path, dtype=torch.float32, head_dim=None, ops=default_ops, weight_dtype=None):
    """A UNet on its own, from any single file that holds one (with or without a ``model.diffusion_model.`` prefix)."""
    return unet_from_state(read_state_dict(path), Path(path), dtype, head_dim=head_dim, ops=ops, weight_dtype=weight_dtype)


def load_pipeline(path, *, device="cpu", dtype=torch.float32, vae=None, variant=None, compile=False, ops=default_ops,
                  weight_dtype=None, text_encoder=None):
    """Load a checkpoint in any supported layout (see the module docstring) into a ``Pipeline``.

    ``vae``: a separate VAE (file or folder) for checkpoints that ship without one (zeroscope v2, a UNet file), or to
    replace the one they have. ``variant``: "fp16" to prefer a diffusers folder's ``.fp16.`` files. ``compile``:
    wrap the UNet in ``torch.compile`` (the first step then takes minutes to compile; worth it on GPUs). ``ops``:
    the layer classes every network is built from (a host's, e.g. ComfyUI's ``comfy.ops.manual_cast``; default
    t2v_core's). ``weight_dtype``: store the UNet's matrices in this dtype (``torch.float8_e4m3fn`` or
    ``torch.float8_e5m2``), computed in ``dtype`` one layer at a time. ``text_encoder``: a separate text encoder
    file, for a UNet file (the published files one by one), or to replace the checkpoint's own.
    """
    fmt = detect_format(path)
    log.info("Loading %s (%s layout)", path, fmt)
    if fmt == "diffusers":
        unet, own_vae, own_text_encoder, schedule = _load_diffusers(path, dtype, variant, vae is None, ops, weight_dtype)
    elif fmt == "original":
        unet, own_vae, own_text_encoder, schedule = _load_original(path, dtype, vae, ops, weight_dtype)
    elif fmt == "single_file":
        unet, own_vae, own_text_encoder, schedule = _load_single_file(path, dtype, ops, weight_dtype)
    else:
        unet = load_unet(path, dtype, ops=ops, weight_dtype=weight_dtype)
        own_vae, own_text_encoder, schedule = None, None, NoiseSchedule()
    vae_model = load_vae(vae, dtype, ops=ops) if vae is not None else own_vae
    text_model = load_text_encoder(text_encoder, dtype, ops=ops) if text_encoder is not None else own_text_encoder
    pipe = Pipeline(unet, vae_model, text_model, schedule, device=device, dtype=dtype, source=str(path))
    if compile:
        pipe.unet = torch.compile(pipe.unet)
    return pipe


def save_single_file(pipe, path, dtype=None):
    """Write the pipeline's networks to one safetensors file (written to a temporary name, then renamed)."""
    path = Path(path)
    state = {}
    keymaps_of = {"unet": keymaps.identity, "vae": keymaps.identity, "text_encoder": text_keymap("native")}
    for part, keymap in keymaps_of.items():
        module = getattr(pipe, part)
        if module is not None:
            for key, tensor in export_state(module, keymap).items():
                tensor = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
                state[f"{part}.{key}"] = tensor.detach().cpu().contiguous()
    meta = {"unet": {"head_dim": pipe.unet.config.head_dim, "norm_groups": pipe.unet.config.norm_groups},
            "schedule": {"beta_start": pipe.schedule.beta_start, "beta_end": pipe.schedule.beta_end,
                         "num_train_timesteps": pipe.schedule.num_train_timesteps}}
    if pipe.vae is not None:
        meta["vae"] = {"norm_groups": pipe.vae.config.norm_groups, "scaling_factor": pipe.vae.config.scaling_factor}
    if pipe.text_encoder is not None:
        meta["text_encoder"] = {"heads": pipe.text_encoder.config.heads}
    write_files([path], lambda _, tmp: save_file(state, tmp, metadata={SINGLE_FILE_TAG: json.dumps(meta)}))
    return path
