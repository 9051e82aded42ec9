"""Few-step sampling and core's sampling features on the pack's one sampling path.

- lcm on the original's grid is diffusers' LCMScheduler (timestep_scaling 4.0), tested as MCM's ModelScope LoRAs are
  used: an adapter in MCM's exact PEFT layout through core LoraLoaderModelOnly, 4 steps, cfg 1.
- Core EasyCache (a DIFFUSION_MODEL wrapper) takes effect on the pack's sampler as on core KSampler.
- A LATENT that is not the noise video is noised from seed at denoise 1.0, as core KSampler does.
"""
import re
import shutil

import numpy as np
import pytest
import torch

import t2v_core
from helpers import frames
from workflows import SAMPLER, nodes_of, tiny_text_to_video

# MCM's LoRA targets (yhZhai/mcm main.py): these layer names everywhere in the UNet, except the temporal convs.
MCM_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
               "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
WIDTH, HEIGHT, LENGTH = 32, 32, 3


@pytest.fixture(scope="module")
def mcm_adapter(checkpoints, tmp_path_factory):
    """A PEFT adapter folder as MCM publishes one (adapter_config.json + adapter_model.safetensors, r = alpha), with
    random factors on the tiny diffusers UNet."""
    from diffusers import UNet3DConditionModel
    from peft import LoraConfig, get_peft_model

    unet = UNet3DConditionModel.from_pretrained(f"{checkpoints['diffusers']}/unet")
    targets = [name for name, _ in unet.named_modules()
               if name.endswith(MCM_TARGETS) and not ("temp" in name and "conv" in name)]
    model = get_peft_model(unet, LoraConfig(r=4, lora_alpha=4, target_modules=targets))
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    folder = tmp_path_factory.mktemp("mcm")
    model.save_pretrained(folder)
    return folder


def lcm_reference(checkpoints, adapter, prompt, seed, steps):
    """diffusers' TextToVideoSDPipeline with the adapter merged by PEFT and MCM's scheduler, called as MCM's demo
    calls it, with a CPU generator seeded with ``seed`` (the noise video of that seed, then each step's noise):
    [F, H, W, 3] in 0..1."""
    from diffusers import LCMScheduler, TextToVideoSDPipeline
    from peft import PeftModel

    pipe = TextToVideoSDPipeline.from_pretrained(checkpoints["diffusers"])
    pipe.set_progress_bar_config(disable=True)
    pipe.unet = PeftModel.from_pretrained(pipe.unet, adapter).merge_and_unload()
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config, timestep_scaling=4.0)
    return pipe(prompt, num_frames=LENGTH, height=HEIGHT, width=WIDTH, num_inference_steps=steps, guidance_scale=1.0,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="np").frames[0]


def positive_text(prompt):
    return prompt[prompt[SAMPLER]["inputs"]["positive"][0]]["inputs"]["text"]


@pytest.mark.parametrize("steps", [4, 1])
def test_mcm_lora_with_lcm_equals_diffusers_lcm_scheduler(comfy, mcm_adapter, checkpoints, steps, record_property):
    """The shipped fast workflow: core LoraLoaderModelOnly with the adapter file, then the pack's sampler (lcm,
    modelscope, cfg 1), against diffusers with the same adapter: within 2/255 (frames are 8-bit PNGs)."""
    shutil.copy(mcm_adapter / "adapter_model.safetensors", comfy.base / "models" / "loras" / "mcm_tiny.safetensors")
    prompt, seed = tiny_text_to_video(width=WIDTH, height=HEIGHT, length=LENGTH, steps=steps,
                                      name="fast_text_to_video_api.json")
    (lora_id, lora), = ((k, v) for k, v in prompt.items() if v["class_type"] == "LoraLoaderModelOnly")
    lora["inputs"]["lora_name"] = "mcm_tiny.safetensors"
    prompt[SAMPLER]["inputs"]["seed"] = seed
    assert prompt[SAMPLER]["inputs"]["model"] == [lora_id, 0]
    assert {k: prompt[SAMPLER]["inputs"][k] for k in ("sampler_name", "scheduler", "cfg")} == \
        {"sampler_name": "lcm", "scheduler": "modelscope", "cfg": 1.0}
    log_start = len(comfy.log_text())
    ours = frames(comfy, prompt)
    expected = lcm_reference(checkpoints, mcm_adapter, positive_text(prompt), seed, steps) * 255
    record_property("max_abs_diff_in_255ths", float(np.abs(ours - expected).max()))
    assert np.abs(ours - expected).max() <= 2, np.abs(ours - expected).max()
    assert "keys matched" not in comfy.log_text()[log_start:]  # every key of the adapter found its layer
    prompt[SAMPLER]["inputs"]["model"] = lora["inputs"]["model"]
    assert np.abs(ours - frames(comfy, prompt)).max() > 10, "the LoRA changed nothing"


