import pytest
import torch

import tiny

torch.set_num_threads(max(torch.get_num_threads(), 1))


@pytest.fixture(scope="session")
def truth():
    """The tiny random networks every written checkpoint holds: our UNet and VAE, and a whole OpenCLIP model."""
    clip = tiny.openclip_model()
    return {"unet": tiny.unet(), "vae": tiny.vae(), "clip": clip, "text": tiny.text_encoder(clip)}


@pytest.fixture(scope="session")
def checkpoints(truth, tmp_path_factory):
    """Paths of the tiny checkpoint in each layout."""
    root = tmp_path_factory.mktemp("checkpoints")
    unet, vae, clip, text = truth["unet"], truth["vae"], truth["clip"], truth["text"]
    return {
        "original": tiny.write_original(root / "modelscope", unet, vae, clip),
        "zeroscope": tiny.write_original(root / "zs2_576w", unet, vae, clip, configuration=False, with_vae=False,
                                         unet_dtype=torch.float16),
        "diffusers": tiny.write_diffusers(root / "diffusers", unet, vae, text),
        "diffusers_fp16": tiny.write_diffusers(root / "diffusers_fp16", unet, vae, text, variant="fp16"),
        "diffusers_bin": tiny.write_diffusers(root / "diffusers_bin", unet, vae, text, safe=False),
        "unet_files": tiny.write_single_unet_files(root / "unet_files", unet),
    }


@pytest.fixture(scope="session")
def comfy(truth, tmp_path_factory):
    """A real ComfyUI server on 127.0.0.1 with this pack and the tiny checkpoint in models/text2video/tiny-t2v."""
    from comfyui import Server

    base = tmp_path_factory.mktemp("comfyui")
    models = base / "models"
    tiny.write_original(models / "text2video" / "tiny-t2v", truth["unet"], truth["vae"], truth["clip"])
    server = Server(base)
    yield server
    server.stop()
