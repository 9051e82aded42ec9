"""Long clips and loops through core's context windows (ContextWindowsManual) on the pack's MODEL and sampler:
t2v_core's windows are core's, workflows/long_video.json makes 256 frames and equals t2v_core's ``context_frames``,
and workflows/loop.json joins the clip's end to its start."""
import numpy as np
import torch
from safetensors.torch import save_file

import t2v_core
from helpers import assert_still_serving, expected_frames, frames, outputs_of, run_expecting_error, run_latent
from workflows import SAMPLER, tiny_text_to_video

WINDOWS = "8"  # the ContextWindowsManual node of the shipped long_video and loop workflows


def test_t2v_core_windows_are_core_context_windows(comfy):
    """The windows and fused weights of core's standard_static schedule with the overlap-linear fuse, against
    t2v_core's ``context_windows``, for clips of 20 to 256 frames."""
    for case in comfy.in_process("context_windows", timeout=300):
        assert case["windows"] == case["ours"], case["frames"]
        assert case["max_weight_diff"] <= 1e-6, case


def test_long_video_workflow_makes_256_frames_as_t2v_core_does(comfy):
    """workflows/long_video_api.json on the tiny checkpoint: 256 frames in windows of 16, the frames of t2v_core's
    ``generate(..., context_frames=16, context_overlap=4)`` within 2/255."""
    prompt, seed = tiny_text_to_video(width=32, height=32, length=256, steps=2, name="long_video_api.json")
    assert prompt[WINDOWS]["inputs"]["context_length"] == 16 and prompt[WINDOWS]["inputs"]["context_overlap"] == 4
    ours = frames(comfy, prompt)
    assert ours.shape == (256, 32, 32, 3)
    pipe = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v")
    expected = expected_frames(pipe, prompt, seed, context_frames=16, context_overlap=4)
    assert np.abs(ours - expected).max() <= 2
    assert np.abs(ours - expected_frames(pipe, prompt, seed)).max() > 10  # windows are not one pass


def loop_graph(comfy, noise_file, schedule, closed_loop):
    """workflows/loop_api.json at test size (16 frames, windows of 8 overlapping by 4) from a saved noise video,
    its latents saved."""
    prompt, _ = tiny_text_to_video(width=32, height=32, length=16, steps=4, name="loop_api.json")
    prompt[WINDOWS]["inputs"].update(context_length=8, context_overlap=4, context_schedule=schedule,
                                     closed_loop=closed_loop)
    prompt["70"] = {"class_type": "LoadLatent", "inputs": {"latent": noise_file}}
    prompt[SAMPLER]["inputs"]["latent"] = ["70", 0]
    prompt["62"] = {"class_type": "SaveLatent", "inputs": {"samples": [SAMPLER, 0], "filename_prefix": "loop/latent"}}
    return prompt


def test_loop_joins_the_last_frame_to_the_first(comfy):
    """A seamless loop needs the clip's end sampled as the neighbour of its start. Measured as coupling: a new
    noise frame at the end changes frame 0 about as much as it changes frame 14, its other neighbour, in the
    shipped loop workflow; with windows that do not loop, frame 0 barely moves. (The tiny random model's frames are
    noise-like, frames 8 apart as different as neighbours, so their frame-to-frame change shows nothing.)"""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 16, 4, 4, generator=g)
    changed = noise.clone()
    changed[:, :, -1] = torch.randn(1, 4, 4, 4, generator=g)
    for name, samples in (("loop_a.latent", noise), ("loop_b.latent", changed)):
        save_file({"latent_tensor": samples, "latent_format_version_0": torch.tensor([])}, comfy.base / "input" / name)
    coupling = {}
    for schedule, closed_loop in (("looped_uniform", True), ("standard_static", False)):
        a, b = (run_latent(comfy, loop_graph(comfy, name, schedule, closed_loop)) for name in ("loop_a.latent", "loop_b.latent"))
        change = (b - a).abs().mean(dim=(0, 1, 3, 4))
        coupling[schedule] = (change[0] / change[14]).item()
    assert coupling["looped_uniform"] >= 0.5, coupling
    assert coupling["standard_static"] <= 0.05, coupling


def test_loop_workflow_saves_a_looping_gif(comfy):
    prompt, _ = tiny_text_to_video(width=32, height=32, length=8, steps=2, fmt="gif", name="loop_api.json")
    prompt[WINDOWS]["inputs"].update(context_length=4, context_overlap=2)
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (item,) = outputs_of(entry)
    assert item["filename"].endswith(".gif")
    from PIL import Image

    gif = Image.open(comfy.output_path(item))
    assert gif.n_frames == 8 and gif.info.get("loop") == 0


def test_overlap_not_smaller_than_the_window_is_refused(comfy):
    prompt, _ = tiny_text_to_video(width=32, height=32, length=8, steps=2, name="long_video_api.json")
    prompt[WINDOWS]["inputs"].update(context_length=4, context_overlap=4)
    message = run_expecting_error(comfy, prompt)
    assert "context_overlap below its context_length" in message and "overlap by 4 frames but are 4 long" in message
    assert_still_serving(comfy)
