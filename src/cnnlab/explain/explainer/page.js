/* cnnlab explainer: draws the data Python stored in #cnnlab-data (explain/explainer.py). No library, no request. */
"use strict";

const D = JSON.parse(document.getElementById("cnnlab-data").textContent);
const state = { image: 0, unit: null, slide: null, hoverLayer: null };
const floatCache = new Map();
const grayCache = new Map();
const GAP = 3;

/* ---------- decoding: float32 blobs (zlib, base64) and 8-bit PNG sprites ---------- */
function bytesOf(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

async function inflate(b64) {
  const stream = new Blob([bytesOf(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Float32Array(await new Response(stream).arrayBuffer());
}

function floats(id) {
  if (!floatCache.has(id)) floatCache.set(id, inflate(D.blobs[id]));
  return floatCache.get(id);
}

async function decodePng(b64) {
  const bitmap = await createImageBitmap(new Blob([bytesOf(b64)], { type: "image/png" }),
                                         { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return { width: bitmap.width, height: bitmap.height, canvas,
           rgba: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data };
}

function png(b64) {
  if (!grayCache.has(b64)) grayCache.set(b64, decodePng(b64));
  return grayCache.get(b64);
}

/* ---------- small helpers ---------- */
const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const kid of kids) node.append(kid);
  return node;
};
const fmt = (v, digits = 4) => (v === null || v === undefined || Number.isNaN(v)) ? "–"
  : Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toFixed(digits);
const par = (v) => (v < 0 ? `(${fmt(v)})` : fmt(v));
const shapeText = (s) => s ? `(N, ${s.join(", ")})` : "–";
const pairText = (p) => Array.isArray(p) ? (p[0] === p[1] ? `${p[0]}` : `${p[0]}×${p[1]}`) : (p ?? "?");
const className = (k) => D.classes[k] ?? `class ${k}`;

function colour(v, m) {
  const t = m > 0 ? Math.max(-1, Math.min(1, v / m)) : 0;
  const [r, g, b] = t >= 0 ? [178, 24, 43] : [33, 102, 172];
  const a = Math.abs(t);
  return [247 + (r - 247) * a, 247 + (g - 247) * a, 247 + (b - 247) * a];
}

function cellSize(h, w) {
  const side = Math.max(h, w);
  return side <= 64 ? side * Math.max(1, Math.floor(64 / side)) : 96;
}

/* ---------- the layer column ---------- */
function layerHead(L, index) {
  const rf = L.rf === "all" ? "whole image" : L.rf ? `${pairText(L.rf)} px, jump ${pairText(L.jump)}` : "?";
  return el("div", { class: "layer-head" },
    el("span", { class: "name", text: L.name }), el("span", { class: "type", text: L.type }),
    el("span", { class: "meta", text: `output ${shapeText(L.shape)}` }),
    el("span", { class: "meta", text: `${L.params.toLocaleString("en")} params` }),
    el("span", { class: "meta", text: `${L.macs.toLocaleString("en")} MACs` }),
    el("span", { class: "meta", text: `receptive field ${rf}` }),
    el("span", { class: "meta", text: `#${index + 1}` }));
}

function buildColumn() {
  const column = document.getElementById("column");
  const [c, h, w] = D.input;
  column.append(el("div", { class: "layer input", "data-name": "input" },
    el("div", { class: "layer-head" }, el("span", { class: "name", text: "input" }),
       el("span", { class: "meta", text: `(N, ${c}, ${h}, ${w}) · pixels scaled to [0, 1]` }))));
  D.layers.forEach((L, i) => {
    const box = el("div", { class: "layer", id: `layer-${i}`, "data-index": i, "data-name": L.name, "data-type": L.type,
                           "data-shape": JSON.stringify(L.shape), "data-params": L.params,
                           style: `--depth:${Math.max(0, L.depth - 1)}` }, layerHead(L, i));
    const d = L.display;
    if (d) {
      const noun = d.type === "maps" ? "maps" : "units";
      const hover = el("span", { class: "hover" });
      const canvas = el("canvas", { class: "maps", "data-layer": i });
      canvas.addEventListener("mousemove", (e) => onHover(i, canvas, e, hover));
      canvas.addEventListener("mouseleave", () => { hover.textContent = ""; drawInput(null); });
      canvas.addEventListener("click", (e) => { const u = unitAt(i, canvas, e); if (u) selectUnit(i, ...u); });
      box.append(canvas, el("div", { class: "count" },
        el("span", { class: "shown", text: `${d.shown} of ${d.count} ${noun}` + (d.shown < d.count ? " (the first ones)" : "") }),
        el("span", { class: "legend" }, el("i"), el("span", { class: "range" })), hover));
    } else {
      box.append(el("div", { class: "count", text: L.note ?? "no picture: its output is not a map or a vector" }));
    }
    column.append(box);
  });
}

function layout(i) {
  const d = D.layers[i].display;
  if (d.type === "maps") {
    const [h, w] = d.hw, cell = cellSize(h, w), cols = Math.min(d.shown, 8);
    return { kind: "maps", h, w, cell, cols, rows: Math.ceil(d.shown / cols), cellW: cell, cellH: Math.round(cell * h / w) };
  }
  const cols = Math.min(d.shown, 64);
  return { kind: "vector", cols, rows: Math.ceil(d.shown / cols), cellW: 9, cellH: 14, cell: 9 };
}

/* A layer's pictured values for one image: maps at their picture size (ph × pw, the map's own unless it was
   averaged down), restored from the 8-bit sprite with each map's min/max; vectors as stored. */
const picturedCache = new Map();
function mapValues(i, image) {
  const key = `${i}:${image}`;
  if (!picturedCache.has(key)) picturedCache.set(key, restore(i, image));
  return picturedCache.get(key);
}

async function restore(i, image) {
  const d = D.layers[i].display, img = d.img[image];
  if (d.type === "vector") return { values: await floats(img) };
  const sprite = await png(img.png);
  const [ph, pw] = img.hw, k = d.shown, values = new Float32Array(k * ph * pw);
  for (let c = 0; c < k; c++) {
    const lo = img.min[c], span = img.max[c] - img.min[c];
    for (let y = 0; y < ph; y++) for (let x = 0; x < pw; x++) {
      values[(c * ph + y) * pw + x] = lo + sprite.rgba[(y * sprite.width + c * pw + x) * 4] / 255 * span;
    }
  }
  return { values, ph, pw };
}

async function drawLayer(i) {
  const L = D.layers[i], d = L.display;
  if (!d) return;
  const canvas = document.querySelector(`canvas[data-layer="${i}"]`), g = layout(i);
  const { values, ph, pw } = await mapValues(i, state.image);
  let m = 0;
  for (const v of values) m = Math.max(m, Math.abs(v));
  canvas.width = g.cols * (g.cellW + GAP) - GAP;
  canvas.height = g.rows * (g.cellH + GAP) - GAP;
  Object.assign(canvas.dataset, { cell: g.cellW, cellh: g.cellH, cols: g.cols, gap: GAP });
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (g.kind === "maps") {
    const tile = document.createElement("canvas");
    tile.width = pw; tile.height = ph;
    const tctx = tile.getContext("2d"), pixels = tctx.createImageData(pw, ph);
    for (let c = 0; c < d.shown; c++) {
      for (let p = 0; p < ph * pw; p++) {
        const [r, gg, b] = colour(values[c * ph * pw + p], m);
        pixels.data.set([r, gg, b, 255], p * 4);
      }
      tctx.putImageData(pixels, 0, 0);
      ctx.drawImage(tile, (c % g.cols) * (g.cellW + GAP), Math.floor(c / g.cols) * (g.cellH + GAP), g.cellW, g.cellH);
    }
  } else {
    for (let u = 0; u < d.shown; u++) {
      const [r, gg, b] = colour(values[u], m);
      ctx.fillStyle = `rgb(${r},${gg},${b})`;
      ctx.fillRect((u % g.cols) * (g.cellW + GAP), Math.floor(u / g.cols) * (g.cellH + GAP), g.cellW, g.cellH);
    }
  }
  canvas.closest(".layer").querySelector(".range").textContent = `−${fmt(m, 3)} … 0 … +${fmt(m, 3)}`;
  const u = state.unit;
  if (u && u.layer === i) markUnit(i, canvas, g, u);
}

function markUnit(i, canvas, g, u) {
  const ctx = canvas.getContext("2d");
  const x0 = (u.c % g.cols) * (g.cellW + GAP), y0 = Math.floor(u.c / g.cols) * (g.cellH + GAP);
  const sx = g.kind === "maps" ? g.cellW / g.w : g.cellW, sy = g.kind === "maps" ? g.cellH / g.h : g.cellH;
  ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
  ctx.strokeRect(x0 + u.j * sx - 1, y0 + u.i * sy - 1, Math.max(sx, 2) + 2, Math.max(sy, 2) + 2);
}

function unitAt(i, canvas, e) {
  const g = layout(i), rect = canvas.getBoundingClientRect();
  const px = (e.clientX - rect.left) * canvas.width / rect.width, py = (e.clientY - rect.top) * canvas.height / rect.height;
  const col = Math.floor(px / (g.cellW + GAP)), row = Math.floor(py / (g.cellH + GAP));
  const ox = px - col * (g.cellW + GAP), oy = py - row * (g.cellH + GAP);
  if (col >= g.cols || ox >= g.cellW || oy >= g.cellH || ox < 0 || oy < 0) return null;
  const c = row * g.cols + col;
  if (c >= D.layers[i].display.shown) return null;
  if (g.kind === "vector") return [c, 0, 0];
  return [c, Math.min(g.h - 1, Math.floor(oy * g.h / g.cellH)), Math.min(g.w - 1, Math.floor(ox * g.w / g.cellW))];
}

async function onHover(i, canvas, e, hover) {
  const u = unitAt(i, canvas, e);
  if (!u) { hover.textContent = ""; drawInput(null); return; }
  const [c, y, x] = u, L = D.layers[i], { values, ph, pw } = await mapValues(i, state.image);
  if (L.display.type === "maps") {
    const [h, w] = L.display.hw, py = Math.floor(y * ph / h), px = Math.floor(x * pw / w);
    hover.textContent = `map ${c}, row ${y}, col ${x}: ≈ ${fmt(values[(c * ph + py) * pw + px])}` +
      (ph < h ? ` (the picture averages ${(h / ph).toFixed(1)}×${(w / pw).toFixed(1)} units)` : "");
  } else {
    hover.textContent = `unit ${c}: ${fmt(values[c])}`;
  }
  drawInput(windowOf(L, y, x));
}

/* ---------- receptive field on the input ---------- */
function windowOf(L, i, j) {
  const [, h, w] = D.input;
  if (L.rf === "all") return { rows: [0, h - 1], cols: [0, w - 1], all: true };
  if (!Array.isArray(L.rf) || !L.start) return null;
  const r0 = L.start[0] + i * L.jump[0], c0 = L.start[1] + j * L.jump[1];
  return { rows: [r0, r0 + L.rf[0] - 1], cols: [c0, c0 + L.rf[1] - 1], all: false };
}

async function drawInput(win) {
  const canvas = document.getElementById("input-canvas"), ctx = canvas.getContext("2d");
  const picture = await png(D.images[state.image].png), [, h, w] = D.input;
  const scale = Math.min(canvas.width / w, canvas.height / h);
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(picture.canvas, 0, 0, w * scale, h * scale);
  const note = document.getElementById("rf-note");
  if (!win) { note.textContent = "Hover over a map: the input pixels its unit sees are outlined here."; return; }
  const top = Math.max(0, win.rows[0]), bottom = Math.min(h - 1, win.rows[1]);
  const left = Math.max(0, win.cols[0]), right = Math.min(w - 1, win.cols[1]);
  ctx.fillStyle = "rgba(0,0,0,0.55)";
  ctx.fillRect(0, 0, w * scale, top * scale);
  ctx.fillRect(0, (bottom + 1) * scale, w * scale, (h - bottom - 1) * scale);
  ctx.fillRect(0, top * scale, left * scale, (bottom - top + 1) * scale);
  ctx.fillRect((right + 1) * scale, top * scale, (w - right - 1) * scale, (bottom - top + 1) * scale);
  ctx.strokeStyle = "#ffd400"; ctx.lineWidth = 2;
  ctx.strokeRect(left * scale + 1, top * scale + 1, (right - left + 1) * scale - 2, (bottom - top + 1) * scale - 2);
  note.textContent = win.all ? "This unit sees the whole image." :
    `Receptive field: rows ${win.rows[0]}…${win.rows[1]}, columns ${win.cols[0]}…${win.cols[1]}` +
    (win.rows[0] < 0 || win.cols[0] < 0 || win.rows[1] >= h || win.cols[1] >= w ? " (partly in the padding)" : "");
}

/* ---------- one neuron ---------- */
function selectUnit(layer, c, i, j) {
  stopSlide();
  const previous = state.unit;
  state.unit = { layer, c, i, j };
  if (previous && previous.layer !== layer) drawLayer(previous.layer);
  drawLayer(layer);
  return explainUnit();
}

const layerIndex = new Map(D.layers.map((L, i) => [L.name, i]));
const valueCache = new Map();

/* The value of unit (c, i, j) of layer li's output, recomputed from the stored numbers. */
function valueAt(li, c, i, j, image) {
  const key = `${li}:${c}:${i}:${j}:${image}`;
  if (!valueCache.has(key)) {
    const L = D.layers[li];
    valueCache.set(key, COMPUTE[L.op.kind](L, L.op, { c, i, j }, image).then((r) => r.value));
  }
  return valueCache.get(key);
}

/* One input value of a channel-by-channel layer: stored, or recomputed from the layer that produced it. */
async function inputAt(L, op, image, c, y, x) {
  if (op.src !== undefined) return valueAt(layerIndex.get(op.src), c, y, x, image);
  const [H, W] = op.in_hw || (L.shape.length === 3 ? L.shape.slice(1) : [1, 1]);
  return (await floats(op.x[image]))[(c * H + y) * W + x];
}

async function explainUnit() {
  const u = state.unit, body = document.getElementById("neuron-body");
  if (!u) return;
  const L = D.layers[u.layer], op = L.op, image = state.image;
  const where = L.display && L.display.type === "maps" ? `map ${u.c}, row ${u.i}, column ${u.j}` : `unit ${u.c}`;
  const parts = [el("div", { class: "neuron-head", text: `${L.name} (${L.type}) · ${where}` })];
  let value = null;
  if (op && COMPUTE[op.kind] && u.c >= computable(op)) {
    parts.push(el("p", { class: "hint", text: `The numbers of only the first ${computable(op)} ${L.display.type === "maps" ? "maps" : "units"} are stored on this page.` }));
  } else if (op && COMPUTE[op.kind]) {
    const r = await COMPUTE[op.kind](L, op, u, image);
    RENDER[op.kind](L, op, u, r, parts);
    value = r.value;
  } else {
    parts.push(el("p", { class: "hint", text: L.note || `cnnlab has no step-by-step explanation for ${L.type}; the picture shows its output.` }));
  }
  if (state.unit !== u || state.image !== image) return;  // another click arrived meanwhile
  if (value !== null) {
    parts.splice(1, 0, el("div", {}, "value = ", el("output", { id: "neuron-value", class: "value", "data-value": String(value),
      "data-unit": `${u.layer}:${u.c}:${u.i}:${u.j}:${image}`, text: fmt(value, 6) })));
  }
  body.replaceChildren(...parts);
  drawInput(windowOf(L, u.i, u.j));
}

function computable(op) {
  if (op.kind === "conv") return op.cout_stored;
  if (op.kind === "dense") return op.units;
  return op.stored ?? Infinity;
}

function gridTable(rows, cols, cell, caption) {
  const table = el("table", { class: "grid" });
  if (caption) table.append(el("caption", { text: caption }));
  for (let a = 0; a < rows; a++) {
    const tr = el("tr");
    for (let b = 0; b < cols; b++) { const [text, cls] = cell(a, b); tr.append(el("td", { class: cls || "", text })); }
    table.append(tr);
  }
  return table;
}

function slideButton(u) {
  return el("button", { class: "small", text: state.slide ? "■ stop" : "▶ slide the kernel", onclick: () => {
    if (state.slide) { stopSlide(); explainUnit(); return; }
    const L = D.layers[u.layer], [h, w] = L.display.hw;
    let { i, j } = u;
    state.slide = setInterval(() => {
      j += 1; if (j >= w) { j = 0; i = (i + 1) % h; }
      state.unit = { layer: u.layer, c: u.c, i, j };
      drawLayer(u.layer); explainUnit();
    }, 450);
    explainUnit();
  } });
}

function stopSlide() { if (state.slide) clearInterval(state.slide); state.slide = null; }

/* What each kind of layer computes for one unit (from the stored numbers), then how the panel shows it. */
const COMPUTE = {
  async conv(L, op, u, image) {
    const [x, wts] = await Promise.all([floats(op.x[image]), floats(op.w)]);
    const bias = op.b ? (await floats(op.b))[u.c] : 0;
    const [kh, kw] = op.k, [H, W] = op.in_hw, cout = L.shape[0], [ho, wo] = L.shape.slice(1);
    const cinPer = op.cin / op.groups, group = Math.floor(u.c / (cout / op.groups));
    const r0 = u.i * op.s[0] - op.pad[0], c0 = u.j * op.s[1] - op.pad[1];
    const channels = [];
    let total = 0;
    for (let ci = 0; ci < Math.min(cinPer, op.w_cin); ci++) {
      const ch = group * cinPer + ci, kernel = [], patch = [];
      if (ch >= op.cin_stored) continue;
      let partial = 0;
      for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) {
        const y = r0 + a * op.d[0], xx = c0 + b * op.d[1];
        const inside = y >= 0 && y < H && xx >= 0 && xx < W;
        const v = inside ? x[(ch * H + y) * W + xx] : 0, wv = wts[((u.c * op.w_cin + ci) * kh + a) * kw + b];
        kernel.push(wv); patch.push(inside ? v : null); partial += wv * v;
      }
      total += partial;
      channels.push({ ch, kernel, patch, partial });
    }
    const rest = op.rest ? (await floats(op.rest[image]))[(u.c * ho + u.i) * wo + u.j] : 0;
    return { value: total + rest + bias, total, rest, bias, channels, r0, c0, others: cinPer - channels.length };
  },
  async bn(L, op, u, image) {
    const x = await inputAt(L, op, image, u.c, u.i, u.j);
    const mean = op.mean[u.c], v = op.var[u.c], g = op.gamma[u.c], b = op.beta[u.c];
    return { value: g * (x - mean) / Math.sqrt(v + op.eps) + b, x, mean, v, g, b };
  },
  async act(L, op, u, image) {
    const x = await inputAt(L, op, image, u.c, u.i, u.j), [value, formula] = activation(op.fn, op.param, x);
    return { value, x, formula };
  },
  async maxpool(L, op, u, image) { return pool(L, op, u, image, true); },
  async avgpool(L, op, u, image) { return pool(L, op, u, image, false); },
  async gap(L, op, u, image) {
    const [H, W] = op.in_hw, jobs = [];
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) jobs.push(inputAt(L, op, image, u.c, y, x));
    const map = await Promise.all(jobs);
    const value = op.mode === "max" ? Math.max(...map) : map.reduce((a, b) => a + b, 0) / map.length;
    return { value, count: map.length };
  },
  async dense(L, op, u, image) {
    const [terms, bias] = await Promise.all([floats(op.terms[image]), floats(op.bias)]);
    const row = terms.subarray(u.c * (3 * op.top + 1), (u.c + 1) * (3 * op.top + 1)), rest = row[3 * op.top];
    const top = [];
    let sum = 0;
    for (let t = 0; t < op.top; t++) {
      const item = { idx: row[t], x: row[op.top + t], w: row[2 * op.top + t] };
      sum += item.x * item.w;
      top.push(item);
    }
    return { value: sum + rest + bias[u.c], sum, rest, bias: bias[u.c], top };
  },
  async dropout(L, op, u, image) { const x = await inputAt(L, op, image, u.c, u.i, u.j); return { value: x, x }; },
  async flatten(L, op, u, image) { return { value: (await floats(L.display.img[image]))[u.c] }; },
};

const RENDER = {
  conv(L, op, u, r, parts) {
    const [kh, kw] = op.k, cinPer = op.cin / op.groups;
    parts.push(el("p", { class: "hint", text: `A ${kh}×${kw} kernel (stride ${pairText(op.s)}${op.d[0] > 1 || op.d[1] > 1 ? `, dilation ${pairText(op.d)}` : ""}) ` +
      `over ${cinPer} input channel${cinPer > 1 ? "s" : ""}: input rows ${r.r0}…${r.r0 + (kh - 1) * op.d[0]}, columns ${r.c0}…${r.c0 + (kw - 1) * op.d[1]}. ` +
      `Padding before the input: ${op.pad[0]} row(s) on top, ${op.pad[1]} column(s) on the left (TF "same" puts any odd extra at the bottom/right); hatched cells are padding zeros.` }));
    const worked = r.channels.slice(0, 3);
    for (const chn of worked) {
      parts.push(el("div", { class: "grids" },
        gridTable(kh, kw, (a, b) => [fmt(chn.kernel[a * kw + b], 3)], `kernel, input channel ${chn.ch}`),
        gridTable(kh, kw, (a, b) => chn.patch[a * kw + b] === null ? ["0", "pad"] : [fmt(chn.patch[a * kw + b], 3)],
                  `input patch, channel ${chn.ch}`)));
      const lines = [];
      for (let a = 0; a < kh; a++) {
        const terms = [];
        for (let b = 0; b < kw; b++) terms.push(`${par(chn.kernel[a * kw + b])}*${par(chn.patch[a * kw + b] ?? 0)}`);
        lines.push((a ? "+ " : "  ") + terms.join(" + "));
      }
      parts.push(el("div", { class: "sum", text: `${lines.join("\n")}\n= ${fmt(chn.partial, 6)}   (channel ${chn.ch})` }));
    }
    if (r.channels.length > worked.length) {
      const list = el("div", { class: "partials" });
      r.channels.forEach((chn) => list.append(el("div", { text: `ch ${chn.ch}: ${fmt(chn.partial, 5)}` })));
      parts.push(el("p", { class: "hint", text: `All ${r.channels.length} channels' sums (the first ${worked.length} worked out above):` }), list);
    }
    const others = r.others ? `\n+ the other ${r.others} input channels (their inputs are not stored: their sum, by PyTorch) ${par(r.rest)}` : "";
    parts.push(el("div", { class: "sum", text: `Σ over channels ${r.channels.length ? `${r.channels[0].ch}…${r.channels[r.channels.length - 1].ch}` : ""} = ${fmt(r.total, 6)}${others}\n+ bias ${par(r.bias)}\n= ${fmt(r.value, 6)}` }),
               slideButton(u));
  },
  bn(L, op, u, r, parts) {
    parts.push(el("p", { class: "hint", text: "BatchNorm at inference: normalise with the moving mean and variance learnt in training, then scale by γ and shift by β (four numbers per channel)." }),
      el("div", { class: "sum", text: `x = ${fmt(r.x, 6)} (this unit's input)\nmean = ${fmt(r.mean, 6)}, var = ${fmt(r.v, 6)}, ε = ${op.eps}\nγ = ${fmt(r.g, 6)}, β = ${fmt(r.b, 6)}\n` +
        `γ·(x − mean)/√(var + ε) + β = ${par(r.g)}·(${fmt(r.x, 4)} − ${par(r.mean)})/√(${fmt(r.v, 4)} + ${op.eps}) + ${par(r.b)}\n= ${fmt(r.value, 6)}` }));
  },
  act(L, op, u, r, parts) {
    parts.push(el("div", { class: "sum", text: `x = ${fmt(r.x, 6)}\n${r.formula}\n= ${fmt(r.value, 6)}` }));
    if (op.fn === "relu") parts.push(el("p", { class: "hint", text: "ReLU keeps positive values and turns negative ones into 0: the map keeps only where this feature was found." }));
  },
  maxpool(L, op, u, r, parts) { renderPool(op, u, r, parts, true); },
  avgpool(L, op, u, r, parts) { renderPool(op, u, r, parts, false); },
  gap(L, op, u, r, parts) {
    parts.push(el("div", { class: "sum", text: `${op.mode === "max" ? "maximum" : "mean"} of the ${r.count} values of map ${u.c}\n= ${fmt(r.value, 6)}` }));
  },
  dense(L, op, u, r, parts) {
    const table = el("table", { class: "grid" }, el("caption", { text: `the ${op.top} largest of ${op.inputs} products x·w` }),
      el("tr", {}, el("td", { text: "input" }), el("td", { text: "x" }), el("td", { text: "w" }), el("td", { text: "x·w" })));
    for (const t of r.top) {
      table.append(el("tr", {}, el("td", { text: inputName(op, t.idx) }), el("td", { text: fmt(t.x, 4) }),
                      el("td", { text: fmt(t.w, 4) }), el("td", { text: fmt(t.x * t.w, 4) })));
    }
    parts.push(table, el("div", { class: "sum", text: `top ${op.top} products = ${fmt(r.sum, 6)}\n+ the other ${op.inputs - op.top} products = ${par(r.rest)}\n+ bias ${par(r.bias)}\n= ${fmt(r.value, 6)}` }));
  },
  dropout(L, op, u, r, parts) {
    parts.push(el("p", { class: "hint", text: `Dropout (p = ${op.p}) zeroes units at random only while training; at inference it passes every value unchanged.` }),
               el("div", { class: "sum", text: `x = ${fmt(r.x, 6)} → ${fmt(r.x, 6)}` }));
  },
  flatten(L, op, u, r, parts) {
    const [c, h, w] = op.in_shape, plane = h * w;
    parts.push(el("p", { class: "hint", text: `Flatten lays the ${c} maps of ${h}×${w} out as one vector of ${c * plane}, map after map, row after row.` }),
               el("div", { class: "sum", text: `unit ${u.c} = map ${Math.floor(u.c / plane)}, row ${Math.floor((u.c % plane) / w)}, column ${u.c % w}` }));
  },
};

function inputName(op, idx) {
  if (!op.in_shape) return `x[${idx}]`;
  const [, h, w] = op.in_shape, plane = h * w;
  return `map ${Math.floor(idx / plane)} (${Math.floor((idx % plane) / w)}, ${idx % w})`;
}

function erf(x) {  /* Abramowitz & Stegun 7.1.26: |error| < 1.5e-7 */
  const s = Math.sign(x), a = Math.abs(x), t = 1 / (1 + 0.3275911 * a);
  const y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}

function activation(fn, param, x) {
  const sig = (v) => 1 / (1 + Math.exp(-v));
  switch (fn) {
    case "relu": return [Math.max(0, x), `ReLU(x) = max(0, ${fmt(x, 4)})`];
    case "relu6": return [Math.min(6, Math.max(0, x)), `ReLU6(x) = min(6, max(0, ${fmt(x, 4)}))`];
    case "leaky_relu": return [x >= 0 ? x : param * x, `LeakyReLU(x) = x ≥ 0 ? x : ${param}·x`];
    case "sigmoid": return [sig(x), `σ(x) = 1 / (1 + e^−x) = 1 / (1 + e^${par(-x)})`];
    case "tanh": return [Math.tanh(x), `tanh(${fmt(x, 4)})`];
    case "silu": return [x * sig(x), "SiLU(x) = x·σ(x)"];
    case "elu": return [x > 0 ? x : param * (Math.exp(x) - 1), `ELU(x) = x > 0 ? x : ${param}·(e^x − 1)`];
    case "hardswish": return [x * Math.min(6, Math.max(0, x + 3)) / 6, "Hardswish(x) = x·min(6, max(0, x + 3))/6"];
    case "hardsigmoid": return [Math.min(6, Math.max(0, x + 3)) / 6, "Hardsigmoid(x) = min(6, max(0, x + 3))/6"];
    case "gelu": return param === "tanh"
      ? [0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))), "GELU(x) ≈ ½x(1 + tanh(√(2/π)(x + 0.044715x³)))"]
      : [0.5 * x * (1 + erf(x / Math.SQRT2)), "GELU(x) = ½x(1 + erf(x/√2))"];
    default: return [x, "identity: the value passes unchanged"];
  }
}

