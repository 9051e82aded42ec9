"""The spatio-temporal UNet of ModelScopeT2V (Wang et al. 2023, arXiv 2308.06571, sec. 3.2).

The SD-2.x image UNet with a temporal convolution stack after every ResBlock, a temporal self-attention
transformer after every spatial transformer, and one more temporal transformer right after ``conv_in``.
Spatial layers see frames folded into the batch, ``[(B F), C, H, W]``; temporal layers unfold them to
``[B, C, F, H, W]`` and mix along F. The module tree uses the diffusers names (the loader maps the original
checkpoint's names onto them).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import ops as default_ops
from .attention import TransformerBlock, run_attention
from .patches import Skips
from .resnet import ResBlock, Upsample


@dataclass(frozen=True)
class UNet3DConfig:
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple = (320, 640, 1280, 1280)
    cross_attention: tuple = (True, True, True, False)  # per level: spatial + temporal transformers or none
    layers_per_block: int = 2
    context_dim: int = 1024
    head_dim: int = 64
    transformer_in_heads: int = 8
    norm_groups: int = 32


def timestep_embedding(timesteps, dim, max_period=10000):
    """Sinusoidal embedding, cosines first: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim, embed_dim, ops=default_ops):
        super().__init__()
        self.linear_1 = ops.Linear(dim, embed_dim)
        self.linear_2 = ops.Linear(embed_dim, embed_dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class TemporalConv(nn.Module):
    """Four GN-SiLU-Conv3d(3x1x1) layers along the frame axis, added to the input.

    The GroupNorm statistics cover the whole clip (C/groups, F, H, W), so this layer cannot be split by frames.
    """

    def __init__(self, channels, groups, ops=default_ops):
        super().__init__()

        def layer(first):
            norm = ops.GroupNorm(groups, channels, eps=1e-5)
            conv = ops.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
            # Index 2 of layers 2-4 is the dropout of the original; keeping it keeps the checkpoint's indices.
            act = nn.SiLU(inplace=True)
            return nn.Sequential(norm, act, conv) if first else nn.Sequential(norm, act, nn.Dropout(0.0), conv)

        self.conv1, self.conv2, self.conv3, self.conv4 = layer(True), layer(False), layer(False), layer(False)

    def forward(self, x, num_frames):
        h = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
        identity = h
        h = self.conv4(self.conv3(self.conv2(self.conv1(h))))
        return rearrange(h.add_(identity), "b c f h w -> (b f) c h w")


CHUNK_TOKENS = 2 ** 16


def rows_per_chunk(tokens_per_row, chunk_tokens):
    """How many independent rows (frames, or pixels for the temporal layers) to run through a transformer at once."""
    return max(1, chunk_tokens // tokens_per_row) if chunk_tokens else None


class SpatialTransformer(nn.Module):
    """Self- and cross-attention over the H*W tokens of each frame.

    Frames are independent here, so they run in chunks of at most ``chunk_tokens`` tokens: the same result, with
    working memory (the 8C-wide feed-forward activations above all) bounded whatever the number of frames.
    """

    chunk_tokens = CHUNK_TOKENS

    def __init__(self, channels, heads, head_dim, context_dim, groups, ops=default_ops):
        super().__init__()
        self.norm = ops.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = ops.Linear(channels, heads * head_dim)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(heads * head_dim, heads, head_dim, context_dim, ops=ops)])
        self.proj_out = ops.Linear(heads * head_dim, channels)

    def forward(self, x, context, attend=None):
        """``attend``: a host's attention (``patches``); the frames then run at once, as the host sees the batch."""
        _, _, height, width = x.shape
        h = rearrange(self.norm(x), "n c h w -> n (h w) c")  # [(B F), C, H, W] -> [(B F), H*W, C]
        h = self.proj_in(h)
        step = len(h) if attend else rows_per_chunk(height * width, self.chunk_tokens) or len(h)
        for start in range(0, len(h), step):
            part, part_context = h[start:start + step], context[start:start + step]
            for block in self.transformer_blocks:
                block(part, part_context, attend or run_attention)  # updates this view of h in place
        h = self.proj_out(h)
        return x + rearrange(h, "n (h w) c -> n c h w", h=height)


