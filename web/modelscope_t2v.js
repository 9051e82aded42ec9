// ModelScope T2V: the saved or previewed videos play inside the save and preview nodes (looping, muted, sized to the
// video, one tile per video of a batch), a saved preview comes back when a workflow is reloaded, and the pack's nodes
// share one colour. The frontend's own preview of the node's output is turned off, so the videos show once in the
// classic canvas and in Nodes 2.0 alike.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const VIDEO_NODES = ["ModelScopeT2VSaveVideo", "ModelScopeT2VPreviewVideo"];
const PREVIEW = "t2v_preview";
const CORE_PREVIEW = "video-preview"; // the frontend's own video widget, which ours replaces
const COLOR = { color: "#1d4a4f", bgcolor: "#2a5c61" };

function viewUrl(item) {
  const params = new URLSearchParams({ filename: item.filename, subfolder: item.subfolder ?? "", type: item.type ?? "output" });
  return api.apiURL(`/view?${params}`);
}

function videosOf(output) {
  return output?.images?.filter((item) => /\.(mp4|webm|mkv|gif)$/i.test(item.filename)) ?? [];
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
  media.style.cssText = "flex:1;min-height:0;display:grid;gap:2px;";
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;gap:8px;justify-content:flex-end;font-size:11px;";
  const play = document.createElement("button");
  play.className = "t2v-play";
  play.textContent = "pause";
  container.append(media, bar);

  const height = () => ((node.size[0] - 20) / widget.columns) * widget.aspect * widget.rows + 24;
  widget = node.addDOMWidget(PREVIEW, "video", container, {
    serialize: false, hideOnZoom: false, getMinHeight: height, getMaxHeight: height,
  });
  Object.assign(widget, { aspect: 1, columns: 1, rows: 1 });
  widget.show = (items) => {
    widget.columns = Math.ceil(Math.sqrt(items.length));
    widget.rows = Math.ceil(items.length / widget.columns);
    media.style.gridTemplateColumns = `repeat(${widget.columns}, 1fr)`;
    const links = items.map((item, i) => {
      const open = document.createElement("a");
      open.className = "t2v-open";
      open.textContent = items.length > 1 ? `open ${i + 1}` : "open in new tab";
      Object.assign(open, { href: viewUrl(item), target: "_blank", rel: "noopener" });
      open.style.color = "inherit";
      return open;
    });
    const tiles = items.map((item) => tile(node, widget, item));
    const videos = tiles.filter((el) => el.tagName === "VIDEO");
    play.style.display = videos.length ? "" : "none";
    play.textContent = "pause";
    play.onclick = () => {
      const paused = videos[0].paused;
      videos.forEach((v) => (paused ? v.play() : v.pause()));
    };
    videos[0]?.addEventListener("play", () => (play.textContent = "pause"));
    videos[0]?.addEventListener("pause", () => (play.textContent = "play"));
    media.replaceChildren(...tiles);
    bar.replaceChildren(play, ...links);
  };
  return widget;
}

function tile(node, widget, item) {
  const isGif = /\.gif$/i.test(item.filename);
  const el = document.createElement(isGif ? "img" : "video");
  el.style.cssText = "width:100%;height:100%;min-height:0;object-fit:contain;";
  if (isGif) {
    el.addEventListener("load", () => fit(node, widget, el.naturalWidth, el.naturalHeight));
  } else {
    Object.assign(el, { muted: true, loop: true, autoplay: true, playsInline: true, controls: true });
    el.addEventListener("loadedmetadata", () => fit(node, widget, el.videoWidth, el.videoHeight));
  }
  el.src = viewUrl(item);
  return el;
}

function fit(node, widget, width, height) {
  if (!width || !height) return;
  widget.aspect = height / width;
  node.setSize([node.size[0], node.computeSize()[1]]);
  node.setDirtyCanvas?.(true, true);
}

function showPreview(node, items) {
  // Saved files go with the workflow, so their preview survives a reload; temp files are gone after a restart.
  if (items.every((item) => item.type !== "temp")) node.properties[PREVIEW] = items;
  else delete node.properties[PREVIEW];
  removeCorePreview(node);
  previewWidget(node).show(items);
}

app.registerExtension({
  name: "ModelScopeT2V.VideoPreview",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!VIDEO_NODES.includes(nodeData.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const items = videosOf(output);
      if (items.length) showPreview(this, items);
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      onConfigure?.apply(this, arguments);
      const saved = this.properties?.[PREVIEW];
      if (saved) showPreview(this, [saved].flat()); // one item in workflows saved before batches had a file each
    };

    const onDrawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function () {
      onDrawBackground?.apply(this, arguments);
      if (this.widgets?.some((w) => w.name === PREVIEW)) removeCorePreview(this);
    };
  },

  nodeCreated(node) {
    if (node.comfyClass?.startsWith("ModelScopeT2V")) Object.assign(node, COLOR);
    // Nodes 2.0 draws a media preview of the output unless the node has one of its own (as core's Painter does).
    if (VIDEO_NODES.includes(node.comfyClass)) node.hideOutputImages = true;
  },
});
