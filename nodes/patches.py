"""ComfyUI's UNet patches (``transformer_options["patches"]`` and ``["patches_replace"]``, set by FreeU, FreeU_V2,
PerturbedAttentionGuidance and other MODEL patch nodes) as t2v_core block patches. A patch the UNet cannot apply is
named in one warning, never dropped silently."""
import logging

from .. import t2v_core

BLOCK_PATCHES = ("input_block_patch", "output_block_patch")
ATTENTION_PATCHES = ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch")
ATTENTION_REPLACEMENTS = ("attn1", "attn2")
log = logging.getLogger(__name__)
_warned = set()


def block_patches(transformer_options):
    """t2v_core.BlockPatches running the core patches in ``transformer_options``, or None when there are none.

    Core calls ``input_block_patch(h, transformer_options)`` and ``output_block_patch(h, hsp, transformer_options)``
    with ``transformer_options["block"]`` naming the block; so do these. Attention patches run as in core's
    ``BasicTransformerBlock``, in the spatial transformers (the temporal ones have no counterpart in core's UNet).
    """
    patches = transformer_options.get("patches", {})
    warn_unapplied(patches, transformer_options.get("patches_replace", {}))
    attention = attention_patches(transformer_options)
    if not attention and not any(patches.get(name) for name in BLOCK_PATCHES):
        return None

    def run_input(patch):
        def apply(h, index):
            transformer_options["block"] = ("input", index)
            return patch(h, transformer_options)
        return apply

    def run_output(patch):
        def apply(h, skip, index):
            transformer_options["block"] = ("output", index)
            return patch(h, skip, transformer_options)
        return apply

    return t2v_core.BlockPatches(input_block=tuple(run_input(p) for p in patches.get("input_block_patch", [])),
                                 output_block=tuple(run_output(p) for p in patches.get("output_block_patch", [])),
                                 attention=core_attention(transformer_options) if attention else None)


def attention_patches(transformer_options):
    """Whether ``transformer_options`` carry attention patches or replacements (which read the sampling state core
    passes, such as ``cond_or_uncond`` and ``sigmas``)."""
    patches = transformer_options.get("patches", {})
    replacements = transformer_options.get("patches_replace", {})
    return any(patches.get(name) for name in ATTENTION_PATCHES) or any(replacements.get(name) for name in ATTENTION_REPLACEMENTS)


def core_attention(transformer_options):
    """t2v_core's ``attention(site, kind, attn, x, context)`` with core's attention patches: ``<kind>_patch`` on the
    inputs before the projections, a replacement of the attention between them (keyed (block, id, depth) or
    (block, id)), ``<kind>_output_patch`` on the output."""
    patches = transformer_options.get("patches", {})
    replacements = transformer_options.get("patches_replace", {})
    extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}

    def attention(site, kind, attn, x, context):
        options = {**extra, "block": site.block, "block_index": 0, "transformer_index": site.transformer_index,
                   "activations_shape": list(site.activations_shape), "original_shape": list(site.original_shape),
                   "n_heads": attn.heads,
                   "dim_head": attn.to_q.weight.shape[0] // attn.heads, "attn_precision": None}
        context = x if context is None else context
        value = context
        for patch in patches.get(f"{kind}_patch", []):
            x, context, value = patch(x, context, value, options)
        table = replacements.get(kind, {})
        replace = table.get((*site.block, 0)) or table.get(site.block)
        if replace is None:
            out = attn(x, context, value)
        else:
            out = attn.to_out[0](replace(attn.to_q(x), attn.to_k(context), attn.to_v(value), options))
        for patch in patches.get(f"{kind}_output_patch", []):
            out = patch(out, options)
        return out

    return attention


def warn_unapplied(patches, replacements):
    """One warning per kind of patch this UNet has no place for (middle_patch, other replacements, ...)."""
    names = [name for name, value in patches.items() if value and name not in BLOCK_PATCHES + ATTENTION_PATCHES]
    names += [f"{name} replacement" for name, value in replacements.items() if value and name not in ATTENTION_REPLACEMENTS]
    new = [name for name in names if name not in _warned]
    if new:
        _warned.update(new)
        log.warning("ModelScope T2V: the MODEL carries UNet patches this model cannot apply: %s. They are ignored; "
                    "this UNet applies input/output block patches (FreeU, FreeU_V2) and attn1/attn2 patches and "
                    "replacements in its spatial transformers.", ", ".join(new))
