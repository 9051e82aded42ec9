"""Saved workflows store widget values by position: pin the widget order of every node in the shipped UI
workflows, so an input added in the wrong place fails here, and keep the UI and API files in step."""
import io

import pytest
from PIL import Image

from comfyui import PACK_NAME
from scripts.main_job import SMOKE
from workflows import API, FROM_CHECKPOINT, SMOKE_TEMPLATES, UI_WORKFLOWS, api_twin, load, load_ui, nodes_of

WIDGETS = {
    "ModelScopeT2VCheckpointLoader": ["ckpt_name", "dtype", "vae_name", "weight_dtype", "text_encoder_name"],
    "ModelScopeT2VTextEncode": ["text"],
    "ModelScopeT2VEmptyLatentVideo": ["width", "height", "length", "batch_size", "seed", "control_after_generate", "fill"],
    "ModelScopeT2VSampler": ["steps", "cfg", "sampler_name", "denoise", "seed", "control_after_generate", "eta",
                             "scheduler"],
    "ModelScopeT2VDecode": ["tiled"],
    "ModelScopeT2VEncode": ["tiled"],
    "ModelScopeT2VSaveVideo": ["fps", "filename_prefix", "format", "crf", "codec", "videos"],
    "ModelScopeT2VPreviewVideo": ["fps", "format", "videos"],
    "ModelScopeT2VLoraLoader": ["lora_name", "strength_model", "strength_clip"],
    "ModelScopeT2VPromptSchedule": ["text", "length"],
    "ModelScopeT2VKeyframes": ["length", "frames", "strength"],
}
MAX_PICTURE_BYTES = 60_000  # scripts/template_pictures.py keeps each picture within it
PUBLISHED_FILE_NAMES = {"diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors",
                        "text2video_pytorch_model.pth", "open_clip_pytorch_model.bin", "VQGAN_autoencoder.pth",
                        "adapter_model.safetensors"}  # the last: MCM's LoRAs, PEFT adapters
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
    ui = load_ui(name)
    api = load(api_twin(name))
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


def test_every_template_has_its_api_twin_and_every_twin_its_template():
    assert sorted(api_twin(name) for name in UI_WORKFLOWS) == sorted(p.name for p in API.glob("*.json"))


def test_the_template_browser_lists_the_ui_workflows_with_their_pictures(comfy):
    """ComfyUI lists a pack's workflows/*.json as templates and asks for <name>.jpg beside each."""
    listed = comfy.get("/workflow_templates")[PACK_NAME]
    assert sorted(listed) == sorted(name.removesuffix(".json") for name in UI_WORKFLOWS)
    for name in listed:
        picture = comfy.get(f"/api/workflow_templates/{PACK_NAME}/{name}.jpg")
        assert picture[:3] == b"\xff\xd8\xff" and 5_000 < len(picture) <= MAX_PICTURE_BYTES, name
        assert Image.open(io.BytesIO(picture)).width >= 400, name


# The loader's file inputs and the model folders each may be read from (nodes/paths.py, nodes/loader.py).
LOADER_FOLDERS = {"ckpt_name": {"text2video", "diffusion_models"}, "vae_name": {"vae"},
                  "text_encoder_name": {"text_encoders"}, "lora_name": {"loras"}}
# The file widgets of the loaders the shipped workflows use (core LoraLoaderModelOnly's: lora_name, strength_model).
LOADER_WIDGETS = {"ModelScopeT2VCheckpointLoader": WIDGETS["ModelScopeT2VCheckpointLoader"],
                  "LoraLoaderModelOnly": ["lora_name", "strength_model"]}
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".onnx", ".gguf")  # the frontend's list


@pytest.mark.parametrize("name", UI_WORKFLOWS)
def test_ui_workflow_declares_the_model_files_it_names(name):
    """Every loader value that the frontend checks (a file name with a model extension) is in the workflow's
    ``models`` list with the https URL of the published file and the folder the loader reads it from; only the
    smoke test's checkpoint, made by scripts/run, is not downloadable."""
    ui = load_ui(name)
    declared = {model["name"]: model for model in ui.get("models", [])}
    named = set()
    for node in ui["nodes"]:
        if node["type"] not in LOADER_WIDGETS:
            continue
        for widget, value in zip(LOADER_WIDGETS[node["type"]], node["widgets_values"]):
            if widget not in LOADER_FOLDERS or not value.lower().endswith(MODEL_SUFFIXES) or value == SMOKE:
                continue
            named.add(value)
            assert value in declared, f"{name}: {widget} {value!r} is not in the workflow's models"
            model = declared[value]
            assert model["directory"] in LOADER_FOLDERS[widget], f"{name}: {value} in {model['directory']}"
            assert model["url"].startswith("https://huggingface.co/") and "/resolve/" in model["url"]
            assert model["url"].rsplit("/", 1)[1] in PUBLISHED_FILE_NAMES, model["url"]
    assert set(declared) == named, f"{name}: declares files it does not use"
    assert named or name in SMOKE_TEMPLATES


@pytest.mark.parametrize("name", SMOKE_TEMPLATES)
def test_the_smoke_templates_name_the_smoke_checkpoint(name):
    loader = nodes_of(load(api_twin(name)), "ModelScopeT2VCheckpointLoader")[0]["inputs"]
    assert loader["ckpt_name"] == SMOKE
    assert loader["vae_name"] == loader["text_encoder_name"] == FROM_CHECKPOINT


def test_the_fast_smoke_test_samples_as_fast_text_to_video_on_the_smoke_test_s_video():
    """Only the sampler's settings differ from smoke_test: those of fast_text_to_video (lcm, 4 steps, cfg 1)."""
    smoke, fast, few_steps = (load(api_twin(name)) for name in
                              ("smoke_test.json", "fast_smoke_test.json", "fast_text_to_video.json"))
    sampler = {k: v for k, v in nodes_of(fast, "ModelScopeT2VSampler")[0]["inputs"].items() if k != "model"}
    assert sampler == {k: v for k, v in nodes_of(few_steps, "ModelScopeT2VSampler")[0]["inputs"].items() if k != "model"}
    for node_type in ("ModelScopeT2VCheckpointLoader", "ModelScopeT2VEmptyLatentVideo", "ModelScopeT2VDecode"):
        assert nodes_of(fast, node_type)[0]["inputs"] == nodes_of(smoke, node_type)[0]["inputs"], node_type


@pytest.mark.xfail(reason="the random-weight smoke checkpoint sometimes samples NaN latents in a server that has run other tests (never in a fresh one); under investigation", strict=False)
@pytest.mark.parametrize("name", SMOKE_TEMPLATES)
def test_the_smoke_templates_make_a_video_offline(comfy, smoke_checkpoint, name):
    history = comfy.run(load(api_twin(name)))
    assert history["status"]["status_str"] == "success", history["status"]
    video = comfy.output_path(history["outputs"]["7"]["images"][0])
    assert video.suffix == ".mp4" and video.stat().st_size > 0 and video.parent.name == "smoke-test-random-weights"
