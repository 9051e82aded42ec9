"""The nodes in a real ComfyUI server: listing, the shipped workflows over HTTP, errors, progress and cancel."""
import os
import random
import re
import stat
import subprocess
import threading

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

import t2v_core
import tiny
from helpers import assert_still_serving, decoded, error_message, loads_of, outputs_of, rejected
from t2v_core.unet3d import UNet3DConfig
from t2v_core.video import to_uint8, write_video, write_videos
from workflows import SAMPLER, SAVE, load, nodes_of, tiny_text_to_video

CONTRACT = {
    "ModelScopeT2VCheckpointLoader": (["ckpt_name"], ["MODEL", "CLIP", "VAE"]),
    "ModelScopeT2VTextEncode": (["clip", "text"], ["CONDITIONING"]),
    "ModelScopeT2VEmptyLatentVideo": (["width", "height", "length", "batch_size", "seed"], ["LATENT"]),
    "ModelScopeT2VSampler": (["model", "positive", "negative", "latent", "steps", "cfg", "sampler_name", "denoise"], ["LATENT"]),
    "ModelScopeT2VDecode": (["vae", "samples"], ["IMAGE"]),
    "ModelScopeT2VEncode": (["vae", "images"], ["LATENT"]),
    "ModelScopeT2VSaveVideo": (["images", "fps", "filename_prefix", "format"], []),
    "ModelScopeT2VPreviewVideo": (["images", "fps", "format", "videos"], []),
}
# The number inputs that are settings of t2v_core's table, by the table's names.
SETTING_INPUTS = {
    "ModelScopeT2VEmptyLatentVideo": {"width": "width", "height": "height", "length": "num_frames",
                                      "batch_size": "batch_size", "seed": "seed"},
    "ModelScopeT2VSampler": {"steps": "steps", "cfg": "guidance_scale", "denoise": "denoise", "seed": "seed",
                             "eta": "eta"},
    "ModelScopeT2VSaveVideo": {"fps": "fps"}, "ModelScopeT2VPreviewVideo": {"fps": "fps"},
    "ModelScopeT2VPromptSchedule": {"length": "num_frames"}, "ModelScopeT2VKeyframes": {"length": "num_frames"},
}


def test_object_info_lists_every_contract_node(comfy):
    info = comfy.get("/object_info")
    for node_id, (required, outputs) in CONTRACT.items():
        assert node_id in info, f"{node_id} is not registered"
        assert list(info[node_id]["input"]["required"]) == required
        assert info[node_id]["output"] == outputs
        for name, spec in {**info[node_id]["input"]["required"], **info[node_id]["input"].get("optional", {})}.items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    options = info["ModelScopeT2VCheckpointLoader"]["input"]["required"]["ckpt_name"][1]["options"]
    assert "tiny-t2v" in options and not any(o.startswith("tiny-t2v/") for o in options)  # a folder, listed once
    defaults = {k: v[1].get("default") for k, v in info["ModelScopeT2VEmptyLatentVideo"]["input"]["required"].items()}
    assert (defaults["width"], defaults["height"], defaults["length"]) == (256, 256, 16)
    sampler = {k: v[1].get("default") for k, v in info["ModelScopeT2VSampler"]["input"]["required"].items()}
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"]) == (50, 9.0, "ddim")
    assert info["ModelScopeT2VSaveVideo"]["input"]["required"]["fps"][1]["default"] == 8
    for node_id, inputs in SETTING_INPUTS.items():  # the command line's and batch lines' defaults and ranges
        specs = {**info[node_id]["input"]["required"], **info[node_id]["input"].get("optional", {})}
        for name, setting in ((name, t2v_core.SETTINGS[key]) for name, key in inputs.items()):
            spec = specs[name][1]
            assert (spec["default"], spec["min"], spec["max"]) == (setting.default, setting.low, setting.high), name


