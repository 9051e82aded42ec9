"""The pack's LATENT is ComfyUI's: the VAE's own latents, scaled by the MODEL's latent format on the way into the
sampler. Against core's own SD VAE and latent format on a full-size VAE file, and core latent nodes (SaveLatent /
LoadLatent, LatentBatch, LatentUpscale, SetLatentNoiseMask) on the pack's latents through a real server."""
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import t2v_core
import tiny
from helpers import expected_frames, frames, run_latent, tiny_pipe, write_image
from workflows import LENGTH, OLD_API, SAMPLER, core_graph, pack_graph, tiny_text_to_video

LATENT_TOL = 1e-4  # fp32 latents of order 1
PIXEL_TOL = 1  # of 255
DECODE = "6"  # the shipped text_to_video's Decode node


@pytest.fixture(scope="session")
def full_size_vae(tmp_path_factory):
    """A random KL autoencoder of the published size (SD's, which core's VAE loader builds) in LDM keys."""
    path = tmp_path_factory.mktemp("full_size_vae") / "full_vae.safetensors"
    save_file(tiny.vae_ldm_state(tiny.vae(t2v_core.VAEConfig())), path)
    return path


@pytest.fixture(scope="module")
def report(comfy, full_size_vae):
    return comfy.in_process("core_latents", comfy.base / "models" / "text2video" / "tiny-t2v", full_size_vae)


def test_encode_and_decode_are_core_vae_latents_frame_by_frame(report):
    """Core's VAE of the same file encodes each frame to the pack's latents and decodes them to the pack's frames:
    the LATENT holds the VAE's own latents, as core's image latents do."""
    assert report["core_vae"] == "AutoencoderKL"
    assert report["encode"] is not None and report["encode"] <= LATENT_TOL and report["encoded_std"] > 0.1
    assert report["decode"] is not None and report["decode"] <= PIXEL_TOL and report["frames_std"] > 0.01


def test_the_loader_vae_has_every_attribute_of_core_vae(report):
    """Core's constructor sets what core's nodes read (no attribute left to a bare except in core), and the VAE
    measures and computes as the pipeline's autoencoder does: 83.7 M fp32 parameters of the SD-size VAE."""
    assert report["attributes_core_sets_and_the_pack_lacks"] == []
    assert 83e6 * 4 < report["pack_vae_size"] < 84e6 * 4
    assert report["pack_vae_dtype"] == "torch.float32"


def test_the_model_scales_latents_as_sd_latent_format(report):
    assert report["scale_factor"] == 0.18215
    assert report["process_in"] == 0.0


@pytest.mark.parametrize("node", ["LatentUpscale", "LatentUpscaleBy"])
def test_latent_upscale_treats_each_frame_as_an_image_latent(report, node):
    upscale = report["upscale"][node]
    assert upscale["shape"][:3] == [1, 4, 3] and upscale["shape"][3] > 4
    assert upscale["diff"] == 0.0


def with_saved_latent(prompt, prefix):
    prompt["62"] = {"class_type": "SaveLatent", "inputs": {"samples": [SAMPLER, 0], "filename_prefix": prefix}}
    return prompt


def decode_graph():
    """The shipped text_to_video's loader, Decode and Save nodes alone: the Decode's samples are to be wired."""
    prompt, _ = tiny_text_to_video(width=32, height=32, length=LENGTH)
    return {node: spec for node, spec in prompt.items() if spec["class_type"] in (
        "ModelScopeT2VCheckpointLoader", "ModelScopeT2VDecode", "ModelScopeT2VSaveVideo")}


def decode_latent_file(name):
    """Loader -> core LoadLatent(name) -> the pack's Decode -> PNG frames."""
    prompt = decode_graph()
    prompt["70"] = {"class_type": "LoadLatent", "inputs": {"latent": name}}
    prompt[DECODE]["inputs"]["samples"] = ["70", 0]
    return prompt


def test_saved_latents_load_back_to_the_same_video(comfy):
    """SaveLatent -> LoadLatent -> the pack's Decode gives the sampler's video again."""
    prompt = with_saved_latent(pack_graph(5, "euler", "karras"), "roundtrip/latent")
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    item = entry["outputs"]["62"]["latents"][0]
    saved = load_file(comfy.base / "output" / item["subfolder"] / item["filename"])
    assert "latent_format_version_0" in saved and saved["latent_tensor"].shape == (1, 4, LENGTH, 4, 4)
    save_file(saved, comfy.base / "input" / "roundtrip.latent")
    made = frames(comfy, pack_graph(5, "euler", "karras"))
    assert np.abs(frames(comfy, decode_latent_file("roundtrip.latent")) - made).max() == 0 and made.std() > 2


