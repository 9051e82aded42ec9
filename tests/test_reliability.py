"""Bad input of every kind gets a clear error, leaves nothing half-written and the server serving; the server
stays lean and correct under a stream of prompts and interrupts."""
import re
import subprocess
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import t2v_core
from helpers import RunsCode, assert_still_serving, loads_of, outputs_of, rejected, run_expecting_error
from tiny import sd15_checkpoint
from workflows import SAMPLER, SAVE, nodes_of, tiny_text_to_video, with_checkpoint


def no_temporary_files(comfy):
    return [p for p in (comfy.base / "output").rglob(".*") if p.is_file()]


# --- Checkpoints ------------------------------------------------------------------------------------------------

def copy_tiny(comfy, name):
    import shutil

    return shutil.copytree(comfy.base / "models" / "text2video" / "tiny-t2v", comfy.base / "models" / "text2video" / name)


def test_truncated_pickle_checkpoint(comfy):
    folder = copy_tiny(comfy, "truncated-pth")
    weights = folder / "text2video_pytorch_model.pth"
    weights.write_bytes(weights.read_bytes()[:4000])
    assert "text2video_pytorch_model.pth: not a readable torch checkpoint (truncated" in run_expecting_error(comfy, with_checkpoint("truncated-pth"))
    assert_still_serving(comfy)


def test_missing_file_in_checkpoint_folder(comfy):
    folder = copy_tiny(comfy, "missing-clip")
    (folder / "open_clip_pytorch_model.bin").unlink()
    assert "open_clip_pytorch_model.bin: file not found" in run_expecting_error(comfy, with_checkpoint("missing-clip"))
    assert_still_serving(comfy)


def test_files_of_a_folder_under_each_others_names(comfy):
    folder = copy_tiny(comfy, "swapped")
    unet, clip = folder / "text2video_pytorch_model.pth", folder / "open_clip_pytorch_model.bin"
    unet.rename(folder / "tmp")
    clip.rename(unet)
    (folder / "tmp").rename(clip)
    message = run_expecting_error(comfy, with_checkpoint("swapped"))
    assert "text2video_pytorch_model.pth: not a ModelScope text-to-video UNet" in message
    assert_still_serving(comfy)


def test_safetensors_file_renamed_to_pth_still_loads(comfy, truth, tmp_path):
    """Files are read by what they hold, not by their suffix."""
    pipe = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v")
    t2v_core.save_single_file(pipe, tmp_path / "one.safetensors")
    (tmp_path / "one.safetensors").rename(comfy.base / "models" / "text2video" / "renamed.pth")
    prompt = with_checkpoint("renamed.pth")
    assert comfy.run(prompt)["status"]["status_str"] == "success"


def test_image_model_checkpoint_in_the_text2video_folder(comfy, truth):
    save_file(sd15_checkpoint(truth), comfy.base / "models" / "text2video" / "sd15.safetensors")
    message = run_expecting_error(comfy, with_checkpoint("sd15.safetensors"))
    assert "sd15.safetensors: this is an image UNet" in message
    assert_still_serving(comfy)


def test_malicious_pickle_never_runs(comfy, tmp_path):
    folder = copy_tiny(comfy, "malicious")
    marker = tmp_path / "code-ran"
    state = torch.load(folder / "text2video_pytorch_model.pth")
    state["payload"] = RunsCode(marker)
    torch.save(state, folder / "text2video_pytorch_model.pth")
    assert "refused to load" in run_expecting_error(comfy, with_checkpoint("malicious"))
    assert not marker.exists()
    assert_still_serving(comfy)


def test_zeroscope_folder_without_vae(comfy):
    folder = copy_tiny(comfy, "zeroscope-no-vae")
    (folder / "VQGAN_autoencoder.pth").unlink()
    (folder / "configuration.json").unlink()
    assert "has no VQGAN_autoencoder.pth. Zeroscope v2 folders ship only" in run_expecting_error(comfy, with_checkpoint("zeroscope-no-vae"))
    assert_still_serving(comfy)


def test_a_unet_file_is_not_a_vae(comfy, truth):
    save_file({k: v.contiguous() for k, v in truth["unet"].state_dict().items()}, comfy.base / "models" / "vae" / "unet.safetensors")
    prompt = with_checkpoint("tiny-t2v")
    nodes_of(prompt, "ModelScopeT2VCheckpointLoader")[0]["inputs"]["vae_name"] = "unet.safetensors"
    assert "unet.safetensors: not a KL autoencoder" in run_expecting_error(comfy, prompt)
    assert_still_serving(comfy)


