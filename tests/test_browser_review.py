"""The Review and Audit pages in a real browser at 1,400 px (headless Chromium, as ``tests/test_browser.py``), on
a prepared run of 24 real solar-cell images with long file names.

Each test fails on the page as it was before the fix it checks (issue #11, #17):
- ``test_review_page_at_1400_px``: the map and the cluster list side by side, each whole (no horizontal
  scrolling), the selection's actions right above its gallery, the page well under 3,600 px; keys N, V, U shown
  on their buttons and working;
- ``test_thumbnails_on_the_map_and_a_hover_naming_file_and_cluster``: thumbnails drawn on the map (a toggle takes
  them away), a hover naming the file's relative path and its cluster;
- ``test_a_box_on_the_map_selects_what_it_holds_and_the_legend_hides_a_cluster``: a box drawn with the mouse
  selects every image inside, a double-click clears it, a legend click takes a cluster off the canvas and out of
  the next box;
- ``test_captions_are_cut_in_the_middle_on_one_line``: a long name keeps its extension, on one line;
- ``test_select_page_takes_no_excluded_image``: "Select page" never takes an excluded image, so "Verify
  selected" never verifies one;
- ``test_audit_progress_survives_a_new_session``: three decisions, then a new browser session shows "3 of 24
  reviewed";
- ``test_audit_labels_are_not_cut``: no decision button's label is cut off ("Move to ch…").

Screenshots of the reworked pages go to ``test-output/screenshots/<test>/``.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

import pytest
from playwright.sync_api import expect

from review_workspace import real_workspace
from tac_core.workspace.review import ReviewSession
import test_browser as tb
from test_browser import (CHROMIUM, CHROMIUM_ARGS, COUNT_RUNS, VIEWPORT, after_run, button, choose, click, runs_done,
                          see, settle, shot)

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")]
# the browser test's fixtures, used here as they are
output_dir, start_server, server, playwright_driver, page = (tb.output_dir, tb.start_server, tb.server,
                                                             tb.playwright_driver, tb.page)
LONG_NAME = "station-a/camera-left/solar_cell_inspection_{:04d}.png"


def long_named_images(source: Path, into: Path) -> Path:
    """The test images again under long relative paths (``LONG_NAME``)."""
    for index, path in enumerate(sorted(source.glob("*.png"))):
        target = into / LONG_NAME.format(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return into


def prepared_run(data: Path, elpv_images: Path, tmp_path: Path):
    workspace, run_id, ids = real_workspace(data, long_named_images(elpv_images, tmp_path / "photos"))
    return workspace, run_id, ids


def open_review(server, page, elpv_images, tmp_path) -> tuple[int, list[int]]:
    """The prepared run open on the Review page; its run id and image ids."""
    workspace, run_id, ids = prepared_run(server.data, elpv_images, tmp_path)
    name = workspace.path.name
    workspace.close()
    page.goto(f"{server.url}/review?ws={name}&run={run_id}")
    see(page, "0 edit(s) in effect on run 1.")
    return run_id, ids


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def test_review_page_at_1400_px(server, page, output_dir, tmp_path, elpv_images):
    open_review(server, page, elpv_images, tmp_path)
    click(page, page.locator(".st-key-review_select_page button"))  # a selection, to see its place on the page
    see(page, "9 image(s) selected (9 in cluster 0).")
    page.locator(".tacmap").first.wait_for()
    settle(page)
    shot(page, output_dir, "review-1400")

    # laid out for 1,400 px: map and cluster list side by side, each whole; the page well under 3,600 px
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    plot, table = box(page, ".tacmap"), box(page, ".st-key-review_cluster_table")
    assert plot["width"] >= 400 and plot["x"] + plot["width"] <= table["x"] and abs(plot["y"] - table["y"]) < 80
    scroller = page.locator(".st-key-review_cluster_table .dvn-scroller").first
    assert scroller.evaluate("s => s.scrollWidth <= s.clientWidth + 1"), "the cluster list scrolls sideways"
    height = page.evaluate("document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    assert height < 2600, height
    move, tick = box(page, ".st-key-review_move button"), box(page, "[class*='st-key-review_selected_pick_']")
    assert 0 < tick["y"] - move["y"] < 400, (move, tick)  # the selection's gallery right under its actions

    # keys shown on the buttons: N opens the next cluster, V verifies it, U undoes that
    expect(button(page, "Verify cluster", "V")).to_be_visible()
    expect(button(page, "Next", "N")).to_be_visible()
    expect(button(page, "Undo", "U")).to_be_visible()
    page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page, not a widget
    page.keyboard.press("n")
    see(page, "Name: cluster 1")
    page.keyboard.press("v")
    see(page, "Marked cluster 1 'cluster 1' verified.")
    page.keyboard.press("u")
    see(page, "Undid #1: marked cluster 1 'cluster 1' verified.")
    expect(button(page, "Verify cluster", "V")).to_be_visible()


FIND_COLOUR = """([canvas, rgb]) => {  // where the canvas shows this colour (CSS pixels), or null
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const ratio = canvas.width / canvas.clientWidth;
    for (let i = 0; i < data.length; i += 4) {
        if (Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1]) + Math.abs(data[i + 2] - rgb[2]) < 12) {
            const p = i / 4;
            return [(p % canvas.width) / ratio + 2, Math.floor(p / canvas.width) / ratio + 2];
        }
    }
    return null;
}"""
CLUSTER_0 = (0x1F, 0x77, 0xB4)  # the first colour of the map's palette


def canvas_spot(page, rgb) -> Optional[tuple[float, float]]:
    """Page coordinates of a pixel of colour ``rgb`` on the map's canvas, or None when none is drawn."""
    canvas = page.locator(".tacmap canvas.points")
    found = canvas.evaluate("(c, rgb) => (" + FIND_COLOUR + ")([c, rgb])", list(rgb))
    if found is None:
        return None
    where = canvas.bounding_box()
    return where["x"] + found[0], where["y"] + found[1]