@pytest.mark.parametrize("sampler_name, cfg", [("euler", 9.0), ("euler_ancestral", 9.0), ("dpmpp_2m", 9.0),
                                               ("lcm", 1.0)])
def test_generate_gives_the_nodes_frames(comfy, sampler_name, cfg):
    """t2v_core.generate (the CLI's sampling, t2v_core's own samplers) and the node's sampling through ComfyUI give
    the same frames on the original's grid for the same seed, fresh noise included (a CPU generator seeded with the
    seed: the noise video, then each step's noise); ddim is held to generate in test_comfyui_nodes. Within one 8-bit
    step and one more for the host's rounding."""
    prompt, seed = tiny_text_to_video(width=WIDTH, height=HEIGHT, length=LENGTH, steps=3)
    prompt[SAMPLER]["inputs"].update(sampler_name=sampler_name, scheduler="modelscope", cfg=cfg, seed=seed)
    ours = frames(comfy, prompt)
    pipe = t2v_core.load_pipeline(comfy.base / "models" / "text2video" / "tiny-t2v")
    negative = prompt[prompt[SAMPLER]["inputs"]["negative"][0]]["inputs"]["text"]
    video = t2v_core.generate(pipe, positive_text(prompt), negative_prompt=negative, num_frames=LENGTH, height=HEIGHT,
                              width=WIDTH, steps=3, guidance_scale=cfg, seed=seed, sampler=sampler_name)
    expected = t2v_core.to_uint8(video).astype(np.float32)
    assert ours.std() > 2
    assert np.abs(ours - expected).max() <= 2, np.abs(ours - expected).max()


def easycache(prompt, sampler_id):
    prompt["81"] = {"class_type": "EasyCache", "inputs": {"model": list(prompt[sampler_id]["inputs"]["model"]),
                                                          "reuse_threshold": 0.5, "start_percent": 0.0,
                                                          "end_percent": 1.0, "verbose": False}}
    prompt[sampler_id]["inputs"]["model"] = ["81", 0]
    return prompt


def skipped_steps(comfy):
    return [int(n) for n in re.findall(r"EasyCache - skipped (\d+)/\d+ steps", comfy.log_text())]


def test_easycache_takes_effect_as_under_core_ksampler(comfy, record_property):
    """Core EasyCache wraps the diffusion model (DIFFUSION_MODEL wrappers): it skips steps under the pack's sampler,
    and the frames equal core KSampler's with the same EasyCache (same noise, sampler, scheduler and seed)."""
    seed = 77
    ours, _ = tiny_text_to_video(width=WIDTH, height=HEIGHT, length=LENGTH, steps=8, seed=seed)
    ours[SAMPLER]["inputs"].update(sampler_name="euler", scheduler="normal", seed=seed)
    plain = frames(comfy, ours)
    before = len(skipped_steps(comfy))
    cached = frames(comfy, easycache(ours, SAMPLER))
    assert skipped_steps(comfy)[before:] and skipped_steps(comfy)[-1] > 0, "EasyCache skipped no step"
    core, _ = tiny_text_to_video(width=WIDTH, height=HEIGHT, length=LENGTH, steps=8, seed=seed,
                                 name="text_to_video_ksampler_api.json")
    core["5"]["inputs"].update(sampler_name="euler", scheduler="normal", seed=seed)
    core_cached = frames(comfy, easycache(core, "5"))
    record_property("skipped_steps", skipped_steps(comfy)[before])
    assert np.abs(cached - plain).max() > 2
    assert np.abs(cached - core_cached).max() <= 2, np.abs(cached - core_cached).max()


