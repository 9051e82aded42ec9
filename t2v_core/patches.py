"""Functions a caller runs inside the UNet without touching its weights, and FreeU (Si et al. 2023) built from them.

The UNet keeps the down path's activations as skips and concatenates each back in the up path. A host (ComfyUI's
``input_block_patch`` / ``output_block_patch``, FreeU) can change them there:

    input_block(h, index) -> h                     before the down path keeps h as skip ``index`` (0, 1, ...)
    output_block(h, skip, index) -> (h, skip)      before the up path's concatenation ``index`` (0, 1, ...)

h and skip are per-frame feature maps [(B F), C, H, W]. A host can also run the spatial transformers' attentions
(ComfyUI's attn1/attn2 patches and replacements):

    attention(site, kind, attn, x, context) -> out   instead of ``attn(x, context)``; kind "attn1" (self) or
                                                      "attn2" (cross, context [(B F), 77, D])

Blocks are numbered as in the SD UNet, whose numbering ComfyUI's patches use: input block i is the layer whose
output becomes skip i, output block i the layer after the i-th concatenation.
"""
from dataclasses import dataclass
from functools import partial

import torch


@dataclass(frozen=True)
class BlockPatches:
    input_block: tuple = ()
    output_block: tuple = ()
    attention: object = None


@dataclass(frozen=True)
class AttentionSite:
    """Where a spatial transformer runs: ``block`` ("input", i) / ("middle", 0) / ("output", i), its place among
    the spatial transformers in forward order, its input's shape [(B F), C, H, W], and the UNet input's shape as
    per-frame maps [(B F), C, h, w] (what image patches expect)."""
    block: tuple
    transformer_index: int
    activations_shape: tuple
    original_shape: tuple


class Skips:
    """The down path's skips, with the patches applied as they are pushed and popped, and the block numbering."""

    def __init__(self, patches=None, original_shape=()):
        self.patches = patches or BlockPatches()
        self.original_shape = tuple(original_shape)
        self.stack = []
        self.popped = 0
        self.transformers = 0

    def attend(self, block, shape):
        """The ``attend`` function of the spatial transformer at ``block`` (None: the model's own attention)."""
        if self.patches.attention is None:
            return None
        site = AttentionSite(block, self.transformers, tuple(shape), self.original_shape)
        self.transformers += 1
        return partial(self.patches.attention, site)

    def push(self, h):
        for patch in self.patches.input_block:
            h = patch(h, len(self.stack))
        self.stack.append(h)
        return h

    def pop(self, h):
        skip = self.stack.pop()
        for patch in self.patches.output_block:
            h, skip = patch(h, skip, self.popped)
        self.popped += 1
        return h, skip

    def next_size(self):
        """Height and width of the skip popped next: where an upsampler has to land."""
        return self.stack[-1].shape[-2:]


def fourier_filter(x, threshold, scale):
    """Scale the centred low-frequency square of ``x``'s 2-D spectrum (``threshold`` bins each side) by ``scale``."""
    dtype = x.dtype
    x_freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    *_, height, width = x_freq.shape
    mask = torch.ones_like(x_freq.real)
    crow, ccol = height // 2, width // 2
    mask[..., crow - threshold:crow + threshold, ccol - threshold:ccol + threshold] = scale
    x_freq = torch.fft.ifftshift(x_freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(x_freq, dim=(-2, -1)).real.to(dtype)


def freeu(config, s1, s2, b1, b2):
    """FreeU with diffusers' ``enable_freeu(s1, s2, b1, b2)`` meaning: in the first two up stages the backbone's
    first half of channels is scaled by b1 / b2 and the skip's low frequencies by s1 / s2."""
    per_stage = config.layers_per_block + 1
    factors = {0: (b1, s1), 1: (b2, s2)}

    def output_block(h, skip, index):
        factor = factors.get(index // per_stage)
        if factor is None:
            return h, skip
        b, s = factor
        half = h.shape[1] // 2
        h = torch.cat([h[:, :half] * b, h[:, half:]], dim=1)
        return h, fourier_filter(skip, threshold=1, scale=s)

    return BlockPatches(output_block=(output_block,))
