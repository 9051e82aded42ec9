"""ComfyUI's model system on the pack's MODEL: partial loading with LoRA patches applied on the fly, LoRA files
through core LoraLoaderModelOnly and the pack's LoRA loader, a LoRA of another model, and fp8 weight storage."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import t2v_core
from helpers import expected_frames, frames, tiny_pipe, write_lora
from tiny import peft_state, stable_lora_state
from workflows import SAMPLER, core_graph, nodes_of, pack_graph, tiny_text_to_video

LORA_NODE = "90"


def with_lora(prompt, sampler_id, lora_name, strength):
    """``prompt`` with core LoraLoaderModelOnly between the checkpoint loader and the sampler."""
    prompt[LORA_NODE] = {"class_type": "LoraLoaderModelOnly",
                         "inputs": {"model": ["1", 0], "lora_name": lora_name, "strength_model": strength}}
    prompt[sampler_id]["inputs"]["model"] = [LORA_NODE, 0]
    return prompt


def test_partial_load_equals_full_load_with_lora_patches_on_the_fly(comfy):
    """A third of the weights allowed on the load device: the rest stay offloaded (cast per layer by comfy.ops),
    the outputs equal the full load's, LoRA patches run on the offloaded weights without writing them, and
    unloading restores every weight."""
    report = comfy.in_process("model_system", comfy.base / "models" / "text2video" / "tiny-t2v")
    assert report["partial_vs_full"] <= 1e-6 and report["lora_partial_vs_full"] <= 1e-6
    assert report["lora_effect"] > 1e-2
    for load in (report["partial"], report["lora_partial"]):
        assert load["offloaded_modules"] > 100
        assert load["loaded_bytes"] <= report["budget_bytes"] < load["model_bytes"] / 2
    assert report["partial"]["lowvram_patch_calls"] == 0 < report["lora_partial"]["lowvram_patch_calls"]
    assert report["offloaded_weights_unpatched"] and report["weights_restored"]
    assert len(report["unapplied_warnings"]) == 1 and "cannot apply: middle_patch" in report["unapplied_warnings"][0]
    pipe = tiny_pipe(comfy)
    estimate = {int(k): v for k, v in report["memory_required"].items()}
    assert estimate == {f: t2v_core.sampling_bytes(pipe.unet.config, 2, f, 32, 32, torch.float32) for f in (16, 32)}
    assert estimate[32] == 2 * estimate[16]


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_core_lora_loader_applies_a_peft_file(comfy, strength):
    """LoraLoaderModelOnly with a diffusers/PEFT file (every layer kind, the temporal Conv3d included): the frames
    equal t2v_core.generate with the file applied at the same strength; then the plain graph gives plain frames."""
    pipe = tiny_pipe(comfy)
    lora_name = write_lora(comfy, "peft_all_layers.safetensors", peft_state(pipe.unet, seed=3))
    prompt, seed = tiny_text_to_video(width=32, height=32, length=4, steps=3)
    plain_expected = expected_frames(pipe, prompt, seed)
    t2v_core.apply_lora(pipe, comfy.base / "models" / "loras" / lora_name, strength)
    got = frames(comfy, with_lora(json.loads(json.dumps(prompt)), SAMPLER, lora_name, strength))
    assert np.abs(got - expected_frames(pipe, prompt, seed)).max() <= 2
    assert np.abs(got - plain_expected).max() > 8
    assert np.abs(frames(comfy, prompt) - plain_expected).max() <= 1


def test_lora_on_the_core_path_matches_core_ksampler(comfy):
    """With a core scheduler the pack's sampler and core KSampler see the same LoRA-patched MODEL."""
    pipe = tiny_pipe(comfy)
    lora_name = write_lora(comfy, "peft_core_path.safetensors", peft_state(pipe.unet, seed=4))
    ours = frames(comfy, with_lora(pack_graph(11, "euler", "karras"), SAMPLER, lora_name, 0.8))
    core = frames(comfy, with_lora(core_graph(11, "euler", "karras"), "5", lora_name, 0.8))
    plain = frames(comfy, pack_graph(11, "euler", "karras"))
    assert np.abs(ours - core).max() <= 2
    assert np.abs(ours - plain).max() > 8


