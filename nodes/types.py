"""The pack's own socket types and CONDITIONING options."""
from comfy_api.latest import io

T2VClip = io.Custom("T2V_CLIP")
T2VVae = io.Custom("T2V_VAE")
# CONDITIONING option of a prompt schedule: the number of frames its context holds, one [N, D] block per frame.
FRAMES = "t2v_frames"
