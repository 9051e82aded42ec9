"""ComfyUI's prompt syntax on the pack's text tower, read as core CLIPTextEncode reads it for SD 2.x's OpenCLIP-H.

Core's tokenizer parses the prompt: ``(text:1.3)``, ``(text)`` = 1.1, nesting, ``\\(`` ``\\)`` escapes,
``embedding:name`` (textual inversion from models/embeddings), prompts past 75 tokens in 77-token chunks. Core's
weighting moves each weighted token's context away from the empty prompt's by its weight. t2v_core's tower encodes
the chunks. Unlike core, an embedding that is missing, unreadable or of another width, and a weight that is not a
finite number of sensible size, are errors, not warnings or NaN frames; embedding files are read by t2v_core's safe
reader.
"""
import functools
import math
import os
import re

import comfy.sd1_clip
import folder_paths
import torch
from comfy.text_encoders.sd2_clip import SD2ClipHTokenizer

from .. import t2v_core

SPECIAL_TOKENS = {"start": 49406, "end": 49407, "pad": 0}  # OpenCLIP's BOS, EOS and padding
EMBEDDING_SUFFIXES = ("", ".safetensors", ".pt", ".bin")  # core's order
MAX_WEIGHT = 100  # weights far past 2 already give noise; 1e30 overflows the text context


def embedding_file(name, directories):
    """The file of ``embedding:name`` in ``directories`` (core's search: no way out of the folders), or None."""
    for directory in map(os.path.abspath, directories):
        path = os.path.abspath(os.path.join(directory, name))
        if os.path.commonpath((directory, path)) != directory:
            continue
        found = next((path + s for s in EMBEDDING_SUFFIXES if os.path.isfile(path + s)), None)
        if found:
            return found
    return None


def embedding_vectors(path, name):
    """The [tokens, width] vectors of an embedding file (A1111 ``string_to_param``, or its first tensor), read
    without running pickled code; an error naming it when the file is unreadable or holds no vectors."""
    try:
        content = t2v_core.read_tensors(path)
    except t2v_core.CheckpointError as error:
        raise ValueError(f"text: embedding:{name}: {error}") from None
    if isinstance(content, dict) and isinstance(content.get("string_to_param"), dict):
        content = content["string_to_param"]
    tensors = [v for v in content.values() if torch.is_tensor(v)] if isinstance(content, dict) else []
    if not tensors or tensors[0].ndim not in (1, 2):
        raise ValueError(f"text: embedding:{name}: {path} holds no embedding vectors ([tokens, width] tensors)")
    return tensors[0]


class Tokenizer(SD2ClipHTokenizer):
    """Core's SD 2.x tokenizer for a tower ``width`` wide, refusing embeddings it would skip with a warning."""

    def __init__(self, embedding_directory, width):
        super().__init__(embedding_directory=embedding_directory)
        self.width = width

    def _try_get_embedding(self, embedding_name):
        words = embedding_name.split()
        if not words:
            raise ValueError("text: 'embedding:' is not followed by a name; write embedding:NAME for a file in "
                             "models/embeddings, or remove it")
        name = re.split(r"[<\[]", words[0])[0]
        path = embedding_file(name, self.embedding_directory) or embedding_file(name.strip(","), self.embedding_directory)
        name = name.rstrip(",")
        if path is None:
            raise ValueError(f"text: embedding:{name} not found in models/embeddings "
                             f"({', '.join(self.embedding_directory)}); put the .safetensors/.pt file there or "
                             f"remove 'embedding:{name}' from the prompt")
        vectors = embedding_vectors(path, name)
        if vectors.shape[-1] != self.width:
            raise ValueError(f"text: embedding:{name} is {vectors.shape[-1]} wide; this text encoder reads "
                             f"{self.width}-wide embeddings (SD 2.x / OpenCLIP ViT-H: 1024), not SD 1.x (768) or "
                             f"SDXL ones")
        found = super()._try_get_embedding(embedding_name)  # core's split of the rest of the word, per version
        return (vectors, *found[1:])


@functools.lru_cache(maxsize=4)
def tokenizer(embedding_directories, width):
    return Tokenizer(list(embedding_directories), width)


def check_weights(text):
    """An error naming the part of the prompt whose weight is not finite or past ``MAX_WEIGHT``."""
    for segment, weight in comfy.sd1_clip.token_weights(comfy.sd1_clip.escape_important(text), 1.0):
        if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
            part = comfy.sd1_clip.unescape_important(segment).strip()
            raise ValueError(f"text: the weight {weight:g} of '{part}' is not a number between -{MAX_WEIGHT} and "
                             f"{MAX_WEIGHT}; use weights such as (word:1.3) or (word:0.8)")


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


def tokenize(text, width, return_word_ids=False):
    """Core's token batches of ``text``: 77-token chunks of (token or embedding vector, weight) pairs, for a text
    tower ``width`` wide."""
    check_weights(text)
    return tokenizer(tuple(folder_paths.get_folder_paths("embeddings")), width).tokenize_with_weights(text,
                                                                                                   return_word_ids)


def encode(batches, encode_tokens):
    """The context [1, 77 x chunks, D] of ``tokenize``'s batches; ``encode_tokens(ids, vectors)`` runs the text
    tower."""
    return WeightedEncoder(lambda ids: encode_tokens(*token_ids(ids))).encode_token_weights(batches)[0]