def test_thumbnails_on_the_map_and_a_hover_naming_file_and_cluster(server, page, output_dir, tmp_path, elpv_images):
    open_review(server, page, elpv_images, tmp_path)
    themap = page.locator(".tacmap")
    expect(themap).to_have_attribute("data-thumbnails", re.compile(r"^([3-9]|\d\d+)$"))  # each cluster's typical images
    shot(page, output_dir, "review-map-thumbnails")
    page.locator(".st-key-review_map_thumbnails label").first.click()
    expect(themap).to_have_attribute("data-thumbnails", "0")  # the toggle takes them away
    settle(page)
    x, y = canvas_spot(page, CLUSTER_0)  # a point of cluster 0
    page.mouse.move(x, y)
    tip = themap.locator(".tip")
    expect(tip).to_contain_text(re.compile(r"station-a/camera-left/solar_cell_inspection_\d{4}\.png"))
    expect(tip).to_contain_text("0 · cluster 0 (9)")
    page.locator(".st-key-review_map_thumbnails label").first.click()
    expect(themap).not_to_have_attribute("data-thumbnails", "0")


def test_a_box_on_the_map_selects_what_it_holds_and_the_legend_hides_a_cluster(server, page, tmp_path,
                                                                                elpv_images):
    open_review(server, page, elpv_images, tmp_path)
    page.locator(".st-key-review_map_thumbnails label").first.click()  # points only: their colours are findable
    expect(page.locator(".tacmap")).to_have_attribute("data-thumbnails", "0")
    settle(page)
    area = page.locator(".tacmap canvas.overlay").bounding_box()
    page.locator(".tacmap button[data-tool=box]").click()

    def drag_box() -> None:
        before = runs_done(page)
        page.mouse.move(area["x"] + 2, area["y"] + 2)
        page.mouse.down()
        page.mouse.move(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2, steps=4)
        page.mouse.move(area["x"] + area["width"] - 2, area["y"] + area["height"] - 2, steps=4)
        page.mouse.up()
        after_run(page, before)

    drag_box()  # the whole map: every image of the run
    see(page, "24 image(s) selected")
    page.mouse.dblclick(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)  # clears it
    see(page, "Nothing selected")
    page.locator(".tacmap .legend .item", has_text="0 · cluster 0 (9)").click()  # hide cluster 0
    assert canvas_spot(page, CLUSTER_0) is None  # its points are gone from the canvas
    drag_box()
    see(page, "15 image(s) selected")  # the other two clusters only
    expect(page.get_by_text("9 in cluster 0")).to_have_count(0)


