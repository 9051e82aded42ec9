// ModelScope T2V: the saved video plays inside the save node (looping, muted, sized to the video), the preview
// comes back when a workflow is reloaded, and the pack's nodes share one colour. The frontend's own preview of the
// node's output is turned off, so the video shows once in the classic canvas and in Nodes 2.0 alike.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const SAVE_NODE = "ModelScopeT2VSaveVideo";
const PREVIEW = "t2v_preview";
const CORE_PREVIEW = "video-preview"; // the frontend's own video widget, which ours replaces
const COLOR = { color: "#1d4a4f", bgcolor: "#2a5c61" };

function viewUrl(item) {
  const params = new URLSearchParams({ filename: item.filename, subfolder: item.subfolder ?? "", type: item.type ?? "output" });
  return api.apiURL(`/view?${params}`);
}

function videoOf(output) {
  return output?.images?.find((item) => /\.(mp4|webm|gif)$/i.test(item.filename));
}

function removeCorePreview(node) {
  const index = node.widgets?.findIndex((w) => w.name === CORE_PREVIEW) ?? -1;
  if (index >= 0) {
    node.widgets[index].onRemove?.();
    node.widgets.splice(index, 1);
  }
}

function previewWidget(node) {
  let widget = node.widgets?.find((w) => w.name === PREVIEW);
  if (widget) return widget;

  const container = document.createElement("div");
  container.className = "t2v-preview";
  container.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;";
  const media = document.createElement("div");
  media.style.cssText = "flex:1;min-height:0;display:flex;justify-content:center;";
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;gap:8px;justify-content:flex-end;font-size:11px;";
  const play = document.createElement("button");
  play.className = "t2v-play";
  play.textContent = "pause";
  const open = document.createElement("a");
  open.className = "t2v-open";
  open.textContent = "open in new tab";
  open.target = "_blank";
  open.rel = "noopener";
  open.style.color = "inherit";
  bar.append(play, open);
  container.append(media, bar);

  const height = () => (node.size[0] - 20) * widget.aspect + 24;
  widget = node.addDOMWidget(PREVIEW, "video", container, {
    serialize: false, hideOnZoom: false, getMinHeight: height, getMaxHeight: height,
  });
  widget.aspect = 1;
  widget.show = (item) => {
    const url = viewUrl(item);
    open.href = url;
    media.replaceChildren();
    const isGif = /\.gif$/i.test(item.filename);
    const el = document.createElement(isGif ? "img" : "video");
    el.style.cssText = "width:100%;height:100%;object-fit:contain;";
    play.style.display = isGif ? "none" : "";
    if (!isGif) {
      Object.assign(el, { muted: true, loop: true, autoplay: true, playsInline: true, controls: true });
      el.addEventListener("loadedmetadata", () => fit(node, widget, el.videoWidth, el.videoHeight));
      el.addEventListener("play", () => (play.textContent = "pause"));
      el.addEventListener("pause", () => (play.textContent = "play"));
      play.onclick = () => (el.paused ? el.play() : el.pause());
    } else {
      el.addEventListener("load", () => fit(node, widget, el.naturalWidth, el.naturalHeight));
    }
    el.src = url;
    media.append(el);
  };
  return widget;
}

function fit(node, widget, width, height) {
  if (!width || !height) return;
  widget.aspect = height / width;
  node.setSize([node.size[0], node.computeSize()[1]]);
  node.setDirtyCanvas?.(true, true);
}

function showPreview(node, item) {
  node.properties[PREVIEW] = item; // saved with the workflow, so the preview survives a reload
  removeCorePreview(node);
  previewWidget(node).show(item);
}

app.registerExtension({
  name: "ModelScopeT2V.VideoPreview",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== SAVE_NODE) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const item = videoOf(output);
      if (item) showPreview(this, item);
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      onConfigure?.apply(this, arguments);
      const item = this.properties?.[PREVIEW];
      if (item) showPreview(this, item);
    };

    const onDrawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function () {
      onDrawBackground?.apply(this, arguments);
      if (this.properties?.[PREVIEW]) removeCorePreview(this);
    };
  },

  nodeCreated(node) {
    if (node.comfyClass?.startsWith("ModelScopeT2V")) Object.assign(node, COLOR);
    // Nodes 2.0 draws a media preview of the output unless the node has one of its own (as core's Painter does).
    if (node.comfyClass === SAVE_NODE) node.hideOutputImages = true;
  },
});
