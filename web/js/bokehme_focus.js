// BokehMe click-to-focus: click on the preview image of a "BokehMe Focus" node to choose what stays sharp.
//
// After the node has run once it shows a preview (the photo or the disparity map). A click on that preview
// sets the node's x and y widgets to the clicked point (fractions of the image width/height, 0 = left/top),
// switches mode to "point" and draws a marker; the next run focuses there. The marker always shows the
// current x, y, so typing values into the widgets moves it too. Dragging the preview still moves the node.
//
// Written against the ComfyUI frontend shipped with ComfyUI 0.33 (comfyui-frontend-package 1.49), classic
// canvas node rendering. There the preview is a widget named "$$canvas-image-preview" that receives the
// pointer events (the node's onMouseDown is not called over it); older frontends drew the preview in
// onDrawBackground and called onMouseDown, which is handled as well. Not supported: the experimental
// "Modern Node Design (Nodes 2.0)" mode, where nodes are DOM elements (set x, y by typing there).

import { app } from "../../scripts/app.js";
import { clickToNormalized, clamp01, fitImageRect, normalizedToPoint } from "./bokehme_focus_geometry.js";

const NODE_ID = "BokehMeFocus";
const PREVIEW_WIDGET = "$$canvas-image-preview";
const PATCHED = Symbol("bokehmeFocusPatched");
const SIZE_TEXT_HEIGHT = 15; // the frontend reserves this below the image when it prints "W x H"

function getSetting(id) {
  try {
    return app.extensionManager?.setting?.get?.(id) ?? app.ui?.settings?.getSettingValue?.(id);
  } catch {
    return undefined;
  }
}

function findWidget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function isLinked(node, name) {
  return Boolean(node.inputs?.some((input) => input.widget?.name === name && input.link != null));
}

/** The preview image shown on the node, or null before the first run. */
function currentImage(node) {
  const images = node.imgs;
  if (!images?.length) return null;
  const image = images[node.imageIndex ?? 0] ?? images[0];
  return image?.naturalWidth > 0 ? image : null;
}

/** Node-local rectangle of the preview area (see the geometry module for the frame). */
function previewArea(node) {
  const widget = findWidget(node, PREVIEW_WIDGET);
  const sizeText = getSetting("Comfy.Node.AllowImageSizeDraw") ? SIZE_TEXT_HEIGHT : 0;
  if (widget) {
    const top = widget.y ?? widget.last_y;
    const height = widget.computedHeight ?? node.size[1] - top;
    if (typeof top === "number") return { x: 0, y: top, w: node.size[0], h: height - sizeText };
  }
  // Older frontends: the image fills the space below the last widget.
  let top = 0;
  for (const w of node.widgets ?? []) {
    if (w.name === PREVIEW_WIDGET || typeof w.last_y !== "number") continue;
    const height = w.computedHeight ?? globalThis.LiteGraph?.NODE_WIDGET_HEIGHT ?? 20;
    top = Math.max(top, w.last_y + height + 4);
  }
  return { x: 0, y: top, w: node.size[0], h: node.size[1] - top - sizeText };
}

/** Node-local rectangle where the preview image is drawn, or null. */
function imageRect(node) {
  const image = currentImage(node);
  if (!image) return null;
  const area = previewArea(node);
  if (node.imgs.length > 1 && node.imageIndex == null && node.imageRects?.length) {
    const [x, y, w, h] = node.imageRects[0]; // grid of a batch: the first cell
    return fitImageRect(x, y, w, h, image.naturalWidth, image.naturalHeight);
  }
  return fitImageRect(area.x, area.y, area.w, area.h, image.naturalWidth, image.naturalHeight);
}

function setWidget(node, name, value) {
  const widget = findWidget(node, name);
  if (!widget || widget.value === value) return;
  const old = widget.value;
  widget.value = value;
  widget.callback?.(value, app.canvas, node);
  node.onWidgetChanged?.(name, value, old, widget);
}

