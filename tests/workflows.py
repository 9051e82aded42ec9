"""The shipped workflows, pointed at the tiny test checkpoint and shrunk to test size.

ComfyUI lists every ``workflows/*.json`` as a template: those are the UI workflows, each with its ``<name>.jpg``
picture; their API twins (``<name>_api.json``, for POST /prompt) live in ``workflows/api/``.
"""
import json
import random
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
API = WORKFLOWS / "api"
# The workflows as shipped before the loader's CLIP and VAE became core's (typed T2V_CLIP / T2V_VAE): saved copies
# of them must keep loading and running.
OLD_WORKFLOWS = Path(__file__).resolve().parent / "data" / "workflows_t2v_types"
OLD_API = OLD_WORKFLOWS / "api"
UI_WORKFLOWS = sorted(p.name for p in WORKFLOWS.glob("*.json"))
# The templates that run offline, on the random-weight checkpoint scripts/run makes: the paper's sampler and few steps.
SMOKE_TEMPLATES = ["smoke_test.json", "fast_smoke_test.json"]
FROM_CHECKPOINT = "from checkpoint"
SAMPLER, SAVE = "5", "7"  # the shipped text_to_video's Sampler and Save Video nodes
LENGTH = 6  # frames of pack_graph and core_graph


def load(name, folder=API):
    """An API workflow of ``folder`` (``workflows/api``) by file name."""
    return json.loads((folder / name).read_text())


def load_ui(name):
    """A UI workflow (a template) by file name."""
    return json.loads((WORKFLOWS / name).read_text())


def api_twin(name):
    """The file name of a UI workflow's API twin."""
    return name.replace(".json", "_api.json")


def nodes_of(prompt, class_type):
    return [node for node in prompt.values() if node["class_type"] == class_type]


def tiny_text_to_video(width=48, height=32, length=3, steps=3, seed=None, fmt="png", name="text_to_video_api.json",
                       folder=API):
    """The API workflow on ``tiny-t2v``; a fresh seed by default so ComfyUI's cache never skips the run."""
    prompt = load(name, folder)
    seed = random.randrange(2**32) if seed is None else seed
    for node in nodes_of(prompt, "ModelScopeT2VCheckpointLoader"):
        node["inputs"].update(ckpt_name="tiny-t2v", vae_name=FROM_CHECKPOINT, text_encoder_name=FROM_CHECKPOINT)
    for node in nodes_of(prompt, "ModelScopeT2VEmptyLatentVideo"):
        node["inputs"].update(width=width, height=height, length=length, seed=seed)
    for node in nodes_of(prompt, "ModelScopeT2VPromptSchedule") + nodes_of(prompt, "ModelScopeT2VKeyframes"):
        node["inputs"]["length"] = length
    for node in nodes_of(prompt, "ModelScopeT2VSampler") + nodes_of(prompt, "KSampler"):
        node["inputs"]["steps"] = steps
    for node in nodes_of(prompt, "ModelScopeT2VSaveVideo"):
        node["inputs"]["format"] = fmt
    return prompt, seed


def pack_graph(seed, sampler_name, scheduler, steps=4):
    """The shipped workflow: the pack's noise video, drawn from ``seed``, into the pack's sampler."""
    prompt, _ = tiny_text_to_video(width=32, height=32, length=LENGTH, steps=steps, seed=seed)
    prompt[SAMPLER]["inputs"].update(sampler_name=sampler_name, scheduler=scheduler, seed=seed)
    return prompt


def core_graph(seed, sampler_name, scheduler, steps=4):
    """The shipped core KSampler workflow: an empty latent, core's noise from ``seed``."""
    prompt, _ = tiny_text_to_video(width=32, height=32, length=LENGTH, steps=steps, seed=seed,
                                   name="text_to_video_ksampler_api.json")
    prompt["5"]["inputs"].update(sampler_name=sampler_name, scheduler=scheduler, seed=seed)
    return prompt


def with_checkpoint(name):
    prompt, _ = tiny_text_to_video()
    nodes_of(prompt, "ModelScopeT2VCheckpointLoader")[0]["inputs"]["ckpt_name"] = name
    return prompt
