"""Helpers the test modules share: prompts run on a test server and what they made (frames, latents, errors), the
files tests put in a server's folders, the tiny pipeline's own frames, decoded videos and the published key lists."""
import re
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import t2v_core
from workflows import SAVE, nodes_of, tiny_text_to_video

SPEC = Path(__file__).parent / "data" / "spec"


# --- Prompts on a server ---------------------------------------------------------------------------------------

def outputs_of(entry, node=SAVE):
    return entry["outputs"][node]["images"]


def frames(comfy, prompt):
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    return np.stack([np.asarray(Image.open(comfy.output_path(item))) for item in outputs_of(entry)]).astype(np.float32)


def run_latent(comfy, prompt):
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    item = entry["outputs"]["62"]["latents"][0]
    return load_file(comfy.base / "output" / item["subfolder"] / item["filename"])["latent_tensor"]


def error_message(entry):
    return next(data["exception_message"] for kind, data in entry["status"]["messages"] if kind == "execution_error")


def run_expecting_error(comfy, prompt):
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "error", entry["status"]
    return error_message(entry)


def rejected(comfy, prompt, node_id):
    """Queue a prompt that validation must refuse: the errors ComfyUI's 400 reports for ``node_id``."""
    status, body = comfy.queue(prompt)
    assert status == 400, body
    return body["node_errors"][node_id]["errors"]


def assert_still_serving(comfy):
    """After a failure the server is alive and the next prompt succeeds."""
    assert comfy.alive()
    prompt, _ = tiny_text_to_video(length=2, steps=1)
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success"


def loads_of(comfy, name="tiny-t2v"):
    return len(re.findall(rf"Loaded \S*{name}", comfy.log_text()))


# --- Files in a server's folders -------------------------------------------------------------------------------

def write_image(comfy, name, size=(32, 32), seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(comfy.base / "input" / name)
    return torch.from_numpy(pixels.astype(np.float32) / 255)


def write_lora(comfy, name, state):
    save_file(state, comfy.base / "models" / "loras" / name)
    return name


# --- The tiny pipeline's own frames ----------------------------------------------------------------------------

def tiny_pipe(comfy, **kwargs):
    return t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v", **kwargs)


def expected_frames(pipe, prompt, seed, **options):
    """t2v_core's frames for the shipped text-to-video graph ``prompt`` (``options``: more of generate's)."""
    text = nodes_of(prompt, "ModelScopeT2VTextEncode")
    latent = nodes_of(prompt, "ModelScopeT2VEmptyLatentVideo")[0]["inputs"]
    sampler = nodes_of(prompt, "ModelScopeT2VSampler")[0]["inputs"]
    video = t2v_core.generate(pipe, text[0]["inputs"]["text"], negative_prompt=text[1]["inputs"]["text"],
                              num_frames=latent["length"], height=latent["height"], width=latent["width"],
                              steps=sampler["steps"], guidance_scale=sampler["cfg"], seed=seed, **options)
    return t2v_core.to_uint8(video).astype(np.float32)


# --- Files the tests read --------------------------------------------------------------------------------------

def decoded(path):
    """Every frame of a video file, [F, H, W, 3] floats in 0..255."""
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]).astype(np.float32)


def read_keys(name):
    keys = {}
    for line in (SPEC / name).read_text().splitlines():
        key, shape, _ = line.split("\t")
        keys[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return keys


class RunsCode:
    """Unpickling this object would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
