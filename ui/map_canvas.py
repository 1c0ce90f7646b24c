"""The Review map's drawing in the browser: a Streamlit component (``st.components.v2``) that draws the points on
a 2-D canvas (``map_canvas.js``), the binary payload it is sent and the hover texts that travel beside it.

Why not a Plotly figure: Streamlit gives a Plotly chart a new identity whenever its figure changes, so every edit
(a rename, a move) rebuilt the chart in the browser — a megabyte of JSON parsed twice and a new WebGL scene,
0.5–1 s at 20,000 points on a laptop's CPU. This component keeps its canvas, zoom and hidden groups; an edit sends
a new payload and the canvas redraws in milliseconds.

The map's payload (little-endian): ``b"TACM"``, the header's length (uint32), the header (UTF-8 JSON), then at the
header's ``offsets`` (4-byte aligned): ``x`` and ``y`` (float32 per drawn point, in the order of their groups),
``position`` (int32: the point's position in the review state), ``group`` (uint16: its index in ``groups``) and
``ring`` (uint8: 1 for an image an intake added). The header holds ``groups`` (key, label, colour, hidden, start,
stop), ``rings`` (the "new" layer's legend entry or None), ``thumbnails`` ([x, y, side in data units, data URI]),
``extent`` (of every point, drawn or not), ``view`` (the map's identity: zoom and hidden groups are kept while it
stays), ``texts`` (the key of the hover texts), ``height``, ``marker``, ``round_below``, ``ring_colour`` and
``legend_title``.

The hover texts (each drawn point's file) are a second, invisible element (:func:`encode_texts`): ``b"TACT"``, the
header's length, the header (``key``, ``n``, ``offsets``, ``sizes``), ``position`` (int32, ascending) and
``text`` (UTF-8, one line per position). They change only when the set of drawn points does, so after an edit
Streamlit answers with a reference to the copy the browser already has: a rename at 20,000 points (thumbnails on)
receives ~480 kB instead of ~800 kB. Text reaches the page only as text (``textContent``).
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import streamlit as st

MAGIC = b"TACM"
ROUND_BELOW = 2000  # below this many points, round markers (crisper); above, squares (faster)
ARRAYS = (("x", np.float32), ("y", np.float32), ("position", np.int32), ("group", np.uint16), ("ring", np.uint8))
TEXTS = b"TACT"
HTML = """<div class="tacmap">
<div class="bar"><button data-tool="lasso" title="Draw around points to select them">Lasso</button>
<button data-tool="box" title="Drag a box to select the points inside">Box</button>
<button data-tool="pan" title="Drag to move the map">Pan</button>
<button data-reset title="Zoom out to the whole map">Reset</button>
<span class="hint">scroll: zoom · double-click: clear selection</span></div>
<div class="plot"><canvas class="points"></canvas><canvas class="overlay"></canvas><div class="tip"></div></div>
<div class="legend"></div></div>"""
CSS = """
.tacmap { font-family: var(--st-font); font-size: 13px; color: var(--st-text-color); }
.bar { display: flex; gap: 4px; align-items: center; margin-bottom: 4px; }
.bar button, .legend .item { font: inherit; color: inherit; background: transparent; cursor: pointer;
  border: 1px solid var(--st-border-color); border-radius: 6px; padding: 1px 8px; }
