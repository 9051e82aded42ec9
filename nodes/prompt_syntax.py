"""ComfyUI's prompt syntax on the pack's text tower, read as core CLIPTextEncode reads it for SD 2.x's OpenCLIP-H.

Core's tokenizer parses the prompt: ``(text:1.3)``, ``(text)`` = 1.1, nesting, ``\\(`` ``\\)`` escapes,
``embedding:name`` (textual inversion from models/embeddings), prompts past 75 tokens in 77-token chunks. Core's
weighting moves each weighted token's context away from the empty prompt's by its weight. t2v_core's tower encodes
the chunks. Unlike core, an embedding that is missing or of another width is an error, not a warning.
"""
import functools

import comfy.sd1_clip
import folder_paths
import torch
from comfy.text_encoders.sd2_clip import SD2ClipHTokenizer

SPECIAL_TOKENS = {"start": 49406, "end": 49407, "pad": 0}  # OpenCLIP's BOS, EOS and padding
WIDTH = 1024  # OpenCLIP ViT-H's token width: SD 2.x embeddings


class Tokenizer(SD2ClipHTokenizer):
    """Core's SD 2.x tokenizer, refusing embeddings it would skip with a warning."""

    def _try_get_embedding(self, embedding_name):
        found = super()._try_get_embedding(embedding_name)  # (embedding or None, ..., leftover text)
        name = embedding_name.split()[0].rstrip(",") if embedding_name.split() else embedding_name
        if found[0] is None:
            raise ValueError(f"text: embedding:{name} not found in models/embeddings "
                             f"({', '.join(self.embedding_directory)}); put the .safetensors/.pt file there or "
                             f"remove 'embedding:{name}' from the prompt")
        if found[0].shape[-1] != WIDTH:
            raise ValueError(f"text: embedding:{name} is {found[0].shape[-1]} wide; this text encoder reads "
                             f"{WIDTH}-wide embeddings (SD 2.x / OpenCLIP ViT-H), not SD 1.x (768) or SDXL ones")
        return found


@functools.lru_cache(maxsize=4)
def tokenizer(embedding_directories):
    return Tokenizer(embedding_directory=list(embedding_directories))


class WeightedEncoder(comfy.sd1_clip.ClipTokenWeightEncoder):
    """Core's token weighting over ``encode_batches(batches) -> [B, 77, D]``."""

    special_tokens = SPECIAL_TOKENS

    def __init__(self, encode_batches):
        self.encode_batches = encode_batches

    def encode(self, batches):
        return self.encode_batches(batches), None


def token_ids(batches):
    """Core's token batches (ids, or embedding vectors in their place) -> ids [B, 77] and the vectors as
    (row, position, vector) triples."""
    ids = torch.tensor([[t if isinstance(t, int) else 0 for t in batch] for batch in batches])
    vectors = [(row, position, t) for row, batch in enumerate(batches) for position, t in enumerate(batch)
               if torch.is_tensor(t)]
    return ids, vectors


def encode(text, encode_tokens):
    """The context [1, 77 x chunks, D] of ``text``; ``encode_tokens(ids, vectors)`` runs the text tower."""
    pairs = tokenizer(tuple(folder_paths.get_folder_paths("embeddings"))).tokenize_with_weights(text)
    return WeightedEncoder(lambda batches: encode_tokens(*token_ids(batches))).encode_token_weights(pairs)[0]