def test_shipped_workflow_frames_equal_generate(comfy):
    """PNG frames are lossless: each equals t2v_core.generate's frame truncated to 8 bits, within one step (the
    host's layers round differently, which can move a value across a step)."""
    prompt, seed = tiny_text_to_video(width=48, height=32, length=3, steps=3)
    entry = comfy.run(prompt)
    files = [comfy.output_path(item) for item in outputs_of(entry)]
    frames = np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int16)
    pipe = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v")
    text = nodes_of(prompt, "ModelScopeT2VTextEncode")
    video = t2v_core.generate(pipe, text[0]["inputs"]["text"], negative_prompt=text[1]["inputs"]["text"],
                              num_frames=3, height=32, width=48, steps=3, guidance_scale=9.0, seed=seed)
    assert frames.shape == (3, 32, 48, 3)
    assert np.abs(frames - to_uint8(video)).max() <= 1
    assert frames.std() > 2


def test_shipped_workflow_writes_a_browser_playable_mp4(comfy):
    prompt, _ = tiny_text_to_video(width=48, height=32, length=5, steps=2, fmt="mp4")
    entry = comfy.run(prompt)
    item = outputs_of(entry)[0]
    assert entry["outputs"][SAVE]["animated"] == [True] and item["type"] == "output"
    path = comfy.output_path(item)
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    assert re.search(r"Video: h264 .*yuv420p", info) and "48x32" in info and "8 fps" in info
    tags = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True).stdout
    assert re.search(r"^prompt=.*ModelScopeT2VSampler", tags, re.M)  # the API graph is embedded
    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)
    assert len(list(reader)) == 5
    assert comfy.get(f"/view?filename={item['filename']}&subfolder={item['subfolder']}&type=output")[4:8] == b"ftyp"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_core_ksampler_drives_the_model(comfy):
    prompt = load("text_to_video_ksampler_api.json")
    prompt, _ = tiny_text_to_video(length=3, steps=3, name="text_to_video_ksampler_api.json")
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = [comfy.output_path(item) for item in outputs_of(entry)]
    frames = np.stack([np.asarray(Image.open(f)) for f in files])
    assert frames.shape == (3, 32, 48, 3) and frames.std() > 2


def test_progress_arrives_on_the_websocket(comfy):
    prompt, _ = tiny_text_to_video(steps=4)
    messages = comfy.run_watching(prompt)
    progress = [m["data"] for m in messages if m["type"] == "progress" and m["data"]["node"] == SAMPLER]
    assert [p["value"] for p in progress] == [1, 2, 3, 4] and progress[-1]["max"] == 4
    assert any(m["type"] == "executed" and m["data"]["node"] == SAVE for m in messages)


def test_cancel_stops_the_sampler_within_a_step(comfy):
    """Once POST /interrupt has answered, the sampler finishes at most the step it is in: besides a progress message
    already on its way, at most one more arrives."""
    prompt, _ = tiny_text_to_video(width=128, height=128, length=8, steps=40)
    seen, seen_at_ack = [], []

    def interrupt():
        comfy.post("/interrupt", {})
        seen_at_ack.append(len(seen))

    def interrupt_at_second_step(message):
        if message["type"] == "progress" and message["data"]["node"] == SAMPLER:
            seen.append(message["data"]["value"])
            if message["data"]["value"] == 2:
                threading.Thread(target=interrupt).start()

    messages = comfy.run_watching(prompt, on_message=interrupt_at_second_step)
    assert messages[-1]["type"] == "execution_interrupted"
    assert seen_at_ack and len(seen) - seen_at_ack[0] <= 2, f"steps seen {seen}, {seen_at_ack[0]} when acknowledged"
    assert max(seen) < 40
    assert_still_serving(comfy)


# --- Bad input: a clear error, and the server keeps serving --------------------------------------------------

def test_unknown_checkpoint_is_a_400(comfy):
    prompt, _ = tiny_text_to_video()
    nodes_of(prompt, "ModelScopeT2VCheckpointLoader")[0]["inputs"]["ckpt_name"] = "no-such-model"
    error = rejected(comfy, prompt, "1")[0]
    assert error["type"] == "custom_validation_failed"
    assert "ckpt_name: 'no-such-model' is not one of the options (" in error["details"] and "tiny-t2v" in error["details"]
    assert_still_serving(comfy)


