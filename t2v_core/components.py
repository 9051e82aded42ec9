"""Building each network from a state dict in any published layout: infer its config, check keys, assign weights.

Each network is built on the ``meta`` device and then takes the file's tensors themselves (memory-mapped where
the file allows), so a checkpoint is never held twice in memory. A 16-bit file stays 16-bit when the compute
dtype is wider; the ``ops`` layers cast one layer at a time.
"""
import re
from functools import partial

import torch

from . import keymaps
from . import ops as default_ops
from .checkpoint import CheckpointError
from .schedule import NoiseSchedule
from .text_encoder import TextEncoder, TextEncoderConfig
from .unet3d import UNet3D, UNet3DConfig
from .vae import AutoencoderKL, VAEConfig

MAX_LISTED = 8


def _count(state, key_of, pattern):
    """How many consecutive i have ``key_of(pattern.format(i))`` in ``state``."""
    n = 0
    while key_of(pattern.format(n)) in state:
        n += 1
    return n


def _name_list(keys):
    keys = sorted(keys)
    more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def check_norm_groups(channels, groups, source):
    """GroupNorm splits every level's channels into ``groups``; an error naming the config's key otherwise."""
    if not isinstance(groups, int) or groups < 1 or any(c % groups for c in channels):
        raise CheckpointError(f"{source}: norm_num_groups {groups!r} does not divide the channel counts "
                              f"{tuple(channels)} of the weights; published checkpoints use 32")


SCHEDULE_FIELDS = ("beta_start", "beta_end", "num_train_timesteps")


def noise_schedule(config, source, keys=None):
    """The ``NoiseSchedule`` a config gives (``keys``: the fields it sets -> the config's key for each; default
    all three under their own names), or an error naming the file and the key of a value that makes no schedule."""
    keys = keys or {field: field for field in SCHEDULE_FIELDS}
    values = {field: config[key] for field, key in keys.items() if key in config}
    schedule = NoiseSchedule(**values)
    steps = schedule.num_train_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise CheckpointError(f"{source}: {keys.get('num_train_timesteps', 'num_train_timesteps')} is {steps!r}; "
                              f"expected a whole number of training timesteps, at least 2 (published: 1000)")
    for field, low, high in (("beta_start", 0, schedule.beta_end), ("beta_end", schedule.beta_start, 1)):
        value = getattr(schedule, field)
        if not isinstance(value, (int, float)) or not low < value < high:
            raise CheckpointError(f"{source}: {keys.get(field, field)} is {value!r}; the noise schedule needs "
                                  f"0 < beta_start < beta_end < 1 (published checkpoints: 0.00085 and 0.012)")
    return schedule


def file_key(keymap):
    """``keymap`` as a function of one of our names to its (first) name in the file."""
    return lambda key: keymap(key, ())[0][0]


def storage_dtype(tensor, compute_dtype, weight_dtype=None):
    """Keep floating weights narrower than the compute dtype as they are (cast per layer); convert the rest.

    ``weight_dtype`` (fp8): the dtype the matrices (linear and conv weights) are stored in, cast per layer; biases
    and norms (under 0.1 % of the UNet's weights) keep their precision.
    """
    if weight_dtype is not None and tensor.dtype.is_floating_point and tensor.ndim >= 2:
        return weight_dtype
    if tensor.dtype.is_floating_point and tensor.dtype.itemsize < compute_dtype.itemsize:
        return tensor.dtype
    return compute_dtype


def file_layout(model, keymap):
    """Our parameter name -> [(file key, file shape), ...] for every parameter of ``model``."""
    return {k: keymap(k, tuple(v.shape)) for k, v in model.state_dict().items()}


def export_state(model, keymap):
    """``model``'s weights under the file names and shapes of ``keymap``'s layout (the inverse of loading). A tensor
    split into several keys is copied (a file may not hold views of one storage); the others are the model's own
    tensors (or views of them), not copies."""
    weights, state = model.state_dict(), {}
    for key, parts in file_layout(model, keymap).items():
        tensor = weights[key]
        if len(parts) == 1:
            state[parts[0][0]] = tensor.reshape(parts[0][1])
            continue
        pieces = tensor.split(parts[0][1][0])
        state.update({file_key: piece.reshape(shape).clone() for (file_key, shape), piece in zip(parts, pieces)})
    return state


