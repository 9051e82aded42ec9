"""The pack in the real ComfyUI frontend, in Debian's chromium driven by Playwright: the frontend each ComfyUI
bundles, and on current ComfyUI also the newest frontend, in the classic canvas and in "Nodes 2.0"."""
import json
import os
import random
import re
from pathlib import Path

import pytest

from comfyui import CURRENT, PACK_NAME, with_newest_frontend
from workflows import FROM_CHECKPOINT, OLD_WORKFLOWS, load_ui

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
ARTIFACTS = Path(os.environ.get("T2V_ARTIFACTS", Path(__file__).resolve().parents[1] / "build" / "artifacts"))
OUR_SCRIPT = "modelscope_t2v.js"
FRAMES, FPS = 8, 8
RENDERERS = {"classic": False, "nodes2": True}  # the value of the Comfy.VueNodes.Enabled setting


def HOST_VARIANTS(host):
    """(host, renderer) pairs: each ComfyUI with its bundled frontend in the classic canvas; current ComfyUI also in
    Nodes 2.0, and with the newest frontend in both renderers."""
    if host.root != CURRENT:
        return [(host, "classic")]
    newest = with_newest_frontend(host)
    return [(h, renderer) for h in (host, newest) if h is not None for renderer in RENDERERS]


@pytest.fixture(scope="module")
def page(comfy, variant):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup-dev does)")
    comfy.post("/settings/Comfy.TutorialCompleted", True)
    comfy.post("/settings/Comfy.VueNodes.Enabled", RENDERERS[variant])
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)  # a fresh profile each time
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.console_errors = []
        page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text + str(m.location)))
        page.on("pageerror", lambda e: page.console_errors.append(f"{e}\n{e.stack}"))
        open_app(page, comfy)
        if comfy.host.frontend:
            assert page.evaluate("window.__COMFYUI_FRONTEND_VERSION__") == comfy.host.frontend_version
        assert page.evaluate("app.extensionManager.setting.get('Comfy.VueNodes.Enabled')") is RENDERERS[variant]
        yield page
        browser.close()


def open_app(page, comfy):
    """The page, once the frontend has opened its first workflow (a graph loaded earlier would be replaced)."""
    page.goto(comfy.url)
    page.wait_for_function("window.app && window.app.graph && window.LiteGraph && "
                           "window.app.extensionManager?.workflow?.activeWorkflow", timeout=60000)


def visible_videos(page, save_id):
    """The video elements showing on screen once the save node is in view: exactly one is the pack's preview."""
    page.evaluate("(id) => { app.canvas.centerOnNode(app.graph.getNodeById(id)); app.canvas.setDirty(true, true); }",
                  save_id)
    page.wait_for_timeout(500)
    return page.evaluate("""() => [...document.querySelectorAll("video")].filter(v => {
        const r = v.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && getComputedStyle(v).visibility !== "hidden";
    }).map(v => v.closest(".t2v-preview") ? "pack" : "other")""")


def tiny_ui_workflow(workflow=None):
    """The shipped UI workflow (or ``workflow``, one like it) at test size, with a fresh seed so that ComfyUI's cache
    never skips the run."""
    workflow = workflow or load_ui("text_to_video.json")
    for node in workflow["nodes"]:
        values = node.get("widgets_values")
        if node["type"] == "ModelScopeT2VCheckpointLoader":
            values[0], values[2], values[4] = "tiny-t2v", FROM_CHECKPOINT, FROM_CHECKPOINT
        elif node["type"] == "ModelScopeT2VEmptyLatentVideo":
            values[:3] = [64, 48, FRAMES]
            values[4] = random.randrange(2**32)
        elif node["type"] == "ModelScopeT2VSampler":
            values[0] = 4
        elif node["type"] == "ModelScopeT2VSaveVideo":
            values[0] = FPS
    return workflow


def node_id(workflow, node_type):
    return next(n["id"] for n in workflow["nodes"] if n["type"] == node_type)


def our_errors(page):
    """Console errors logged or thrown by our script (the frontend's own failing registry lookups are not ours)."""
    return [e for e in page.console_errors if OUR_SCRIPT in e]