# --- Values -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("node, field, value, kind", [
    ("ModelScopeT2VSampler", "steps", 0, "value_smaller_than_min"),
    ("ModelScopeT2VSampler", "cfg", -1.0, "value_smaller_than_min"),
    ("ModelScopeT2VSampler", "denoise", 0.0, "value_smaller_than_min"),
    ("ModelScopeT2VSaveVideo", "filename_prefix", "/etc/x", "custom_validation_failed"),
    ("ModelScopeT2VEmptyLatentVideo", "batch_size", 0, "value_smaller_than_min"),
])
def test_bad_values_are_400s_naming_the_input(comfy, node, field, value, kind):
    prompt, _ = tiny_text_to_video()
    node_id, spec = next((k, v) for k, v in prompt.items() if v["class_type"] == node)
    spec["inputs"][field] = value
    errors = rejected(comfy, prompt, node_id)
    assert any(e["type"] == kind and field in e["details"] for e in errors), errors
    assert_still_serving(comfy)


def test_empty_prompt_works(comfy):
    prompt, _ = tiny_text_to_video()
    for node in nodes_of(prompt, "ModelScopeT2VTextEncode"):
        node["inputs"]["text"] = ""
    assert comfy.run(prompt)["status"]["status_str"] == "success"


def test_a_long_prompt_is_read_to_its_end(comfy):
    """Past 75 tokens the prompt goes on in further 77-token chunks (as core CLIPTextEncode), so words after the
    75th still change the video; a 500-token prompt runs."""
    def run(words):
        prompt, _ = tiny_text_to_video(seed=3)
        nodes_of(prompt, "ModelScopeT2VTextEncode")[0]["inputs"]["text"] = " ".join(words)
        entry = comfy.run(prompt)
        assert entry["status"]["status_str"] == "success"
        return np.stack([np.asarray(Image.open(comfy.output_path(i))) for i in outputs_of(entry)]).astype(np.int16)

    same_start = ["panda"] * 75
    assert np.abs(run(same_start + ["storm"] * 10) - run(same_start + ["guitar"] * 10)).max() > 2
    run(["panda"] * 500)
    assert "only the first 77 are used" not in comfy.log_text()


def test_nan_latents_are_refused(comfy):
    latent = torch.randn(1, 4, 3, 4, 6)
    latent[0, 0, 1, 2, 3] = float("nan")
    save_file({"latent_tensor": latent}, comfy.base / "input" / "nan.latent")
    prompt, _ = tiny_text_to_video()
    prompt["40"] = {"class_type": "LoadLatent", "inputs": {"latent": "nan.latent"}}
    prompt["6"]["inputs"]["samples"] = ["40", 0]
    del prompt[SAMPLER]
    assert "samples: the latent contains NaN or infinite values" in run_expecting_error(comfy, prompt)
    assert_still_serving(comfy)


def test_image_latent_into_the_sampler(comfy):
    prompt, _ = tiny_text_to_video()
    prompt["41"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 48, "height": 32, "batch_size": 1}}
    prompt[SAMPLER]["inputs"]["latent"] = ["41", 0]
    assert "latent: expected a 5-D video latent" in run_expecting_error(comfy, prompt)
    assert_still_serving(comfy)


def test_frames_of_a_size_the_vae_cannot_encode(comfy):
    prompt, _ = tiny_text_to_video()
    prompt["42"] = {"class_type": "ImageScale", "inputs": {"image": ["6", 0], "upscale_method": "nearest-exact",
                                                           "width": 50, "height": 30, "crop": "disabled"}}
    prompt["43"] = {"class_type": "ModelScopeT2VEncode", "inputs": {"vae": ["1", 2], "images": ["42", 0]}}
    prompt["44"] = {"class_type": "ModelScopeT2VDecode", "inputs": {"vae": ["1", 2], "samples": ["43", 0]}}
    prompt[SAVE]["inputs"]["images"] = ["44", 0]
    assert "images: width and height must be multiples of 8, got 50x30" in run_expecting_error(comfy, prompt)
    assert_still_serving(comfy)