def test_captions_are_cut_in_the_middle_on_one_line(server, page, tmp_path, elpv_images):
    open_review(server, page, elpv_images, tmp_path)
    settle(page)
    # the name cut in the middle keeps its extension, on one line (then the confidence line)
    captions = page.get_by_test_id("stText").filter(has_text="…")  # only the gallery's captions are cut
    expect(captions.first).to_be_visible()
    assert captions.count() == 9  # the open cluster's page
    for caption in captions.all():
        first, *_ = caption.inner_text().split("\n")
        assert first.endswith(".png") and "…" in first, first
        lines = caption.evaluate("e => Math.round(e.getBoundingClientRect().height / "
                                 "parseFloat(getComputedStyle(e).lineHeight))")
        assert lines == 2, caption.inner_text()  # name and confidence: no wrapped name


def test_select_page_takes_no_excluded_image(server, page, tmp_path, elpv_images):
    workspace, run_id, ids = prepared_run(server.data, elpv_images, tmp_path)
    members = ReviewSession(workspace, run_id).members(0)["image_id"].tolist()
    ReviewSession(workspace, run_id, session_id="setup").exclude(members[-2:])  # the least confident two
    name = workspace.path.name
    workspace.close()
    page.goto(f"{server.url}/review?ws={name}&run={run_id}")
    see(page, "1 edit(s) in effect on run 1.")
    # a bulk selection leaves excluded images out, so verifying it verifies none of them
    choose(page, "Cluster", "0 · cluster 0 (7)")
    click(page, page.locator(".st-key-review_select_page button"))
    see(page, f"{len(members) - 2} image(s) selected ({len(members) - 2} in cluster 0).")
    button(page, "Verify selected").click()
    see(page, f"Marked {len(members) - 2} image(s) verified.")


def open_audit(server, page, elpv_images, tmp_path) -> str:
    workspace, run_id, ids = prepared_run(server.data, elpv_images, tmp_path)
    name = workspace.path.name
    workspace.close()
    url = f"{server.url}/audit?ws={name}&run={run_id}"
    page.goto(url)
    see(page, "0 of 24 reviewed")
    return url


def test_audit_progress_survives_a_new_session(server, page, tmp_path, elpv_images, playwright_driver):
    url = open_audit(server, page, elpv_images, tmp_path)
    for key, done in (("K", "Marked 1 image(s) verified."), ("X", "Excluded 1 image(s)."),
                      ("K", "Marked 1 image(s) verified.")):
        settle(page)
        page.keyboard.press(key.lower())
        see(page, done)
    see(page, "3 of 24 reviewed")
    browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    try:  # another browser session: the queue is scored afresh, without the decided images
        other = browser.new_page(viewport=VIEWPORT)
        other.add_init_script(COUNT_RUNS)
        other.goto(url)
        see(other, "3 of 24 reviewed")
    finally:
        browser.close()


def test_audit_labels_are_not_cut(server, page, output_dir, tmp_path, elpv_images):
    open_audit(server, page, elpv_images, tmp_path)
    settle(page)
    for key in ("audit_keep", "audit_move_suggested", "audit_exclude", "audit_skip", "audit_move"):  # "Move to ch…"
        label = page.locator(f".st-key-{key} button [data-testid='stMarkdownContainer']").first
        assert label.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), key
    shot(page, output_dir, "audit-1400")
