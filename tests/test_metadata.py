"""Image metadata: path patterns (previewed, applied, kept for later batches), CSV joins, bad input that changes
nothing, the per-cluster dominance flag, and metadata in both exports."""
from __future__ import annotations

import csv
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tac_core.errors import InvalidInputError
from tac_core.inputs.imageset import ImageRecord, ImageSet
from tac_core.inputs.path_pattern import PathPattern
from tac_core.workspace import metadata
from tac_core.workspace.bundle import BundleOptions, write_bundle
from tac_core.workspace.export import export_labels
from tac_core.workspace.metadata_summary import dominance, dominance_flags, field_breakdown, state_metadata
from tac_core.workspace.review import ReviewSession
from tac_core.workspace.store import SCHEMA_VERSION
from tac_core.workspace.workspace import create_workspace, open_workspace

DATA = Path(__file__).with_name("data")
PATHS = ["line1/camA/2024-06-01_0001.png", "line1/camB/2024-06-01_0002.PNG", "line2/camA/2024-06-02_0003.png",
         "line3/camB/2024-06-02_0004.png", "notes/readme_image.jpg", "line3/camA/2024-06-03_0005.png"]


def add(ws, paths, root="/plant", offset=0):
    records = tuple(ImageRecord(f"{root}/{p}", p, f"{i + offset:064x}", 100, 8, 8, "ok", "") for i, p in enumerate(paths))
    return np.array(ws.add_image_set(ImageSet(root, records), "folder", root).image_ids)


@pytest.fixture
def ws(tmp_path):
    workspace = create_workspace("metadata", tmp_path)
    add(workspace, PATHS)
    yield workspace
    workspace.close()


def unchanged(ws):
    return metadata.metadata_table(ws).empty and metadata.metadata_sources(ws).empty


def test_a_pattern_reads_fields_from_the_end_of_paths():
    pattern = PathPattern.parse("{line}/{camera}/{date}_{serial}.png")
    assert pattern.fields == ("line", "camera", "date", "serial")
    assert pattern.match("batch7/line1/camB/2024-06-01_0002.PNG") == {"line": "line1", "camera": "camB",
                                                                        "date": "2024-06-01", "serial": "0002"}
    assert pattern.match("line1\\camA\\2024-06-01_0001.png")["camera"] == "camA"
    assert pattern.match("line1/camA/2024-06-01.png") is None and pattern.match("camA/2024_1.jpg") is None
    assert PathPattern.parse("{camera}/*.png").match("line3/cam1/x_y.png") == {"camera": "cam1"}
    assert PathPattern.parse("{line}/*/{serial}.png").match("l2/camB/7.png") == {"line": "l2", "serial": "7"}
    for bad, message in [("", "empty"), ("line/*.png", "names no field"), ("{line/x.png", "never closes"),
                         ("{line}}/x.png", "closes no field"), ("{a}/{a}.png", "twice"), ("{line-no}.png", "usable field")]:
        with pytest.raises(InvalidInputError, match=message):
            PathPattern.parse(bad)


def test_preview_then_apply_a_pattern_and_later_batches_get_it_too(ws):
    preview = metadata.preview_pattern(ws, "{line}/{camera}/{date}_{serial}.png", limit=4)
    assert (preview.matched, preview.total, preview.fields) == (5, 6, ("line", "camera", "date", "serial"))
    assert preview.rows["relative_path"].tolist()[-1] == "notes/readme_image.jpg"  # a path it misses is shown too
    assert preview.rows["line"].tolist()[:3] == ["line1", "line1", "line2"] and preview.rows["line"].iloc[-1] == ""
    assert unchanged(ws)  # a preview stores nothing

    result = metadata.apply_pattern(ws, "{line}/{camera}/{date}_{serial}.png")
    assert (result.images, result.unmatched) == (5, 1) and "1 image(s) did not fit" in result.summary()
    table = metadata.metadata_table(ws)
    assert list(table.columns) == ["camera", "date", "line", "serial"] and len(table) == 5
    assert table["line"].tolist() == ["line1", "line1", "line2", "line3", "line3"]
    assert metadata.metadata_fields(ws).set_index("field").loc["line", "values"] == 3

    later = add(ws, ["line4/camC/2024-06-04_0006.png", "loose.png"], root="/plant2", offset=100)
    from tac_core.workspace.metadata import apply_saved_pattern
    assert apply_saved_pattern(ws, later) == 1
    assert metadata.metadata_table(ws, later)["line"].tolist() == ["line4", ""]
    assert metadata.remove_field(ws, "serial") == 6 and "serial" not in metadata.metadata_table(ws).columns