async function pool(L, op, u, image, isMax) {
  const [H, W] = op.in_hw, [kh, kw] = op.k;
  const r0 = u.i * op.s[0] - op.pad[0], c0 = u.j * op.s[1] - op.pad[1];
  const jobs = [];
  for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) {
    const y = r0 + a * op.d[0], xx = c0 + b * op.d[1];
    jobs.push(y >= 0 && y < H && xx >= 0 && xx < W ? inputAt(L, op, image, u.c, y, xx) : null);
  }
  const cells = await Promise.all(jobs), real = cells.filter((v) => v !== null);
  const sum = real.reduce((a, b) => a + b, 0);
  let divisor = real.length;
  if (!isMax && !op.same && op.count_pad) {  /* PyTorch: padding cells count, cells past the padding do not */
    divisor = (Math.min(r0 + kh, H + op.pad[0]) - r0) * (Math.min(c0 + kw, W + op.pad[1]) - c0);
  }
  return { value: isMax ? Math.max(...real) : sum / divisor, cells, sum, divisor, count: real.length, r0, c0 };
}

function renderPool(op, u, r, parts, isMax) {
  const [kh, kw] = op.k;
  parts.push(el("p", { class: "hint", text: `${isMax ? "Max" : "Average"} pooling, ${kh}×${kw} window, stride ${pairText(op.s)}, on map ${u.c}: input rows ${r.r0}…${r.r0 + (kh - 1) * op.d[0]}, columns ${r.c0}…${r.c0 + (kw - 1) * op.d[1]}.` +
    (op.same ? " TF \"same\" padding: padded cells never win a max and are left out of an average." : "") }),
    gridTable(kh, kw, (a, b) => {
      const v = r.cells[a * kw + b];
      return v === null ? ["pad", "pad"] : [fmt(v, 4), isMax && v === r.value ? "win" : ""];
    }, "the window"),
    el("div", { class: "sum", text: isMax ? `max of the ${r.count} values = ${fmt(r.value, 6)}` : `sum ${fmt(r.sum, 6)} / ${r.divisor} = ${fmt(r.value, 6)}` }));
}

