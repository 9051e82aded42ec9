"""The layer classes the nodes build t2v_core's networks from: ComfyUI's own (``comfy.ops``), so that its model
management works on this model as on core ones: partial loading under VRAM pressure, LoRA patches applied on the
fly to weights left on the offload device, 8-bit weight storage. Their linear layers compute on t2v_core's kernels
(``t2v_core.ops.kernels``), the ones the model runs outside ComfyUI."""
from contextlib import contextmanager
from types import SimpleNamespace

import comfy.ops
import torch

from ..t2v_core.ops import LinearProducts


def eager(layer):
    """``layer`` creating its parameters when built. t2v_core builds on the meta device and then assigns the file's
    tensors; with DynamicVRAM (ComfyUI 0.33 on GPUs) core layers create no weights until core's own loader fills
    them. Core keeps eager creation for subclasses that bring their own state-dict loader, as this one does."""
    return type(layer.__name__, (layer,), {"_load_from_state_dict": torch.nn.Module._load_from_state_dict})


@contextmanager
def core_cast_weights(layer, x):
    """The weight and bias of a core layer as core computes ``x`` with them: cast to ``x``'s dtype and device,
    with the ModelPatcher's weight functions applied (LoRA patches on offloaded weights, weight wrappers), on
    core's offload stream, which is released once the product is done.

    A seam, checked against ComfyUI 0.3.75 and 0.33.0: core has no public route to run another kernel on its
    layers' weights; its own layer variants (``fp8_ops``, ``mixed_precision_ops``) override
    ``forward_comfy_cast_weights`` and cast with ``comfy.ops.cast_bias_weight``. 0.33 wraps the cast in
    ``CastBiasWeightContext``, which 0.3.75 lacks; ``cast_bias_weight(..., offloadable=True)`` followed by
    ``uncast_bias_weight`` is the form both have (0.33's ``linear_input_act`` uses it as here)."""
    weight, bias, offload = comfy.ops.cast_bias_weight(layer, x, offloadable=True)
    try:
        yield weight, bias
    finally:
        comfy.ops.uncast_bias_weight(layer, weight, bias, offload)


class Linear(comfy.ops.manual_cast.Linear, LinearProducts):
    """Core's linear layer (its ``forward``: the interrupt check, then the cast product) whose products, the
    plain one, ``geglu`` and ``split``, run on t2v_core's kernels."""

    def forward_comfy_cast_weights(self, x):
        return self.product(x)

    cast_weights = core_cast_weights


# manual_cast: each call casts the layer's weights to the input's dtype and device (16-bit or fp8 storage under
# fp32 or 16-bit compute, weights kept on the offload device).
OPS = SimpleNamespace(Linear=eager(Linear), **{name: eager(getattr(comfy.ops.manual_cast, name))
                                               for name in ("Conv2d", "Conv3d", "GroupNorm", "LayerNorm", "Embedding")})
