"""The pack's CONDITIONING options."""
# CONDITIONING option of a prompt schedule: the number of frames its context holds, one [N, D] block per frame.
FRAMES = "t2v_frames"