def test_corrupt_checkpoint_names_the_file(comfy):
    path = comfy.base / "models" / "text2video" / "corrupt.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": trunc")
    prompt, _ = tiny_text_to_video()
    nodes_of(prompt, "ModelScopeT2VCheckpointLoader")[0]["inputs"]["ckpt_name"] = "corrupt.safetensors"
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "error"
    assert "corrupt.safetensors: not a readable safetensors file" in error_message(entry)
    assert_still_serving(comfy)


def test_bad_video_size_is_a_400(comfy):
    prompt, _ = tiny_text_to_video()
    nodes_of(prompt, "ModelScopeT2VEmptyLatentVideo")[0]["inputs"]["length"] = 0
    errors = rejected(comfy, prompt, "4")
    assert any(e["type"] == "value_smaller_than_min" and "length" in e["details"] for e in errors), errors
    assert_still_serving(comfy)


def test_filename_prefix_outside_the_output_folder_is_a_400(comfy):
    prompt, _ = tiny_text_to_video()
    nodes_of(prompt, "ModelScopeT2VSaveVideo")[0]["inputs"]["filename_prefix"] = "../../x"
    details = rejected(comfy, prompt, SAVE)[0]["details"]
    assert "filename_prefix" in details and "inside the output folder" in details
    assert not (comfy.base.parent / "x_00001_.png").exists()
    assert_still_serving(comfy)


def test_noise_with_another_frame_count_is_refused(comfy):
    prompt, _ = tiny_text_to_video(length=3)
    prompt["8"] = {"class_type": "ModelScopeT2VEmptyLatentVideo",
                   "inputs": {"width": 48, "height": 32, "length": 5, "batch_size": 1, "seed": 1}}
    prompt[SAMPLER]["inputs"]["noise"] = ["8", 0]
    entry = comfy.run(prompt)
    message = error_message(entry)
    assert "noise: shape [1, 4, 5, 4, 6] (frames 5) does not match latent [1, 4, 3, 4, 6] (frames 3)" in message
    assert_still_serving(comfy)


def sd15_unet_file(path):
    """A small image UNet in the SD 1.5 layout (320 channels, 768-wide context, one level), no temporal layers."""
    cfg = UNet3DConfig(block_out_channels=(320,), cross_attention=(True,), layers_per_block=1, context_dim=768, head_dim=40)
    state = {}
    for key, tensor in tiny.unet_original_state(tiny.unet(cfg, seed=9)).items():
        if "temopral_conv" in key or key.startswith("input_blocks.0.1.") or re.match(r"\w+\.\d+\.2\.|middle_block\.2\.", key):
            continue
        key = key.replace("middle_block.3.", "middle_block.2.")
        if re.search(r"\.1\.proj_(in|out)\.weight$", key):
            tensor = tensor[..., None, None]  # SD 1.5 projects with 1x1 convolutions
        state[key] = tensor.contiguous()
    save_file(state, path)


def test_an_image_model_wired_into_the_sampler_is_refused(comfy):
    sd15_unet_file(comfy.base / "models" / "diffusion_models" / "sd15-tiny.safetensors")
    prompt, _ = tiny_text_to_video()
    prompt["9"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "sd15-tiny.safetensors", "weight_dtype": "default"}}
    prompt[SAMPLER]["inputs"]["model"] = ["9", 0]
    entry = comfy.run(prompt)
    message = error_message(entry)
    assert "model: expected a ModelScope text-to-video MODEL" in message and "got a SD15 model" in message
    assert_still_serving(comfy)


def test_video_to_video_upscale_workflow(comfy):
    """LoadVideo -> resize -> encode -> sampler at denoise 0.5 -> decode: a new video of the new size."""
    source = np.random.default_rng(0).random((3, 32, 48, 3))
    write_video(source, comfy.base / "input" / "clip.mp4", fps=8)
    prompt, _ = tiny_text_to_video(steps=4, name="video_to_video_upscale_api.json")
    prompt["10"]["inputs"]["file"] = "clip.mp4"
    prompt["12"]["inputs"].update(width=64, height=48)
    prompt[SAMPLER]["inputs"].update(denoise=0.5, seed=random.randrange(2**32))
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    frames = np.stack([np.asarray(Image.open(comfy.output_path(item))) for item in outputs_of(entry)])
    assert frames.shape == (3, 48, 64, 3)


