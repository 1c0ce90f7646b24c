// The Review map in the browser: a 2-D canvas of the run's points, coloured by group, with thumbnails, "new"
// rings, a legend that hides groups, wheel zoom, pan, lasso and box selection and a hover naming the file and
// its group. The server sends a binary payload (ui/map_canvas.py describes it) and, as a second element, the
// points' hover texts; an edit sends a new payload and this redraws in a few milliseconds, keeping the zoom and
// the hidden groups of the same map.

const VIEWS = (window.__tacMapViews = window.__tacMapViews || new Map()); // per map: zoom, hidden groups, tool
const IMAGES = (window.__tacMapImages = window.__tacMapImages || new Map()); // decoded thumbnails by URI
const PAD = 0.04; // share of the extent left around the points
const HOVER_PX = 8; // how near the pointer a point must be to be named

function parse(bytes) {
  const buffer = bytes.slice().buffer; // an aligned copy: typed arrays need aligned offsets
  const view = new DataView(buffer);
  const headerLength = view.getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
  const n = header.n;
  const at = (name) => header.offsets[name];
  const position = new Int32Array(buffer, at("position"), n);
  return {
    header, n, position,
    x: new Float32Array(buffer, at("x"), n), y: new Float32Array(buffer, at("y"), n),
    group: new Uint16Array(buffer, at("group"), n), ring: new Uint8Array(buffer, at("ring"), n),
    hover: (i) => hoverText(header.texts, position[i]),
  };
}

function hoverText(key, position) {
  // the texts come as their own element (ui/map_canvas.py): decoded on the first hover, found by position
  const entry = (window.__tacMapTexts || new Map()).get(key);
  if (!entry) return "";
  if (!entry.lines) {
    const { offsets, sizes, n } = entry.header;
    entry.positions = new Int32Array(entry.bytes.buffer.slice(offsets.position, offsets.position + 4 * n));
    const text = new TextDecoder().decode(entry.bytes.subarray(offsets.text, offsets.text + sizes.text));
    entry.lines = n ? text.split("\n") : [];
  }
  let lo = 0, hi = entry.positions.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (entry.positions[mid] === position) return entry.lines[mid];
    entry.positions[mid] < position ? (lo = mid + 1) : (hi = mid - 1);
  }
  return "";
}

function viewOf(map) {
  let state = VIEWS.get(map.header.view);
  if (!state) {
    state = { window: null, hidden: new Set(), known: new Set(), tool: "lasso", shape: null };
    VIEWS.set(map.header.view, state);
  }
  for (const g of map.header.groups) { // a group seen for the first time starts as the server says (excluded: hidden)
    if (state.known.has(g.key)) continue;
    state.known.add(g.key);
    if (g.hidden) state.hidden.add(g.key);
  }
  return state;
}

function fullWindow(header) {
  const [x0, x1, y0, y1] = header.extent;
  const dx = (x1 - x0) || 1, dy = (y1 - y0) || 1;
  return [x0 - PAD * dx, x1 + PAD * dx, y0 - PAD * dy, y1 + PAD * dy];
}

function thumbnail(uri, redraw) {
  let image = IMAGES.get(uri);
  if (!image) {
    image = new Image();
    image.onload = redraw;
    image.src = uri;
    IMAGES.set(uri, image);
  }
  return image.complete && image.naturalWidth ? image : null;
}

function outline(shape) {
  // a drawn shape's vertices (data coordinates) and its bounding box
  const xs = shape.map((p) => p[0]), ys = shape.map((p) => p[1]);
  return { xs, ys, bx0: Math.min(...xs), bx1: Math.max(...xs), by0: Math.min(...ys), by1: Math.max(...ys) };
}

