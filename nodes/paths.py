"""The model folders the loader reads: registration, listing of checkpoint folders and files, and name resolution.

The UNet comes from ``models/text2video`` (checkpoint folders and single files) or, as a single file, from core's
``models/diffusion_models``; the text encoder and the VAE may come as single files from ``models/text_encoders``
and ``models/vae``.
"""
import os
from pathlib import PurePosixPath

import folder_paths

from .. import t2v_core

FOLDER = "text2video"
UNET_FOLDERS = (FOLDER, "diffusion_models")
FILE_SUFFIXES = {".safetensors", *t2v_core.PICKLE_SUFFIXES}


def register():
    """Add ``models/text2video`` to whatever ``extra_model_paths.yaml`` already set, never replacing it."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


def weight_files(folder):
    """The weight files of a core model folder (``vae``, ``text_encoders``, ...), relative to it."""
    return [name for name in folder_paths.get_filename_list(folder) if os.path.splitext(name)[1] in FILE_SUFFIXES]


def checkpoint_names():
    """Checkpoint folders (by folder name) and single weight files of the ``text2video`` folders, then the single
    files of ``diffusion_models`` not already listed.

    A folder that holds one of ``t2v_core.FOLDER_MARKERS`` is one checkpoint; the files inside it are not listed on
    their own. A published file such as ``text2video_pytorch_model.pth`` directly in the folder is a single file.
    """
    files = [PurePosixPath(name.replace(os.sep, "/")) for name in folder_paths.get_filename_list(FOLDER)]
    folders = {str(f.parent) for f in files if f.name in t2v_core.FOLDER_MARKERS and str(f.parent) != "."}
    singles = [str(f) for f in files if f.suffix in FILE_SUFFIXES
               and not any(str(parent) in folders for parent in f.parents)]
    names = sorted(folders) + sorted(singles)
    return names + sorted(set(weight_files("diffusion_models")) - set(names))


def resolve(name):
    """The path of a listed checkpoint, or a clear error naming the folders that were searched."""
    for folder in UNET_FOLDERS:
        for base in folder_paths.get_folder_paths(folder):
            path = os.path.join(base, name)
            if os.path.commonpath((os.path.abspath(base), os.path.abspath(path))) != os.path.abspath(base):
                break
            if os.path.exists(path):
                return path
    searched = ", ".join(base for folder in UNET_FOLDERS for base in folder_paths.get_folder_paths(folder))
    raise FileNotFoundError(f"ckpt_name: {name!r} is not in the text2video or diffusion_models model folders "
                            f"({searched}). Put the checkpoint folder or file there and refresh the node list.")


def modified(path):
    """When a checkpoint file, or any file of a checkpoint folder, last changed (a file overwritten in place too)."""
    if not os.path.isdir(path):
        return os.path.getmtime(path)
    return max((os.path.getmtime(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files), default=0)