def test_frames_work_with_core_create_video_and_save_video(comfy):
    prompt, _ = tiny_text_to_video(length=4)
    prompt["20"] = {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 8.0}}
    prompt["21"] = {"class_type": "SaveVideo", "inputs": {"video": ["20", 0], "filename_prefix": "core/video",
                                                         "format": "mp4", "codec": "h264"}}
    entry = comfy.run(prompt)
    item = entry["outputs"]["21"]["images"][0]
    reader = imageio_ffmpeg.read_frames(str(comfy.output_path(item)))
    assert next(reader)["size"] == (48, 32) and len(list(reader)) == 4


# A RIFE model (core's IFNet) of small width, written by the host's own code: no interpolation weights can be
# downloaded here, and the test is of the frames' way through core's node, not of RIFE's quality.
RIFE_FILE = """import sys, torch
from safetensors.torch import save_file
sys.path.insert(0, ".")
import comfy.cli_args
comfy.cli_args.args.cpu = True
from comfy_extras.frame_interpolation_models.ifnet import IFNet
torch.manual_seed(0)
save_file(IFNet(head_ch=4, channels=(16, 16, 16, 16, 16)).state_dict(), sys.argv[1])
"""


def test_frames_go_to_core_frame_interpolation(comfy):
    """Core's Run Frame Interpolation Model (ComfyUI 0.33+) on the pack's frames: multiplier 2 makes 2F-1 frames,
    every other one the pack's own, to save at twice the model's 8 fps."""
    if "FrameInterpolate" not in comfy.get("/object_info"):
        pytest.skip(f"ComfyUI {comfy.host.version} has no frame interpolation node")
    folder = comfy.base / "models" / "frame_interpolation"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([comfy.host.python, "-c", RIFE_FILE, str(folder / "rife_tiny.safetensors")], cwd=comfy.host.root,
                   check=True, capture_output=True, timeout=120)
    prompt, _ = tiny_text_to_video(width=64, height=64, length=4)  # RIFE pads frames by reflection to 64
    prompt["20"] = {"class_type": "FrameInterpolationModelLoader", "inputs": {"model_name": "rife_tiny.safetensors"}}
    prompt["21"] = {"class_type": "FrameInterpolate", "inputs": {"interp_model": ["20", 0], "images": ["6", 0],
                                                                 "multiplier": 2}}
    prompt["22"] = {**prompt[SAVE], "inputs": {**prompt[SAVE]["inputs"], "images": ["21", 0], "fps": 16,
                                                "filename_prefix": "interpolated/frame"}}
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1][1].get("exception_message")
    [made], [interpolated] = (png_videos(comfy, outputs_of(entry, node), 1) for node in (SAVE, "22"))
    assert len(made) == 4 and len(interpolated) == 7
    assert max(np.abs(interpolated[2 * i] - frame).max() for i, frame in enumerate(made)) <= 1


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_crf_sets_the_quality_as_in_core_save_video(comfy, fmt):
    """The same frames at crf 0 and 51: the best is the bigger file and the nearer to the frames; -1 is the
    format's default, between them."""
    prompt, _ = tiny_text_to_video(width=64, height=64, length=4, fmt=fmt, seed=5)
    sizes, errors = {}, {}
    frames = None
    for crf in (0, -1, 51):
        prompt[SAVE]["inputs"]["crf"] = crf
        prompt[SAVE]["inputs"]["filename_prefix"] = f"crf/{fmt}_{crf}"
        entry = comfy.run(prompt)
        path = comfy.output_path(outputs_of(entry)[0])
        video = decoded(path)
        assert video.shape[1:3] == (64, 64)
        frames = video if frames is None else frames
        sizes[crf], errors[crf] = path.stat().st_size, np.abs(video - frames).mean()
    assert sizes[0] > sizes[-1] > sizes[51], sizes
    assert errors[51] > errors[-1], errors


def codec_of(path):
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    return re.search(r"Video: (\w+)", info).group(1)


def png_videos(comfy, items, videos):
    """The PNG frames a save node wrote, as ``videos`` arrays [F, H, W, 3] (floats in 0..255)."""
    frames = np.stack([np.asarray(Image.open(comfy.output_path(item))) for item in items]).astype(np.float32)
    return np.split(frames, videos)