class TemporalTransformer(nn.Module):
    """Two self-attentions over the F frames at each pixel. No positional encoding: order comes from TemporalConv.

    The GroupNorm statistics span the whole clip; after it, pixels are independent and run in chunks of at most
    ``chunk_tokens`` tokens (pixels x frames).
    """

    chunk_tokens = CHUNK_TOKENS

    def __init__(self, channels, heads, head_dim, groups, ops=default_ops):
        super().__init__()
        self.norm = ops.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = ops.Linear(channels, heads * head_dim)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(heads * head_dim, heads, head_dim, ops=ops)])
        self.proj_out = ops.Linear(heads * head_dim, channels)

    def forward(self, x, num_frames):
        _, _, height, width = x.shape
        h = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
        h = rearrange(self.norm(h), "b c f h w -> (b h w) f c")  # statistics over the whole clip
        h = self.proj_in(h)
        step = rows_per_chunk(num_frames, self.chunk_tokens) or len(h)
        for start in range(0, len(h), step):
            part = h[start:start + step]
            for block in self.transformer_blocks:
                block(part)  # updates this view of h in place
        h = self.proj_out(h)
        h = rearrange(h, "(b h w) f c -> (b f) c h w", h=height, w=width)
        return x + h


class Downsample(nn.Module):
    def __init__(self, channels, ops=default_ops):
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Stage(nn.Module):
    """One level of the UNet: ResBlocks, each followed by a temporal conv and optionally both transformers."""

    def __init__(self, in_channels, out_channels, num_layers, cfg, attention, embed_dim, skip_channels=(), ops=default_ops):
        super().__init__()
        heads, groups = out_channels // cfg.head_dim, cfg.norm_groups
        self.resnets = nn.ModuleList()
        for i in range(num_layers):
            res_in = (in_channels if i == 0 else out_channels) + (skip_channels[i] if skip_channels else 0)
            self.resnets.append(ResBlock(res_in, out_channels, groups, embed_dim, ops=ops))
        self.temp_convs = nn.ModuleList([TemporalConv(out_channels, groups, ops=ops) for _ in range(num_layers)])
        if attention:
            self.attentions = nn.ModuleList(
                [SpatialTransformer(out_channels, heads, cfg.head_dim, cfg.context_dim, groups, ops=ops) for _ in range(num_layers)])
            self.temp_attentions = nn.ModuleList(
                [TemporalTransformer(out_channels, heads, cfg.head_dim, groups, ops=ops) for _ in range(num_layers)])
        else:
            self.attentions = self.temp_attentions = None

    def layer(self, i, h, emb, context, num_frames, skips, block):
        h = self.resnets[i](h, emb)
        h = self.temp_convs[i](h, num_frames)
        if self.attentions is not None:
            h = self.attentions[i](h, context, skips.attend(block, h.shape))
            h = self.temp_attentions[i](h, num_frames)
        return h


class DownStage(Stage):
    def __init__(self, in_channels, out_channels, cfg, attention, embed_dim, downsample, ops=default_ops):
        super().__init__(in_channels, out_channels, cfg.layers_per_block, cfg, attention, embed_dim, ops=ops)
        self.downsamplers = nn.ModuleList([Downsample(out_channels, ops=ops)]) if downsample else None

    def forward(self, h, skips, emb, context, num_frames):
        for i in range(len(self.resnets)):
            h = skips.push(self.layer(i, h, emb, context, num_frames, skips, ("input", len(skips.stack))))
        if self.downsamplers is not None:
            h = skips.push(self.downsamplers[0](h))
        return h


class MidStage(nn.Module):
    """ResBlock, both transformers, ResBlock; each ResBlock followed by its temporal conv."""

    def __init__(self, channels, cfg, embed_dim, ops=default_ops):
        super().__init__()
        heads, groups = channels // cfg.head_dim, cfg.norm_groups
        self.resnets = nn.ModuleList([ResBlock(channels, channels, groups, embed_dim, ops=ops) for _ in range(2)])
        self.temp_convs = nn.ModuleList([TemporalConv(channels, groups, ops=ops) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialTransformer(channels, heads, cfg.head_dim, cfg.context_dim, groups, ops=ops)])
        self.temp_attentions = nn.ModuleList([TemporalTransformer(channels, heads, cfg.head_dim, groups, ops=ops)])

    def forward(self, h, skips, emb, context, num_frames):
        h = self.temp_convs[0](self.resnets[0](h, emb), num_frames)
        h = self.attentions[0](h, context, skips.attend(("middle", 0), h.shape))
        h = self.temp_attentions[0](h, num_frames)
        return self.temp_convs[1](self.resnets[1](h, emb), num_frames)