# --- The output folder ------------------------------------------------------------------------------------------

def test_output_folder_that_cannot_be_created(comfy):
    (comfy.base / "output" / "blocked").write_text("a file where a folder is needed")
    prompt, _ = tiny_text_to_video(fmt="mp4")
    nodes_of(prompt, "ModelScopeT2VSaveVideo")[0]["inputs"]["filename_prefix"] = "blocked/video"
    message = run_expecting_error(comfy, prompt)
    assert "filename_prefix: could not write the mp4 into" in message and "nothing was saved" in message
    assert_still_serving(comfy)


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_full_disk_leaves_nothing_half_written(comfy, fmt):
    full = comfy.base / "output" / f"full-{fmt}"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here to fill: {mounted.stderr.strip()}")
    try:
        prompt, _ = tiny_text_to_video(width=64, height=64, length=8, fmt=fmt)
        nodes_of(prompt, "ModelScopeT2VSaveVideo")[0]["inputs"]["filename_prefix"] = f"full-{fmt}/video"
        message = run_expecting_error(comfy, prompt)
        assert "could not write" in message and "nothing was saved" in message
        assert list(full.iterdir()) == []  # neither a partial video nor some of the frames
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert_still_serving(comfy)


# --- Cancel -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["queued", "sampler", "decode"])
def test_cancel_at_every_stage(comfy, stage):
    prompt, _ = tiny_text_to_video(width=64, height=64, length=48 if stage == "decode" else 4, steps=1 if stage == "decode" else 30)
    decode = "6"

    def interrupt(message):
        node = message.get("data", {}).get("node")
        if (stage == "queued" and message["type"] == "execution_start") or \
                (message["type"] == "progress" and node == {"sampler": SAMPLER, "decode": decode}.get(stage)):
            threading.Thread(target=comfy.post, args=("/interrupt", {})).start()

    messages = comfy.run_watching(prompt, on_message=interrupt)
    assert messages[-1]["type"] == "execution_interrupted"
    assert not no_temporary_files(comfy)
    assert_still_serving(comfy)


# --- Load -------------------------------------------------------------------------------------------------------

def server_rss(comfy):
    status = open(f"/proc/{comfy.process.pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024


def test_twenty_prompts_back_to_back(comfy):
    assert comfy.run(tiny_text_to_video()[0])["status"]["status_str"] == "success"
    loads_before = loads_of(comfy)
    ids, rss = [], []
    for i in range(20):
        prompt, _ = tiny_text_to_video(fmt="mp4")
        status, body = comfy.queue(prompt)
        assert status == 200
        ids.append(body["prompt_id"])
    for prompt_id in ids:
        entry = comfy.wait(prompt_id)
        assert entry["status"]["status_str"] == "success"
        assert comfy.output_path(outputs_of(entry)[0]).stat().st_size > 0
        rss.append(server_rss(comfy))
    videos = {comfy.wait(i)["outputs"][SAVE]["images"][0]["filename"] for i in ids}
    assert len(videos) == 20
    assert loads_of(comfy) == loads_before  # the model was loaded once, before the twenty
    assert rss[-1] <= 1.05 * rss[1], f"RSS grew from {rss[1] / 2**20:.0f} MB to {rss[-1] / 2**20:.0f} MB"


def test_interrupts_between_runs_leave_later_runs_correct(comfy):
    for _ in range(3):
        prompt, _ = tiny_text_to_video(width=64, height=64, steps=30)
        comfy.run_watching(prompt, on_message=lambda m: m["type"] == "progress" and m["data"]["node"] == SAMPLER
                           and threading.Thread(target=comfy.post, args=("/interrupt", {})).start())
    prompt, seed = tiny_text_to_video(width=48, height=32, length=3, steps=3)
    entry = comfy.run(prompt)
    frames = np.stack([np.asarray(Image.open(comfy.output_path(i))) for i in outputs_of(entry)]).astype(np.int16)
    pipe = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v")
    video = t2v_core.generate(pipe, nodes_of(prompt, "ModelScopeT2VTextEncode")[0]["inputs"]["text"],
                              num_frames=3, height=32, width=48, steps=3, seed=seed)
    assert np.abs(frames - t2v_core.to_uint8(video)).max() <= 1  # one 8-bit step: see test_comfyui_nodes