def save_node(images, fmt, prefix, **inputs):
    return {"class_type": "ModelScopeT2VSaveVideo",
            "inputs": {"images": images, "fps": 8, "filename_prefix": prefix, "format": fmt, **inputs}}


CHOSEN_CODECS = [("mp4", "auto", "h264"), ("mp4", "h264", "h264"), ("mp4", "av1", "av1"), ("webm", "auto", "vp9"),
                 ("webm", "av1", "av1"), ("mkv", "auto", "h264"), ("mkv", "vp9", "vp9")]


def blocky(prompt, size):
    """The decoded frames (16x16 px of the tiny model's noisy pixels) scaled to ``size`` in 4x4 blocks of one colour,
    which yuv420p's 2x2 chroma keeps, into the save node: a lossy codec then decodes close to the frames."""
    prompt["30"] = {"class_type": "ImageScale", "inputs": {"image": ["6", 0], "upscale_method": "nearest-exact",
                                                           "width": size, "height": size, "crop": "disabled"}}
    prompt[SAVE]["inputs"]["images"] = ["30", 0]
    return ["30", 0]


def test_codec_is_the_one_chosen_and_the_frames_decode_close(comfy):
    """One video saved as PNG (lossless) and in every container and codec: each file holds the codec chosen, and
    its frames are within 8 of 255 on average of the PNG frames (measured at each codec's default crf: H.264 2.9,
    VP9 4.4, AV1 5.7), while the frames differ from each other by more than 20."""
    prompt, _ = tiny_text_to_video(width=16, height=16, length=4)
    images = blocky(prompt, 64)
    for i, (fmt, codec, _) in enumerate(CHOSEN_CODECS):
        prompt[f"4{i}"] = save_node(images, fmt, f"codec/{fmt}_{codec}", codec=codec)
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    [frames] = png_videos(comfy, outputs_of(entry), 1)
    assert frames.shape == (4, 64, 64, 3) and np.abs(frames[::-1] - frames).mean() > 20
    errors = {}
    for i, (fmt, codec, expected) in enumerate(CHOSEN_CODECS):
        [item] = outputs_of(entry, f"4{i}")
        path = comfy.output_path(item)
        assert path.suffix == f".{fmt}" and codec_of(path) == expected, (fmt, codec, codec_of(path))
        errors[fmt, codec] = np.abs(decoded(path) - frames).mean()
    assert max(errors.values()) < 8, errors


@pytest.mark.parametrize("fmt, codec, expected", [("webm", "h264", "auto, vp9, av1"),
                                                   ("png", "av1", "auto (a png has no codec to choose)")])
def test_a_codec_the_format_cannot_hold_is_refused_before_writing(comfy, fmt, codec, expected):
    prompt, _ = tiny_text_to_video(fmt=fmt)
    prompt[SAVE]["inputs"].update(codec=codec, filename_prefix=f"refused-{fmt}/video")
    message = error_message(comfy.run(prompt))
    assert f"codec: {codec!r} does not fit the {fmt} format; expected {expected}" in message
    assert not (comfy.base / "output" / f"refused-{fmt}").exists()
    assert_still_serving(comfy)


def test_crf_beyond_the_codecs_range_is_refused_and_av1_takes_core_s_63(comfy):
    """H.264's crf ends at 51, VP9's and AV1's at 63, as in core Save Video: mp4 (H.264) at 55 is refused by name
    before anything is written; webm with av1 at 63 is written, as AV1."""
    prompt, _ = tiny_text_to_video(fmt="mp4")
    prompt[SAVE]["inputs"].update(crf=55, filename_prefix="crf-refused/video")
    message = error_message(comfy.run(prompt))
    assert "crf: 55 is beyond h264's range 0-51 (the mp4 format with codec auto)" in message
    assert not (comfy.base / "output" / "crf-refused").exists()
    prompt, _ = tiny_text_to_video(width=16, height=16, fmt="webm")
    blocky(prompt, 64)
    prompt[SAVE]["inputs"].update(crf=63, codec="av1", filename_prefix="crf-63/video")
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert codec_of(comfy.output_path(outputs_of(entry)[0])) == "av1"


