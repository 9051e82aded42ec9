"""The pack's own socket types."""
from comfy_api.latest import io

T2VClip = io.Custom("T2V_CLIP")
T2VVae = io.Custom("T2V_VAE")
