"""Checkpoints that cannot be used are refused with an error naming the file and what was expected."""
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import t2v_core
from helpers import RunsCode
from t2v_core import CheckpointError
from tiny import sd15_checkpoint


def copy_of(checkpoints, layout, tmp_path):
    return shutil.copytree(checkpoints[layout], tmp_path / layout)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere.*no such file or folder"):
        t2v_core.load_pipeline(tmp_path / "nowhere")


def test_folder_that_is_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"expected either the ModelScope files .*text2video_pytorch_model.pth"):
        t2v_core.load_pipeline(tmp_path)


def test_missing_file_in_original_folder(checkpoints, tmp_path):
    folder = copy_of(checkpoints, "original", tmp_path)
    (folder / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match=r"open_clip_pytorch_model.bin: file not found"):
        t2v_core.load_pipeline(folder)


def test_truncated_safetensors(checkpoints, tmp_path):
    folder = copy_of(checkpoints, "diffusers", tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model.safetensors: not a readable safetensors file \(truncated"):
        t2v_core.load_pipeline(folder)


def test_truncated_pickle(checkpoints, tmp_path):
    folder = copy_of(checkpoints, "original", tmp_path)
    weights = folder / "text2video_pytorch_model.pth"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"text2video_pytorch_model.pth: not a readable torch checkpoint \(truncated"):
        t2v_core.load_pipeline(folder)


def test_sd15_image_checkpoint(truth, tmp_path):
    path = tmp_path / "v1-5-pruned-emaonly.safetensors"
    save_file(sd15_checkpoint(truth), path)
    with pytest.raises(CheckpointError, match=r"v1-5-pruned-emaonly.safetensors: this is an image UNet .*not a ModelScope text-to-video UNet"):
        t2v_core.load_pipeline(path)


def test_zeroscope_folder_without_vae(checkpoints):
    with pytest.raises(CheckpointError, match=r"zs2_576w: has no VQGAN_autoencoder.pth\. Zeroscope v2 folders ship only"):
        t2v_core.load_pipeline(checkpoints["zeroscope"])


def test_pickle_that_would_run_code_is_refused_without_running(checkpoints, tmp_path):
    folder = copy_of(checkpoints, "original", tmp_path)
    marker = tmp_path / "code-ran"
    state = torch.load(folder / "text2video_pytorch_model.pth")
    state["payload"] = RunsCode(marker)
    torch.save(state, folder / "text2video_pytorch_model.pth")
    with pytest.raises(CheckpointError, match=r"text2video_pytorch_model.pth: refused to load: .*could run code"):
        t2v_core.load_pipeline(folder)
    assert not marker.exists()
    torch.load(folder / "text2video_pytorch_model.pth", weights_only=False)  # the payload is real:
    assert marker.exists()  # an unsafe load does run it


def test_missing_and_unexpected_keys_are_named(checkpoints, tmp_path):
    folder = copy_of(checkpoints, "diffusers", tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["mid_block.temp_attentions.0.proj_out.bias"]
    state["mid_block.extra_layer.weight"] = torch.zeros(3)
    save_file(state, weights)
    with pytest.raises(CheckpointError) as error:
        t2v_core.load_pipeline(folder)
    message = str(error.value)
    assert "diffusion_pytorch_model.safetensors: not the layout expected" in message
    assert "1 missing keys (mid_block.temp_attentions.0.proj_out.bias)" in message
    assert "1 unexpected keys (mid_block.extra_layer.weight)" in message


def test_wrong_shapes_are_named(checkpoints, tmp_path):
    folder = copy_of(checkpoints, "diffusers", tmp_path)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["decoder.conv_out.bias"] = torch.zeros(5)
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"decoder.conv_out.bias is \(5,\), expected \(3,\)"):
        t2v_core.load_pipeline(folder)


def test_unknown_file_type(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match=r"model.gguf: unknown checkpoint type; expected .safetensors"):
        t2v_core.load_pipeline(path)


def test_state_dict_of_other_objects(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match=r"list.pth: expected a dictionary of tensors"):
        t2v_core.load_unet(path)
    assert os.path.exists(path)
