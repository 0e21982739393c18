// Pure geometry for the BokehMe click-to-focus extension (no ComfyUI imports, so it can be unit-tested with
// plain Node.js: tests/nodes/test_web.py). ComfyUI loads every .js file of the pack's web folder; this one
// only defines functions.
//
// Coordinates are node-local canvas units: x from the node's left edge, y from the top of the node body
// (below the title bar), the frame LiteGraph uses for widgets (widget.y) and node mouse events.

/**
 * Where the ComfyUI frontend (1.2x-1.49) draws a single preview image inside a node's image-preview area:
 * scaled to fit (never enlarged), centred horizontally and vertically.
 * @param {number} areaX left of the preview area
 * @param {number} areaY top of the preview area
 * @param {number} areaW width of the preview area
 * @param {number} areaH height of the preview area
 * @param {number} imageW natural width of the image in pixels
 * @param {number} imageH natural height of the image in pixels
 * @returns {{x:number,y:number,w:number,h:number}|null} the displayed image rectangle, null if nothing fits
 */
export function fitImageRect(areaX, areaY, areaW, areaH, imageW, imageH) {
  if (!(areaW > 0 && areaH > 0 && imageW > 0 && imageH > 0)) return null;
  const scale = Math.min(areaW / imageW, areaH / imageH, 1);
  const w = imageW * scale;
  const h = imageH * scale;
  return { x: areaX + (areaW - w) / 2, y: areaY + (areaH - h) / 2, w, h };
}

/**
 * A click at node-local (px, py) -> normalised image coordinates in [0, 1] (fractions of the width and
 * height: 0 = left/top edge, 1 = right/bottom edge, as bokehme_core.focus.focus_from_point reads them),
 * rounded to the widgets' step 0.001, or null when the click is outside the displayed image.
 * @param {{x:number,y:number,w:number,h:number}} rect from fitImageRect
 */
export function clickToNormalized(rect, px, py) {
  if (!rect) return null;
  const u = (px - rect.x) / rect.w;
  const v = (py - rect.y) / rect.h;
  if (u < 0 || u > 1 || v < 0 || v > 1) return null;
  return { x: roundTo(u, 0.001), y: roundTo(v, 0.001) };
}

/** Normalised (x, y) -> node-local point on the displayed image (for drawing the marker). */
export function normalizedToPoint(rect, x, y) {
  return { x: rect.x + clamp01(x) * rect.w, y: rect.y + clamp01(y) * rect.h };
}

export function clamp01(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return 0.5;
  return Math.min(1, Math.max(0, n));
}

function roundTo(v, step) {
  return clamp01(Math.round(v / step) * step);
}
