"""Draws workflows/<name>.jpg, the picture the template browser shows for each UI workflow: its graph on the real
ComfyUI canvas, fitted to the frame.

Usage: .venv/bin/python scripts/template_pictures.py http://127.0.0.1:8188 [NAME ...]
(a running ComfyUI with this pack installed, and Debian's chromium). Without names every workflow is drawn. Give
that ComfyUI the model files the workflows name (empty files do) and their input files (a picture and a short
video), so that no node is marked missing and the load nodes show a preview.
"""
import io
import json
import logging
import sys

from PIL import Image
from playwright.sync_api import sync_playwright

from export_ui_workflows import CHROMIUM_ARGS, WORKFLOWS

SIZE = (3200, 1800)  # the page: big enough to draw the widest graph at a scale that shows its widgets
WIDTH = 800  # the picture's
MAX_BYTES = 60_000
log = logging.getLogger("template_pictures")

# Only the canvas and the widgets on it: menus, tabs, side bars, toasts and the minimap are hidden.
HIDE_PAGE_CHROME = """document.addEventListener("DOMContentLoaded", () => {
    const style = document.createElement("style");
    style.textContent = `.comfyui-body-top, .comfyui-body-left, .comfyui-body-right, .comfyui-body-bottom,
        .side-tool-bar-container, .workflow-tabs-container, .actionbar, .p-toast, .minimap-main-container,
        .graph-canvas-menu, .p-dialog-mask, .splitter-overlay > :not(.graph-canvas-panel) { display: none !important; }`;
    document.head.appendChild(style);
});"""
FIT = """() => {
    const nodes = app.graph.nodes;
    const left = Math.min(...nodes.map(n => n.pos[0])), top = Math.min(...nodes.map(n => n.pos[1] - 30));
    const right = Math.max(...nodes.map(n => n.pos[0] + n.size[0]));
    const bottom = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
    const canvas = {width: innerWidth, height: innerHeight};
    const scale = Math.min(canvas.width / (right - left + 60), canvas.height / (bottom - top + 60), 1);
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [(canvas.width / scale - (right - left)) / 2 - left,
                            (canvas.height / scale - (bottom - top)) / 2 - top];
    app.canvas.setDirty(true, true);
    const width = (right - left + 40) * scale, height = (bottom - top + 40) * scale;
    return {x: (canvas.width - width) / 2, y: (canvas.height - height) / 2, width, height};
}"""


def as_jpeg(png):
    """The screenshot WIDTH wide, at the best JPEG quality that stays under MAX_BYTES."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    for quality in range(85, 30, -5):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= MAX_BYTES:
            return out.getvalue()
    raise ValueError(f"no JPEG quality keeps the picture under {MAX_BYTES} bytes")


def draw(page, workflow):
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", json.loads(workflow.read_text()))
    page.keyboard.press("Escape")  # a missing-model dialog: the picture shows the graph
    page.evaluate(FIT)
    page.wait_for_timeout(1500)  # previews load and nodes take their drawn sizes; then fit again
    box = page.evaluate(FIT)
    page.wait_for_timeout(700)
    return as_jpeg(page.screenshot(clip=box))


def main(url, names):
    workflows = [WORKFLOWS / f"{name}.json" for name in names] or sorted(WORKFLOWS.glob("*.json"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": SIZE[0], "height": SIZE[1]})
        page.add_init_script(HIDE_PAGE_CHROME)
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph && window.app.extensionManager?.workflow?.activeWorkflow",
                               timeout=60000)
        page.evaluate("async () => { try { await app.extensionManager.setting.set('Comfy.RightSidePanel.IsOpen', false); "
                      "} catch (e) {} }")  # frontends from 1.4x remember an open side panel, which would cover the graph
        for workflow in workflows:
            picture = workflow.with_suffix(".jpg")
            picture.write_bytes(draw(page, workflow))
            log.info("%s (%d bytes)", picture, picture.stat().st_size)
        browser.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188", sys.argv[2:])