.bar button.on { border-color: var(--st-primary-color); color: var(--st-primary-color); }
.bar button { white-space: nowrap; }
.bar .hint { opacity: 0.6; margin-left: 6px; font-size: 12px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.plot { position: relative; width: 100%; }
.plot canvas { position: absolute; left: 0; top: 0; }
.plot canvas.overlay { cursor: crosshair; touch-action: none; }
.tip { position: absolute; display: none; pointer-events: none; max-width: 250px; padding: 3px 6px;
  background: rgba(255, 255, 255, 0.95); color: #222; border: 1px solid #999; border-radius: 4px;
  font-size: 12px; overflow-wrap: anywhere; }
.legend { display: flex; flex-wrap: wrap; gap: 3px 6px; margin-top: 4px; }
.legend .title { font-weight: 600; margin-right: 4px; }
.legend .item { display: inline-flex; align-items: center; gap: 5px; border-color: transparent; padding: 0 4px; }
.legend .item.hidden { opacity: 0.4; }
.legend .swatch { width: 10px; height: 10px; border-radius: 50%; border: 1.5px solid; }
"""
_COMPONENT = st.components.v2.component("tac_studio.review_map", html=HTML, css=CSS,
                                        js=(Path(__file__).with_name("map_canvas.js")).read_text(encoding="utf-8"))
TEXTS_JS = """
export default function ({ data }) {  // keep the hover texts where the map (map_canvas.js) looks them up
  if (!data || !data.byteLength) return;
  const texts = (window.__tacMapTexts = window.__tacMapTexts || new Map());
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const header = JSON.parse(new TextDecoder().decode(data.subarray(8, 8 + view.getUint32(4, true))));
  if (texts.has(header.key)) return;
  texts.set(header.key, { header, bytes: data.slice(), lines: null });
  while (texts.size > 4) texts.delete(texts.keys().next().value);  // the oldest: maps drawn a while ago
}
"""
_TEXTS = st.components.v2.component("tac_studio.review_map_texts", js=TEXTS_JS)


class Group(NamedTuple):
    key: str  # stable across edits: what the legend hides
    label: str
    colour: str
    rows: np.ndarray  # positions in the review state, in drawing order
    hidden: bool = False


class Payload(NamedTuple):
    """A decoded payload (what the browser reads): for tests and benchmarks. ``hover`` is each drawn point's text,
    in the order of ``arrays`` (empty without the texts' payload)."""

    header: dict
    arrays: dict
    hover: list[str]


def encode(xy: np.ndarray, groups: Sequence[Group], *, texts: str, view: str, height: int, marker: float,
           extent: Sequence[float], rings: Optional[np.ndarray] = None, rings_label: str = "",
           ring_colour: str = "#111111", thumbnails: Sequence[tuple] = (), legend_title: Optional[str] = None) -> bytes:
    """The map's payload for ``groups`` of points of ``xy`` (positions ``rows``, drawn in this order: later on
    top), with ``rings`` the positions ringed as new and ``texts`` the key of their hover texts."""
    rows = np.concatenate([g.rows for g in groups]) if groups else np.zeros(0, np.int64)
    stops = np.cumsum([len(g.rows) for g in groups]).tolist()
    columns = {"x": xy[rows, 0], "y": xy[rows, 1], "position": rows,
               "group": np.repeat(np.arange(len(groups)), [len(g.rows) for g in groups]),
               "ring": np.isin(rows, rings) if rings is not None and len(rings) else np.zeros(len(rows), bool)}
    header = {"n": int(len(rows)), "view": view, "texts": texts, "height": int(height), "marker": float(marker),
              "round_below": ROUND_BELOW, "extent": [float(v) for v in extent], "ring_colour": ring_colour,
              "legend_title": legend_title, "thumbnails": [[float(x), float(y), float(s), uri] for x, y, s, uri in thumbnails],
              "groups": [{"key": g.key, "label": g.label, "colour": g.colour, "hidden": bool(g.hidden),
                          "start": start, "stop": stop} for g, start, stop in zip(groups, [0, *stops], stops)],
              "rings": {"key": "new", "label": rings_label, "colour": ring_colour}
              if rings is not None and len(rings) else None}
    return _pack(MAGIC, header, {name: np.ascontiguousarray(columns[name], dtype).tobytes() for name, dtype in ARRAYS})


def encode_texts(positions: np.ndarray, hover: np.ndarray) -> bytes:
    """The hover texts of the points at ``positions`` (ascending; ``hover`` holds each position's text), under a
    key made from their content."""
    positions = np.ascontiguousarray(positions, np.int32)
    text = "\n".join(str(t).replace("\n", " ") for t in hover[positions]).encode("utf-8")
    key = hashlib.sha1(positions.tobytes() + text).hexdigest()
    return _pack(TEXTS, {"key": key, "n": int(len(positions))}, {"position": positions.tobytes(), "text": text})


def texts_key(payload: bytes) -> str:
    return _unpack(payload, TEXTS)[0]["key"]


def _pack(magic: bytes, header: dict, blobs: dict[str, bytes]) -> bytes:
    """``magic``, the header's length, the header with the blobs' ``offsets`` (4-byte aligned) and ``sizes``,
    then the blobs."""
    header = {**header, "offsets": {name: 0 for name in blobs}, "sizes": {name: len(b) for name, b in blobs.items()}}
    # the header's length depends on the offsets written in it: leave room for them, then place the blobs
    start = _aligned(8 + len(json.dumps(header).encode("utf-8")) + 16 * len(blobs))
    offsets = np.cumsum([start, *(_aligned(len(b)) for b in list(blobs.values())[:-1])]).tolist()
    header["offsets"] = dict(zip(blobs, offsets))
    head = json.dumps(header).encode("utf-8")
    out = bytearray(magic + struct.pack("<I", len(head)) + head)
    for offset, blob in zip(offsets, blobs.values()):
        out += bytes(offset - len(out)) + blob
    return bytes(out)


def _aligned(size: int) -> int:
    return (size + 3) // 4 * 4


def _unpack(payload: bytes, magic: bytes) -> tuple[dict, dict[str, bytes]]:
    if payload[:4] != magic:
        raise ValueError(f"not a {magic.decode()} payload")
    (length,) = struct.unpack_from("<I", payload, 4)
    header = json.loads(payload[8:8 + length])
    return header, {name: payload[offset:offset + header["sizes"][name]]
                    for name, offset in header["offsets"].items()}


def decode(payload: bytes, texts: Optional[bytes] = None) -> Payload:
    """What the browser reads from a map's payload (and its hover texts, when given)."""
    header, blobs = _unpack(payload, MAGIC)
    arrays = {name: np.frombuffer(blobs[name], dtype, header["n"]) for name, dtype in ARRAYS}
    hover: list[str] = []
    if texts is not None:
        text_header, text_blobs = _unpack(texts, TEXTS)
        if text_header["key"] != header["texts"]:
            raise ValueError("the hover texts belong to another map")
        lines = text_blobs["text"].decode("utf-8").split("\n") if text_header["n"] else []
        by_position = dict(zip(np.frombuffer(text_blobs["position"], np.int32).tolist(), lines))
        hover = [by_position[p] for p in arrays["position"].tolist()]
    return Payload(header, arrays, hover)


def review_map(payload: bytes, texts: bytes, key: str, on_select: Callable[[], None]) -> None:
    """Draw the map and hand the browser its hover texts; ``on_select`` runs when a lasso or box is drawn (or a
    double-click clears it), with ``selection(key)`` holding what was caught."""
    _COMPONENT(data=payload, key=key, on_select_change=on_select, width="stretch", height="content")
    _TEXTS(data=texts, key=f"{key}_texts", width="stretch", height="content")


def selection(key: str) -> dict:
    """The map's last selection: ``points`` (positions of the drawn points caught in shown groups), ``box`` and
    ``lasso`` (lists of {"x": [...], "y": [...]} in the map's coordinates)."""
    state = st.session_state.get(key) or {}
    event = state.get("select") if hasattr(state, "get") else None
    return event if isinstance(event, dict) else {}
