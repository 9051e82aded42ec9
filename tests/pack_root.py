"""The repository root is a ComfyUI node pack whose __init__.py imports ComfyUI: collect it as a plain folder so
that pytest never imports that file (the pack is tested inside a real ComfyUI server instead)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    if path == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
