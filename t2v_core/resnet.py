"""The residual block and the upsampler shared by the UNet and the autoencoder (He et al. 2016; Ho et al. 2020)."""
import torch.nn.functional as F
from torch import nn

from . import ops as default_ops


class ResBlock(nn.Module):
    """GN-SiLU-conv, plus the projected time embedding (UNet only), GN-SiLU-conv, plus the (1x1 projected) input."""

    def __init__(self, in_channels, out_channels, groups, embed_dim=None, eps=1e-5, ops=default_ops):
        super().__init__()
        self.norm1 = ops.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = ops.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = ops.Linear(embed_dim, out_channels) if embed_dim else None
        self.norm2 = ops.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = ops.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = ops.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x, emb=None):
        # In-place updates of fresh intermediates save a memory pass and an allocation each (inference only).
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        if self.time_emb_proj is not None:
            h += self.time_emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        return h.add_(x if self.conv_shortcut is None else self.conv_shortcut(x))


class Upsample(nn.Module):
    def __init__(self, channels, ops=default_ops):
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size=None):
        """Nearest-neighbour to ``size`` (default: twice the input), then a 3x3 conv."""
        size = size or (2 * x.shape[-2], 2 * x.shape[-1])
        return self.conv(F.interpolate(x, size=size, mode="nearest"))