/* ---------- softmax ---------- */
function softmax(z) {
  const m = Math.max(...z), e = z.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function drawSoftmax() {
  const z = D.logits[state.image], p = softmax(z), truth = D.images[state.image].label;
  const order = p.map((v, k) => k).sort((a, b) => p[b] - p[a]).slice(0, 10);
  const body = document.getElementById("softmax-body"), bars = el("div", { class: "bars" });
  for (const k of order) {
    bars.append(el("div", { class: "bar" + (k === truth ? " truth" : ""), "data-class": className(k) },
      el("span", { class: "label", text: className(k) + (k === truth ? " ✓ true" : "") }),
      el("span", { class: "track" }, el("span", { class: "fill", style: `display:block;width:${(100 * p[k]).toFixed(2)}%` })),
      el("span", { class: "pct", text: `${(100 * p[k]).toFixed(1)}%` })));
  }
  const top = order[0], m = Math.max(...z);
  const denom = z.reduce((a, v) => a + Math.exp(v - m), 0);
  body.replaceChildren(bars, el("div", { class: "sum", text: `softmax(z)_k = e^(z_k) / Σ_j e^(z_j)\n` +
    `${className(top)}: e^${fmt(z[top], 3)} / Σ = ${fmt(Math.exp(z[top] - m), 4)} / ${fmt(denom, 4)} (both × e^${fmt(-m, 3)}) = ${fmt(p[top], 4)}` }),
    el("p", { class: "hint", text: z.length > 10 ? `the 10 most likely of ${z.length} classes` : `all ${z.length} classes` }));
}

/* ---------- image picker ---------- */
function buildPicker() {
  const picker = document.getElementById("picker");
  D.images.forEach((image, n) => {
    const pred = D.logits[n].indexOf(Math.max(...D.logits[n]));
    const verdict = image.label === null ? `predicted ${className(pred)}`
      : pred === image.label ? `✓ ${className(pred)}` : `✗ predicted ${className(pred)}`;
    picker.append(el("button", { class: "pick" + (n === 0 ? " selected" : ""), "data-image": n, onclick: () => selectImage(n) },
      el("img", { src: `data:image/png;base64,${image.png}`, alt: image.name }),
      el("span", {}, el("div", { text: image.name }),
         el("div", { class: "verdict " + (image.label === null ? "" : pred === image.label ? "ok" : "bad"), text: verdict }))));
  });
}

async function selectImage(n) {
  document.body.dataset.ready = "0";
  stopSlide();
  state.image = n;
  document.querySelectorAll(".pick").forEach((b) => b.classList.toggle("selected", Number(b.dataset.image) === n));
  await renderImage();
  document.body.dataset.ready = "1";
}

async function renderImage() {
  document.getElementById("input-name").textContent = D.images[state.image].name;
  drawSoftmax();
  await Promise.all([drawInput(null), ...D.layers.map((L, i) => drawLayer(i))]);
  if (state.unit) await explainUnit();
}

/* ---------- the training story ---------- */
function chart(title, series) {
  const W = 520, H = 220, P = { l: 46, r: 12, t: 22, b: 30 };
  const all = series.flatMap((s) => s.values.filter((v) => v !== null));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "chart");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node); return node;
  };
  add("text", { x: P.l, y: 14, style: "font-weight:600;fill:#1d2330" }, title);
  if (!all.length) { add("text", { x: P.l, y: H / 2 }, "no values recorded"); return svg; }
  const n = Math.max(...series.map((s) => s.values.length));
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const X = (k) => P.l + (n === 1 ? (W - P.l - P.r) / 2 : k * (W - P.l - P.r) / (n - 1));
  const Y = (v) => H - P.b - (v - lo) / (hi - lo) * (H - P.t - P.b);
  for (let t = 0; t <= 4; t++) {
    const v = lo + (hi - lo) * t / 4;
    add("line", { x1: P.l, x2: W - P.r, y1: Y(v), y2: Y(v), stroke: "#e6e9ef" });
    add("text", { x: P.l - 6, y: Y(v) + 4, "text-anchor": "end" }, v.toFixed(3));
  }
  for (let k = 0; k < n; k += Math.max(1, Math.ceil(n / 10))) add("text", { x: X(k), y: H - 14, "text-anchor": "middle" }, `${k + 1}`);
  add("text", { x: (P.l + W - P.r) / 2, y: H - 1, "text-anchor": "middle" }, "epoch");
  series.forEach((s, si) => {
    const pts = s.values.map((v, k) => (v === null ? null : [X(k), Y(v)])).filter(Boolean);
    if (pts.length > 1) add("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: s.colour, "stroke-width": 2 });
    pts.forEach(([x, y]) => add("circle", { cx: x, cy: y, r: 3, fill: s.colour }));
    add("text", { x: W - P.r - 150 + si * 80, y: 14, style: `fill:${s.colour}` }, `● ${s.name}`);
  });
  return svg;
}