class UpStage(Stage):
    def __init__(self, in_channels, out_channels, skip_channels, cfg, attention, embed_dim, upsample, ops=default_ops):
        super().__init__(in_channels, out_channels, len(skip_channels), cfg, attention, embed_dim, skip_channels, ops=ops)
        self.upsamplers = nn.ModuleList([Upsample(out_channels, ops=ops)]) if upsample else None

    def forward(self, h, skips, emb, context, num_frames):
        for i in range(len(self.resnets)):
            h = torch.cat(skips.pop(h), dim=1)  # h first, then the skip
            h = self.layer(i, h, emb, context, num_frames, skips, ("output", skips.popped - 1))
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, size=skips.next_size())
        return h


class UNet3D(nn.Module):
    """eps = unet(latents [B, C, F, h, w], timesteps [B], context [B, 77, D] or [B, F, 77, D]) -> [B, C, F, h, w].

    ``patches``: optional ``BlockPatches`` run at the skip connections (FreeU, a host's block patches) and around
    the spatial transformers' attentions (a host's attention patches).
    """

    def __init__(self, cfg: UNet3DConfig, ops=default_ops):
        super().__init__()
        self.config = cfg
        channels = cfg.block_out_channels
        embed_dim = channels[0] * 4
        levels = len(channels)
        self.time_embedding = TimestepEmbedding(channels[0], embed_dim, ops=ops)
        self.conv_in = ops.Conv2d(cfg.in_channels, channels[0], 3, padding=1)
        self.transformer_in = TemporalTransformer(channels[0], cfg.transformer_in_heads, cfg.head_dim, cfg.norm_groups, ops=ops)

        self.down_blocks = nn.ModuleList()
        skip_channels = [channels[0]]
        for i, out_ch in enumerate(channels):
            in_ch = channels[max(i - 1, 0)]
            downsample = i < levels - 1
            self.down_blocks.append(DownStage(in_ch, out_ch, cfg, cfg.cross_attention[i], embed_dim, downsample, ops=ops))
            skip_channels += [out_ch] * (cfg.layers_per_block + downsample)

        self.mid_block = MidStage(channels[-1], cfg, embed_dim, ops=ops)

        self.up_blocks = nn.ModuleList()
        prev_ch = channels[-1]
        for i, out_ch in enumerate(reversed(channels)):
            skips = [skip_channels.pop() for _ in range(cfg.layers_per_block + 1)]
            upsample = i < levels - 1
            attention = cfg.cross_attention[levels - 1 - i]
            self.up_blocks.append(UpStage(prev_ch, out_ch, skips, cfg, attention, embed_dim, upsample, ops=ops))
            prev_ch = out_ch

        self.conv_norm_out = ops.GroupNorm(cfg.norm_groups, channels[0], eps=1e-5)
        self.conv_out = ops.Conv2d(channels[0], cfg.out_channels, 3, padding=1)

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def set_chunk_tokens(self, tokens):
        """Bound the transformers' working memory to about ``tokens`` tokens at a time (None: all at once)."""
        for module in self.modules():
            if isinstance(module, (SpatialTransformer, TemporalTransformer)):
                module.chunk_tokens = tokens

    def forward(self, latents, timesteps, context, patches=None):
        batch, _, num_frames, _, _ = latents.shape
        dtype = context.dtype
        emb = self.time_embedding(timestep_embedding(timesteps.expand(batch), self.config.block_out_channels[0]).to(dtype))
        emb = emb.repeat_interleave(num_frames, dim=0)  # [B, E] -> [(B F), E]
        if context.ndim == 4:  # a context per frame (a prompt schedule): [B, F, 77, D] -> [(B F), 77, D]
            context = rearrange(context, "b f n d -> (b f) n d")
        else:
            context = context.repeat_interleave(num_frames, dim=0)  # [B, 77, D] -> [(B F), 77, D]

        h = rearrange(latents.to(dtype), "b c f h w -> (b f) c h w")
        skips = Skips(patches, h.shape)
        h = skips.push(self.transformer_in(self.conv_in(h), num_frames))
        for block in self.down_blocks:
            h = block(h, skips, emb, context, num_frames)
        h = self.mid_block(h, skips, emb, context, num_frames)
        for block in self.up_blocks:
            h = block(h, skips, emb, context, num_frames)
        h = self.conv_out(F.silu(self.conv_norm_out(h)))
        return rearrange(h, "(b f) c h w -> b c f h w", b=batch)
