"""The loader's CLIP: core ComfyUI's ``CLIP`` over t2v_core's text tower.

Core nodes that take a CLIP (CLIPTextEncode, LoraLoader, CLIPSetLastLayer, the conditioning and device nodes) call
``tokenize`` and ``encode_from_tokens*`` on it; here those read ComfyUI's prompt syntax (``prompt_syntax``) and run
the tower in the pipeline's compute dtype on the device core loaded it to.
"""
import copy
from functools import partial

import comfy.model_management as mm
import comfy.sd

from . import prompt_syntax
from .patcher import Patcher

TOKENS_KEY = "h"  # core's SD 2.x name for OpenCLIP-H's token batches


class PromptTokenizer:
    """Core's tokenizer interface: the prompt's token batches, keyed as core keys SD 2.x's."""

    def __init__(self, width):
        self.width = width

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        return {TOKENS_KEY: prompt_syntax.tokenize(text, self.width, return_word_ids)}

    def state_dict(self):
        return {}


class TextTower:
    """Core's ``cond_stage_model`` interface over the pipeline's text tower. ``layer``: core's clip layer
    (CLIPSetLastLayer), -2 being the model's own (the penultimate block of the file's 24)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.reset_clip_options()

    def reset_clip_options(self):
        self.layer, self.execution_device = None, None

    def set_clip_options(self, options):
        self.layer = options.get("layer", self.layer)
        self.execution_device = options.get("execution_device", self.execution_device)

    def blocks(self):
        """The blocks to run for ``layer``: -2 runs all that are built (the file's blocks but its last)."""
        built = self.pipe.text_encoder.config.layers
        if self.layer is None:
            return built
        blocks = built + 2 + self.layer
        if not 1 <= blocks <= built:
            raise ValueError(f"clip: CLIP Set Last Layer's stop_at_clip_layer {self.layer} is not a layer this text "
                             f"encoder reads; ModelScope T2V reads -2 (the penultimate block, its own), and -3 to "
                             f"-{built + 1} read earlier blocks; its last block (-1) is never loaded")
        return blocks

    def encode_token_weights(self, tokens):
        """``(context [1, 77 x chunks, D], None)``: no pooled output, the UNet does not read one."""
        encode_tokens = partial(self.pipe.encode_tokens, device=self.execution_device, layers=self.blocks())
        return prompt_syntax.encode(tokens[TOKENS_KEY], encode_tokens).to(mm.intermediate_device()), None

    def state_dict(self):
        return self.pipe.text_encoder.state_dict()


class TextEncoder(comfy.sd.CLIP):
    """The loader's CLIP."""

    def __init__(self, pipe):
        super().__init__(no_init=True)  # core's init builds a text model from a state dict; this one is built
        self.pipe = pipe
        self.cond_stage_model = TextTower(pipe)
        self.tokenizer = PromptTokenizer(pipe.text_encoder.config.width)
        self.patcher = Patcher(
            pipe.text_encoder, load_device=mm.text_encoder_device(), offload_device=mm.text_encoder_offload_device())
        self.patcher.is_clip = True
        self.layer_idx = None
        self.tokenizer_options = {}
        self.use_clip_schedule = False
        self.apply_hooks_to_conds = None

    def clone(self, disable_dynamic=False):
        """This text encoder with a patcher of its own (core's clone would make a plain CLIP)."""
        new = copy.copy(self)
        new.patcher = self.patcher.clone()
        new.tokenizer_options = self.tokenizer_options.copy()
        return new


def require_t2v_clip(clip, input_name="clip"):
    """``clip`` if it is the ModelScope T2V loader's text encoder, else an error saying what was wired in."""
    if not isinstance(clip, TextEncoder):
        kind = type(getattr(clip, "cond_stage_model", clip)).__name__
        raise ValueError(f"{input_name}: expected the text encoder of the ModelScope T2V checkpoint loader (OpenCLIP "
                         f"ViT-H/14 read at its penultimate block), got a {kind} CLIP of another model (from a core "
                         f"CLIP or checkpoint loader); wire the ModelScope T2V loader's CLIP output here")
    return clip
