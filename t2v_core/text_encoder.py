"""The OpenCLIP ViT-H/14 text tower (Radford et al. 2021; Cherti et al. 2023), read at its penultimate block.

ModelScopeT2V conditions on the output of block 23 of 24 followed by ``ln_final``: [B, 77, 1024]. Only the
blocks that are used are built; the vision tower and the last text block are never instantiated. Prompts are
tokenised with OpenCLIP's own tokenizer for every checkpoint format (the diffusers tokenizer pads with "!",
which would change prompts that contain one).
"""
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from . import ops as default_ops
from .attention import attention

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 1024
    heads: int = 16
    layers: int = 23  # blocks that are run: the file's blocks minus the last one


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with one packed q/k/v projection (``nn.MultiheadAttention``'s
    ``in_proj_weight``, which the loader maps to ``in_proj.weight``), split three ways where the layer offers it."""

    def __init__(self, width, heads, ops=default_ops):
        super().__init__()
        self.heads = heads
        self.in_proj = ops.Linear(width, 3 * width)
        self.out_proj = ops.Linear(width, width)

    def forward(self, x):
        if hasattr(self.in_proj, "split"):
            q, k, v = self.in_proj.split(x, 3)
        else:
            q, k, v = self.in_proj(x).chunk(3, dim=-1)  # [B, N, 3 width] -> 3 x [B, N, width]
        return self.out_proj(attention(q, k, v, self.heads, causal=True))


class MLP(nn.Module):
    def __init__(self, width, ops=default_ops):
        super().__init__()
        self.c_fc = ops.Linear(width, 4 * width)
        self.c_proj = ops.Linear(4 * width, width)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, ops=default_ops):
        super().__init__()
        self.ln_1 = ops.LayerNorm(width)
        self.attn = SelfAttention(width, heads, ops=ops)
        self.ln_2 = ops.LayerNorm(width)
        self.mlp = MLP(width, ops=ops)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Blocks(nn.Module):
    """Holds ``resblocks`` so the parameter names match OpenCLIP's ``transformer.resblocks.i``."""

    def __init__(self, cfg, ops=default_ops):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(cfg.width, cfg.heads, ops=ops) for _ in range(cfg.layers)])


class TextEncoder(nn.Module):
    """tokens [B, 77] -> context [B, 77, width]."""

    def __init__(self, cfg: TextEncoderConfig, ops=default_ops):
        super().__init__()
        self.config = cfg
        self.token_embedding = ops.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Blocks(cfg, ops=ops)
        self.ln_final = ops.LayerNorm(cfg.width)

    def forward(self, tokens, dtype=torch.float32, embeddings=(), layers=None):
        """``embeddings``: (row, position, vector) triples whose vectors replace those tokens' input embeddings
        (textual inversion). ``layers``: run only the first that many blocks (default: all that are built)."""
        x = self.token_embedding(tokens).to(dtype)  # [B, 77] -> [B, 77, width]
        for row, position, vector in embeddings:
            x[row, position] = vector.to(x)
        # A parameter, not a layer (77 x width): cast to the input's device and dtype wherever a host keeps it.
        x = x + default_ops.cast(self.positional_embedding, x)
        for block in self.transformer.resblocks[:layers]:
            x = block(x)
        return self.ln_final(x)


class Tokenizer:
    """OpenCLIP's BPE tokenizer: [BOS, tokens..., EOS, 0, ...], length 77; longer prompts are cut with a warning."""

    def __init__(self, context_length=77):
        self.context_length = context_length
        self._tokenizer = SimpleTokenizer(context_length=context_length)

    def __call__(self, texts):
        for text in texts:
            n = len(self._tokenizer.encode(text)) + 2
            if n > self.context_length:
                log.warning("Prompt is %d tokens long; only the first %d are used: %r", n, self.context_length, text[:80])
        return self._tokenizer(texts, context_length=self.context_length)