/** Handle a click at node-local (px, py); true if it landed on the image and set the focus point. */
function focusAt(node, px, py) {
  const point = clickToNormalized(imageRect(node), px, py);
  if (!point) return false;
  if (isLinked(node, "x") || isLinked(node, "y")) {
    console.warn("BokehMe Focus: x/y are connected to other nodes; disconnect them to focus by clicking");
    return false;
  }
  setWidget(node, "x", point.x);
  setWidget(node, "y", point.y);
  setWidget(node, "mode", "point");
  node.graph?.change?.();
  node.setDirtyCanvas?.(true, true);
  return true;
}

/** Wrap the preview widget's pointer handler: a click (no drag) focuses, a drag still moves the node. */
function patchPreviewWidget(node) {
  const widget = findWidget(node, PREVIEW_WIDGET);
  if (!widget || widget[PATCHED]) return;
  widget[PATCHED] = true;
  const original = widget.onPointerDown;
  widget.onPointerDown = function (pointer, target, canvas) {
    const handled = typeof original === "function" ? original.call(this, pointer, target, canvas) : false;
    const previousClick = pointer.onClick;
    pointer.onClick = (event) => {
      const x = (event?.canvasX ?? canvas?.graph_mouse?.[0]) - node.pos[0];
      const y = (event?.canvasY ?? canvas?.graph_mouse?.[1]) - node.pos[1];
      if (!focusAt(node, x, y)) previousClick?.(event);
    };
    return handled || true;
  };
}

function drawMarker(ctx, node) {
  const rect = imageRect(node);
  if (!rect) return;
  const x = clamp01(findWidget(node, "x")?.value);
  const y = clamp01(findWidget(node, "y")?.value);
  const active = findWidget(node, "mode")?.value === "point";
  const p = normalizedToPoint(rect, x, y);
  const r = Math.max(6, Math.min(rect.w, rect.h) * 0.04);
  ctx.save();
  ctx.lineWidth = 2;
  ctx.setLineDash(active ? [] : [3, 3]);
  for (const [color, width] of [["rgba(0,0,0,0.8)", 4], [active ? "#ffb000" : "#bbbbbb", 2]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.beginPath();
    ctx.arc(p.x, p.y, r, 0, Math.PI * 2);
    ctx.moveTo(p.x - 2 * r, p.y);
    ctx.lineTo(p.x - r * 0.4, p.y);
    ctx.moveTo(p.x + r * 0.4, p.y);
    ctx.lineTo(p.x + 2 * r, p.y);
    ctx.moveTo(p.x, p.y - 2 * r);
    ctx.lineTo(p.x, p.y - r * 0.4);
    ctx.moveTo(p.x, p.y + r * 0.4);
    ctx.lineTo(p.x, p.y + 2 * r);
    ctx.stroke();
  }
  if (typeof node.bokehmeFocusValue === "number") {
    const label = `focus ${node.bokehmeFocusValue.toFixed(3)}`;
    ctx.setLineDash([]);
    ctx.font = "12px sans-serif";
    ctx.fillStyle = "rgba(0,0,0,0.6)";
    ctx.fillRect(rect.x + 4, rect.y + 4, ctx.measureText(label).width + 8, 18);
    ctx.fillStyle = "#ffffff";
    ctx.fillText(label, rect.x + 8, rect.y + 17);
  }
  ctx.restore();
}

app.registerExtension({
  name: "bokehme.focus",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const value = message?.focus?.[0];
      this.bokehmeFocusValue = typeof value === "number" ? value : undefined;
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      if (this.flags?.collapsed || !currentImage(this)) return result;
      patchPreviewWidget(this);
      // The frontend draws preview images in a microtask queued while it draws the widgets, which happens
      // after this hook: queue the marker two microtasks deep so that it lands on top of the image.
      const transform = ctx.getTransform();
      queueMicrotask(() =>
        queueMicrotask(() => {
          ctx.save();
          ctx.setTransform(transform);
          drawMarker(ctx, this);
          ctx.restore();
        }),
      );
      return result;
    };

    const onMouseDown = nodeType.prototype.onMouseDown;
    nodeType.prototype.onMouseDown = function (event, pos) {
      if (onMouseDown?.apply(this, arguments)) return true;
      return Array.isArray(pos) && focusAt(this, pos[0], pos[1]);
    };
  },
});
