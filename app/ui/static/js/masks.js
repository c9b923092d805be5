// Draw instance masks (COCO polygons or RLE) and boxes over an image on a canvas, in class colours.
import { classColour } from "./api.js";

// COCO's compressed RLE string (pycocotools' rleToString) -> run lengths. Each count is written in
// 5-bit groups as characters from '0', with a continuation bit; counts after the second are deltas.
export function rleCounts(counts) {
  if (Array.isArray(counts)) return counts;
  const out = [];
  let p = 0;
  while (p < counts.length) {
    let x = 0;
    let k = 0;
    let more = 1;
    while (more) {
      const c = counts.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1;
      k += 1;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (out.length > 2) x += out[out.length - 2];
    out.push(x);
  }
  return out;
}

// An offscreen canvas, the size of the RLE's frame, with the mask's pixels painted in `colour`.
function rleCanvas(rle, colour) {
  const [h, w] = rle.size;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const [r, g, b] = colour;
  const runs = rleCounts(rle.counts);
  let index = 0;
  for (let i = 0; i < runs.length; i += 1) {
    const run = runs[i];
    if (i % 2 === 1) {
      // Runs go down the columns (column-major, as COCO stores masks).
      for (let j = index; j < index + run; j += 1) {
        const row = j % h;
        const col = (j - row) / h;
        const o = (row * w + col) * 4;
        image.data[o] = r;
        image.data[o + 1] = g;
        image.data[o + 2] = b;
        image.data[o + 3] = 255;
      }
    }
    index += run;
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function rgbOf(classId) {
  return classColour(classId)
    .match(/\d+/g)
    .map(Number);
}

// annotations: [{class_id, bbox: [x, y, w, h], segmentation}] in the frame of frameWidth x frameHeight.
export function drawAnnotations(ctx, annotations, frameWidth, frameHeight, { alpha = 0.55 } = {}) {
  const sx = ctx.canvas.width / frameWidth;
  const sy = ctx.canvas.height / frameHeight;
  for (const ann of annotations) {
    const seg = ann.segmentation;
    const fill = classColour(ann.class_id, alpha);
    const line = classColour(ann.class_id);
    ctx.lineWidth = Math.max(2, ctx.canvas.width / 150);
    if (Array.isArray(seg) && seg.length) {
      ctx.beginPath();
      for (const part of seg) {
        for (let i = 0; i + 1 < part.length; i += 2) {
          const x = part[i] * sx;
          const y = part[i + 1] * sy;
          if (i === 0) ctx.moveTo(x, y);
          else ctx.lineTo(x, y);
        }
        ctx.closePath();
      }
      ctx.fillStyle = fill;
      ctx.fill("evenodd");
      ctx.strokeStyle = line;
      ctx.stroke();
    } else if (seg && seg.counts !== undefined && seg.size) {
      ctx.save();
      ctx.globalAlpha = alpha;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(rleCanvas(seg, rgbOf(ann.class_id)), 0, 0, ctx.canvas.width, ctx.canvas.height);
      ctx.restore();
      const [x, y, w, h] = ann.bbox;
      ctx.strokeStyle = line;
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(x * sx, y * sy, w * sx, h * sy);
      ctx.setLineDash([]);
    } else if (ann.bbox) {
      const [x, y, w, h] = ann.bbox;
      ctx.strokeStyle = line;
      ctx.strokeRect(x * sx, y * sy, w * sx, h * sy);
    }
  }
}

// Load `src`, draw it on `canvas` at most `maxSide` px a side, then the annotations over it.
export function paintImage(canvas, src, annotations, frameWidth, frameHeight, { maxSide = 360 } = {}) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.decoding = "async";
    img.addEventListener("load", () => {
      const scale = Math.min(1, maxSide / Math.max(img.naturalWidth, img.naturalHeight));
      canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
      canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      drawAnnotations(ctx, annotations, frameWidth || img.naturalWidth, frameHeight || img.naturalHeight);
      canvas.dataset.painted = String(annotations.length);
      resolve();
    });
    img.addEventListener("error", () => reject(new Error(`the image ${src} could not be loaded`)));
    img.src = src;
  });
}
