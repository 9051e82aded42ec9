"""The pack's ModelPatcher, through which core's LoRA loaders reach t2v_core's LoRA matching.

Core's loaders (LoraLoaderModelOnly, LoraLoader) map a file's keys with key maps of core's own models
(``comfy.lora.model_lora_keys_unet`` knows them by ``isinstance`` and builds the rest from ``state_dict`` names),
which know nothing of diffusers/PEFT, kohya or Stable LoRA names for this UNet, and they hand the ModelPatcher only
what those maps matched. Core has no hook for a model's LoRA names; what it has is its list of weight adapters
(``comfy.weight_adapter.adapters``), which ``comfy.lora.load_lora`` asks about every key of the model, and
``ModelPatcher.add_patches``, which every LoRA reaches. So the seam is two public pieces, checked against ComfyUI
0.3.75 and 0.33.0:

- ``LoraFile``, a weight adapter registered once, answers only at one key no LoRA can target (the UNet's
  ``conv_in.bias``, the text tower's token embedding) and carries the whole file to the patcher;
- ``Patcher.add_patches`` matches that file against its own network with t2v_core and adds core's own patches.

Strength, partial loading and unpatching then behave as for core models; every other model is left alone.
"""
import logging

import comfy.lora
import comfy.model_base
import comfy.model_patcher
import comfy.weight_adapter
import torch

from .. import t2v_core
from .validation import require_finite

log = logging.getLogger(__name__)
UNET_PREFIX = "diffusion_model.unet."
# The keys of core's key maps that stand for a whole file: a bias no LoRA factor pair adapts, and the token
# embedding (core's text key maps name a weight without its ``.weight``). A file in core's own layout (SaveLoRA)
# may update that bias (``diff_b``), which core would have patched at the same key: the file keeps it.
UNET_MARKER = UNET_PREFIX + "conv_in.bias"
UNET_MARKER_UPDATE = UNET_PREFIX + "conv_in.diff_b"
TEXT_MARKER, TEXT_MARKER_KEY = "text_encoders.token_embedding", "token_embedding.weight"


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


def warn_unmatched(found, name, text_handled):
    """One warning when part of the file fits nothing it is given to. ``name``: the file, None when a core loader
    read it (core does not say which)."""
    text = 0 if text_handled else found.keys_of("text_encoder")
    unused = len(found.unmatched) + text
    if not unused:
        return
    detail = (f"{text} text-encoder keys need a LoRA loader that also patches the CLIP (core LoraLoader, or the "
              f"ModelScope T2V LoRA Loader)"
              if text else f"first unmatched: {', '.join(found.unmatched[:3])}")
    log.warning("ModelScope T2V LoRA%s: %d of %d keys matched this model (%s).", f" {name}" if name else "",
                found.total_keys - unused, found.total_keys, detail)


class LoraFile(comfy.weight_adapter.WeightAdapterBase):
    """A whole LoRA file on its way from core's ``load_lora`` to ``Patcher.add_patches``. It claims every key of
    the file, so core does not report them as unloaded: the patcher reports what fits nothing."""

    name = "modelscope_t2v_file"

    def __init__(self, lora):
        self.lora = lora
        self.loaded_keys = set(lora)
        self.weights = []

    @classmethod
    def load(cls, x, lora, alpha=None, dora_scale=None, loaded_keys=None):
        return cls(lora) if x in (UNET_MARKER, TEXT_MARKER) else None

    def marker_patches(self):
        """Core's patch for the marker key itself, where the file has one."""
        update = self.lora.get(UNET_MARKER_UPDATE)
        return {} if update is None else {UNET_MARKER: ("diff", (update,))}

    def calculate_weight(self, weight, key, *args, **kwargs):
        """Reached only where a core ModelPatcher, not the pack's, holds this model: nothing is applied."""
        log.warning("ModelScope T2V LoRA: %s is patched by a core ModelPatcher, which cannot apply this file; load "
                    "the model with the ModelScope T2V checkpoint loader", key)
        return weight


def register():
    """Put ``LoraFile`` in core's weight adapters, last, so core's own come first; idempotent."""
    if LoraFile not in comfy.weight_adapter.adapters:
        comfy.weight_adapter.adapters.append(LoraFile)


class Patcher(comfy.model_patcher.ModelPatcher):
    """Core's ModelPatcher over the pack's UNet (a core BaseModel) or text tower, applying the LoRA files core's
    loaders hand it (``LoraFile``) through t2v_core's matching."""

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        files = {key: patch for key, patch in patches.items() if isinstance(patch, LoraFile)}
        own = UNET_MARKER if isinstance(self.model, comfy.model_base.BaseModel) else TEXT_MARKER_KEY
        added = super().add_patches({k: v for k, v in patches.items() if k not in files}, strength_patch,
                                    strength_model)
        if own not in files:
            return added
        require_finite(**{"strength_model" if own == UNET_MARKER else "strength_clip": strength_patch})
        if own == UNET_MARKER:
            found = t2v_core.match_lora(files[own].lora, self.model.diffusion_model.unet)
            # Keys for another network in the same call: a CLIP given to core LoraLoader takes the text part.
            own_keys = self.model.state_dict().keys()
            text_handled = TEXT_MARKER_KEY in files or any(key not in own_keys for key in patches)
            warn_unmatched(found, None, text_handled)
            matched = {**core_patches(found.of("unet"), UNET_PREFIX), **files[own].marker_patches()}
        else:
            found = t2v_core.match_lora(files[own].lora, text_encoder=self.model)
            matched = core_patches(found.of("text_encoder"))
        return [*added, *super().add_patches(matched, strength_patch, strength_model), own]
