"""Files that appear whole or not at all: written under a hidden temporary name beside them, then renamed."""
import os
import secrets
from pathlib import Path


def temporary_file(folder, name, suffix):
    """A new hidden, empty file in ``folder`` to write ``name`` into before renaming it there.

    Created as ``open`` creates files, with the mode the umask gives (``tempfile.mkstemp`` makes them 0600, and a
    rename keeps the mode), so saved files are as readable as any other file the user writes.
    """
    while True:
        path = os.path.join(folder, f".{name}-{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue


def write_files(paths, write):
    """Write every one of ``paths`` by ``write(index, temporary_path)`` under a temporary name beside it, then rename
    them all: the files appear together or, if any write or rename fails, none does."""
    temporary, renamed = [], []
    try:
        for i, path in enumerate(paths):
            path = Path(path)
            temporary.append(temporary_file(path.parent, path.stem, path.suffix))
            write(i, temporary[-1])
        for tmp, path in zip(temporary, paths):
            os.replace(tmp, path)
            renamed.append(path)
    except BaseException:
        for path in renamed:
            os.unlink(path)
        raise
    finally:
        for tmp in temporary:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return paths
