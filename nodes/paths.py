"""The ``text2video`` model folder: registration, listing of checkpoint folders and files, and name resolution."""
import os
from pathlib import PurePosixPath

import folder_paths

from .. import t2v_core

FOLDER = "text2video"
FILE_SUFFIXES = {".safetensors", *t2v_core.PICKLE_SUFFIXES}


def register():
    """Add ``models/text2video`` to whatever ``extra_model_paths.yaml`` already set, never replacing it."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


def checkpoint_names():
    """Checkpoint folders (by folder name) and single weight files, relative to the ``text2video`` folders.

    A folder that holds one of ``t2v_core.FOLDER_MARKERS`` is one checkpoint; the files inside it are not listed on their own.
    """
    files = [PurePosixPath(name.replace(os.sep, "/")) for name in folder_paths.get_filename_list(FOLDER)]
    folders = {str(f.parent) for f in files if f.name in t2v_core.FOLDER_MARKERS and str(f.parent) != "."}
    singles = [str(f) for f in files if f.suffix in FILE_SUFFIXES
               and not any(str(parent) in folders for parent in f.parents)
               and f.name not in t2v_core.FOLDER_MARKERS]
    return sorted(folders) + sorted(singles)


def resolve(name):
    """The path of a listed checkpoint, or a clear error naming the folders that were searched."""
    for base in folder_paths.get_folder_paths(FOLDER):
        path = os.path.join(base, name)
        if os.path.commonpath((os.path.abspath(base), os.path.abspath(path))) != os.path.abspath(base):
            break
        if os.path.exists(path):
            return path
    searched = ", ".join(folder_paths.get_folder_paths(FOLDER))
    raise FileNotFoundError(f"ckpt_name: {name!r} is not in the text2video model folder ({searched}). "
                            f"Put the checkpoint folder or file there and refresh the node list.")