def core_save_video_choices(core_inputs):
    """{(format, codec, crf max or None)} that core Save Video lists in /object_info: plain combos on 0.3.75 (no
    crf), a dynamic combo of formats each holding a dynamic combo of codecs with their crf on 0.33."""
    if core_inputs["format"][0] == "COMBO":
        return {(fmt, codec, None) for fmt in core_inputs["format"][1]["options"]
                for codec in core_inputs["codec"][1]["options"]}
    choices = set()
    for fmt in core_inputs["format"][1]["options"]:
        for codec in fmt["inputs"]["required"]["codec"][1]["options"]:
            encodings = codec["inputs"].get("optional", {}).get("encoding", [None, {"options": []}])[1]["options"]
            crfs = [e["inputs"]["required"]["crf"][1]["max"] for e in encodings if "crf" in e["inputs"]["required"]]
            choices.add((fmt["key"], codec["key"], crfs[0] if crfs else None))
    return choices


def test_save_offers_every_choice_of_core_save_video(comfy):
    """Each container, codec and crf range core Save Video offers is a choice of the Save node (core's format auto
    keeps a loaded video's container, which frames do not have)."""
    info = comfy.get("/object_info")
    ours = info["ModelScopeT2VSaveVideo"]["input"]
    formats, codecs = ours["required"]["format"][1]["options"], ours["optional"]["codec"][1]["options"]
    choices = {c for c in core_save_video_choices(info["SaveVideo"]["input"]["required"]) if c[0] != "auto"}
    assert ("mp4", "h264", None if comfy.host.version == "0.3.75" else 51) in choices
    for fmt, codec, crf_max in choices:
        assert fmt in formats and codec in codecs and t2v_core.codec_error(fmt, codec) is None, (fmt, codec)
        if crf_max is not None:
            assert t2v_core.VIDEO_CODECS[codec].crf_max == crf_max <= ours["optional"]["crf"][1]["max"], (codec,
                                                                                                       crf_max)


def test_each_video_of_a_batch_is_its_own_file(comfy):
    """A noise video of batch_size 2: two mp4 files and two sets of PNG frames, numbered one after the other as core
    Save Image numbers a batch; each mp4 decodes close to its own PNG frames (and far from the other's)."""
    prompt, _ = tiny_text_to_video(width=16, height=16, length=3)
    nodes_of(prompt, "ModelScopeT2VEmptyLatentVideo")[0]["inputs"]["batch_size"] = 2
    prompt[SAVE]["inputs"].update(videos=2, filename_prefix="batch/frames")
    prompt["40"] = save_node(blocky(prompt, 32), "mp4", "batch/video", videos=2)
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    names = [item["filename"] for item in outputs_of(entry)]
    assert names == [f"frames_{video:05}_{frame:05}.png" for video in (1, 2) for frame in (1, 2, 3)]
    pngs = png_videos(comfy, outputs_of(entry), 2)
    items = outputs_of(entry, "40")
    assert [item["filename"] for item in items] == ["video_00001_.mp4", "video_00002_.mp4"]
    videos = [decoded(comfy.output_path(item)) for item in items]
    assert all(v.shape == (3, 32, 32, 3) for v in videos)
    for video, own, other in zip(videos, pngs, pngs[::-1]):
        assert np.abs(video - own).mean() < 8 < 20 < np.abs(video - other).mean()


def test_frames_that_do_not_split_into_the_videos_are_refused(comfy):
    prompt, _ = tiny_text_to_video(length=3, fmt="mp4")
    prompt[SAVE]["inputs"].update(videos=2, filename_prefix="uneven/video")
    message = error_message(comfy.run(prompt))
    assert "videos: 3 frames do not split into 2 videos of equal length" in message
    assert not (comfy.base / "output" / "uneven").exists()


