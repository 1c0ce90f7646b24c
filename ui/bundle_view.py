"""The Export page's bundle section: the run's labels with their manifest and, as chosen, a folder tree for
training, Label Studio tasks and a COCO-style file, written into the workspace's ``exports/`` (a folder or a
zip) by :func:`tac_core.workspace.bundle.write_bundle`; a zip small enough is offered for download."""
from __future__ import annotations

import streamlit as st

from tac_core.workspace.bundle import BundleOptions, write_bundle
from tac_core.workspace.review import ReviewSession
from ui import widgets

DOWNLOAD_MAX_BYTES = 512 * 1024 ** 2  # the browser download is held in the server's memory
_LAST = "bundle_last"


def render(session: ReviewSession, verified_only: bool, approved_only: bool = False) -> None:
    st.subheader("Bundle for a training pipeline")
    st.caption("labels.csv (every file, duplicates included, with its source) and manifest.json (code version, "
               "model, vocabulary, run parameters, seed, a fingerprint of every review decision and who approved "
               "which cluster), with the rows chosen above, plus:")
    cols = st.columns(4)
    tree = cols[0].checkbox("Folder tree", key="bundle_tree",
                            help="images/<label>/<file>: torchvision ImageFolder, FiftyOne and CVAT (ImageNet) read "
                                 "it as it is. Hard links to your files where possible, else copies.")
    label_studio = cols[1].checkbox("Label Studio", key="bundle_label_studio",
                                    help="Tasks JSON and labelling config; verified labels as annotations, the rest "
                                         "as predictions.")
    coco = cols[2].checkbox("COCO JSON", key="bundle_coco", help="COCO-style classification: images, categories, "
                                                                 "one label per image.")
    as_zip = cols[3].checkbox("As one .zip", value=True, key="bundle_zip", help="One file to download or move.")
    if st.button("Create bundle"):
        options = BundleOptions(verified_only=verified_only, approved_only=approved_only, folder_tree=tree,
                                label_studio=label_studio, coco=coco, as_zip=as_zip)
        ok, result = widgets.attempt(lambda: write_bundle(session, options), "write the bundle")
        if ok:
            st.session_state[_LAST] = {"run_id": session.run_id, "result": result}
    last = st.session_state.get(_LAST)
    if not last or last["run_id"] != session.run_id:
        return
    result = last["result"]
    st.success(f"Bundle written: {result.n_rows:,} rows, {result.n_duplicates:,} of them duplicates. It is kept in "
               "the workspace:")
    st.code(str(result.path), language=None)
    if result.path.is_file() and result.path.stat().st_size <= DOWNLOAD_MAX_BYTES:
        st.download_button("Download bundle", result.path.read_bytes(), file_name=result.path.name,
                           mime="application/zip", on_click="ignore")
    elif result.path.is_file():
        st.caption("Too large to download through the browser: copy it from the folder above.")
    with st.expander("Bundle manifest"):
        st.json(result.manifest, expanded=False)