def saved_video_state(page, save_id):
    return page.evaluate("""(id) => {
        const node = app.graph.getNodeById(id);
        const video = node?.widgets?.find(w => w.name === "t2v_preview")?.element?.querySelector("video");
        return video ? {readyState: video.readyState, duration: video.duration, muted: video.muted, loop: video.loop,
                        src: video.src, height: video.getBoundingClientRect().height} : null;
    }""", save_id)


def test_extension_is_served(comfy):
    assert any(path.endswith(OUR_SCRIPT) for path in comfy.get("/extensions"))


def test_workflow_loads_with_every_node_type_known(page):
    workflow = load_ui("text_to_video.json")
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    missing = page.evaluate("(types) => types.filter(t => !LiteGraph.registered_node_types[t])",
                            sorted({n["type"] for n in workflow["nodes"]}))
    assert missing == []
    assert page.evaluate("() => app.graph.nodes.length") == len(workflow["nodes"])
    assert our_errors(page) == []


def test_queue_from_the_page_shows_live_previews_and_the_video(page, comfy, variant, capsys):
    workflow = tiny_ui_workflow()
    sampler, save = node_id(workflow, "ModelScopeT2VSampler"), node_id(workflow, "ModelScopeT2VSaveVideo")
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    page.evaluate("""(sampler) => {
        window.t2vPreviews = [];
        window.comfyAPI.api.api.addEventListener("b_preview_with_metadata",
            ({detail}) => window.t2vPreviews.push(String(detail.displayNodeId)));
    }""", sampler)
    page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    page.wait_for_function("(id) => { const n = app.graph.getNodeById(id); const v = n?.widgets?.find("
                           "w => w.name === 't2v_preview')?.element?.querySelector('video'); "
                           "return v && v.readyState >= 2; }", arg=save, timeout=120000)
    previews = page.evaluate("() => window.t2vPreviews")
    assert previews.count(str(sampler)) >= 1, previews
    assert visible_videos(page, save) == ["pack"]
    state = saved_video_state(page, save)
    assert state["readyState"] >= 2 and state["muted"] and state["loop"] and state["height"] > 50
    assert abs(state["duration"] - FRAMES / FPS) < 0.15
    assert our_errors(page) == []

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"canvas_with_preview-{comfy.host.id}-{variant}.png"
    page.screenshot(path=str(shot))
    with capsys.disabled():
        print(f"\ncanvas screenshot: {shot} ({shot.stat().st_size} bytes)")
    assert shot.stat().st_size > 10_000


def test_preview_survives_reloading_the_workflow(page, comfy):
    workflow = page.evaluate("() => app.graph.serialize()")
    save = node_id(workflow, "ModelScopeT2VSaveVideo")
    assert next(n for n in workflow["nodes"] if n["id"] == save)["properties"].get("t2v_preview")
    open_app(page, comfy)
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    page.wait_for_function("(id) => { const v = app.graph.getNodeById(id)?.widgets?.find(w => w.name === 't2v_preview')"
                           "?.element?.querySelector('video'); return v && v.readyState >= 2; }", arg=save, timeout=30000)
    assert visible_videos(page, save) == ["pack"]
    assert our_errors(page) == []


