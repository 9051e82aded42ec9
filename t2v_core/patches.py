"""Functions a caller runs inside the UNet at its skip connections, and FreeU (Si et al. 2023) built from them.

The UNet keeps the down path's activations as skips and concatenates each back in the up path. A host (ComfyUI's
``input_block_patch`` / ``output_block_patch``, FreeU) can change them there without touching the weights:

    input_block(h, index) -> h                     before the down path keeps h as skip ``index`` (0, 1, ...)
    output_block(h, skip, index) -> (h, skip)      before the up path's concatenation ``index`` (0, 1, ...)

h and skip are per-frame feature maps [(B F), C, H, W].
"""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockPatches:
    input_block: tuple = ()
    output_block: tuple = ()


class Skips:
    """The down path's skips, with the patches applied as they are pushed and popped."""

    def __init__(self, patches=None):
        self.patches = patches or BlockPatches()
        self.stack = []
        self.popped = 0

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