function buildStory() {
  const S = D.story, note = document.getElementById("story-note");
  if (!S) { note.textContent = "No training story was given."; return; }
  note.textContent = S.note || (S.accuracy === null ? "" :
    `Accuracy on the ${S.split} split: ${(100 * S.accuracy).toFixed(2)}%. Click a cell of the matrix to see its images.`);
  const curves = document.getElementById("curves"), h = S.history;
  if (h) {
    curves.append(chart("accuracy", [{ name: "train", values: h.accuracy || [], colour: "#2757b8" },
                                     { name: "validation", values: h.val_accuracy || [], colour: "#d9822b" }]),
                  chart("loss", [{ name: "train", values: h.loss || [], colour: "#2757b8" },
                                 { name: "validation", values: h.val_loss || [], colour: "#d9822b" }]));
  } else {
    curves.append(el("p", { class: "hint", text: "This run has no history.json." }));
  }
  if (S.confusion) buildConfusion(S);
}

function buildConfusion(S) {
  const ks = S.matrix_classes, table = el("table", { class: "confusion" });
  const header = el("tr", {}, el("th", { text: "true ╲ predicted" }));
  ks.forEach((k) => header.append(el("th", { title: className(k), text: className(k) })));
  table.append(header);
  ks.forEach((t) => {
    const row = S.confusion[t], total = row.reduce((a, b) => a + b, 0) || 1;
    const tr = el("tr", {}, el("th", { title: className(t), text: className(t) }));
    ks.forEach((p) => {
      const share = row[p] / total, diag = t === p;
      const bg = diag ? `rgba(26,127,55,${0.1 + 0.8 * share})` : `rgba(192,54,44,${row[p] ? 0.08 + 0.85 * share : 0})`;
      tr.append(el("td", { style: `background:${bg};color:${share > 0.55 ? "#fff" : "#1d2330"}`, "data-cell": `${t},${p}`,
                           text: String(row[p]), onclick: (e) => showCell(S, t, p, e.currentTarget) }));
    });
    table.append(tr);
  });
  const box = document.getElementById("confusion");
  box.append(el("h3", { text: `Confusion matrix (${S.split} split; rows: true class)` }), table);
  if (ks.length < S.confusion.length) box.append(el("p", { class: "hint", text: `the ${ks.length} of ${S.confusion.length} classes with the most errors` }));
}