function insidePolygon(px, py, xs, ys) {
  let inside = false;
  for (let i = 0, j = xs.length - 1; i < xs.length; j = i++) {
    if ((ys[i] > py) !== (ys[j] > py) && px < ((xs[j] - xs[i]) * (py - ys[i])) / (ys[j] - ys[i]) + xs[i]) {
      inside = !inside;
    }
  }
  return inside;
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  if (!data || !data.byteLength) return undefined;
  const root = parentElement.querySelector(".tacmap");
  const plot = root.querySelector(".plot");
  const points = root.querySelector("canvas.points");
  const overlay = root.querySelector("canvas.overlay");
  const tip = root.querySelector(".tip");
  const legend = root.querySelector(".legend");
  const map = parse(data);
  const { header, n, x, y, group, ring } = map;
  const state = viewOf(map);
  const abort = new AbortController();
  const on = (target, type, handler) => target.addEventListener(type, handler, { signal: abort.signal });
  let width = 0, height = header.height, frame = 0, cells = null;
  root.dataset.points = String(n);
  root.setAttribute("role", "img");
  root.setAttribute("aria-label", `Map of ${n} images in ${header.groups.length} groups`);

  const win = () => state.window || fullWindow(header);
  const toScreen = () => {
    const [x0, x1, y0, y1] = win();
    const kx = width / (x1 - x0), ky = height / (y1 - y0);
    return { kx, ky, sx: (v) => (v - x0) * kx, sy: (v) => height - (v - y0) * ky };
  };
  const toData = (px, py) => {
    const [x0, x1, y0, y1] = win();
    return [x0 + (px / width) * (x1 - x0), y0 + ((height - py) / height) * (y1 - y0)];
  };
  const visible = (i) => !state.hidden.has(header.groups[group[i]].key);

  function size(canvas) {
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return ctx;
  }

  function draw() {
    frame = 0;
    width = plot.clientWidth || 600;
    // the whole map (tools, points, legend) keeps the height asked for: the legend's rows come off the points
    height = Math.max(240, header.height - root.querySelector(".bar").offsetHeight - legend.offsetHeight - 8);
    plot.style.height = `${height}px`;
    const ctx = size(points);
    const { kx, ky, sx, sy } = toScreen();
    const r = header.marker / 2, round = n < header.round_below;
    const chosen = state.shape ? state.shape.caught : null;
    cells = null; // the hover's grid of the points as drawn: built on the first hover after this
    header.groups.forEach((g) => {
      if (state.hidden.has(g.key)) return;
      const shown = new Path2D(), dimmed = new Path2D(); // one fill per group and shade: far fewer canvas calls
      for (let i = g.start; i < g.stop; i++) {
        const px = sx(x[i]), py = sy(y[i]);
        if (px < -r || py < -r || px > width + r || py > height + r) continue;
        const path = chosen && !chosen.has(i) ? dimmed : shown;
        if (round) {
          path.moveTo(px + r, py);
          path.arc(px, py, r, 0, 2 * Math.PI);
        } else {
          path.rect(px - r, py - r, 2 * r, 2 * r);
        }
      }
      ctx.fillStyle = g.colour;
      ctx.globalAlpha = 0.25;
      ctx.fill(dimmed);
      ctx.globalAlpha = 1;
      ctx.fill(shown);
    });
    if (!state.hidden.has("new")) {
      ctx.strokeStyle = header.ring_colour;
      ctx.lineWidth = 1.5;
      for (let i = 0; i < n; i++) {
        if (!ring[i] || !visible(i)) continue;
        ctx.beginPath();
        ctx.arc(sx(x[i]), sy(y[i]), r + 3, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    let thumbnails = 0;
    for (const [tx, ty, extent, uri] of header.thumbnails) {
      const image = thumbnail(uri, schedule);
      if (!image) continue;
      const side = Math.min(extent * kx, extent * ky);
      ctx.drawImage(image, sx(tx) - side / 2, sy(ty) - side / 2, side, side);
      thumbnails += 1;
    }
    root.dataset.thumbnails = String(thumbnails); // what the canvas shows, for a test or a screen reader's caption
    drawShape();
  }

  function drawShape(path) {
    const ctx = size(overlay);
    const shape = path || (state.shape && state.shape.path);
    if (!shape || shape.length < 2) return;
    const { sx, sy } = toScreen();
    ctx.strokeStyle = "#333";
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    shape.forEach(([dx, dy], k) => (k ? ctx.lineTo(sx(dx), sy(dy)) : ctx.moveTo(sx(dx), sy(dy))));
    ctx.closePath();
    ctx.stroke();
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function drawLegend() {
    legend.replaceChildren();
    if (header.legend_title) {
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = header.legend_title;
      legend.appendChild(title);
    }
    for (const g of [...header.groups, ...(header.rings ? [header.rings] : [])]) {
      const item = document.createElement("button");
      item.className = "item" + (state.hidden.has(g.key) ? " hidden" : "");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.borderColor = g.colour;
      if (g.key !== "new") swatch.style.background = g.colour; // the "new" layer: a ring, as on the map
      const label = document.createElement("span");
      label.className = "legendtext";
      label.textContent = g.label;
      item.append(swatch, label);
      item.title = state.hidden.has(g.key) ? "Show this group" : "Hide this group";
      on(item, "click", () => {
        state.hidden.has(g.key) ? state.hidden.delete(g.key) : state.hidden.add(g.key);
        drawLegend();
        schedule();
      });
      legend.appendChild(item);
    }
  }

  function drawTools() {
    root.querySelectorAll(".bar button[data-tool]").forEach((button) => {
      button.classList.toggle("on", button.dataset.tool === state.tool);
    });
  }

  function grid() {
    const { sx, sy } = toScreen();
    cells = new Map();
    for (let i = 0; i < n; i++) {
      const px = sx(x[i]), py = sy(y[i]);
      if (px < 0 || py < 0 || px > width || py > height || !visible(i)) continue;
      const cell = `${Math.floor(px / HOVER_PX)},${Math.floor(py / HOVER_PX)}`;
      const list = cells.get(cell);
      list ? list.push(i) : cells.set(cell, [i]);
    }
  }

  function nearest(px, py) {
    if (!cells) grid();
    let best = -1, bestDistance = HOVER_PX * HOVER_PX;
    const { sx, sy } = toScreen();
    const cx = Math.floor(px / HOVER_PX), cy = Math.floor(py / HOVER_PX);
    for (let a = cx - 1; a <= cx + 1; a++) {
      for (let b = cy - 1; b <= cy + 1; b++) {
        for (const i of cells.get(`${a},${b}`) || []) {
          const d = (sx(x[i]) - px) ** 2 + (sy(y[i]) - py) ** 2;
          if (d <= bestDistance) [best, bestDistance] = [i, d];
        }
      }
    }
    return best;
  }

  function caughtBy(shape, kind) {
    const caught = new Set();
    const { xs, ys, bx0, bx1, by0, by1 } = outline(shape);
    for (let i = 0; i < n; i++) {
      if (x[i] < bx0 || x[i] > bx1 || y[i] < by0 || y[i] > by1 || !visible(i)) continue;
      if (kind === "box" || insidePolygon(x[i], y[i], xs, ys)) caught.add(i);
    }
    return caught;
  }

  function select(shape, kind) {
    const caught = caughtBy(shape, kind);
    state.shape = { path: shape, kind, caught };
    const { xs, ys, bx0, bx1, by0, by1 } = outline(shape);
    const region = kind === "box" ? { x: [bx0, bx1], y: [by0, by1] } : { x: xs, y: ys };
    setTriggerValue("select", {
      points: [...caught].map((i) => map.position[i]),
      box: kind === "box" ? [region] : [], lasso: kind === "box" ? [] : [region],
    });
    schedule();
  }

  function clear() {
    state.shape = null;
    setTriggerValue("select", { points: [], box: [], lasso: [] });
    schedule();
  }

  let drag = null;
  on(overlay, "pointerdown", (event) => {
    if (event.button !== 0) return;
    overlay.setPointerCapture(event.pointerId);
    drag = { tool: state.tool, start: [event.offsetX, event.offsetY], path: [toData(event.offsetX, event.offsetY)],
             window: win() };
  });
  on(overlay, "pointermove", (event) => {
    if (!drag) {
      const i = nearest(event.offsetX, event.offsetY);
      if (i < 0) {
        tip.style.display = "none";
        return;
      }
      tip.replaceChildren(document.createTextNode(map.hover(i)), document.createElement("br"),
                          document.createTextNode(header.groups[group[i]].label));
      tip.style.left = `${Math.min(event.offsetX + 12, width - 260)}px`;
      tip.style.top = `${event.offsetY + 12}px`;
      tip.style.display = "block";
      return;
    }
    tip.style.display = "none";
    if (drag.tool === "pan") {
      const [x0, x1, y0, y1] = drag.window;
      const dx = ((event.offsetX - drag.start[0]) / width) * (x1 - x0);
      const dy = ((event.offsetY - drag.start[1]) / height) * (y1 - y0);
      state.window = [x0 - dx, x1 - dx, y0 + dy, y1 + dy];
      schedule();
      return;
    }
    const here = toData(event.offsetX, event.offsetY);
    if (drag.tool === "box") {
      const [ax, ay] = drag.path[0];
      drag.path = [[ax, ay], [here[0], ay], here, [ax, here[1]]];
    } else {
      drag.path.push(here);
    }
    drawShape(drag.path);
  });
  on(overlay, "pointerup", (event) => {
    const done = drag;
    drag = null;
    if (!done || done.tool === "pan") return;
    const moved = Math.abs(event.offsetX - done.start[0]) + Math.abs(event.offsetY - done.start[1]);
    if (moved < 4 || done.path.length < (done.tool === "box" ? 4 : 3)) {
      drawShape();
      return;
    }
    select(done.path, done.tool);
  });
  on(overlay, "pointerleave", () => (tip.style.display = "none"));
  on(overlay, "dblclick", clear);
  on(overlay, "wheel", (event) => {
    event.preventDefault();
    const [x0, x1, y0, y1] = win();
    const [cx, cy] = toData(event.offsetX, event.offsetY);
    const k = Math.exp(Math.max(-1, Math.min(1, event.deltaY / 300)));
    state.window = [cx - (cx - x0) * k, cx + (x1 - cx) * k, cy - (cy - y0) * k, cy + (y1 - cy) * k];
    schedule();
  });
  root.querySelectorAll(".bar button").forEach((button) => on(button, "click", () => {
    if (button.dataset.tool) {
      state.tool = button.dataset.tool;
      drawTools();
    } else {
      state.window = null;
      schedule();
    }
  }));
  const resize = new ResizeObserver(() => plot.clientWidth !== width && schedule());
  resize.observe(plot);
  if (state.shape) state.shape.caught = caughtBy(state.shape.path, state.shape.kind); // the points may have moved
  drawTools();
  drawLegend();
  draw();
  return () => {
    abort.abort();
    resize.disconnect();
    if (frame) cancelAnimationFrame(frame);
  };
}
