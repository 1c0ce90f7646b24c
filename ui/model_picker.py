"""The model and device inputs shared by the vocabulary page (encoding cost) and the cluster page.

Choices are kept in the session (not in widget state, which Streamlit drops when another page is shown), and
default to the newest run's model, so a refresh starts from what was last used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import streamlit as st

from tac_core.errors import TacError
from tac_core.devices import DEVICES, describe_devices
from tac_core.embedding.models import DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelSpec
from tac_core.embedding.weights import LOCAL_DIR_PREFIX
from tac_core.run.params import model_from_dict, model_to_dict
from ui import model_folder_view, state

_FIELDS = ("name", "pretrained", "checkpoint")


@st.cache_resource(show_spinner=False)
def detected_devices() -> str:
    return describe_devices()


def _defaults(workspace) -> dict:
    """The newest run's model, else the default one, as the inputs show it (no checkpoint: empty)."""
    runs = workspace.runs()
    spec = ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED)
    if not runs.empty:
        try:
            spec = model_from_dict(runs.iloc[0]["params"].get("model")) or spec
        except TacError:
            pass  # a row without a usable model: offer the default
    return {**model_to_dict(spec), "checkpoint": spec.checkpoint or ""}


def _keep(field: str) -> None:
    st.session_state[f"pref_model_{field}"] = st.session_state[f"w_model_{field}"]
    model_folder_view.typed()


def _set_choice(model: dict) -> None:
    """Fill the inputs with a model as run parameters store it (a pick from the models folder)."""
    for field in _FIELDS:
        st.session_state[f"pref_model_{field}"] = model.get(field) or ""


def model_inputs(workspace, compact: bool = False) -> Optional[dict]:
    """Draw the model inputs; returns ``{"name", "pretrained", "checkpoint"}`` or None (problem shown)."""
    defaults = _defaults(workspace)
    for field in _FIELDS:
        st.session_state.setdefault(f"pref_model_{field}", defaults[field])
    model_folder_view.picker(_set_choice)
    for field in _FIELDS:
        st.session_state[f"w_model_{field}"] = st.session_state[f"pref_model_{field}"]
    cols = st.columns([3, 2, 3])
    cols[0].text_input("Model", key="w_model_name", on_change=_keep, args=("name",),
                       help="An open_clip model name (ViT-B-32, ViT-L-14 …), a folder holding open_clip_config.json "
                            "and one weights file, or the path of an open_clip model config .json.")
    cols[1].text_input("Pretrained tag", key="w_model_pretrained", on_change=_keep, args=("pretrained",),
                       help="Which published weights of an open_clip model (openai, laion2b_s34b_b79k …). Ignored "
                            "when a checkpoint file is given.")
    cols[2].text_input("Checkpoint file (optional)", key="w_model_checkpoint", on_change=_keep,
                       args=("checkpoint",), help="A local weights file; needed offline, and for a model config .json.")
    if not compact:
        st.caption("Published weights are downloaded on first use only where this machine has internet access; "
                   "offline, use the models folder or give a checkpoint file.")
        model_folder_view.help_section(str(st.session_state["pref_model_name"]))
    return check_model({field: st.session_state[f"pref_model_{field}"] for field in _FIELDS})


def current_choice(workspace) -> Optional[dict]:
    """The model the inputs hold now (this session's choice, else the newest run's), without drawing anything;
    None when it does not pass the cheap checks."""
    defaults = _defaults(workspace)
    try:
        return _checked({field: st.session_state.get(f"pref_model_{field}", defaults[field]) for field in _FIELDS})
    except TacError:
        return None


def check_model(choice: dict) -> Optional[dict]:
    """The choice as stored in run parameters, after the cheap checks (no download, no loading)."""
    try:
        return _checked(choice)
    except TacError as exc:
        state.show_error(exc, "use this model")
        return None


def _checked(choice: dict) -> dict:
    name = str(choice.get("name") or "").strip()
    checkpoint = str(choice.get("checkpoint") or "").strip() or None
    if name and not name.startswith(LOCAL_DIR_PREFIX) and Path(name).expanduser().is_dir():
        name = f"{LOCAL_DIR_PREFIX}{Path(name).expanduser().resolve()}"
    spec = ModelSpec(name, str(choice.get("pretrained") or "").strip() or DEFAULT_PRETRAINED, checkpoint)
    spec.architecture_config()
    if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
        raise TacError(f"the checkpoint file {checkpoint} does not exist on the machine running TAC Studio; "
                       "check the path.")
    return model_to_dict(spec)


def spec_of(choice: dict) -> ModelSpec:
    return model_from_dict(choice)


def device_input() -> str:
    st.session_state.setdefault("pref_device", "auto")
    st.session_state["w_device"] = st.session_state["pref_device"]
    choice = st.selectbox("Device", DEVICES, key="w_device",
                          on_change=lambda: st.session_state.__setitem__("pref_device", st.session_state["w_device"]),
                          help="auto uses a CUDA GPU when there is one, then Apple's MPS, else the CPU.")
    st.caption(f"Detected: {detected_devices()}")
    return choice
