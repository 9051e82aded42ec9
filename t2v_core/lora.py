"""LoRA files (Hu et al. 2021) for this model: which weight each pair of factors adapts, and the update it makes.

Formats read:
- diffusers / PEFT: ``unet.<diffusers module>.lora_A.weight`` / ``.lora_B.weight`` with an optional ``.alpha``,
  ``text_encoder.text_model.<CLIPTextModel module>...`` for the text tower; kohya's ``lora_unet_`` / ``lora_te_``
  names with ``.lora_down`` / ``.lora_up`` / ``.alpha``.
- Stable LoRA (Text-To-Video-Finetuning; the A1111 text2video extension): original ModelScope module names
  (``input_blocks.1.0.temopral_conv.conv1.2``) and OpenCLIP ones without ``transformer.`` (``resblocks.0.mlp.c_fc``)
  with ``.lora_A`` / ``.lora_B``, no alpha. Convs hold loralib's factors: for a k x k Conv2d [3 out, 3 r] x
  [3 r, 3 in], viewed as the kernel; for the temporal 3x1x1 Conv3d the same product viewed as a 3x3 kernel and
  averaged over its second axis (the extension's ``lora_conv_forward``).

The update of a weight W is ``W += strength * alpha / rank * (up @ down)`` reshaped to W (alpha / rank = 1 when the
file has no alpha). The text tower's packed q/k/v projection takes q, k and v factors in its row blocks.
"""
from dataclasses import dataclass
from math import prod

import torch

from . import keymaps
from .checkpoint import CheckpointError, read_state_dict
from .text_encoder import TextEncoder, TextEncoderConfig

# Longest first: ".lora_A.weight" before ".lora_A".
SUFFIXES = {".lora_down.weight": "down", ".lora_up.weight": "up", ".lora_A.weight": "down", ".lora_B.weight": "up",
            ".lora_A": "down", ".lora_B": "up", ".alpha": "alpha"}


class LoraError(CheckpointError):
    """A LoRA file that cannot be applied to this model: the message names the file, the key and what fits."""


@dataclass(frozen=True)
class Target:
    """A weight a LoRA module adapts: ``component`` ("unet" or "text_encoder"), our parameter name, the rows of it
    (start, length: q, k or v of a packed projection; None for all of it) and the shape of what is adapted."""
    component: str
    key: str
    shape: tuple
    rows: tuple = None


@dataclass(frozen=True)
class LoraWeight:
    target: Target
    up: torch.Tensor
    down: torch.Tensor
    alpha: float = None
    keys: tuple = ()  # the file keys it was read from

    @property
    def scale(self):
        return 1.0 if self.alpha is None else self.alpha / self.down.shape[0]

    @property
    def low_rank(self):
        """Whether ``up @ down`` reshaped is the update (every layer but a Stable LoRA temporal conv)."""
        return self.up.shape[0] * prod(self.down.shape[1:]) == prod(self.target.shape)

    @property
    def temporal(self):
        """Stable LoRA's temporal conv: loralib factors of a k x k kernel for a k x 1 x 1 one."""
        shape = self.target.shape
        return (len(shape) == 5 and shape[3:] == (1, 1)
                and self.up.shape[0] * prod(self.down.shape[1:]) == shape[2] * prod(shape))

    def check(self):
        """A LoraError unless the factors make an update of the target's shape."""
        if self.up.flatten(1).shape[1] != self.down.shape[0]:
            raise LoraError(f"up factor {tuple(self.up.shape)} and down factor {tuple(self.down.shape)} have "
                            f"different ranks")
        if not (self.low_rank or self.temporal):
            raise LoraError(f"factors {tuple(self.up.shape)} x {tuple(self.down.shape)} do not fit "
                            f"{self.target.key} {self.target.shape}")

    def delta(self):
        """The update (before strength), float32, in the target's shape."""
        product = self.up.flatten(1).float() @ self.down.flatten(1).float() * self.scale
        if self.low_rank:
            return product.reshape(self.target.shape)
        out, inp, k = self.target.shape[:3]
        return product.view(out, inp, k, k, 1).mean(dim=-2, keepdim=True)  # the extension's lora_conv_forward


@dataclass(frozen=True)
class LoraMatch:
    """What a LoRA file holds for this model."""
    weights: list
    total_keys: int
    unmatched: list

    def of(self, component):
        return [w for w in self.weights if w.target.component == component]

    def keys_of(self, component):
        """How many of the file's keys are for ``component``."""
        return sum(len(w.keys) for w in self.of(component))

    @property
    def matched_keys(self):
        return self.total_keys - len(self.unmatched)


def _unet_names(unet):
    """Every name a LoRA file may give a UNet matrix: diffusers (ours), PEFT's ``unet.``, kohya's, the original's."""
    cfg = unet.config
    names = {}
    for key, param in unet.state_dict().items():
        if not key.endswith(".weight") or param.ndim < 2:
            continue
        module, target = key[:-len(".weight")], Target("unet", key, tuple(param.shape))
        original = keymaps.unet_original(key, param.shape, cfg.layers_per_block, cfg.cross_attention)[0][0]
        for name in (module, "unet." + module, "lora_unet_" + module.replace(".", "_"), original[:-len(".weight")]):
            names[name] = target
    return names