def test_pack_lora_loader_applies_a_stable_lora_to_unet_and_text_encoder(comfy):
    """A Stable LoRA file (original ModelScope and OpenCLIP names, loralib factor shapes, text part included)
    through ModelScope T2V LoRA Loader: the frames equal t2v_core.generate with the file applied."""
    pipe = tiny_pipe(comfy)
    state = stable_lora_state(pipe.unet, pipe.text_encoder, seed=9)
    path = comfy.base / "models" / "loras" / "webui_100_lora_text_to_video.safetensors"
    save_file({k: v.half() for k, v in state.items()}, path, metadata={"stable_lora_text_to_video": "v1"})
    prompt, seed = tiny_text_to_video(width=32, height=32, length=4, steps=3)
    prompt[LORA_NODE] = {"class_type": "ModelScopeT2VLoraLoader",
                         "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": path.name,
                                    "strength_model": 0.9, "strength_clip": 0.6}}
    prompt[SAMPLER]["inputs"]["model"] = [LORA_NODE, 0]
    for node in nodes_of(prompt, "ModelScopeT2VTextEncode"):
        node["inputs"]["clip"] = [LORA_NODE, 1]
    got = frames(comfy, prompt)
    t2v_core.apply_lora(pipe, path, 0.9, text_strength=0.6)
    assert np.abs(got - expected_frames(pipe, prompt, seed)).max() <= 2


def test_a_lora_of_another_model_is_reported_in_one_warning(comfy):
    """An SD-1.5 style file through core's loader: nothing matches, the run still succeeds unchanged, and one
    warning says so (core's loaders do not tell the model which file they read)."""
    name = write_lora(comfy, "sd15_style.safetensors", {
        "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.zeros(4, 320),
        "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.zeros(320, 4),
        "lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(4.0)})
    prompt, seed = tiny_text_to_video(width=32, height=32, length=2, steps=2)
    got = frames(comfy, with_lora(prompt, SAMPLER, name, 1.0))
    assert np.abs(got - expected_frames(tiny_pipe(comfy), prompt, seed)).max() <= 1
    warnings = re.findall(r"ModelScope T2V LoRA: 0 of 3 keys matched", comfy.log_text())
    assert len(warnings) == 1


def test_fp8_weights_sample_close_to_full_precision(comfy):
    """weight_dtype fp8_e4m3fn: the frames equal t2v_core's with the same 8-bit storage, and stay the same video:
    they differ from the 16-bit weights' frames far less than those differ from another seed's."""
    prompt, seed = tiny_text_to_video(width=32, height=32, length=3, steps=3, seed=1234)
    for node in nodes_of(prompt, "ModelScopeT2VCheckpointLoader"):
        node["inputs"].update(dtype="fp32", weight_dtype="fp8_e4m3fn")
    got = frames(comfy, prompt)
    pipe = tiny_pipe(comfy, weight_dtype=torch.float8_e4m3fn)
    assert pipe.unet.conv_in.weight.dtype == torch.float8_e4m3fn
    assert np.abs(got - expected_frames(pipe, prompt, seed)).max() <= 1
    full = expected_frames(tiny_pipe(comfy), prompt, seed)
    other_seed = expected_frames(tiny_pipe(comfy), prompt, seed + 1)
    assert 0 < np.abs(got - full).mean() < 0.5 * np.abs(other_seed - full).mean()


def test_text_encoder_part_through_the_model_only_loader_is_named(comfy):
    """A Stable LoRA with a text-encoder part through core LoraLoaderModelOnly: the UNet part applies, and one
    warning counts the text-encoder keys and names the loader that applies them."""
    pipe = tiny_pipe(comfy)
    state = stable_lora_state(pipe.unet, pipe.text_encoder, seed=2)
    name = write_lora(comfy, "stable_with_text.safetensors", state)
    text_keys = sum(1 for key in state if key.startswith("resblocks."))
    prompt, seed = tiny_text_to_video(width=32, height=32, length=2, steps=2)
    got = frames(comfy, with_lora(prompt, SAMPLER, name, 1.0))
    t2v_core.apply_lora(pipe, {k: v for k, v in state.items() if not k.startswith("resblocks.")})
    assert np.abs(got - expected_frames(pipe, prompt, seed)).max() <= 2
    line = (f"ModelScope T2V LoRA: {len(state) - text_keys} of {len(state)} keys matched "
            f"this model ({text_keys} text-encoder keys need a LoRA loader that also patches the CLIP")
    assert comfy.log_text().count(line) == 1
