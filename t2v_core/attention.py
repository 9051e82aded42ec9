"""Multi-head attention and the transformer block shared by the spatial and temporal transformers.

The block is the pre-LayerNorm block of latent diffusion (Rombach et al. 2022): self-attention, a second
attention (cross-attention on the text, or a second self-attention in the temporal transformers) and a GEGLU
feed-forward (Shazeer 2020), each added to the residual stream.
"""
import torch.nn.functional as F
from torch import nn

from . import ops as default_ops
from .ops import geglu


def attention(q, k, v, heads, causal=False):
    """Scaled dot-product attention over ``heads`` heads: [B, N, heads*d] x [B, M, heads*d] -> [B, N, heads*d]."""
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))  # -> [B, heads, N, d]
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out.transpose(1, 2).reshape(b, n, inner)


class Attention(nn.Module):
    def __init__(self, query_dim, heads, head_dim, context_dim=None, ops=default_ops):
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = ops.Linear(query_dim, inner, bias=False)
        self.to_k = ops.Linear(context_dim, inner, bias=False)
        self.to_v = ops.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([ops.Linear(inner, query_dim)])

    def forward(self, x, context=None, value=None):
        """``value``: what the values are projected from, when not ``context`` (a host's attention patch may set it)."""
        context = x if context is None else context
        value = context if value is None else value
        out = attention(self.to_q(x), self.to_k(context), self.to_v(value), self.heads)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """One projection to twice the width: a value half times the GELU of a gate half (``ops.geglu``), fused where
    the layer offers it."""

    def __init__(self, dim_in, dim_out, ops=default_ops):
        super().__init__()
        self.proj = ops.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        if hasattr(self.proj, "geglu"):
            return self.proj.geglu(x)
        return geglu(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4, ops=default_ops):
        super().__init__()
        inner = dim * mult
        # Index 1 is the dropout of the original; its place keeps the checkpoint's `net.2` name.
        self.net = nn.ModuleList([GEGLU(dim, inner, ops=ops), nn.Dropout(0.0), ops.Linear(inner, dim)])

    def forward(self, x):
        for layer in self.net:
            x = layer(x)
        return x


def run_attention(kind, attn, x, context):
    """An attention as the model runs it: ``kind`` ("attn1" self, "attn2" cross) is for a host's ``attend``."""
    return attn(x, context)


class TransformerBlock(nn.Module):
    """x += attn1(LN(x)); x += attn2(LN(x), context); x += FF(LN(x)).

    With ``context_dim=None`` the second attention is a self-attention too (the temporal transformers).
    ``attend(kind, attn, x, context)`` runs each attention (``run_attention`` unless a host patches it).
    """

    def __init__(self, dim, heads, head_dim, context_dim=None, ops=default_ops):
        super().__init__()
        self.norm1 = ops.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, ops=ops)
        self.norm2 = ops.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim, ops=ops)
        self.norm3 = ops.LayerNorm(dim)
        self.ff = FeedForward(dim, ops=ops)

    def forward(self, x, context=None, attend=run_attention):
        """Updates ``x`` (a fresh projection inside the transformers) in place."""
        x += attend("attn1", self.attn1, self.norm1(x), None)
        x += attend("attn2", self.attn2, self.norm2(x), context)
        return x.add_(self.ff(self.norm3(x)))