def test_the_noise_video_below_denoise_1_is_refused(comfy):
    prompt, _ = tiny_text_to_video(width=WIDTH, height=HEIGHT, length=LENGTH, steps=3)
    prompt[SAMPLER]["inputs"]["denoise"] = 0.5
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "error"
    message = next(data["exception_message"] for kind, data in entry["status"]["messages"] if kind == "execution_error")
    assert message.startswith("latent: the noise video is noise, not a video to change at denoise 0.5")


def test_a_latent_that_is_not_the_noise_video_is_noised_from_seed(comfy):
    """At denoise 1.0 a zero latent (fill 'zeros', as core's empty latents) gets noise drawn from seed, as core
    KSampler gives it: the same bits as the noise video of that seed, so the same frames."""
    seed = 5
    prompt, _ = tiny_text_to_video(width=WIDTH, height=HEIGHT, length=LENGTH, steps=3, seed=seed)
    prompt[SAMPLER]["inputs"]["seed"] = seed
    reference = frames(comfy, prompt)
    for node in nodes_of(prompt, "ModelScopeT2VEmptyLatentVideo"):
        node["inputs"]["fill"] = "zeros"
    assert np.abs(frames(comfy, prompt) - reference).max() <= 2


def test_multi_gpu_clone_gives_the_same_frames_and_control_is_refused(comfy):
    """Core's multi-GPU clone reloads the MODEL through the loader's cached_patcher_init: weights of its own, equal
    to the original's, and the same latents under the pack's sampler and core's sampling (CPU: no second device
    here, the clone is what each extra GPU would get). A ControlNet in the conditioning is refused, never dropped.
    Every core sampler runs on the original's grid."""
    report = comfy.in_process("one_path", comfy.base / "models" / "text2video" / "tiny-t2v")
    assert report["samplers_failed"] == {} and report["samplers_run"] > 30
    if comfy.host.version.startswith("0.3."):
        assert report["clone"] is None  # ComfyUI 0.3.75 has no multi-GPU clones
    else:
        clone = report["clone"]
        assert clone["own_weights"] and clone["same_weights"]
        assert clone["pack_diff"] == 0.0 and clone["core_diff"] == 0.0, clone
    for where, message in report["control_errors"].items():
        assert "ControlNet" in message and "positive" in message, (where, message)
    assert set(report["control_errors"]) == {"sampler", "unet"}


def test_multigpu_cfg_split_runs_through_the_pack_sampler(comfy):
    """Core's MultiGPU CFG Split on the pack's MODEL, then the pack's sampler: the frames of the plain MODEL (this
    machine has one device, so the work stays on it)."""
    if "MultiGPU_WorkUnits" not in comfy.get("/object_info"):
        pytest.skip(f"ComfyUI {comfy.host.version} has no MultiGPU CFG Split node")
    prompt, _ = tiny_text_to_video(width=WIDTH, height=HEIGHT, length=LENGTH, steps=3)
    plain = frames(comfy, prompt)
    prompt["82"] = {"class_type": "MultiGPU_WorkUnits", "inputs": {"model": ["1", 0], "max_gpus": 2}}
    prompt[SAMPLER]["inputs"]["model"] = ["82", 0]
    assert np.abs(frames(comfy, prompt) - plain).max() == 0
