"""ComfyUI's prompt syntax in ModelScope T2V Text Encode, against core CLIPLoader + CLIPTextEncode on the same
full-size random OpenCLIP ViT-H text tower (354 M parameters), stored in fp16 (0.7 GB of disk, not 1.4) and run in
fp32."""
import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import tiny
from comfyui import Server
from helpers import read_keys

TOL = 1e-4


def random_openclip_text_state(seed=0):
    """The published OpenCLIP ViT-H text tower's keys and shapes (tests/data/spec), random weights at the scale
    of a trained tower: matrices N(0, 0.02), LayerNorms near 1, small biases."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in read_keys("text_encoder_keys_openclip.txt").items():
        if key == "logit_scale":
            state[key] = torch.tensor(4.6052)
        elif "ln_" in key and key.endswith(".weight"):
            state[key] = 1 + 0.05 * torch.randn(shape, generator=g)
        elif key.endswith("bias"):
            state[key] = 0.01 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.02 * torch.randn(shape, generator=g)
    return state


@pytest.fixture(scope="session")
def full_text_files(tmp_path_factory):
    """A checkpoint folder (tiny UNet reading 1024-wide context, tiny VAE, the full-size text tower) and the text
    tower's file for core's CLIPLoader, and an embeddings folder: a 1024-wide embedding and a 768-wide one."""
    root = tmp_path_factory.mktemp("full_text")
    unet = tiny.unet(dataclasses.replace(tiny.UNET, context_dim=1024))
    folder = tiny.write_original(root / "t2v-full-text", unet, tiny.vae(), tiny.openclip_model())
    state = {key: value.half() for key, value in random_openclip_text_state().items()}
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    embeddings = root / "embeddings"
    embeddings.mkdir()
    g = torch.Generator().manual_seed(1)
    save_file({"emb_params": 0.02 * torch.randn(2, 1024, generator=g)}, embeddings / "t2v_style.safetensors")
    save_file({"emb_params": 0.02 * torch.randn(1, 768, generator=g)}, embeddings / "sd15_style.safetensors")
    return folder, folder / "open_clip_pytorch_model.bin", embeddings


def fp32_text_server(host, base, folder, clip_file):
    """A server in ``base`` with the checkpoint as models/text2video/t2v-full-text and its text tower as
    models/text_encoders/openclip_h.bin, text encoders in fp32 (core's default on CPU is fp16)."""
    for name, target in (("models/text2video/t2v-full-text", folder), ("models/text_encoders/openclip_h.bin", clip_file)):
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).symlink_to(target)
    return Server(host, base, extra_args=["--fp32-text-enc"])


@pytest.mark.slow
def test_prompt_syntax_equals_core_clip_text_encode(comfy, full_text_files):
    """Plain, weighted, nested, escaped, embedding and over-long prompts: the pack's context equals core's within
    1e-4 (fp32), shape included (77 tokens per chunk), at core clip layers -3, -12 and -24 too (CLIPSetLastLayer);
    missing and 768-wide embeddings, and core's CLIP in the pack's Text Encode, are refused by name."""
    folder, clip_file, embeddings = full_text_files
    report = comfy.in_process("prompt_syntax", folder, clip_file, embeddings, timeout=900)
    assert report["core_dtype"] == "torch.float32"
    for name, found in report["prompts"].items():
        assert found["shape"] == found["core_shape"], name
        assert found["max_diff"] <= TOL, (name, found["max_diff"])
    assert report["prompts"]["long"]["shape"][1] == 2 * 77
    assert report["prompts"]["weighted"]["differs_from_plain"] > 1e-2
    assert "embedding:not_there not found in models/embeddings" in report["errors"]["not_there"]
    assert "embedding:sd15_style is 768 wide" in report["errors"]["sd15_style"]
    for layer, found in report["layers"].items():  # CLIPSetLastLayer's clip_layer
        assert found <= TOL, (layer, found)
    assert "clip: expected the text encoder of the ModelScope T2V checkpoint loader" in report["errors"]["core_clip"]


