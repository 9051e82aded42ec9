"""Where each of our parameters lives in the published checkpoint layouts.

Our module tree uses the diffusers names for the UNet and the VAE and OpenCLIP's names for the text tower. Each
function here maps one of our parameter names and shapes to the key(s) and shape(s) it has in another layout.
The loader inverts these maps by enumerating our model's parameters, so every rule is written once.
"""
import re

# Original ModelScope UNet (`UNetSD`): ResBlock sub-layers, and the temporal transformers that store their
# 1-D projections as Conv1d weights [out, in, 1].
_RESNET_ORIGINAL = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_ORIGINAL_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                      "conv_in": "input_blocks.0.0", "transformer_in": "input_blocks.0.1",
                      "conv_norm_out": "out.0", "conv_out": "out.2"}
_TEMPORAL_PROJ = re.compile(r"(^transformer_in|temp_attentions\.\d+)\.proj_(in|out)\.weight$")


def _unet_layer_original(kind, rest):
    """A layer inside one original ``input_blocks``/``output_blocks`` entry: [ResBlock, Spatial, Temporal, Sampler]."""
    if kind == "resnets":
        name, _, tail = rest.partition(".")
        return f"0.{_RESNET_ORIGINAL[name]}.{tail}"
    return {"temp_convs": f"0.temopral_conv.{rest}", "attentions": f"1.{rest}", "temp_attentions": f"2.{rest}"}[kind]


def unet_original(key, shape, layers_per_block, attention_levels):
    """Our UNet name and shape -> the original ``text2video_pytorch_model.pth`` name and shape."""
    shape = tuple(shape)
    if _TEMPORAL_PROJ.search(key):
        shape = shape + (1,)
    top = next((k for k in _UNET_ORIGINAL_TOP if key.startswith(k + ".")), None)
    if top:
        return [(_UNET_ORIGINAL_TOP[top] + key[len(top):], shape)]
    per_level = layers_per_block + 1
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return [(f"input_blocks.{1 + int(m[1]) * per_level + layers_per_block}.op.{m[2]}", shape)]
    if m := re.match(r"down_blocks\.(\d+)\.(\w+)\.(\d+)\.(.+)", key):
        index = 1 + int(m[1]) * per_level + int(m[3])
        return [(f"input_blocks.{index}.{_unet_layer_original(m[2], m[4])}", shape)]
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        level = len(attention_levels) - 1 - int(m[1])
        slot = 3 if attention_levels[level] else 1
        return [(f"output_blocks.{int(m[1]) * per_level + layers_per_block}.{slot}.{m[2]}", shape)]
    if m := re.match(r"up_blocks\.(\d+)\.(\w+)\.(\d+)\.(.+)", key):
        index = int(m[1]) * per_level + int(m[3])
        return [(f"output_blocks.{index}.{_unet_layer_original(m[2], m[4])}", shape)]
    if m := re.match(r"mid_block\.(\w+)\.(\d+)\.(.+)", key):
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind in ("resnets", "temp_convs"):
            return [(f"middle_block.{3 * j}.{_unet_layer_original(kind, rest)[2:]}", shape)]
        return [(f"middle_block.{1 if kind == 'attentions' else 2}.{rest}", shape)]
    raise KeyError(f"no original UNet name for {key!r}")


# LDM ("VQGAN_autoencoder.pth") VAE, without its `first_stage_model.` prefix.
_VAE_LDM_NAMES = {"conv_shortcut": "nin_shortcut", "conv_norm_out": "norm_out", "mid_block.resnets.0": "mid.block_1",
                  "mid_block.resnets.1": "mid.block_2", "mid_block.attentions.0": "mid.attn_1", "group_norm": "norm",
                  "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_ATTN_PROJ = re.compile(r"attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def vae_ldm(key, shape, levels):
    """Our VAE name and shape -> the LDM autoencoder name and shape (the decoder's levels count upwards there)."""
    shape = tuple(shape)
    if _VAE_ATTN_PROJ.search(key):
        shape = shape + (1, 1)  # 1x1 conv weights in LDM
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.", key)
    for ours, theirs in _VAE_LDM_NAMES.items():
        key = re.sub(rf"(^|\.){re.escape(ours)}\.", rf"\g<1>{theirs}.", key)
    return [(key, shape)]


# Hugging Face `CLIPTextModel`, without its `text_model.` prefix. OpenCLIP packs q, k and v in one projection.
_TEXT_HF_NAMES = {"token_embedding": "embeddings.token_embedding", "transformer.resblocks": "encoder.layers",
                  "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                  "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2", "ln_final": "final_layer_norm"}


def text_hf(key, shape):
    """Our text-tower name and shape -> the ``CLIPTextModel`` name(s) and shape(s)."""
    shape = tuple(shape)
    if key == "positional_embedding":
        return [("embeddings.position_embedding.weight", shape)]
    if m := re.match(r"(.+)\.attn\.in_proj\.(weight|bias)$", key):
        prefix = text_hf(m[1] + ".x", ())[0][0][: -len(".x")]
        part = (shape[0] // 3,) + shape[1:]
        return [(f"{prefix}.self_attn.{p}_proj.{m[2]}", part) for p in "qkv"]
    for ours, theirs in _TEXT_HF_NAMES.items():
        key = re.sub(rf"(^|\.){re.escape(ours)}\.", rf"\g<1>{theirs}.", key)
    return [(key, shape)]


def text_openclip(key, shape):
    """Our text-tower name and shape -> OpenCLIP's (``nn.MultiheadAttention`` names its packed projection
    ``in_proj_weight``)."""
    return [(key.replace(".attn.in_proj.", ".attn.in_proj_"), tuple(shape))]


def identity(key, shape):
    return [(key, tuple(shape))]