def assign_weights(model, state, keymap, source, dtype, ignored=lambda key: False, weight_dtype=None):
    """Move ``state`` (file names) into ``model`` (built on meta) through ``keymap``; refuse any mismatch."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    layout = file_layout(model, keymap)
    expected = {file_key: file_shape for parts in layout.values() for file_key, file_shape in parts}
    missing = set(expected) - set(state)
    unexpected = {k for k in state if k not in expected and not ignored(k)}
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys ({_name_list(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({_name_list(unexpected)})")
        raise CheckpointError(f"{source}: not the layout expected for this model: " + "; ".join(problems))
    wrong = [f"{k} is {tuple(state[k].shape)}, expected {s}" for k, s in expected.items() if tuple(state[k].shape) != s]
    if wrong:
        raise CheckpointError(f"{source}: {len(wrong)} tensors have the wrong shape: " + "; ".join(wrong[:MAX_LISTED]))
    weights = {}
    for key, parts in layout.items():
        tensors = [state[file_key] for file_key, _ in parts]
        tensor = (tensors[0] if len(tensors) == 1 else torch.cat(tensors)).reshape(shapes[key])
        weights[key] = tensor.to(storage_dtype(tensor, dtype, weight_dtype))
    model.load_state_dict(weights, assign=True)
    return model.requires_grad_(False).eval()


# --- UNet -------------------------------------------------------------------------------------------------------

def _original_unet_structure(state, source):
    """Layers per block and attention levels of an original-layout UNet, which its other names depend on."""
    inputs = {int(m[1]) for k in state if (m := re.match(r"input_blocks\.(\d+)\.", k))}
    levels = 1 + sum(f"input_blocks.{i}.op.weight" in state for i in inputs)
    if not inputs or len(inputs) % levels:
        raise CheckpointError(f"{source}: not a ModelScope text-to-video UNet (input_blocks do not form whole levels)")
    layers = len(inputs) // levels - 1
    attention = tuple(f"input_blocks.{1 + level * (layers + 1)}.1.proj_in.weight" in state for level in range(levels))
    return layers, attention


def unet_keymap(state, layout, source):
    if layout == "diffusers":
        return keymaps.identity
    layers, attention = _original_unet_structure(state, source)
    return partial(keymaps.unet_original, layers_per_block=layers, attention_levels=attention)


def infer_unet_config(state, keymap, source, head_dim=None, norm_groups=32):
    """The UNet's shape parameters, read from the tensors. ``head_dim`` comes from a config file where there is one;
    otherwise from ``transformer_in``, which has 8 heads in every published checkpoint and in diffusers."""
    key_of = file_key(keymap)
    if key_of("transformer_in.proj_in.weight") not in state:
        if key_of("conv_in.weight") in state or "input_blocks.0.0.weight" in state:
            raise CheckpointError(
                f"{source}: this is an image UNet (Stable Diffusion style, no temporal layers), not a ModelScope "
                f"text-to-video UNet: it has no temporal transformer after conv_in ({key_of('transformer_in.proj_in.weight')})")
        raise CheckpointError(f"{source}: not a ModelScope text-to-video UNet (no {key_of('conv_in.weight')})")
    levels = _count(state, key_of, "down_blocks.{}.resnets.0.conv1.weight")
    channels = tuple(state[key_of(f"down_blocks.{i}.resnets.0.conv1.weight")].shape[0] for i in range(levels))
    inner_in = state[key_of("transformer_in.proj_in.weight")].shape[0]
    head_dim = head_dim or inner_in // 8
    return UNet3DConfig(
        in_channels=state[key_of("conv_in.weight")].shape[1],
        out_channels=state[key_of("conv_out.weight")].shape[0],
        block_out_channels=channels,
        cross_attention=tuple(key_of(f"down_blocks.{i}.attentions.0.proj_in.weight") in state for i in range(levels)),
        layers_per_block=_count(state, key_of, "down_blocks.0.resnets.{}.conv1.weight"),
        context_dim=state[key_of("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")].shape[1],
        head_dim=head_dim,
        transformer_in_heads=inner_in // head_dim,
        norm_groups=norm_groups,
    )


def build_unet(state, layout, source, dtype, head_dim=None, norm_groups=32, ops=default_ops, weight_dtype=None,
               config_source=None):
    """``layout``: "original" (UNetSD names) or "diffusers" (our own names). ``ops``: the layer classes (a host's,
    such as ``comfy.ops.manual_cast``, or t2v_core's own); ``weight_dtype``: see ``storage_dtype``.
    ``config_source``: the file ``head_dim`` and ``norm_groups`` come from (default ``source``)."""
    keymap = unet_keymap(state, layout, source)
    cfg = infer_unet_config(state, keymap, source, head_dim, norm_groups)
    check_norm_groups(cfg.block_out_channels, norm_groups, config_source or source)
    with torch.device("meta"):
        model = UNet3D(cfg, ops=ops)
    return assign_weights(model, state, keymap, source, dtype, weight_dtype=weight_dtype)


# --- VAE --------------------------------------------------------------------------------------------------------

def vae_keymap(state, layout):
    if layout == "diffusers":
        return keymaps.identity
    levels = sum(1 for k in state if re.fullmatch(r"encoder\.down\.\d+\.block\.0\.conv1\.weight", k))
    return partial(keymaps.vae_ldm, levels=levels)


def infer_vae_config(state, keymap, source, norm_groups=32, scaling_factor=VAEConfig.scaling_factor):
    key_of = file_key(keymap)
    if key_of("post_quant_conv.weight") not in state:
        raise CheckpointError(f"{source}: not a KL autoencoder (no {key_of('post_quant_conv.weight')})")
    levels = _count(state, key_of, "encoder.down_blocks.{}.resnets.0.conv1.weight")
    return VAEConfig(
        in_channels=state[key_of("encoder.conv_in.weight")].shape[1],
        out_channels=state[key_of("decoder.conv_out.weight")].shape[0],
        block_out_channels=tuple(state[key_of(f"encoder.down_blocks.{i}.resnets.0.conv1.weight")].shape[0] for i in range(levels)),
        layers_per_block=_count(state, key_of, "encoder.down_blocks.0.resnets.{}.conv1.weight"),
        latent_channels=state[key_of("post_quant_conv.weight")].shape[0],
        norm_groups=norm_groups,
        scaling_factor=scaling_factor,
    )


def build_vae(state, layout, source, dtype, norm_groups=32, scaling_factor=VAEConfig.scaling_factor, ops=default_ops,
              config_source=None):
    """``layout``: "ldm" (the original autoencoder's names, without a prefix) or "diffusers" (our own names)."""
    keymap = vae_keymap(state, layout)
    cfg = infer_vae_config(state, keymap, source, norm_groups, scaling_factor)
    check_norm_groups(cfg.block_out_channels, norm_groups, config_source or source)
    with torch.device("meta"):
        model = AutoencoderKL(cfg, ops=ops)
    return assign_weights(model, state, keymap, source, dtype)


# --- Text encoder -----------------------------------------------------------------------------------------------

def text_keymap(layout):
    """Our own files keep OpenCLIP's names for the text tower."""
    return keymaps.text_hf if layout == "hf" else keymaps.text_openclip


def infer_text_config(state, layout, source, heads=None):
    """OpenCLIP files hold the whole tower, of which all blocks but the last are used; a HF ``CLIPTextModel``
    and our own files hold just the blocks that are used."""
    key_of = file_key(text_keymap(layout))
    if key_of("token_embedding.weight") not in state:
        raise CheckpointError(f"{source}: not a CLIP text encoder (no {key_of('token_embedding.weight')})")
    vocab_size, width = state[key_of("token_embedding.weight")].shape
    layers = _count(state, key_of, "transformer.resblocks.{}.ln_1.weight")
    return TextEncoderConfig(
        vocab_size=vocab_size,
        context_length=state[key_of("positional_embedding")].shape[0],
        width=width,
        heads=heads or width // 64,
        layers=layers - 1 if layout == "openclip" else layers,
    )


def build_text_encoder(state, layout, source, dtype, heads=None, ops=default_ops):
    """``layout``: "openclip" (a whole OpenCLIP model), "hf" (``CLIPTextModel``) or "native" (our own file)."""
    cfg = infer_text_config(state, layout, source, heads)
    keymap = text_keymap(layout)
    unused = {"openclip": ("visual.", "text_projection", "logit_scale", "attn_mask", f"transformer.resblocks.{cfg.layers}."),
              "hf": ("embeddings.position_ids", "text_projection"), "native": ()}[layout]
    with torch.device("meta"):
        model = TextEncoder(cfg, ops=ops)
    return assign_weights(model, state, keymap, source, dtype, ignored=lambda key: key.startswith(unused))
