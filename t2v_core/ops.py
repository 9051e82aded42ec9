"""Layers that compute in the input's dtype while their weights stay in their stored dtype, and the one place the
kernels of their matrix products are chosen.

The model classes take an ``ops`` namespace (as ComfyUI's ``comfy.ops`` does) so that precision is decided
outside the model: a 16-bit checkpoint can stay 16-bit in memory and be cast one layer at a time for fp32
compute, and a 32-bit checkpoint can run as it is. A namespace's ``Linear`` offers the products of
``LinearProducts``; t2v_core's layers and a host's (ComfyUI's, ``nodes/layers.py``) differ only in how they hand
over their cast weights, so the model runs the same kernels in both.

On x86 CPUs with AVX-512 the matrix multiplies of fp32 linear layers go through oneDNN: on the AVX-512 EPYC of
bench/RESULTS.md torch's default path (MKL sgemm) ran at half oneDNN's speed. On an AVX2-only EPYC the text
encoder ran 1.6x slower through oneDNN than diffusers' on torch's path, so CPUs without AVX-512 keep torch's own
path, the one diffusers takes. Same maths, different summation order: results agree to float rounding.
"""
import platform
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_OPS = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
              and hasattr(torch.ops.mkldnn._linear_pointwise, "binary")
              and platform.machine().lower() in ("x86_64", "amd64"))
CPU_CAPABILITY = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()  # AVX512, AVX2, ...
ONEDNN = ONEDNN_OPS and CPU_CAPABILITY == "AVX512"
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # torch < 2.3 has no such query


def gated_gelu(projected):
    """value * GELU(gate) of a projection [..., 2C] whose halves along the last axis are [value, gate] (GEGLU,
    Shazeer 2020)."""
    value, gate = projected.chunk(2, dim=-1)
    return value * F.gelu(gate)


def _torch_geglu(x, weight, bias):
    return gated_gelu(F.linear(x, weight, bias))


def _onednn_linear(x, weight, bias=None):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _onednn_geglu(x, weight, bias):
    """The gate with GELU fused into its product, the value with the multiply fused into its: no [N, 2C]
    intermediate, no extra memory passes."""
    (w_value, w_gate), (b_value, b_gate) = weight.chunk(2), (None, None) if bias is None else bias.chunk(2)
    gate = torch.ops.mkldnn._linear_pointwise(x, w_gate, b_gate, "gelu", [], "none")  # "none": exact erf GELU
    return torch.ops.mkldnn._linear_pointwise.binary(x, gate, w_value, b_value, "mul")


@dataclass(frozen=True)
class Kernels:
    """How the products of one linear layer run: ``linear(x, weight, bias)`` is x W^T + b, ``geglu(x, weight,
    bias)`` is ``gated_gelu(linear(x, weight, bias))``."""
    name: str
    linear: Callable
    geglu: Callable


TORCH_KERNELS = Kernels("torch", F.linear, _torch_geglu)
ONEDNN_KERNELS = Kernels("onednn", _onednn_linear, _onednn_geglu)


def needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def kernels(x, weight, bias=None):
    """The kernels of a product of ``x`` with ``weight`` and ``bias`` (as cast for ``x``):

    ======================================================  ==========================================
    x on the CPU, fp32, a CPU with AVX-512 (``ONEDNN``),     ``ONEDNN_KERNELS``
    no gradient to any of the three, not being compiled
    anything else                                            ``TORCH_KERNELS`` (F.linear, out of place)
    ======================================================  ==========================================

    oneDNN's linear has no backward, so anything needing gradients stays on F.linear, and so does torch.compile,
    which picks its own kernels for F.linear.
    """
    if (ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not _is_compiling()
            and not needs_grad(x, weight, bias)):
        return ONEDNN_KERNELS
    return TORCH_KERNELS


def hooked(layer):
    """Whether a host runs something of its own around the layer's forward (a replaced ``forward``, as core
    ComfyUI's bypass LoRA sets, or forward hooks): a fused product would skip it, so the layer is called."""
    return "forward" in vars(layer) or bool(layer._forward_hooks or layer._forward_pre_hooks)


class LinearProducts:
    """The products of a linear layer, each on the kernels ``kernels`` picks: ``product`` (x W^T + b, the
    layer's forward), ``geglu`` and ``split``. A layer family supplies ``cast_weights(x)``, a context manager
    yielding the (weight, bias) to compute ``x`` with."""

    def product(self, x):
        with self.cast_weights(x) as (weight, bias):
            return kernels(x, weight, bias).linear(x, weight, bias)

    def geglu(self, x):
        """``gated_gelu(self(x))``, fused where the kernels fuse it."""
        if hooked(self):
            return gated_gelu(self(x))
        with self.cast_weights(x) as (weight, bias):
            return kernels(x, weight, bias).geglu(x, weight, bias)

    def split(self, x, parts):
        """``self(x).chunk(parts, -1)`` as ``parts`` products with row views of the weight (no copy): at the text
        encoder's 154 rows MKL runs three [1024, 1024] products in about half the time of one [3072, 1024]."""
        if hooked(self):
            return self(x).chunk(parts, dim=-1)
        with self.cast_weights(x) as (weight, bias):
            linear = kernels(x, weight, bias).linear
            biases = [None] * parts if bias is None else bias.chunk(parts)
            return [linear(x, w, b) for w, b in zip(weight.chunk(parts), biases)]


def conv_layout(x):
    """Channels-last on the CPU, where oneDNN's convolutions at the VAE's resolutions run about 20 % faster on it
    (its layers keep the layout from there on); unchanged elsewhere."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" and x.ndim == 4 else x


def cast(param, x):
    """``param`` in ``x``'s dtype and on its device; no copy when it already is."""
    if param is None:
        return None
    return param.to(device=x.device, dtype=x.dtype, non_blocking=True)


class Linear(LinearProducts, nn.Linear):
    forward = LinearProducts.product

    @contextmanager
    def cast_weights(self, x):
        yield cast(self.weight, x), cast(self.bias, x)


class Embedding(nn.Embedding):
    """The rows of ``tokens`` in the weight's dtype (the caller casts); ``tokens`` on the weight's device."""

    def forward(self, tokens):
        return F.embedding(tokens, self.weight)


class Conv2d(nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, cast(self.weight, x), cast(self.bias, x))


class Conv3d(nn.Conv3d):
    def forward(self, x):
        return self._conv_forward(x, cast(self.weight, x), cast(self.bias, x))


class GroupNorm(nn.GroupNorm):
    def forward(self, x):
        return F.group_norm(x, self.num_groups, cast(self.weight, x), cast(self.bias, x), self.eps)


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, cast(self.weight, x), cast(self.bias, x), self.eps)
