"""Reading tensors from checkpoint files safely: memory-mapped, and never by running pickled code."""
import json
import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what was expected."""


def read_tensors(path):
    """What a .safetensors or pickle-based torch file holds (tensors, in plain containers for a pickle),
    memory-mapped where the format allows.

    Pickles go through ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers,
    so a file whose pickle would run code is rejected before any of it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix not in (".safetensors", *PICKLE_SUFFIXES):
        raise CheckpointError(f"{path}: unknown checkpoint type; expected .safetensors, or a torch file ({', '.join(PICKLE_SUFFIXES)})")
    # By content: a renamed safetensors file still reads as one. A .safetensors file that is none is read as one
    # too, so that its error names the file (torch.load would hand it to safetensors itself).
    if is_safetensors(path) or path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt download?): {e}") from e
    return _load_pickle(path)


def read_state_dict(path):
    """All tensors of a checkpoint file (``read_tensors``), a ``state_dict`` wrapper removed."""
    state = read_tensors(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dictionary of tensors (a state dict), found {type(state).__name__}")
    return state


def is_safetensors(path):
    """A safetensors file starts with the 8-byte length of its JSON header, then the header's '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def _load_pickle(path):
    mmap = zipfile.is_zipfile(path)  # only the zip-based format (torch >= 1.6) can be memory-mapped
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if not found:  # not an object that was refused, but bytes that are no pickle at all
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt download?)") from e
        raise CheckpointError(
            f"{path}: refused to load: besides tensors the file holds Python objects ({found[1]}) that could run code "
            f"when unpickled. Use a .safetensors copy "
            f"of the checkpoint, or one saved as plain tensors.") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, SafetensorError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt download?): {e}") from e


def read_safetensors_metadata(path):
    """The string metadata of a .safetensors header ({} when it has none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt download?): {e}") from e


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e