def test_bad_patterns_change_nothing(ws):
    for pattern, message in [("{shift}/{camera}.tif", "fits none of the 6 image paths"),
                             ("{label}/{camera}/*.png", "named like a built-in column"),
                             ("{line}/{Cluster}/*.png", "named like a built-in column")]:
        with pytest.raises(InvalidInputError, match=message):
            metadata.apply_pattern(ws, pattern)
    assert unchanged(ws)


def test_a_csv_joins_by_relative_path_or_file_name(ws):
    text = "\ufeffrelative_path;part;shift\nline1/camA/2024-06-01_0001.png;P-17;night\n./line2/camA/2024-06-02_0003.png;P-18;\n"
    result = metadata.join_csv(ws, "parts.csv", text.encode("utf-8"))
    assert result.fields == ("part", "shift") and result.images == 2
    table = metadata.metadata_table(ws)
    assert table["part"].tolist() == ["P-17", "P-18"] and table["shift"].tolist() == ["night", ""]
    metadata.join_csv(ws, "fix.csv", b"file_name,part\n2024-06-01_0001.png,P-99\n")  # a value again replaces it
    assert metadata.metadata_table(ws)["part"].tolist() == ["P-99", "P-18"]
    assert metadata.metadata_sources(ws)["description"].tolist() == ["parts.csv", "fix.csv"]


@pytest.mark.parametrize("text, message", [
    ("relative_path,part\nline1/camA/2024-06-01_0001.png,P1\nline9/nowhere.png,P2\n", "row 3: 'line9/nowhere.png'"),
    ("relative_path,part\nline1/camA/2024-06-01_0001.png,P1\nline1/camA/2024-06-01_0001.png,P2\n", "rows 2 and 3"),
    ("relative_path,Label\nline1/camA/2024-06-01_0001.png,P1\n", "named like a built-in column"),
    ("name,part\nx.png,P1\n", "no relative_path or file_name column"),
    ("relative_path\nline1/camA/2024-06-01_0001.png\n", "no column besides"),
    ("relative_path,part\n", "no rows"),
    ("relative_path,part,part\nline1/camA/2024-06-01_0001.png,P1,P2\n", "repeats a column"),
    ("relative_path,part\nline1/camA/2024-06-01_0001.png,\"a\x07b\"\n", "control character"),
])
def test_bad_csvs_change_nothing(ws, text, message):
    with pytest.raises(InvalidInputError, match=message):
        metadata.join_csv(ws, "bad.csv", text.encode("utf-8"))
    assert unchanged(ws)


def test_a_file_name_two_sources_share_needs_a_source_column(ws):
    add(ws, ["line1/camA/2024-06-01_0001.png"], root="/other", offset=50)
    with pytest.raises(InvalidInputError, match="names 2 images"):
        metadata.join_csv(ws, "a.csv", b"file_name,part\n2024-06-01_0001.png,P1\n")
    with pytest.raises(InvalidInputError, match="names 2 images"):
        metadata.join_csv(ws, "b.csv", b"relative_path,part\nline1/camA/2024-06-01_0001.png,P1\n")
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        metadata.join_csv(ws, "c.csv", "relative_path,part\nx,\xe9\n".encode("latin-1"))
    assert unchanged(ws)
    metadata.join_csv(ws, "d.csv", b"relative_path,source,part\nline1/camA/2024-06-01_0001.png,2: other,P2\n")
    table = metadata.metadata_table(ws)
    assert table["part"].tolist() == ["P2"] and ws.images().set_index("id").loc[table.index[0], "source_id"] == 2


