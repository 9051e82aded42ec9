"""Regenerates workflows/*.json (UI format) from workflows/*_api.json with the real ComfyUI frontend.

Usage: .venv/bin/python scripts/export_ui_workflows.py http://127.0.0.1:8188
(a running ComfyUI with this pack installed, and Debian's chromium).
"""
import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def without_nulls(value):
    """JavaScript's undefined arrives as None; the frontend's schema wants those keys absent."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def main(url):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph && window.app.extensionManager?.workflow?.activeWorkflow",
                               timeout=60000)
        for api_file in sorted(WORKFLOWS.glob("*_api.json")):
            page.evaluate("async (api) => { app.graph.clear(); await app.loadApiJson(api, 'workflow.json'); }",
                          json.loads(api_file.read_text()))
            page.wait_for_timeout(1000)
            ui = without_nulls(page.evaluate("() => app.graph.serialize()"))
            ui.pop("id", None)
            out = api_file.with_name(api_file.name.replace("_api.json", ".json"))
            out.write_text(json.dumps(ui, indent=1) + "\n")
            print(out)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
