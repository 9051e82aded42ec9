"""The model files as they are published, one file each, under any name and in core's folders: the UNet in
models/text2video or models/diffusion_models, the text encoder in models/text_encoders (text_encoder_name), the VAE
in models/vae (vae_name). Through the real server they give the frames of the whole checkpoint folder."""
import shutil

import numpy as np
import pytest
from PIL import Image

from workflows import nodes_of, tiny_text_to_video

# layout: (whole folder, {folder: (file inside the whole folder, the name it is saved under)})
SPLIT = {
    "diffusers_fp16": ("tiny-diffusers-fp16", {
        "text2video": ("unet/diffusion_pytorch_model.fp16.safetensors", "tiny_unet.fp16.safetensors"),
        "text_encoders": ("text_encoder/model.fp16.safetensors", "tiny_text_encoder.fp16.safetensors"),
        "vae": ("vae/diffusion_pytorch_model.fp16.safetensors", "tiny_vae.fp16.safetensors")}),
    "original": ("tiny-t2v", {
        "diffusion_models": ("text2video_pytorch_model.pth", "tiny_text2video_pytorch_model.pth"),
        "text_encoders": ("open_clip_pytorch_model.bin", "tiny_open_clip_pytorch_model.bin"),
        "vae": ("VQGAN_autoencoder.pth", "tiny_VQGAN_autoencoder.pth")}),
}


def install(comfy, checkpoints, layout):
    """The whole folder in models/text2video and its three files, renamed, in their model folders."""
    folder, files = SPLIT[layout]
    models = comfy.base / "models"
    if not (models / "text2video" / folder).exists():
        shutil.copytree(checkpoints[layout], models / "text2video" / folder)
    for directory, (source, name) in files.items():
        if not (models / directory / name).exists():
            shutil.copy(models / "text2video" / folder / source, models / directory / name)
    return folder, {directory: name for directory, (_, name) in files.items()}


def frames(comfy, prompt):
    entry = comfy.run(prompt)
    files = [comfy.output_path(item) for item in entry["outputs"]["7"]["images"]]
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int16)


def test_the_loader_lists_single_published_files(comfy, checkpoints):
    install(comfy, checkpoints, "original")
    inputs = comfy.get("/object_info/ModelScopeT2VCheckpointLoader")["ModelScopeT2VCheckpointLoader"]["input"]
    assert "tiny_text2video_pytorch_model.pth" in inputs["required"]["ckpt_name"][1]["options"]
    text_encoders = inputs["optional"]["text_encoder_name"][1]["options"]
    assert text_encoders[0] == "from checkpoint" and "tiny_open_clip_pytorch_model.bin" in text_encoders
    assert "tiny_VQGAN_autoencoder.pth" in inputs["optional"]["vae_name"][1]["options"]


@pytest.mark.parametrize("layout", SPLIT)
def test_three_published_files_give_the_frames_of_the_whole_folder(comfy, checkpoints, layout):
    """The same weights in the same dtypes: the PNG frames are equal, bit for bit."""
    folder, names = install(comfy, checkpoints, layout)
    whole, seed = tiny_text_to_video(width=32, height=32, length=3, steps=2)
    nodes_of(whole, "ModelScopeT2VCheckpointLoader")[0]["inputs"]["ckpt_name"] = folder
    split, _ = tiny_text_to_video(width=32, height=32, length=3, steps=2, seed=seed)
    nodes_of(split, "ModelScopeT2VCheckpointLoader")[0]["inputs"].update(
        ckpt_name=names.get("text2video") or names["diffusion_models"], text_encoder_name=names["text_encoders"],
        vae_name=names["vae"])
    want, got = frames(comfy, whole), frames(comfy, split)
    assert got.shape == want.shape == (3, 32, 32, 3) and want.std() > 2
    assert np.abs(got - want).max() == 0
