"""The ComfyUI names the pack reaches (scripts/comfyui_surface.py reads them from the source) are the ones
docs/comfyui-surface.md lists, and none is private except at the seams that document is made to name."""
import re

from scripts import comfyui_surface

SEAMS_HEADING = "## Seams"


def test_the_documented_surface_is_the_codes():
    """A new import, call, subclass or assignment of a ComfyUI name changes this list: rerun the script."""
    assert comfyui_surface.listing(comfyui_surface.surface()) == comfyui_surface.documented(), (
        "the pack's ComfyUI surface changed; run `.venv/bin/python scripts/comfyui_surface.py` and review the diff "
        "of docs/comfyui-surface.md")


def private(name):
    """Whether a surface entry reaches a name core keeps private (``_x``; dunders such as __init__ are public)."""
    return any(part.startswith("_") and not part.startswith("__") for part in re.split(r"[.: ]", name))


def test_private_names_are_reached_only_at_documented_seams():
    text = comfyui_surface.DOC.read_text()
    seams = text[text.index(SEAMS_HEADING):text.index(comfyui_surface.BEGIN)]
    reached = {name for name in comfyui_surface.surface() if private(name)}
    documented = {name for name in reached if f"`{name}`" in seams}
    assert reached == documented, f"private ComfyUI names reached outside a documented seam: {reached - documented}"