def test_preview_node_shows_each_video_of_a_batch_from_the_temp_folder(page, comfy):
    """The Preview Video node in place of the Save node, on a noise video of batch_size 2: both videos play on the
    node, served from the temp folder, and nothing else shows a video."""
    workflow = tiny_ui_workflow()
    next(n for n in workflow["nodes"] if n["type"] == "ModelScopeT2VEmptyLatentVideo")["widgets_values"][3] = 2
    open_app(page, comfy)
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    preview = page.evaluate("""([decode, save]) => {
        const node = LiteGraph.createNode("ModelScopeT2VPreviewVideo");
        node.pos = [...app.graph.getNodeById(save).pos];
        app.graph.remove(app.graph.getNodeById(save));
        app.graph.add(node);
        app.graph.getNodeById(decode).connect(0, node, 0);
        node.widgets.find(w => w.name === "videos").value = 2;
        return node.id;
    }""", [node_id(workflow, "ModelScopeT2VDecode"), node_id(workflow, "ModelScopeT2VSaveVideo")])
    page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    page.wait_for_function("(id) => { const videos = app.graph.getNodeById(id)?.widgets?.find("
                           "w => w.name === 't2v_preview')?.element?.querySelectorAll('video') ?? []; "
                           "return videos.length === 2 && [...videos].every(v => v.readyState >= 2); }",
                           arg=preview, timeout=120000)
    assert visible_videos(page, preview) == ["pack", "pack"]
    sources = page.evaluate("""(id) => [...app.graph.getNodeById(id).widgets.find(w => w.name === "t2v_preview")
        .element.querySelectorAll("video")].map(v => new URL(v.src).searchParams.get("type"))""", preview)
    assert sources == ["temp", "temp"]
    assert not [p for p in (comfy.base / "output").rglob("*") if "_temp_" in p.name]
    assert our_errors(page) == []


def open_template(page, name):
    """The README's route, clicked: the ComfyUI logo > Browse Templates, the pack's own list under Extensions, then
    the template called ``name``."""
    page.locator(".comfyui-logo").first.click()
    page.get_by_role("menuitem", name="Browse Templates").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(PACK_NAME, exact=True).first.click()
    dialog.get_by_text(name, exact=True).first.click()
    page.wait_for_function("(name) => app.extensionManager.workflow.activeWorkflow?.filename === name", arg=name,
                           timeout=30000)


def test_opening_text_to_video_without_weights_offers_the_downloads(page, comfy):
    """On a server without the weights, the template's missing models are listed with their folders (and a
    download), as the workflow's ``models`` declares them."""
    open_app(page, comfy)
    open_template(page, "text_to_video")
    models = load_ui("text_to_video.json")["models"]
    assert {m["directory"] for m in models} == {"text2video", "text_encoders", "vae"}
    # frontend 1.32 opens a dialog that writes "folder / name"; later ones a toast whose details (the issues tab)
    # give the name with its folder on the row
    rows = [page.get_by_text(re.compile(rf"^(\S+ / )?{re.escape(model['name'])}$")).first for model in models]
    details = page.get_by_role("button", name="View details").first
    rows[0].or_(details).first.wait_for(timeout=30000)
    if details.is_visible():
        details.click()
    for model, row in zip(models, rows):
        row.wait_for(timeout=30000)
        folders = page.evaluate("""([row, folders]) => {
            for (let e = row; e && e !== document.body; e = e.parentElement) {
                const lines = e.innerText.split("\\n").map(line => line.trim().split(" / ")[0]);
                const found = lines.filter(line => folders.includes(line));
                if (found.length) return found;
            }
            return [];
        }""", [row.element_handle(), ["text2video", "text_encoders", "vae", "diffusion_models"]])
        assert folders == [model["directory"]], (model, folders)
    assert page.get_by_text("download", exact=False).count() >= 1


def test_a_workflow_saved_with_the_pack_types_of_before_loads_and_runs(page, comfy):
    """text_to_video as shipped before the loader gave core CLIP and VAE (links typed T2V_CLIP / T2V_VAE): every
    link survives loading, and queued from the page it makes its video."""
    workflow = tiny_ui_workflow(json.loads((OLD_WORKFLOWS / "text_to_video.json").read_text()))
    assert {link[5] for link in workflow["links"]} >= {"T2V_CLIP", "T2V_VAE"}
    save = node_id(workflow, "ModelScopeT2VSaveVideo")
    open_app(page, comfy)
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
    assert page.evaluate("() => app.graph.serialize().links.length") == len(workflow["links"])
    page.evaluate("async () => { await app.queuePrompt(0, 1); }")
    page.wait_for_function("(id) => { const v = app.graph.getNodeById(id)?.widgets?.find(w => w.name === 't2v_preview')"
                           "?.element?.querySelector('video'); return v && v.readyState >= 2; }", arg=save, timeout=120000)
    assert our_errors(page) == []