def _text_names(text_encoder):
    """Every name a LoRA file may give a text-tower matrix: OpenCLIP's (with or without ``transformer.``; Stable
    LoRA's q/k/v as ``attn.q_proj``), ``CLIPTextModel``'s (diffusers' ``text_encoder.``, kohya's ``lora_te_``)."""
    names = {}
    for key, param in text_encoder.state_dict().items():
        if not key.endswith(".weight") or param.ndim < 2 or key == "token_embedding.weight":
            continue
        parts = keymaps.text_hf(key, param.shape)
        for i, (hf_key, shape) in enumerate(parts):
            rows = (i * shape[0], shape[0]) if len(parts) > 1 else None
            target = Target("text_encoder", key, tuple(shape), rows)
            hf_module = "text_model." + hf_key[:-len(".weight")]
            openclip = key[:-len(".weight")]
            if rows is not None:
                openclip = openclip.replace(".in_proj", f".{'qkv'[i]}_proj")
            for name in (hf_module, "text_encoder." + hf_module, "lora_te_" + hf_module.replace(".", "_"),
                         openclip, openclip.removeprefix("transformer.")):
                names[name] = target
    return names


def _split_key(key):
    """A file key -> (module name, "up" / "down" / "alpha"), or (None, None) for a key of another kind."""
    for suffix, role in SUFFIXES.items():
        if key.endswith(suffix):
            return key[:-len(suffix)], role
    return None, None


def match_lora(state, unet=None, text_encoder=None, source="LoRA"):
    """The LoRA weights in ``state`` (a file's tensors) for ``unet`` and ``text_encoder``; the keys that fit neither.

    Without a ``text_encoder`` the file's text-tower keys are still recognised (by the names of the ViT-H tower of
    every published checkpoint, built on the meta device; their shapes are not checked), so a caller can tell them
    from keys of another model. PEFT's ``base_model.model.`` prefix is dropped. A pair without both factors, or
    factors of the wrong shape, is an error naming the key.
    """
    checked = {"unet", "text_encoder"} if text_encoder is not None else {"unet"}
    unet = compiled_module(unet)
    if text_encoder is None:
        with torch.device("meta"):
            text_encoder = TextEncoder(TextEncoderConfig())
    names = {**(_unet_names(unet) if unet is not None else {}), **_text_names(text_encoder)}
    modules, unmatched = {}, []
    for key, tensor in state.items():
        module, role = _split_key(key.removeprefix("base_model.model."))
        if module not in names:
            unmatched.append(key)
            continue
        modules.setdefault(module, {})[role] = (key, tensor)
    weights = []
    for module, factors in modules.items():
        if "up" not in factors or "down" not in factors:
            missing = "up (lora_B / lora_up)" if "up" not in factors else "down (lora_A / lora_down)"
            raise LoraError(f"{source}: {module} has no {missing} factor")
        keys = tuple(key for key, _ in factors.values())
        tensors = {role: tensor for role, (_, tensor) in factors.items()}
        broken = [key for key, tensor in factors.values() if not tensor.is_meta and not torch.isfinite(tensor).all()]
        if broken:
            raise LoraError(f"{source}: {broken[0]} holds NaN or infinite values; the file is damaged (download "
                            f"it again) and nothing was applied")
        alpha = tensors.get("alpha")
        weight = LoraWeight(names[module], tensors["up"], tensors["down"], None if alpha is None else float(alpha), keys)
        try:
            if weight.target.component in checked:
                weight.check()
        except LoraError as error:
            raise LoraError(f"{source}: {module}: {error}") from None
        weights.append(weight)
    return LoraMatch(weights, len(state), unmatched)


def compiled_module(module):
    """The module inside a ``torch.compile`` wrapper (``load_pipeline(compile=True)``), or ``module`` itself."""
    return getattr(module, "_orig_mod", module)


def read_lora(path):
    """A LoRA file's tensors (safetensors, or a torch pickle read with ``weights_only``)."""
    return read_state_dict(path)


@torch.no_grad()
def apply_lora(pipe, lora, strength=1.0, text_strength=None, source=None):
    """Add a LoRA (a path or a file's tensors) to ``pipe``'s weights in place; ``text_strength`` defaults to
    ``strength``. Returns the ``LoraMatch`` (how many of the file's keys fit)."""
    if not isinstance(lora, dict):
        source, lora = source or str(lora), read_lora(lora)
    match = match_lora(lora, pipe.unet, pipe.text_encoder, source or "LoRA")
    strengths = {"unet": strength, "text_encoder": strength if text_strength is None else text_strength}
    weights = match.of("unet") + (match.of("text_encoder") if pipe.text_encoder is not None else [])
    for weight in weights:
        param = compiled_module(getattr(pipe, weight.target.component)).get_parameter(weight.target.key)
        rows = param if weight.target.rows is None else param.narrow(0, *weight.target.rows)
        rows.copy_(rows.float() + strengths[weight.target.component] * weight.delta().to(rows.device))
    return match