def test_latents_saved_pre_scaled_load_back_through_latent_multiply(comfy):
    """Before the LATENT convention changed, the pack's latents were pre-scaled by 0.18215 and core SaveLatent wrote
    them with its current-format marker, so LoadLatent does not unscale them: core LatentMultiply by 5.49 (its
    0.01 step; 1/0.18215 = 5.48998) gives the sampler's video again, as the README says."""
    entry = comfy.run(with_saved_latent(pack_graph(5, "euler", "karras"), "prescaled/latent"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    item = entry["outputs"]["62"]["latents"][0]
    saved = load_file(comfy.base / "output" / item["subfolder"] / item["filename"])
    saved["latent_tensor"] = saved["latent_tensor"] * 0.18215
    save_file(saved, comfy.base / "input" / "prescaled.latent")
    prompt = decode_latent_file("prescaled.latent")
    prompt["71"] = {"class_type": "LatentMultiply", "inputs": {"samples": ["70", 0], "multiplier": 5.49}}
    prompt[DECODE]["inputs"]["samples"] = ["71", 0]
    made = frames(comfy, pack_graph(5, "euler", "karras"))
    unscaled = frames(comfy, decode_latent_file("prescaled.latent"))
    assert np.abs(frames(comfy, prompt) - made).max() <= PIXEL_TOL < np.abs(unscaled - made).max()


def test_diffusers_latents_in_a_latent_file_decode_as_diffusers_decodes_them(comfy, checkpoints):
    """Latents as diffusers' pipelines hand them (``output_type="latent"``: the VAE's latents times 0.18215), saved
    in the file format of older ComfyUI (no ``latent_format_version_0``): core LoadLatent unscales them and the
    pack's Decode gives diffusers' AutoencoderKL frames of the same weights."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(checkpoints["diffusers"] / "vae").eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor  # [F, 4, h, w]
        expected = t2v_core.to_uint8(vae.decode(latents / vae.config.scaling_factor).sample.permute(0, 2, 3, 1) / 2 + 0.5)
    save_file({"latent_tensor": latents.movedim(0, 1)[None].contiguous()}, comfy.base / "input" / "diffusers.latent")
    got = frames(comfy, decode_latent_file("diffusers.latent"))
    assert got.shape == expected.shape and expected.std() > 2
    assert np.abs(got - expected.astype(np.float32)).max() <= PIXEL_TOL


def encode_graph(prompt, image, node="40"):
    """``image`` (an input file) repeated into a clip of LENGTH frames and encoded by the pack's Encode."""
    prompt[node] = {"class_type": "LoadImage", "inputs": {"image": image}}
    prompt[str(int(node) + 1)] = {"class_type": "RepeatImageBatch", "inputs": {"image": [node, 0], "amount": LENGTH}}
    prompt[str(int(node) + 2)] = {"class_type": "ModelScopeT2VEncode",
                                  "inputs": {"vae": ["1", 2], "images": [str(int(node) + 1), 0]}}
    return str(int(node) + 2)


def test_latent_batch_of_two_videos_decodes_to_both(comfy):
    write_image(comfy, "batch_a.png", seed=11)
    write_image(comfy, "batch_b.png", seed=12)
    alone = {}
    for image in ("batch_a.png", "batch_b.png"):
        prompt = decode_graph()
        prompt[DECODE]["inputs"]["samples"] = [encode_graph(prompt, image), 0]
        alone[image] = frames(comfy, prompt)
    prompt = decode_graph()
    first, second = encode_graph(prompt, "batch_a.png", "40"), encode_graph(prompt, "batch_b.png", "50")
    prompt["60"] = {"class_type": "LatentBatch", "inputs": {"samples1": [first, 0], "samples2": [second, 0]}}
    prompt[DECODE]["inputs"]["samples"] = ["60", 0]
    both = frames(comfy, prompt)
    assert both.shape[0] == 2 * LENGTH
    assert np.abs(both - np.concatenate([alone["batch_a.png"], alone["batch_b.png"]])).max() <= PIXEL_TOL


def write_half_masked_image(comfy, name):
    """An RGBA image whose left half is transparent: LoadImage's MASK is 1 there (to re-make) and 0 on the right."""
    pixels = np.random.default_rng(13).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:, :16, 3] = 0
    Image.fromarray(pixels, "RGBA").save(comfy.base / "input" / name)


def with_noise_mask(prompt, sampler_id, latent_input):
    encoded = encode_graph(prompt, "half.png")
    prompt["45"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": [encoded, 0], "mask": ["40", 1]}}
    prompt[sampler_id]["inputs"][latent_input] = ["45", 0]
    return prompt


def test_set_latent_noise_mask_acts_as_in_core_ksampler(comfy):
    """Core's inpainting mask over every frame: the pack's sampler keeps the unmasked half as core KSampler does,
    and re-makes the masked half."""
    write_half_masked_image(comfy, "half.png")
    ours = frames(comfy, with_noise_mask(pack_graph(6, "euler", "karras"), SAMPLER, "latent"))
    core = frames(comfy, with_noise_mask(core_graph(6, "euler", "karras"), "5", "latent_image"))
    assert ours.shape == (LENGTH, 32, 32, 3)
    assert np.abs(ours - core).max() <= 2
    latent = run_latent(comfy, with_saved_latent(with_noise_mask(pack_graph(6, "euler", "karras"), SAMPLER, "latent"),
                                                 "masked/latent"))
    pipe = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v")
    image = torch.from_numpy(np.asarray(Image.open(comfy.base / "input" / "half.png").convert("RGB")) / 255).float()
    encoded = pipe.encode(image[None, None], scaled=False)[:, :, 0]  # [1, C, h, w]
    kept, remade = latent[..., 2:], latent[..., :2]  # latent columns of the right and left halves
    assert (kept - encoded[..., None, :, 2:]).abs().max().item() <= 1e-3
    assert (remade - encoded[..., None, :, :2]).abs().mean().item() > 0.1


@pytest.mark.parametrize("name", ["text_to_video_api.json", "text_to_video_ksampler_api.json",
                                  "prompt_travel_api.json", "long_video_api.json", "loop_api.json"])
def test_api_workflows_saved_before_run_unchanged(comfy, name):
    """The API workflows as shipped before core CLIP, VAE and LATENT (pre-scaled latents, no crf) run as saved; the
    text_to_video one makes t2v_core's frames of the same seed."""
    prompt, seed = tiny_text_to_video(width=32, height=32, length=4, steps=2, name=name, folder=OLD_API)
    got = frames(comfy, prompt)
    assert got.shape == (4, 32, 32, 3) and got.std() > 2
    if name == "text_to_video_api.json":
        assert np.abs(got - expected_frames(tiny_pipe(comfy), prompt, seed)).max() <= 2
