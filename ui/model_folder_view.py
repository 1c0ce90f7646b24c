"""The models folder in the model picker (:mod:`tac_core.embedding.model_folder`): every model in it by name, its
architecture asked once when its file does not tell, and where to put weights and how to get them.

Choosing a model here fills the picker's inputs (``pref_model_*`` in the session, see :mod:`ui.model_picker`),
so a run stores it as any typed model: a ``local-dir:`` folder, or an architecture plus a checkpoint file.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
import streamlit as st

from tac_core.embedding.model_folder import (FolderModel, download_command, find_models, published_tags,
                                             remember_architecture)
from tac_core.embedding.models import DEFAULT_MODEL
from tac_core.embedding.weights import LOCAL_DIR_PREFIX
from tac_core.workspace.workspace import MODELS_ENV, models_dir
from ui import widgets
from ui.safe_text import esc

TYPED = "(a model typed below)"
_ASKING = "model_folder_asking"  # the weights file whose architecture is being asked


@st.cache_data(show_spinner="Reading the models folder …", ttl=30)
def _models(folder: str, listing: tuple) -> list[FolderModel]:
    return find_models(folder)


def folder_models() -> list[FolderModel]:
    """The models folder's models, read again when a file in it changes (or every 30 s)."""
    folder = models_dir()
    try:
        listing = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())) if folder.is_dir() else ()
    except OSError:
        listing = ()
    return _models(str(folder), listing)


def picker(set_choice) -> None:
    """A select over the models folder; ``set_choice(model dict)`` fills the picker's inputs."""
    models = folder_models()
    if not models:
        return
    by_name = {m.name: m for m in models}
    st.session_state["w_model_folder"] = _current(models)  # follows the inputs below when a model is typed
    st.selectbox("Model from the models folder", [TYPED, *by_name], key="w_model_folder", on_change=lambda: _chosen(by_name, set_choice),
                 help=f"Everything in {models_dir()}: model folders (open_clip_config.json and weights) and "
                      "weights files.")
    asking = st.session_state.get(_ASKING)
    if asking in by_name and by_name[asking].architecture is None:
        _ask_architecture(by_name[asking], set_choice)


def help_section(architecture: str) -> None:
    """Where to put weights, the one command that gets them elsewhere, and the published tags of ``architecture``."""
    folder = models_dir()
    with st.expander("Models folder: using a model without internet access"):
        st.markdown(f"Put a model into **{esc(folder)}** (set {MODELS_ENV} to use another folder) and it appears "
                    "in *Model from the models folder* by its name: a folder holding `open_clip_config.json` and "
                    "its weights, or a single weights file (`.safetensors`, `.bin`, `.pt`; its architecture is "
                    "read from its shapes and name, or asked once).")
        name = architecture if open_clip.get_model_config(architecture) else DEFAULT_MODEL
        tags = published_tags(name)
        if not tags:
            st.caption(f"open_clip publishes no weights for {esc(name)}.")
            return
        st.caption(f"Weights open_clip publishes for {esc(name)}: {esc(', '.join(tags))}.")
        tag = st.selectbox("Weights to download", tags, key="model_folder_tag")
        command = download_command(name, tag)
        if command:
            st.markdown("On a machine with internet access (Python 3 installed), run:")
            st.code(command, language="bash")
            st.caption(f"then copy what it made ({esc(name)}-{esc(tag)}) into the models folder above.")


def _current(models: list[FolderModel]) -> str:
    """The model being asked about, else the one the inputs hold, else :data:`TYPED`."""
    if st.session_state.get(_ASKING) in {m.name for m in models}:
        return st.session_state[_ASKING]
    name, checkpoint = st.session_state.get("pref_model_name", ""), st.session_state.get("pref_model_checkpoint", "")
    for model in models:
        if (model.is_folder and name == f"{LOCAL_DIR_PREFIX}{model.path}") or (
                not model.is_folder and checkpoint and Path(checkpoint) == model.path):
            return model.name
    return TYPED


def typed() -> None:
    """A model was typed into the inputs: stop asking about a file of the models folder."""
    st.session_state.pop(_ASKING, None)


def _chosen(by_name: dict[str, FolderModel], set_choice) -> None:
    picked = by_name.get(st.session_state["w_model_folder"])
    st.session_state.pop(_ASKING, None)
    if picked is None:
        return
    if picked.model() is None:
        st.session_state[_ASKING] = picked.name
    else:
        set_choice(picked.model())


def _ask_architecture(model: FolderModel, set_choice) -> None:
    options = list(model.candidates) or open_clip.list_models()
    st.info(f"Which architecture are the weights in {esc(model.name)}? " + (
        "Their shapes fit these (OpenAI's weights need a -quickgelu one)." if model.candidates else
        "They could not be read as a state dict to tell; choose the architecture they were trained with."))
    cols = st.columns([3, 2])
    choice = cols[0].selectbox("Architecture", options, key="model_folder_architecture")
    if cols[1].button("Use this architecture", key="model_folder_remember"):
        ok, _ = widgets.attempt(lambda: remember_architecture(models_dir(), model.name, choice),
                                "remember the architecture")
        if ok:
            _models.clear()
            st.session_state.pop(_ASKING, None)
            set_choice({"name": choice, "pretrained": "openai", "checkpoint": str(model.path)})
            st.rerun()