def test_videos_of_a_batch_are_written_together_or_not_at_all(tmp_path):
    """The second file cannot be written (its folder is missing): the first, already encoded, is not left either."""
    frames = np.random.default_rng(0).random((2, 16, 16, 3))
    with pytest.raises(FileNotFoundError):
        write_videos([frames, frames], [tmp_path / "a.mp4", tmp_path / "missing" / "b.mp4"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_preview_node_writes_only_to_the_temp_folder(comfy, fmt):
    """As core Preview Image: temp files with a random-suffixed name, one per video; nothing in the output folder."""
    prompt, _ = tiny_text_to_video(width=32, height=32, length=2)
    nodes_of(prompt, "ModelScopeT2VEmptyLatentVideo")[0]["inputs"]["batch_size"] = 2
    del prompt[SAVE]
    prompt["40"] = {"class_type": "ModelScopeT2VPreviewVideo",
                    "inputs": {"images": ["6", 0], "fps": 8, "format": fmt, "videos": 2}}
    before = sorted((comfy.base / "output").rglob("*"))
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    items = outputs_of(entry, "40")
    assert entry["outputs"]["40"]["animated"] == [True] and {item["type"] for item in items} == {"temp"}
    assert [re.fullmatch(rf"ModelScopeT2V_temp_[a-z]{{5}}_0000[12]_\.{fmt}", item["filename"]) is not None
            for item in items] == [True, True]
    paths = [comfy.base / "temp" / item["subfolder"] / item["filename"] for item in items]
    assert [Image.open(path).n_frames if fmt == "gif" else len(decoded(path)) for path in paths] == [2, 2]
    assert comfy.get(f"/view?filename={items[0]['filename']}&subfolder={items[0]['subfolder']}&type=temp")
    assert sorted((comfy.base / "output").rglob("*")) == before


def test_a_checkpoint_is_loaded_once(comfy):
    """Two loader nodes with the same settings, and later prompts, share one loaded copy: ComfyUI's execution
    cache keeps the loader's outputs (no cache of the pack's own)."""
    before = loads_of(comfy)
    prompt, _ = tiny_text_to_video()
    loader, = (node for node in prompt.values() if node["class_type"] == "ModelScopeT2VCheckpointLoader")
    prompt["30"] = {"class_type": "ModelScopeT2VCheckpointLoader", "inputs": dict(loader["inputs"])}
    prompt["3"]["inputs"]["clip"] = ["30", 1]
    assert comfy.run(prompt)["status"]["status_str"] == "success"
    assert comfy.run(tiny_text_to_video()[0])["status"]["status_str"] == "success"
    assert loads_of(comfy) - before <= 1


def test_a_checkpoint_overwritten_in_place_is_loaded_again(comfy):
    """The loader fingerprints its files' times, so the execution cache does not keep a checkpoint whose file was
    replaced under the same name."""
    prompt, _ = tiny_text_to_video()
    assert comfy.run(prompt)["status"]["status_str"] == "success"
    before = loads_of(comfy)
    files = [path for path in (comfy.base / "models" / "text2video" / "tiny-t2v").rglob("*") if path.is_file()]
    later = max(path.stat().st_mtime for path in files) + 10
    os.utime(files[0], (later, later))
    assert comfy.run(prompt)["status"]["status_str"] == "success"
    assert loads_of(comfy) - before == 1


def test_nodes_are_found_by_what_users_type(comfy):
    """The frontend searches node names and display names: each of these words finds the pack's nodes."""
    info = comfy.get("/object_info")
    ours = {k: v for k, v in info.items() if k.startswith("ModelScopeT2V")}
    assert {v["category"] for v in ours.values()} == {"ModelScope T2V"}
    for node_id, node in ours.items():
        text = f"{node_id} {node['display_name']}".lower()
        assert "modelscope" in text and "t2v" in text and "text-to-video" in text
    assert "zeroscope" in ours["ModelScopeT2VCheckpointLoader"]["display_name"].lower()


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_saved_files_get_the_umask_mode_as_core_save_image_does(comfy, fmt):
    """Files are written under a temporary name and renamed; the rename must not leave them private (0600)."""
    prompt, _ = tiny_text_to_video(fmt=fmt)
    prompt["90"] = {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "core/frame"}}
    entry = comfy.run(prompt)
    ours = [comfy.output_path(item) for item in outputs_of(entry)]
    core = [comfy.output_path(item) for item in outputs_of(entry, "90")]
    umask = os.umask(0)
    os.umask(umask)
    modes = {stat.S_IMODE(path.stat().st_mode) for path in ours + core}
    assert modes == {0o666 & ~umask}, {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in ours + core}
