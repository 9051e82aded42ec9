"""ModelScope text-to-video for ComfyUI: the nodes live in nodes/, the model in t2v_core/."""
from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
