"""Layers that compute in the input's dtype while their weights stay in their stored dtype.

The model classes take an ``ops`` namespace (as ComfyUI's ``comfy.ops`` does) so that precision is decided
outside the model: a 16-bit checkpoint can stay 16-bit in memory and be cast one layer at a time for fp32
compute, and a 32-bit checkpoint can run as it is.

On x86 CPUs with AVX-512 the matrix multiplies of fp32 linear layers go through oneDNN: on the AVX-512 EPYC of
bench/RESULTS.md torch's default path (MKL sgemm) ran at half oneDNN's speed. On an AVX2-only EPYC the text
encoder ran 1.6x slower through oneDNN than diffusers' on torch's path, so CPUs without AVX-512 keep torch's own
path, the one diffusers takes. Same maths, different summation order: results agree to float rounding.
"""
import platform

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_OPS = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
              and hasattr(torch.ops.mkldnn._linear_pointwise, "binary")
              and platform.machine().lower() in ("x86_64", "amd64"))
CPU_CAPABILITY = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()  # AVX512, AVX2, ...
ONEDNN = ONEDNN_OPS and CPU_CAPABILITY == "AVX512"
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # torch < 2.3 has no such query


def use_onednn(x, weight):
    """Eager inference in fp32 on an x86 CPU. oneDNN's linear has no backward, so anything needing gradients stays
    on F.linear, and so does torch.compile, which picks its own kernels for F.linear."""
    return (ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not _is_compiling()
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def linear(x, weight, bias=None):
    """F.linear, through oneDNN where ``use_onednn`` says so."""
    if use_onednn(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def geglu(projected):
    """value * GELU(gate) of a projection whose output is [value, gate] along its last axis (Shazeer 2020), in
    place: the value half comes back as a strided view."""
    value, gate = projected.chunk(2, dim=-1)
    return value.mul_(torch.ops.aten.gelu_(gate))


def conv_layout(x):
    """Channels-last on the CPU, where oneDNN's convolutions at the VAE's resolutions run about 20 % faster on it
    (its layers keep the layout from there on); unchanged elsewhere."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" and x.ndim == 4 else x


def cast(param, x):
    """``param`` in ``x``'s dtype and on its device; no copy when it already is."""
    if param is None:
        return None
    return param.to(device=x.device, dtype=x.dtype, non_blocking=True)


class Linear(nn.Linear):
    """Besides the plain product, two fused forms the model uses where the layer offers them (a host's layers, such
    as ComfyUI's, need not: the model then takes the plain product and splits it)."""

    def forward(self, x):
        return linear(x, cast(self.weight, x), cast(self.bias, x))

    def geglu(self, x):
        """``geglu(self(x))``. oneDNN computes the gate with GELU fused and the value with the product fused: no
        [N, 8C] intermediate, no extra memory passes."""
        weight, bias = cast(self.weight, x), cast(self.bias, x)
        if not use_onednn(x, weight):
            return geglu(F.linear(x, weight, bias))
        (w_value, w_gate), (b_value, b_gate) = weight.chunk(2), bias.chunk(2)
        gate = torch.ops.mkldnn._linear_pointwise(x, w_gate, b_gate, "gelu", [], "none")  # "none": exact erf GELU
        return torch.ops.mkldnn._linear_pointwise.binary(x, gate, w_value, b_value, "mul")

    def split(self, x, parts):
        """``self(x).chunk(parts, -1)`` as ``parts`` products with row views of the weight (no copy): at the text
        encoder's 154 rows MKL runs three [1024, 1024] products in about half the time of one [3072, 1024]."""
        weights = cast(self.weight, x).chunk(parts)
        biases = [None] * parts if self.bias is None else cast(self.bias, x).chunk(parts)
        return [linear(x, w, b) for w, b in zip(weights, biases)]


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
