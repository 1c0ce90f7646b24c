"""The Images page's metadata section through AppTest: a pattern is previewed before it can be applied, a refused
pattern says why and stores nothing, and the fields and per-image values are shown."""
from __future__ import annotations

import pytest

from apptest_helpers import open_app
from tac_core.workspace import ingest, metadata
from tac_core.workspace.workspace import create_workspace


@pytest.fixture
def textile_ws(app_data, textile_images):
    ws = create_workspace("Looms", app_data)
    ingest.add_folder(ws, textile_images)  # nominal/, local/, global/: four photos each
    yield ws
    ws.close()


def button(at, key):
    return next(b for b in at.button if b.key == key)


def table_with(at, column):
    """The first table drawn with ``column`` (AppTest keeps no key for a table)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_a_pattern_is_previewed_then_applied_and_shown(textile_ws):
    at = open_app("pages/images.py", textile_ws, timeout=120)
    assert button(at, "metadata_apply").disabled  # nothing to apply before a preview
    at.text_input(key="metadata_pattern").input("{label}/*.jpg").run()  # typing, then leaving the field
    button(at, "metadata_preview").click()
    at.run()
    assert any("is named like a built" in e.value for e in at.error) and metadata.metadata_table(textile_ws).empty

    at.text_input(key="metadata_pattern").input("{defect}/*.jpg").run()
    button(at, "metadata_preview").click()
    at.run()
    assert any("fits 12 of 12 images" in i.value for i in at.info)
    preview = table_with(at, "defect")
    assert list(preview.columns) == ["relative_path", "defect"] and set(preview["defect"]) <= {"global", "local",
                                                                                               "nominal"}
    assert metadata.metadata_table(textile_ws).empty  # a preview stores nothing
    button(at, "metadata_apply").click()
    at.run()
    assert not at.exception, at.exception
    assert any("defect for 12 image" in s.value for s in at.success)
    fields = table_with(at, "Distinct values")
    assert fields.values.tolist() == [["defect", 12, 3]]
    table = [d.value for d in at.dataframe if "defect" in d.value.columns][-1]
    assert sorted(set(table["defect"])) == ["global", "local", "nominal"]
    assert all(path.split("/")[0] == value for path, value in zip(table["relative_path"], table["defect"]))

    button(at, "metadata_remove").click()
    at.run()
    assert metadata.metadata_table(textile_ws).empty and any("Removed 12" in s.value for s in at.success)
