"""Regenerates workflows/*.json (UI format) from workflows/api/*_api.json with the real ComfyUI frontend, and
declares in each the published model files its loader names (the frontend's missing-model dialog offers them).

Usage: .venv/bin/python scripts/export_ui_workflows.py http://127.0.0.1:8188
(a running ComfyUI with this pack installed, and Debian's chromium).
"""
import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
API = WORKFLOWS / "api"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HF = "https://huggingface.co"
MS = "text-to-video-ms-1.7b"
# Loader values -> the published file (saved under that name) and the model folder it goes in.
PUBLISHED_MODELS = {
    f"{MS}_unet.fp16.safetensors": (f"{HF}/ali-vilab/{MS}/resolve/main/unet/diffusion_pytorch_model.fp16.safetensors",
                                    "text2video"),
    f"{MS}_text_encoder.fp16.safetensors": (f"{HF}/ali-vilab/{MS}/resolve/main/text_encoder/model.fp16.safetensors",
                                            "text_encoders"),
    f"{MS}_vae.fp16.safetensors": (f"{HF}/ali-vilab/{MS}/resolve/main/vae/diffusion_pytorch_model.fp16.safetensors",
                                   "vae"),
    "mcm_modelscopet2v_laion.safetensors": (f"{HF}/yhzhai/mcm/resolve/main/modelscopet2v-laion/adapter_model.safetensors",
                                            "loras"),
    "zeroscope_v2_XL_unet.pth": (f"{HF}/cerspense/zeroscope_v2_XL/resolve/main/zs2_XL/text2video_pytorch_model.pth",
                                 "text2video"),
}


def without_nulls(value):
    """JavaScript's undefined arrives as None; the frontend's schema wants those keys absent."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def declared_models(ui):
    """The workflow's ``models`` list: name, url and directory of each published file its widgets name."""
    values = {v for node in ui["nodes"] for v in node.get("widgets_values") or [] if isinstance(v, str)}
    return [{"name": name, "url": url, "directory": directory}
            for name, (url, directory) in PUBLISHED_MODELS.items() if name in values]


def main(url):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph && window.app.extensionManager?.workflow?.activeWorkflow",
                               timeout=60000)
        for api_file in sorted(API.glob("*_api.json")):
            page.evaluate("async (api) => { app.graph.clear(); await app.loadApiJson(api, 'workflow.json'); }",
                          json.loads(api_file.read_text()))
            page.wait_for_timeout(1000)
            ui = without_nulls(page.evaluate("() => app.graph.serialize()"))
            ui.pop("id", None)
            for node in ui["nodes"]:  # frontends from 1.4x repeat widgets_values by name; the older ones do not read it
                node.pop("widgets_values_named", None)
            ui["models"] = declared_models(ui)
            out = WORKFLOWS / api_file.name.replace("_api.json", ".json")
            out.write_text(json.dumps(ui, indent=1) + "\n")
            print(out)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