@pytest.mark.slow
def test_core_clip_text_encode_drives_the_pack_sampler(comfy, full_text_files, tmp_path):
    """CONDITIONING from core CLIPLoader (stable_diffusion) + CLIPTextEncode on the checkpoint's OpenCLIP file,
    fp32, into the pack's sampler: the frames of the pack's own Text Encode, on both schedulers."""
    from helpers import frames
    from workflows import tiny_text_to_video

    folder, clip_file, _ = full_text_files
    server = fp32_text_server(comfy.host, tmp_path, folder, clip_file)
    try:
        for scheduler, sampler_name in (("modelscope", "ddim"), ("karras", "euler")):
            prompt, _ = tiny_text_to_video(width=32, height=32, length=3, steps=3, seed=5)
            prompt["1"]["inputs"]["ckpt_name"] = "t2v-full-text"
            prompt["5"]["inputs"].update(scheduler=scheduler, sampler_name=sampler_name)
            ours = frames(server, prompt)
            prompt["80"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": "openclip_h.bin", "type": "stable_diffusion"}}
            for node_id in ("2", "3"):
                prompt[node_id] = {"class_type": "CLIPTextEncode",
                                   "inputs": {"clip": ["80", 0], "text": prompt[node_id]["inputs"]["text"]}}
            core = frames(server, prompt)
            assert np.abs(core - ours).max() <= 2, scheduler
    finally:
        server.stop()


@pytest.mark.slow
def test_core_lora_loader_patches_the_pack_model_and_a_core_clip(comfy, full_text_files, tmp_path):
    """Core LoraLoader with the pack's MODEL and core CLIPLoader's CLIP: the UNet part goes to the MODEL (as
    LoraLoaderModelOnly does), the text-encoder part (diffusers names) to core's CLIP, and nothing is reported as
    unmatched."""
    from helpers import frames
    from tiny import peft_state
    from workflows import tiny_text_to_video

    import t2v_core

    folder, clip_file, _ = full_text_files
    g = torch.Generator().manual_seed(3)
    lora = peft_state(t2v_core.load_pipeline(folder).unet, seed=8)
    for layer in range(4):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            module = f"text_encoder.text_model.encoder.layers.{layer}.self_attn.{proj}"
            lora[f"{module}.lora_A.weight"] = 0.2 * torch.randn(4, 1024, generator=g)
            lora[f"{module}.lora_B.weight"] = 0.2 * torch.randn(1024, 4, generator=g)
    (tmp_path / "models" / "loras").mkdir(parents=True)
    save_file(lora, tmp_path / "models" / "loras" / "unet_and_text.safetensors")
    server = fp32_text_server(comfy.host, tmp_path, folder, clip_file)

    def graph(loader, strength_clip=None):
        prompt, _ = tiny_text_to_video(width=32, height=32, length=3, steps=3, seed=6)
        prompt["1"]["inputs"]["ckpt_name"] = "t2v-full-text"
        prompt["80"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": "openclip_h.bin", "type": "stable_diffusion"}}
        inputs = {"model": ["1", 0], "lora_name": "unet_and_text.safetensors", "strength_model": 1.0}
        clip = ["80", 0]
        if loader == "LoraLoader":
            inputs.update(clip=["80", 0], strength_clip=strength_clip)
            clip = ["90", 1]
        prompt["90"] = {"class_type": loader, "inputs": inputs}
        prompt["5"]["inputs"]["model"] = ["90", 0]
        for node_id in ("2", "3"):
            prompt[node_id] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": prompt[node_id]["inputs"]["text"]}}
        return prompt

    try:
        model_only = frames(server, graph("LoraLoaderModelOnly"))
        unet_only = frames(server, graph("LoraLoader", strength_clip=0.0))
        both = frames(server, graph("LoraLoader", strength_clip=1.0))
        log = server.log_text()
    finally:
        server.stop()
    assert np.abs(unet_only - model_only).max() <= 1
    assert np.abs(both - unet_only).max() > 8
    assert log.count("ModelScope T2V LoRA:") == 1  # the model-only run's text keys
    assert "lora key not loaded" not in log and "NOT LOADED" not in log
