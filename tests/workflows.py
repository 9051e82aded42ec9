"""The shipped workflows, pointed at the tiny test checkpoint and shrunk to test size."""
import json
import random
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def load(name):
    return json.loads((WORKFLOWS / name).read_text())


def nodes_of(prompt, class_type):
    return [node for node in prompt.values() if node["class_type"] == class_type]


def tiny_text_to_video(width=48, height=32, length=3, steps=3, seed=None, fmt="png", name="text_to_video_api.json"):
    """The API workflow on ``tiny-t2v``; a fresh seed by default so ComfyUI's cache never skips the run."""
    prompt = load(name)
    seed = random.randrange(2**32) if seed is None else seed
    for node in nodes_of(prompt, "ModelScopeT2VCheckpointLoader"):
        node["inputs"]["ckpt_name"] = "tiny-t2v"
    for node in nodes_of(prompt, "ModelScopeT2VEmptyLatentVideo"):
        node["inputs"].update(width=width, height=height, length=length, seed=seed)
    for node in nodes_of(prompt, "ModelScopeT2VPromptSchedule") + nodes_of(prompt, "ModelScopeT2VKeyframes"):
        node["inputs"]["length"] = length
    for node in nodes_of(prompt, "ModelScopeT2VSampler") + nodes_of(prompt, "KSampler"):
        node["inputs"]["steps"] = steps
    for node in nodes_of(prompt, "ModelScopeT2VSaveVideo"):
        node["inputs"]["format"] = fmt
    return prompt, seed
