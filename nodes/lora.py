"""LoRA on the pack's MODEL and CLIP through ComfyUI's own LoRA patches.

Core's loaders (LoraLoaderModelOnly, LoraLoader) find a LoRA's weights through key maps of core's UNets, which
know nothing of this one. ``install`` routes a ModelScope T2V MODEL and CLIP through t2v_core's matching
(diffusers/PEFT, kohya and Stable LoRA names) instead; the result is core's patches on clones of them, so strength,
partial loading and unpatching behave as for core models. Every other model takes core's path unchanged.
"""
import functools
import logging
import os
import sys

import comfy.lora
import comfy.sd
import folder_paths
import torch
from comfy_api.latest import io

from .. import t2v_core
from .clip import TextEncoder, require_t2v_clip
from .loader import CATEGORY
from .model import T2VModel, require_t2v_model
from .validation import check_choices, require_finite

log = logging.getLogger(__name__)
UNET_PREFIX = "diffusion_model.unet."


def core_patches(weights, prefix=""):
    """ComfyUI patches (``comfy.lora.load_lora``'s) for t2v_core's matched LoRA weights: each as a factor pair in
    core's regular naming, or, for Stable LoRA's temporal convs (an update no factor pair of core's reshapes to), as
    the dense update."""
    state, key_map = {}, {}
    for i, weight in enumerate(weights):
        name = f"t2v_lora.{i}"
        target = prefix + weight.target.key
        key_map[name] = target if weight.target.rows is None else (target, (0, *weight.target.rows))
        if weight.low_rank:
            state[f"{name}.lora_up.weight"], state[f"{name}.lora_down.weight"] = weight.up, weight.down
            if weight.alpha is not None:
                state[f"{name}.alpha"] = torch.tensor(weight.alpha)
        else:
            state[f"{name}.diff"] = weight.delta().to(weight.up.dtype)
    return comfy.lora.load_lora(state, key_map, log_missing=False)


def lora_name(depth=4):
    """The file a core LoRA loader is reading (its local ``lora_path``), to name it in messages; None when the
    caller is not one of them."""
    frame = sys._getframe(1)
    for _ in range(depth):
        frame = frame.f_back
        if frame is None:
            return None
        path = frame.f_locals.get("lora_path")
        if isinstance(path, str):
            return os.path.basename(path)
    return None


def warn_unmatched(found, name, text_handled):
    """One warning when part of the file fits nothing it is given to."""
    text = 0 if text_handled else found.keys_of("text_encoder")
    unused = len(found.unmatched) + text
    if not unused:
        return
    detail = (f"{text} text-encoder keys need a LoRA loader that also patches the CLIP (core LoraLoader, or the "
              f"ModelScope T2V LoRA Loader)"
              if text else f"first unmatched: {', '.join(found.unmatched[:3])}")
    log.warning("ModelScope T2V LoRA %s: %d of %d keys matched this model (%s).", name, found.total_keys - unused,
                found.total_keys, detail)


def patch(model, lora, strength_model, name, clip=None, strength_clip=0.0, text_handled=False):
    """A MODEL clone carrying ``lora``'s UNet part, a CLIP clone carrying its text part (None without ``clip``),
    and t2v_core's match. ``text_handled``: a core CLIP takes the text part instead."""
    require_finite(strength_model=strength_model, strength_clip=strength_clip)
    found = t2v_core.match_lora(lora, model.model.diffusion_model.unet,
                                clip.pipe.text_encoder if clip is not None else None, source=name)
    new_model = model.clone()
    new_model.add_patches(core_patches(found.of("unet"), UNET_PREFIX), strength_model)
    new_clip = None
    if clip is not None:
        new_clip = clip.clone()
        new_clip.patcher.add_patches(core_patches(found.of("text_encoder")), strength_clip)
    warn_unmatched(found, name, text_handled or clip is not None)
    return new_model, new_clip, found


def install():
    """Route core's LoRA loading of a ModelScope T2V MODEL through ``patch``; idempotent."""
    original = comfy.sd.load_lora_for_models
    if getattr(original, "t2v_lora", False):
        return

    @functools.wraps(original)
    def load_lora_for_models(model, clip, lora, strength_model, strength_clip, *args, **kwargs):
        if model is None or not isinstance(model.model, T2VModel):
            return original(model, clip, lora, strength_model, strength_clip, *args, **kwargs)
        name = lora_name() or "(unnamed)"
        if isinstance(clip, TextEncoder):
            return patch(model, lora, strength_model, name, clip, strength_clip)[:2]
        new_model, _, found = patch(model, lora, strength_model, name, text_handled=clip is not None)
        if clip is None:
            return new_model, None
        unet_keys = {key for weight in found.of("unet") for key in weight.keys}
        rest = {key: value for key, value in lora.items() if key not in unet_keys}  # the core CLIP's share
        return new_model, original(None, clip, rest, 0.0, strength_clip, *args, **kwargs)[1]

    load_lora_for_models.t2v_lora = True
    comfy.sd.load_lora_for_models = load_lora_for_models


class LoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VLoraLoader",
            display_name="ModelScope Text-to-Video LoRA Loader",
            category=CATEGORY,
            description="Applies a LoRA from models/loras to the UNet and the text encoder: diffusers/PEFT and kohya "
                        "files, and Stable LoRA files (Text-To-Video-Finetuning, the A1111 text2video extension). "
                        "Core's LoraLoaderModelOnly applies the UNet part alone.",
            inputs=[
                io.Model.Input("model", tooltip="The UNet from the ModelScope T2V checkpoint loader."),
                io.Clip.Input("clip", tooltip="The text encoder from the ModelScope T2V checkpoint loader."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A LoRA file in models/loras."),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="How strongly the UNet is changed; 0 leaves it as it is, negative inverts."),
                io.Float.Input("strength_clip", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="How strongly the text encoder is changed."),
            ],
            outputs=[io.Model.Output(tooltip="The UNet with the LoRA."),
                     io.Clip.Output(tooltip="The text encoder with the LoRA (unchanged if the file has no part for it).")],
        )

    @classmethod
    def validate_inputs(cls, lora_name):
        return check_choices(lora_name=(lora_name, folder_paths.get_filename_list("loras")))

    @classmethod
    def execute(cls, model, clip, lora_name, strength_model, strength_clip) -> io.NodeOutput:
        require_t2v_model(model)
        require_t2v_clip(clip)
        lora = t2v_core.read_lora(folder_paths.get_full_path_or_raise("loras", lora_name))
        new_model, new_clip, _ = patch(model, lora, strength_model, lora_name, clip, strength_clip)
        return io.NodeOutput(new_model, new_clip)