function showCell(S, t, p, td) {
  document.querySelectorAll("table.confusion td.selected").forEach((c) => c.classList.remove("selected"));
  td.classList.add("selected");
  const ids = S.cells[`${t},${p}`] || [], count = S.confusion[t][p], gallery = document.getElementById("gallery");
  const title = `true ${className(t)}, predicted ${className(p)}: ${count} image${count === 1 ? "" : "s"}` +
    (count > ids.length ? ` (showing the first ${ids.length})` : "");
  gallery.replaceChildren(el("h3", { text: title }), ...ids.map((id) => el("img", { src: `data:image/png;base64,${S.thumbs[id]}`, alt: title })));
}

/* ---------- start ---------- */
async function start() {
  document.getElementById("title").textContent = D.title;
  const pictured = D.layers.filter((L) => L.display).length, explained = D.layers.filter((L) => L.op).length;
  document.getElementById("subtitle").textContent = `${D.model}: ${D.layers.length} layers, ${D.total_params.toLocaleString("en")} parameters, ` +
    `${D.total_macs.toLocaleString("en")} multiply-adds per image; ${pictured} layers pictured, ${explained} explained unit by unit` +
    (D.capped.pictures ? ` (the page reached its size cap after ${D.capped.pictures}: later layers are listed only)` :
     D.capped.numbers ? ` (the page reached its size cap after ${D.capped.numbers}: later layers are pictured without exact numbers)` : "") + ".";
  document.getElementById("summary-pre").textContent = D.summary;
  buildPicker();
  buildColumn();
  buildStory();
  await renderImage();
  document.body.dataset.ready = "1";
}

start().catch((err) => { console.error(err); document.body.dataset.ready = "error"; });
