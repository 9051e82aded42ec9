"""The autoencoder over big frames in horizontal stripes: the compute device holds one stripe of a layer at a time,
never a whole frame, and the result is the whole-frame one.

Tiling a VAE the usual way (core ComfyUI's VAEDecodeTiled) decodes tiles as separate images and blends their
overlaps; each GroupNorm then normalises a tile by that tile's statistics, which changes the picture. Here every
layer still runs over the whole frame: a 3x3 convolution stripe by stripe with the one row of each neighbouring
stripe that its kernel reads, GroupNorm with the whole frame's statistics, gathered stripe by stripe first. Between
layers the whole-frame activations wait on ``store`` (the host). The latent-resolution middle (its attention sees
every position) runs whole: it is 64 times smaller than the frame.
"""
from functools import partial

import torch
import torch.nn.functional as F

from .ops import conv_layout


class Stripes:
    """Layers over activations [N, C, H, W] kept on ``store``, ``rows`` output rows at a time on ``device``."""

    def __init__(self, rows, device, dtype, store):
        if rows < 1:
            raise ValueError(f"stripe rows must be at least 1, got {rows}")
        self.rows, self.device, self.dtype, self.store = rows, torch.device(device), dtype, torch.device(store)

    def spans(self, height):
        return [(lo, min(lo + self.rows, height)) for lo in range(0, height, self.rows)]

    def load(self, x, lo, hi):
        return conv_layout(x[:, :, lo:hi].to(self.device, self.dtype))

    def empty(self, n, c, height, width, dtype):
        """A whole-frame activation on the store, channels-last where the convolutions run on the CPU (as
        ``conv_layout`` makes them), so that a stripe of it is already in their layout."""
        layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        return torch.empty(n, c, height, width, dtype=dtype, device=self.store, memory_format=layout)

    def norm_stats(self, norm, x):
        """GroupNorm's per-(frame, group) mean and 1/std over the whole frame, from per-channel moments of each
        stripe combined in float64 (Chan et al.'s pairwise update), whatever the memory layout."""
        n, c = x.shape[:2]
        groups = norm.num_groups
        count, mean, m2 = 0, torch.zeros(n, groups, dtype=torch.float64), torch.zeros(n, groups, dtype=torch.float64)
        for lo, hi in self.spans(x.shape[2]):
            part = self.load(x, lo, hi).float()
            var_c, mean_c = (t.double().cpu().reshape(n, groups, -1)
                             for t in torch.var_mean(part, dim=(2, 3), correction=0))  # [N, G, C/G]
            pixels = part.shape[2] * part.shape[3]
            mean_s = mean_c.mean(-1)
            m2_s = pixels * (var_c + (mean_c - mean_s[..., None]).square()).sum(-1)
            count_s = pixels * mean_c.shape[-1]
            delta, total = mean_s - mean, count + count_s
            mean = mean + delta * count_s / total
            m2 = m2 + m2_s + delta.square() * count * count_s / total
            count = total
        # one scale and shift per channel, GroupNorm's affine folded in: [N, C, 1, 1] each
        per_channel = [t.repeat_interleave(c // groups, dim=1).float().to(self.device)[:, :, None, None]
                       for t in (mean, (m2 / count + norm.eps).rsqrt())]
        scale = per_channel[1] * norm.weight.to(self.device, torch.float32)[:, None, None]
        return scale, norm.bias.to(self.device, torch.float32)[:, None, None] - per_channel[0] * scale

    def norm_silu(self, stats, part):
        """SiLU(GroupNorm(part)) for a stripe, with the whole frame's ``stats`` (``norm_stats``)."""
        scale, shift = stats
        return F.silu(part.float() * scale + shift).to(self.dtype)

    def assemble(self, height, stripe):
        """A whole-frame activation of ``height`` rows on the store, from ``stripe(lo, hi)``: its rows lo..hi."""
        out = None
        for lo, hi in self.spans(height):
            y = stripe(lo, hi)
            if out is None:
                out = self.empty(y.shape[0], y.shape[1], height, y.shape[3], y.dtype)
            out[:, :, lo:hi] = y.to(self.store)
        return out

    def conv3x3(self, conv, x, pre=None, post=None):
        """A stride-1, padding-1 3x3 ``conv`` over the whole frame. ``pre(stripe)``: what its input goes through
        first (a norm and SiLU); ``post(out, lo, hi)``: added to its output rows lo..hi (a residual)."""
        height = x.shape[2]

        def stripe(lo, hi):
            a, b = max(lo - 1, 0), min(hi + 1, height)  # one row of each neighbour: the kernel's reach
            part = self.load(x, a, b)
            y = conv(pre(part) if pre else part)[:, :, lo - a:hi - a]  # rows a and b-1 saw zero padding: dropped
            return y if post is None else post(y, lo, hi)

        return self.assemble(height, stripe)

    def resblock(self, block, x):
        h = self.conv3x3(block.conv1, x, pre=partial(self.norm_silu, self.norm_stats(block.norm1, x)))

        def skip(y, lo, hi):
            part = self.load(x, lo, hi)
            return y + (part if block.conv_shortcut is None else block.conv_shortcut(part))

        return self.conv3x3(block.conv2, h, pre=partial(self.norm_silu, self.norm_stats(block.norm2, h)),
                            post=skip)

    def upsample(self, up, x):
        """Nearest-neighbour x2, then ``up.conv``: output rows lo..hi read input rows lo/2 - 1 .. hi/2 + 1."""
        height, width = x.shape[2:]

        def stripe(lo, hi):
            a, b = max(lo // 2 - 1, 0), min((hi + 1) // 2 + 1, height)
            part = F.interpolate(self.load(x, a, b), size=(2 * (b - a), 2 * width), mode="nearest")
            return up.conv(part)[:, :, lo - 2 * a:hi - 2 * a]

        return self.assemble(2 * height, stripe)

    def downsample(self, down, x):
        """Pad right and bottom by one, then ``down.conv`` (3x3, stride 2): output row r reads input rows 2r..2r+2."""
        height = x.shape[2]

        def stripe(lo, hi):
            b = min(2 * hi + 1, height)
            return down.conv(F.pad(self.load(x, 2 * lo, b), (0, 1, 0, 2 * hi + 1 - b)))  # bottom pad past the frame

        return self.assemble((height - 2) // 2 + 1, stripe)


def decode_in_stripes(vae, z, rows, device, store="cpu"):
    """``vae.decode(z)``: [N, z, h, w] unscaled latents (in the compute dtype) -> [N, 3, H, W] on ``store``,
    computed ``rows`` rows at a time on ``device``."""
    stripes = Stripes(rows, device, z.dtype, store)
    decoder = vae.decoder
    h = decoder.mid_block(decoder.conv_in(vae.post_quant_conv(z.to(stripes.device))))  # [N, 512, h, w], whole
    h = h.to(stripes.store)
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            h = stripes.resblock(resnet, h)
        if block.upsamplers is not None:
            h = stripes.upsample(block.upsamplers[0], h)
    norm = decoder.conv_norm_out
    return stripes.conv3x3(decoder.conv_out, h, pre=partial(stripes.norm_silu, stripes.norm_stats(norm, h)))


def encode_in_stripes(vae, images, rows, device, store="cpu"):
    """``vae.encode(images)``: [N, 3, H, W] in [-1, 1] (in the compute dtype) -> posterior mean [N, z, H/8, W/8]
    on ``device``, computed ``rows`` rows at a time."""
    stripes = Stripes(rows, device, images.dtype, store)
    encoder = vae.encoder
    h = stripes.conv3x3(encoder.conv_in, images.to(stripes.store))
    for block in encoder.down_blocks:
        for resnet in block.resnets:
            h = stripes.resblock(resnet, h)
        if block.downsamplers is not None:
            h = stripes.downsample(block.downsamplers[0], h)
    h = encoder.mid_block(h.to(stripes.device))  # [N, 512, H/8, W/8], whole
    moments = vae.quant_conv(encoder.conv_out(F.silu(encoder.conv_norm_out(h))))
    return moments[:, :vae.config.latent_channels]
