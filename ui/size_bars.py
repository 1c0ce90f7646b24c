"""The cluster-size bar chart's drawing in the browser: a small Streamlit component (``st.components.v2``) of
plain HTML bars, largest first, each with its size written on it, the cluster's id under it and its name and
share in a tooltip.

Why not a chart library: Streamlit gives a Plotly chart a new identity whenever its figure changes, so every
merge or move rebuilt it in the browser (~70 ms of a click at 20,000 images here); these bars are a few dozen
elements, redrawn in a millisecond. Text reaches the page only as text (``textContent``, ``title``).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

HEIGHT = 170
ROTATE_ABOVE = 20  # more clusters than this: the sizes are written upwards, so that neighbours do not overlap
COLOUR = "#4c78a8"
JS = """
export default function (component) {
  const { data, parentElement } = component;
  const root = parentElement.querySelector(".sizebars");
  const bars = root.querySelector(".bars");
  const rows = data.bars, most = Math.max(1, ...rows.map((r) => r.size));
  root.style.setProperty("--bar-height", `${data.height - 40}px`);
  root.classList.toggle("many", rows.length > data.rotate_above);
  bars.replaceChildren(...rows.map((r) => {
    const column = document.createElement("div");
    column.className = "column";
    column.title = `Cluster ${r.label}: ${r.name}\\n${r.size} images (${(100 * r.share).toFixed(1)}%)`;
    const size = document.createElement("span");
    size.className = "size";
    size.textContent = String(r.size);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.height = `${(100 * r.size) / most}%`;
    bar.style.background = data.colour;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = r.label;
    const stack = document.createElement("div");
    stack.className = "stack";
    stack.append(size, bar);
    column.append(stack, label);
    return column;
  }));
}
"""
HTML = """<div class="sizebars"><div class="axis">Images</div><div class="bars"></div>
<div class="caption">Cluster (largest first)</div></div>"""
CSS = """
.sizebars { font-family: var(--st-font); font-size: 11px; color: var(--st-text-color); position: relative;
  padding-left: 14px; }
.axis { position: absolute; left: 0; top: 50%; transform: rotate(-90deg) translateX(50%); transform-origin: left top;
  font-size: 11px; opacity: 0.7; }
.bars { display: flex; align-items: flex-end; gap: 2px; height: calc(var(--bar-height) + 14px); }
.column { flex: 1 1 0; min-width: 0; display: flex; flex-direction: column; align-items: stretch; height: 100%; }
.stack { flex: 1; display: flex; flex-direction: column; justify-content: flex-end; align-items: stretch; }
.size { text-align: center; line-height: 14px; white-space: nowrap; }
.many .size { writing-mode: vertical-rl; transform: rotate(180deg); line-height: normal; align-self: center; }
.bar { min-height: 1px; border-radius: 2px 2px 0 0; }
.label { text-align: center; overflow: hidden; text-overflow: clip; white-space: nowrap; line-height: 14px; }
.caption { text-align: center; opacity: 0.7; line-height: 14px; }
"""
_COMPONENT = st.components.v2.component("tac_studio.cluster_sizes", html=HTML, css=CSS, js=JS)


def bars(clusters: pd.DataFrame) -> list[dict]:
    """One bar per cluster, largest first (ties by id): label (the id), name, size and share of all images."""
    frame = clusters[["cluster", "name", "size"]].sort_values(["size", "cluster"], ascending=[False, True])
    total = max(1, int(frame["size"].sum()))
    return [{"label": str(int(c)), "name": str(name), "size": int(size), "share": int(size) / total}
            for c, name, size in zip(frame["cluster"], frame["name"], frame["size"])]


def size_bars(clusters: pd.DataFrame, key: str) -> None:
    """Draw the bars of ``clusters`` (columns cluster, name, size)."""
    _COMPONENT(data={"bars": bars(clusters), "height": HEIGHT, "rotate_above": ROTATE_ABOVE, "colour": COLOUR},
               key=key, width="stretch", height="content")
