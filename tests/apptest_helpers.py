"""Opening the app in Streamlit's AppTest the way a browser does, and what AppTest only keeps privately.

Pages are addressed by file (``"pages/review.py"``), as ``app.py`` registers them with ``st.navigation``.
:func:`elements`, :func:`registered_pages` and :func:`select_on_map` are the only places that read AppTest's
private attributes (``_tree``, ``_registered_pages``, ``_run``): when a Streamlit upgrade renames them, this
file is the one to fix.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def open_app(page: Optional[str] = None, workspace=None, run_id: Optional[int] = None,
             timeout: float = 120) -> AppTest:
    """``app.py`` on ``page`` (None: the home page), with ``?ws=<folder>&run=<id>`` in the URL when given."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    if workspace is not None:
        at.query_params["ws"] = Path(workspace.path).name
    if run_id is not None:
        at.query_params["run"] = str(run_id)
    if page is not None:
        at.switch_page(page)  # a page's URL is its file name, so no first run is needed to find it
    at.run()
    assert not at.exception, at.exception
    return at


def elements(at: AppTest) -> Iterator:
    """Every node the last run drew, in every container: main, sidebar, toasts (the event container) and the
    bottom. AppTest's public views (``at.main``, ``at.sidebar``) leave toasts and the bottom out."""
    def walk(node):
        yield node
        children = getattr(node, "children", None) or {}
        for child in (children.values() if isinstance(children, dict) else children):
            yield from walk(child)

    yield from walk(at._tree)


def registered_pages(at: AppTest) -> list[dict]:
    """The pages the last run registered with ``st.navigation``, in the sidebar's order: ``page_name`` (the
    title), ``icon``, ``url_pathname``, ``script_path`` and ``help``."""
    return list(at._registered_pages.values())


def map_payload(at: AppTest):
    """What the last run sent the Review map (:class:`ui.map_canvas.Payload`, with its hover texts), or None when
    it drew no map."""
    from ui.map_canvas import decode

    parts = {e.proto.component_name: e.proto.bytes for e in at.get("bidi_component")}
    if "tac_studio.review_map" not in parts:
        return None
    return decode(parts["tac_studio.review_map"], parts["tac_studio.review_map_texts"])


def select_on_map(at: AppTest, selection: dict) -> AppTest:
    """Run ``at`` as after a box or lasso drawn on the Review map: ``selection`` is what the browser reports
    (``points``: positions of the drawn points caught, ``box``, ``lasso``). AppTest cannot draw on the canvas,
    so the map's trigger is sent along with every other widget's state, as the browser sends it."""
    from streamlit.components.v2.bidi_component.main import _make_trigger_id
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    chart = next(e for e in at.get("bidi_component") if e.proto.component_name == "tac_studio.review_map")
    trigger = _make_trigger_id(chart.proto.id, "events")
    states = at._tree.get_widget_states()
    kept = [w for w in states.widgets if w.id != trigger]
    del states.widgets[:]
    states.widgets.extend(kept)
    state = WidgetState(id=trigger)
    state.json_trigger_value = json.dumps([{"event": "select", "value": {"points": [], "box": [], "lasso": [],
                                                                         **selection}}])
    states.widgets.append(state)
    return at._run(states)