def spread(counts: dict[int, dict[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and values with ``counts[cluster][value]`` images each."""
    pairs = [(c, v) for c, values in counts.items() for v, n in values.items() for _ in range(n)]
    return np.array([c for c, _ in pairs]), np.array([v for _, v in pairs])


def test_the_dominance_flag_names_a_cluster_that_one_line_dominates():
    labels, lines = spread({4: {"3": 23, "1": 2}, 0: {"1": 13, "2": 12}, 1: {"2": 12, "1": 12, "3": 1},
                            2: {"1": 19, "3": 1}, 3: {"1": 5}})
    assert len(lines) == 100 and (lines == "3").mean() == 0.25
    flags = dominance(labels, lines, "line", {4: "scratch"})
    # cluster 2: 95 % from line 1, which is 51 % of the images (at least 1.5 times: flagged too); cluster 3 is all
    # line 1 but has 5 images, too few to call; clusters 0 and 1 are mixed
    assert [f.cluster for f in flags] == [2, 4]
    assert flags[1].text == "92 % of cluster 4 (scratch) comes from line 3; that line is 25 % of the images."
    assert (flags[1].count, flags[1].size) == (23, 25)
    assert dominance(labels, lines, "line", {})[1].text.startswith("92 % of cluster 4 (cluster 4)")
    assert field_breakdown(labels, lines).query("cluster == 4")[["value", "images"]].values.tolist() == [["3", 23],
                                                                                                     ["1", 2]]
    assert dominance(labels, np.full(100, "3"), "line", {}) == []  # every image from line 3: nothing stands out
    big, lines_big = spread({0: {"a": 16, "b": 4}, 1: {"a": 14, "b": 6}})  # 80 % from a line that gives 75 %
    assert dominance(big, lines_big, "line", {}) == []
    missing = dominance(labels, np.where(labels == 4, "", lines), "line", {})  # images without a value don't count
    assert 4 not in [f.cluster for f in missing]
    labels, named = spread({0: {"line3": 9, "line1": 1}, 1: {"line1": 30}})
    assert dominance(labels, named, "line", {})[0].text == ("90 % of cluster 0 (cluster 0) comes from line3; that "
                                                          "line is 22 % of the images.")  # 9 of 40


def review_with_metadata(tmp_path):
    workspace = create_workspace("exported", tmp_path)
    ids = add(workspace, PATHS[:4] + ["line3/camA/=cmd_0009.png"])
    run_id = workspace.create_run({"n_clusters": 2}, ids)
    workspace.save_run_result(run_id, ids, [0, 0, 1, 1, 1], np.ones(5), [[("crack", 0.3)], [("stain", 0.2)]])
    metadata.apply_pattern(workspace, "{line}/{camera}/{date}_{serial}.png")
    metadata.join_csv(workspace, "parts.csv", b"relative_path,part\nline1/camA/2024-06-01_0001.png,@P-1\n")
    return workspace, run_id


def test_metadata_columns_reach_the_plain_export_and_the_bundle(tmp_path):
    workspace, run_id = review_with_metadata(tmp_path)
    try:
        session = ReviewSession(workspace, run_id)
        result = export_labels(session, workspace, run_id)
        rows = list(csv.DictReader(io.StringIO(result.csv_bytes.decode("utf-8-sig"))))
        assert list(rows[0])[-5:] == ["camera", "date", "line", "part", "serial"]
        assert result.manifest["columns"][-5:] == ["camera", "date", "line", "part", "serial"]
        by_path = {row["relative_path"]: row for row in rows}
        assert by_path["line1/camA/2024-06-01_0001.png"]["part"] == "'@P-1"  # formula-safe like every text cell
        assert by_path["line3/camA/=cmd_0009.png"]["date"] == "'=cmd" and by_path["line2/camA/2024-06-02_0003.png"][
            "part"] == ""
        bundle = write_bundle(session, BundleOptions(as_zip=True))
        with zipfile.ZipFile(bundle.path) as archive:
            labels = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode("utf-8-sig"))))
        assert list(labels[0])[-7:] == ["source", "duplicate_of", "camera", "date", "line", "part", "serial"]
        assert {row["line"] for row in labels} == {"line1", "line2", "line3"}
        assert bundle.manifest["columns"][-2:] == ["part", "serial"]
        flags = dominance_flags(session.state, state_metadata(workspace, session.state))
        assert flags == []  # 5 images: too few to call any cluster dominated
    finally:
        workspace.close()


def test_an_old_workspace_migrates_and_takes_metadata(tmp_path):
    folder = tmp_path / "legacy"
    shutil.copytree(DATA / "legacy_workspace", folder)
    with open_workspace(folder) as workspace:
        assert workspace.connection().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert unchanged(workspace)
        first = workspace.images()["rel_path"].iloc[0]
        metadata.join_csv(workspace, "lines.csv", f"relative_path,line\n{first},3\n".encode())
        table = export_labels(ReviewSession(workspace, 1), workspace, 1).csv_bytes.decode("utf-8-sig")
        assert table.splitlines()[0].endswith(",run_id,line") and ",3\r" in table + "\r"


def test_a_viewer_may_not_change_metadata_and_changes_are_recorded(ws):
    from tac_core.workspace.access import AccessDeniedError, User

    ws.add_member("Vera", "viewer")
    viewer = ws.as_user(User("Vera"))
    for change in (lambda: metadata.apply_pattern(viewer, "{line}/{camera}/*"),
                   lambda: metadata.join_csv(viewer, "p.csv", b"file_name,part\n2024-06-01_0001.png,P1\n")):
        with pytest.raises(AccessDeniedError, match="reviewer role"):
            change()
    assert unchanged(ws)
    metadata.apply_pattern(ws, "{line}/{camera}/*")
    with pytest.raises(AccessDeniedError):
        metadata.remove_field(viewer, "line")
    assert "line" in metadata.metadata_table(ws).columns
    metadata.remove_field(ws, "line")
    assert ws.activity()["action"].tolist()[-2:] == ["metadata", "metadata removed"]
