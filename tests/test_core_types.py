"""The loader's CLIP and VAE are ComfyUI's own types: core nodes that take them (CLIPTextEncode, CLIPSetLastLayer,
LoraLoader, VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled, the device selection nodes) give what the pack's
nodes give, in-process and through a real server."""
import numpy as np
import pytest
from safetensors.torch import save_file

from helpers import frames
from tiny import stable_lora_state
from workflows import tiny_text_to_video

TEXT_TOL = 1e-4  # fp32 contexts
PIXEL_TOL = 1  # of 255


@pytest.fixture(scope="session")
def text_lora_dir(tmp_path_factory, truth):
    """A Stable LoRA file (Text-To-Video-Finetuning's layout) with a UNet part and a text part for the tiny model."""
    folder = tmp_path_factory.mktemp("core_types_loras")
    save_file(stable_lora_state(truth["unet"], truth["text"], seed=11), folder / "text_part.safetensors",
              metadata={"stable_lora_text_to_video": "v1"})
    return folder


@pytest.fixture(scope="module")
def report(comfy, text_lora_dir):
    return comfy.in_process("core_types", comfy.base / "models" / "text2video" / "tiny-t2v", text_lora_dir)


def test_core_clip_text_encode_equals_the_pack_text_encode(report):
    for name, found in report["text"].items():
        assert found is not None and found <= TEXT_TOL, (name, found)


def test_clip_set_last_layer_reads_the_blocks_it_names(report):
    """-2 is the model's own layer; -3 an earlier block; -1, a block the model never loads, is refused by name."""
    assert report["layers"]["-2"] <= TEXT_TOL
    assert report["layers"]["-3"] > 1e-3
    assert "clip: CLIP Set Last Layer's stop_at_clip_layer -1" in report["layer_errors"]["-1"]


def test_core_lora_loader_patches_the_text_encoder_as_the_pack_loader_does(report):
    lora = report["lora"]
    assert lora["clip_type"] == "TextEncoder"
    assert lora["clip_diff"] <= TEXT_TOL
    assert lora["clip_moved"] > 1e-3
    assert lora["unet_patches"][0] == lora["unet_patches"][1] > 0


def test_core_vae_decode_and_tiled_equal_the_pack_decode_every_frame(report):
    decode = report["decode"]
    assert decode["frames"][0] == 2 * 3  # two videos of three frames, all decoded
    assert decode["vae_decode"] <= PIXEL_TOL
    assert decode["vae_decode_tiled"] <= 2 * PIXEL_TOL
    assert decode["pack_tiled"] <= 2 * PIXEL_TOL


def test_core_vae_encode_into_the_pack_sampler_gives_the_pack_encode(report):
    encode = report["encode"]
    assert encode["latents"][:3] == [1, 4, 3]  # the frames of one video
    assert encode["vae_encode"] <= 1e-5 and encode["vae_encode_tiled"] <= 1e-4
    assert encode["sampled"] <= 1e-4


def test_device_selection_nodes_move_them(report, comfy):
    if report["devices"] is None:
        pytest.skip(f"ComfyUI {comfy.host.version} has no device selection nodes")
    assert report["devices"]["clip_device"] == "cpu"
    assert report["devices"]["clip_diff"] <= TEXT_TOL and report["devices"]["vae_diff"] <= 1e-6


@pytest.mark.parametrize("case, message", [
    ("pack_decode_other_vae", "vae: expected the VAE of the ModelScope T2V checkpoint loader"),
    ("vae_decode_16_channels", "samples: a latent of 16 channels"),
    ("vae_decode_image_latent", "samples: expected a 5-D video latent"),
    ("vae_encode_odd_size", "pixels: width and height must be multiples of 8"),
])
def test_wrong_vae_or_latent_is_refused_by_name(report, case, message):
    assert message in report["errors"][case]


def core_nodes_graph(length=4, seed=3):
    """text_to_video with core CLIPTextEncode for both prompts and core VAEDecode for the frames."""
    prompt, _ = tiny_text_to_video(width=32, height=32, length=length, seed=seed)
    for node in ("2", "3"):
        prompt[node]["class_type"] = "CLIPTextEncode"
    prompt["6"] = {"class_type": "VAEDecode", "inputs": {"vae": ["1", 2], "samples": ["5", 0]}}
    return prompt


def test_a_graph_of_core_text_and_vae_nodes_makes_the_pack_graph_frames(comfy):
    """Queued through the HTTP API: ComfyUI accepts the links (CLIP and VAE types) and the frames are the same."""
    core = frames(comfy, core_nodes_graph())
    pack, _ = tiny_text_to_video(width=32, height=32, length=4, seed=3)
    ours = frames(comfy, pack)
    assert core.shape == ours.shape and ours.std() > 2
    assert np.abs(core - ours).max() <= PIXEL_TOL

