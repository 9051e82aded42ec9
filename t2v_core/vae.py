"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, sec. 3; the SD-2.x "KL-f8" VAE).

ModelScopeT2V encodes and decodes each frame as an image. The module tree uses the diffusers names.
"""
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from . import ops as default_ops
from .ops import conv_layout
from .resnet import ResBlock, Upsample


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_groups: int = 32
    scaling_factor: float = 0.18215

    @property
    def downsampling_factor(self):
        return 2 ** (len(self.block_out_channels) - 1)


class Downsample(nn.Module):
    """Pad right and bottom by one, then a stride-2 3x3 conv (the VAE's asymmetric downsampler)."""

    def __init__(self, channels, ops=default_ops):
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class SelfAttention(nn.Module):
    """Single-head attention over the H*W positions of an image, added to the input."""

    def __init__(self, channels, groups, ops=default_ops):
        super().__init__()
        self.group_norm = ops.GroupNorm(groups, channels, eps=1e-6)
        self.to_q = ops.Linear(channels, channels)
        self.to_k = ops.Linear(channels, channels)
        self.to_v = ops.Linear(channels, channels)
        self.to_out = nn.ModuleList([ops.Linear(channels, channels)])

    def forward(self, x):
        n, c, height, width = x.shape
        h = self.group_norm(x).view(n, c, height * width).transpose(1, 2)  # [N, C, H, W] -> [N, H*W, C]
        q, k, v = (proj(h)[:, None] for proj in (self.to_q, self.to_k, self.to_v))  # one head: [N, 1, H*W, C]
        h = F.scaled_dot_product_attention(q, k, v)[:, 0]
        h = self.to_out[0](h).transpose(1, 2).reshape(n, c, height, width)
        return x + h


class MidBlock(nn.Module):
    def __init__(self, channels, groups, ops=default_ops):
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(channels, channels, groups, eps=1e-6, ops=ops) for _ in range(2)])
        self.attentions = nn.ModuleList([SelfAttention(channels, groups, ops=ops)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class ResnetStack(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, ops=default_ops):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResBlock(in_channels if i == 0 else out_channels, out_channels, groups, eps=1e-6, ops=ops) for i in range(num_layers)])

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        return x


class EncoderBlock(ResnetStack):
    def __init__(self, in_channels, out_channels, num_layers, groups, downsample, ops=default_ops):
        super().__init__(in_channels, out_channels, num_layers, groups, ops=ops)
        self.downsamplers = nn.ModuleList([Downsample(out_channels, ops=ops)]) if downsample else None

    def forward(self, x):
        x = super().forward(x)
        return x if self.downsamplers is None else self.downsamplers[0](x)


class DecoderBlock(ResnetStack):
    def __init__(self, in_channels, out_channels, num_layers, groups, upsample, ops=default_ops):
        super().__init__(in_channels, out_channels, num_layers, groups, ops=ops)
        self.upsamplers = nn.ModuleList([Upsample(out_channels, ops=ops)]) if upsample else None

    def forward(self, x):
        x = super().forward(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class Encoder(nn.Module):
    """[N, 3, H, W] -> [N, 2*z, H/s, W/s] (mean and log-variance)."""

    def __init__(self, cfg: VAEConfig, ops=default_ops):
        super().__init__()
        channels, groups = cfg.block_out_channels, cfg.norm_groups
        self.conv_in = ops.Conv2d(cfg.in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            EncoderBlock(channels[max(i - 1, 0)], ch, cfg.layers_per_block, groups, i < len(channels) - 1, ops=ops)
            for i, ch in enumerate(channels)])
        self.mid_block = MidBlock(channels[-1], groups, ops=ops)
        self.conv_norm_out = ops.GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = ops.Conv2d(channels[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(conv_layout(x))
        for block in self.down_blocks:
            h = block(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """[N, z, h, w] -> [N, 3, h*s, w*s] in [-1, 1] (not clamped)."""

    def __init__(self, cfg: VAEConfig, ops=default_ops):
        super().__init__()
        channels, groups = tuple(reversed(cfg.block_out_channels)), cfg.norm_groups
        self.conv_in = ops.Conv2d(cfg.latent_channels, channels[0], 3, padding=1)
        self.mid_block = MidBlock(channels[0], groups, ops=ops)
        self.up_blocks = nn.ModuleList([
            DecoderBlock(channels[max(i - 1, 0)], ch, cfg.layers_per_block + 1, groups, i < len(channels) - 1, ops=ops)
            for i, ch in enumerate(channels)])
        self.conv_norm_out = ops.GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = ops.Conv2d(channels[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z):
        h = self.mid_block(self.conv_in(conv_layout(z)))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class AutoencoderKL(nn.Module):
    """Frames in [-1, 1] <-> unscaled latents. Scaling by ``config.scaling_factor`` is the caller's business."""

    def __init__(self, cfg: VAEConfig, ops=default_ops):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg, ops=ops)
        self.decoder = Decoder(cfg, ops=ops)
        self.quant_conv = ops.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = ops.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)

    def encode(self, images):
        """Posterior mean: [N, 3, H, W] -> [N, z, H/s, W/s]."""
        moments = self.quant_conv(self.encoder(images))
        return moments[:, : self.config.latent_channels]

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))
