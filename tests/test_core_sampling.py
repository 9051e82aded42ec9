"""The pack's sampler with a core scheduler samples as core KSampler does: the same frames from the same seed, and
the MODEL's patches (context windows, CFG functions) change both alike. Without one it keeps the reference grid."""
import json
import shutil

import numpy as np
import pytest

from helpers import frames
from workflows import SAMPLER, core_graph, pack_graph


def patched(prompt, sampler_id, node_type, inputs):
    """``prompt`` with ``node_type`` (a core MODEL patch) between the loader and the sampler."""
    prompt["80"] = {"class_type": node_type, "inputs": {"model": ["1", 0], **inputs}}
    prompt[sampler_id]["inputs"]["model"] = ["80", 0]
    return prompt


def default_of(spec):
    """The default /object_info gives for an input, or a combo's first option."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if "default" in options:
        return options["default"]
    return (kind if isinstance(kind, list) else options["options"])[0]


def context_windows(comfy):
    """ContextWindowsManual over the frames axis with windows shorter than the clip, its other inputs at defaults."""
    spec = comfy.get("/object_info/ContextWindowsManual")["ContextWindowsManual"]["input"]
    inputs = {name: default_of(options) for name, options in {**spec["required"], **spec.get("optional", {})}.items()
              if name != "model"}
    inputs.update(context_length=4, context_overlap=2, dim=2)
    return inputs


@pytest.mark.parametrize("sampler_name, scheduler", [("euler", "karras"), ("euler_ancestral", "normal"),
                                                     ("dpmpp_2m", "karras"), ("dpmpp_2m", "simple")])
def test_same_frames_as_core_ksampler(comfy, sampler_name, scheduler):
    seed = 1234
    ours = frames(comfy, pack_graph(seed, sampler_name, scheduler))
    core = frames(comfy, core_graph(seed, sampler_name, scheduler))
    assert ours.std() > 2
    assert np.abs(ours - core).max() <= 2, np.abs(ours - core).max()


def test_a_core_scheduler_differs_from_the_reference_grid(comfy):
    """The default walks the original's grid (the other tests hold it to diffusers); a scheduler is a real choice."""
    reference = frames(comfy, pack_graph(7, "euler", "modelscope"))
    karras = frames(comfy, pack_graph(7, "euler", "karras"))
    assert np.abs(reference - karras).max() > 10


@pytest.mark.parametrize("node_type", ["ContextWindowsManual", "RescaleCFG"])
def test_model_patches_apply_as_in_core_ksampler(comfy, node_type):
    inputs = context_windows(comfy) if node_type == "ContextWindowsManual" else {"multiplier": 0.7}
    seed = 99
    plain = frames(comfy, pack_graph(seed, "euler", "karras"))
    ours = frames(comfy, patched(pack_graph(seed, "euler", "karras"), SAMPLER, node_type, inputs))
    core = frames(comfy, patched(core_graph(seed, "euler", "karras"), "5", node_type, inputs))
    assert np.abs(ours - plain).max() > 10, f"{node_type} changed nothing"
    assert np.abs(ours - core).max() <= 2, np.abs(ours - core).max()


@pytest.mark.parametrize("sampler_name", ["ddim", "dpmpp_2m"])
def test_reference_grid_runs_sampling_hooks_through_core_sampling(comfy, sampler_name):
    """scheduler 'modelscope' with a MODEL carrying sampling hooks walks the reference grid in ComfyUI's sampling:
    with a hook that changes nothing (RescaleCFG at multiplier 0) the frames are the reference ones; a real
    RescaleCFG and context windows change them."""
    plain = frames(comfy, pack_graph(5, sampler_name, "modelscope"))
    neutral = frames(comfy, patched(pack_graph(5, sampler_name, "modelscope"), SAMPLER, "RescaleCFG", {"multiplier": 0.0}))
    rescaled = frames(comfy, patched(pack_graph(5, sampler_name, "modelscope"), SAMPLER, "RescaleCFG", {"multiplier": 0.7}))
    windows = frames(comfy, patched(pack_graph(5, sampler_name, "modelscope"), SAMPLER, "ContextWindowsManual",
                                    context_windows(comfy)))
    assert np.abs(neutral - plain).max() <= 2
    assert np.abs(rescaled - plain).max() > 8 and np.abs(windows - plain).max() > 8


FREEU = {"FreeU": {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}, "FreeU_V2": {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}}


@pytest.mark.parametrize("node_type", sorted(FREEU))
def test_freeu_changes_both_samplers_as_in_core_ksampler(comfy, node_type):
    """FreeU patches the UNet's skip connections (output_block_patch): it acts on the reference grid too."""
    seed, inputs = 21, FREEU[node_type]
    plain = frames(comfy, pack_graph(seed, "euler", "karras"))
    ours = frames(comfy, patched(pack_graph(seed, "euler", "karras"), SAMPLER, node_type, inputs))
    core = frames(comfy, patched(core_graph(seed, "euler", "karras"), "5", node_type, inputs))
    assert np.abs(ours - plain).max() > 10, f"{node_type} changed nothing"
    assert np.abs(ours - core).max() <= 2, np.abs(ours - core).max()
    reference = frames(comfy, pack_graph(seed, "ddim", "modelscope"))
    reference_freeu = frames(comfy, patched(pack_graph(seed, "ddim", "modelscope"), SAMPLER, node_type, inputs))
    assert np.abs(reference_freeu - reference).max() > 10


def test_perturbed_attention_guidance_acts_as_in_core_ksampler(comfy):
    """PerturbedAttentionGuidance replaces the middle block's self-attention (an attn1 replacement) in a post-CFG
    function: the frames change on both paths, and equal core KSampler's on the core path."""
    inputs = {"scale": 3.0}
    plain = frames(comfy, pack_graph(3, "euler", "karras"))
    ours = frames(comfy, patched(pack_graph(3, "euler", "karras"), SAMPLER, "PerturbedAttentionGuidance", inputs))
    core = frames(comfy, patched(core_graph(3, "euler", "karras"), "5", "PerturbedAttentionGuidance", inputs))
    assert np.abs(ours - plain).max() > 10
    assert np.abs(ours - core).max() <= 2
    reference = frames(comfy, pack_graph(3, "ddim", "modelscope"))
    reference_pag = frames(comfy, patched(pack_graph(3, "ddim", "modelscope"), SAMPLER, "PerturbedAttentionGuidance",
                                          inputs))
    assert np.abs(reference_pag - reference).max() > 10
    assert "cannot apply: attn1 replacement" not in comfy.log_text()


def test_core_sampling_follows_the_checkpoints_noise_schedule(comfy, checkpoints):
    """The host's model sampling is built from the loaded checkpoint's schedule, not from a copy of the default."""
    models = comfy.base / "models" / "text2video"
    for name, beta_end in (("tiny-diffusers", None), ("tiny-diffusers-beta", 0.02)):
        if not (models / name).exists():
            shutil.copytree(checkpoints["diffusers"], models / name)
            if beta_end is not None:
                config = models / name / "scheduler" / "scheduler_config.json"
                config.write_text(json.dumps({**json.loads(config.read_text()), "beta_end": beta_end}))

    def run(name):
        prompt = pack_graph(11, "euler", "normal")
        prompt["1"]["inputs"]["ckpt_name"] = name
        return frames(comfy, prompt)

    default = run("tiny-t2v")
    assert np.abs(run("tiny-diffusers") - default).max() <= 2
    assert np.abs(run("tiny-diffusers-beta") - default).max() > 10
