"""Saved workflows store widget values by position: pin the widget order of every node in the shipped UI
workflows, so an input added in the wrong place fails here, and keep the UI and API files in step."""
import json

import pytest

from workflows import WORKFLOWS, load

WIDGETS = {
    "ModelScopeT2VCheckpointLoader": ["ckpt_name", "dtype", "vae_name", "weight_dtype"],
    "ModelScopeT2VTextEncode": ["text"],
    "ModelScopeT2VEmptyLatentVideo": ["width", "height", "length", "batch_size", "seed", "control_after_generate", "fill"],
    "ModelScopeT2VSampler": ["steps", "cfg", "sampler_name", "denoise", "seed", "control_after_generate", "eta",
                             "scheduler"],
    "ModelScopeT2VDecode": ["tiled"],
    "ModelScopeT2VEncode": ["tiled"],
    "ModelScopeT2VSaveVideo": ["fps", "filename_prefix", "format"],
    "ModelScopeT2VLoraLoader": ["lora_name", "strength_model", "strength_clip"],
    "ModelScopeT2VPromptSchedule": ["text", "length"],
    "ModelScopeT2VKeyframes": ["length", "frames", "strength"],
}
UI_WORKFLOWS = sorted(p.name for p in WORKFLOWS.glob("*.json") if not p.name.endswith("_api.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def widget_names(info):
    """The widgets the frontend makes for a node, in order: widget inputs, required then optional, each seed
    followed by its control_after_generate."""
    names = []
    for group in ("required", "optional"):
        for name, (kind, *options) in info["input"].get(group, {}).items():
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                names.append(name)
                if options and options[0].get("control_after_generate"):
                    names.append("control_after_generate")
    return names


def test_pinned_widget_order_matches_the_nodes(comfy):
    info = comfy.get("/object_info")
    for node_type, names in WIDGETS.items():
        assert widget_names(info[node_type]) == names, f"{node_type}: widgets moved; saved workflows would break"


def test_ui_workflows_exist():
    assert {"text_to_video.json", "text_to_video_ksampler.json", "video_to_video_upscale.json",
            "prompt_travel.json", "image_to_video.json", "extend_video.json", "long_video.json",
            "loop.json"} <= set(UI_WORKFLOWS)


@pytest.mark.parametrize("name", UI_WORKFLOWS)
def test_ui_workflow_matches_its_api_twin(name):
    ui = json.loads((WORKFLOWS / name).read_text())
    api = load(name.replace(".json", "_api.json"))
    ours = [node for node in ui["nodes"] if node["type"].startswith("ModelScopeT2V")]
    assert ours
    for node in ours:
        names = WIDGETS[node["type"]]
        values = node.get("widgets_values") or []
        assert len(values) == len(names), f"{name}: node {node['id']} {node['type']} has {values}, expected {names}"
        twin = api[str(node["id"])]
        assert twin["class_type"] == node["type"]
        for widget, value in zip(names, values):
            if widget != "control_after_generate":
                assert twin["inputs"][widget] == value, f"{name}: node {node['id']} {widget}"
