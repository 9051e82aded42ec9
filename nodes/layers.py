"""The layer classes the nodes build t2v_core's networks from: ComfyUI's own (``comfy.ops``), so that its model
management works on this model as on core ones: partial loading under VRAM pressure, LoRA patches applied on the
fly to weights left on the offload device, 8-bit weight storage."""
from types import SimpleNamespace

import comfy.ops
import torch

LAYERS = ("Linear", "Conv2d", "Conv3d", "GroupNorm", "LayerNorm", "Embedding")


def eager(layer):
    """``layer`` creating its parameters when built. t2v_core builds on the meta device and then assigns the file's
    tensors; with DynamicVRAM (ComfyUI 0.33 on GPUs) core layers create no weights until core's own loader fills
    them. Core keeps eager creation for subclasses that bring their own state-dict loader, as this one does."""
    return type(layer.__name__, (layer,), {"_load_from_state_dict": torch.nn.Module._load_from_state_dict})


# manual_cast: each call casts the layer's weights to the input's dtype and device (16-bit or fp8 storage under
# fp32 or 16-bit compute, weights kept on the offload device).
OPS = SimpleNamespace(**{name: eager(getattr(comfy.ops.manual_cast, name)) for name in LAYERS})
