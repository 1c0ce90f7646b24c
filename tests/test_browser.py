"""The app in a real browser: headless Chromium (Playwright) against a real ``streamlit run app.py`` server.

``test_whole_workflow``: 60 real solar-cell images uploaded as a folder, a domain term, WordNet narrowed to
one category, a run of the tiny test model as a real ``python -m tac_core run-job`` subprocess, the Review
page (merge, rename, undo, redo, verify), the Audit page (keep, move to suggested, exclude), a cluster approved on
the Review page and seen on the History page (its CSV downloaded), and the Export page (the CSV downloaded through
the browser and checked row by row; the bundle downloaded, listing the approval in its manifest).
``test_review_edits_survive_a_server_kill``: edits made in the browser, the server killed with SIGKILL, a new
server on the same data folder: every edit is back after a reload, and undo/redo still work.

A screenshot of every page goes to ``test-output/screenshots/`` (git-ignored). Chromium is Debian's
``/usr/bin/chromium`` (``scripts/test.sh`` installs it when run as root); Playwright's own browsers are never
downloaded. Every step waits for the text or state it expects: Streamlit draws asynchronously.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tac_core.run import jobs
from tac_core.inputs import vocab_spec
from tac_core.workspace.access import local_user
from tac_core.workspace.workspace import open_workspace

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
STEP_MS = int(os.environ.get("TAC_BROWSER_STEP_MS", "60000"))  # the longest wait for one step (2 shared cores)
RUN_TIMEOUT_S = 300  # the job: model loading, 60 images, a few hundred terms, K suggestion
N_IMAGES = 60
VIEWPORT = {"width": 1400, "height": 3600}
SIDEBAR = [("Workspaces", ""), ("Images", "images"), ("Vocabulary", "vocabulary"), ("Cluster", "cluster"),
           ("Review", "review"), ("Audit", "audit"), ("Export", "export"), ("History", "history")]  # title, URL path

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="the browser tests need Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; scripts/test.sh does it as root)"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and Debian chromium"),
]


# -- the server --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``streamlit run app.py`` as a subprocess on ``port`` with its own data folder; log in ``log_path``. ``env``
    adds settings (e.g. ``TAC_STUDIO_AUTH``); ``address`` None starts it without ``--server.address``; ``root`` is
    the checkout whose app runs (``bench.browser`` also runs an older one)."""

    def __init__(self, data: Path, port: int, log_path: Path, env: dict | None = None,
                 address: str | None = "127.0.0.1", root: Path = ROOT) -> None:
        self.data, self.port, self.log_path, self.env, self.address = data, port, log_path, env or {}, address
        self.root = root
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "Server":
        env = {key: value for key, value in os.environ.items() if not key.startswith(("TAC_STUDIO_", "STREAMLIT_"))}
        # jobs inherit this environment: no TAC_STUDIO_JOBS_INLINE (a real job subprocess), offline models
        # fp32 text: the tiny model then takes ~20 s for the quick vocabulary, time to cancel it half-way
        env.update(TAC_STUDIO_DATA=str(self.data), HF_HUB_OFFLINE="1", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
                   PYTHONUNBUFFERED="1", **{"TAC_STUDIO_TEXT_PRECISION": "fp32", **self.env})
        address = ["--server.address", self.address] if self.address is not None else []
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                 "--server.port", str(self.port), *address, "--browser.gatherUsageStats", "false"],
                cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"streamlit exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"streamlit did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs (what a power cut or the OOM killer does)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tracebacks(self) -> list[str]:
        """The tracebacks the server logged, each with the line that follows it (empty: none)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [block[:2000] for block in re.findall(r"Traceback \(most recent call last\):.*?(?=\n\S|\Z)", text,
                                                      flags=re.S)]

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@pytest.fixture
def output_dir(request) -> Path:
    """``test-output/screenshots/<test name>/`` at the repository root, emptied first."""
    folder = SHOTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def start_server(tmp_path, output_dir):
    """Start app servers on the test's data folder (``start_server(port=None, env=None, address="127.0.0.1")``); all
    are stopped at the end."""
    started: list[Server] = []

    def start(port: int | None = None, **options) -> Server:
        app = Server(tmp_path / "data", port or free_port(), output_dir / f"server-{len(started) + 1}.log", **options)
        started.append(app)
        return app.start()

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def server(start_server) -> Server:
    """A running app server on a free port with a fresh data folder."""
    return start_server()


@pytest.fixture(scope="module")
def playwright_driver():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def page(playwright_driver, tmp_path, output_dir):
    """A fresh Chromium (new profile folder) and one tab; the tab's console errors are kept in the output."""
    context = playwright_driver.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(STEP_MS)
    context.add_init_script(COUNT_RUNS)
    tab = context.pages[0] if context.pages else context.new_page()
    console: list[str] = []
    tab.on("console", lambda message: console.append(f"{message.type}: {message.text}")
           if message.type in ("error", "warning") else None)
    tab.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    tab.on("response", lambda response: console.append(f"http {response.status}: {response.url}")
           if response.status >= 400 else None)
    yield tab
    try:
        tab.screenshot(path=str(output_dir / "last.png"), full_page=True)  # where a failing test stopped
    except Exception:  # noqa: BLE001 - a closed tab has nothing to show
        pass
    (output_dir / "console.log").write_text("\n".join(console) + "\n", encoding="utf-8")
    context.close()


# -- driving Streamlit ---------------------------------------------------------------------------------------
COUNT_RUNS = """
window.__tacRuns = 0;  // script runs finished since the page loaded: the server's "script finished" messages
(() => {
    // Counted off the WebSocket, not off stApp's data-test-script-state: React may apply a fast run's start
    // and end in one render, and a run that never showed "running" in the page would be missed.
    const finished = (data) => {  // a ForwardMsg (protobuf) whose field 6, script_finished, is set
        if (!(data instanceof ArrayBuffer)) return false;
        const bytes = new Uint8Array(data);
        let at = 0;
        const varint = () => {
            let value = 0, shift = 0, byte;
            do { byte = bytes[at++]; value += (byte & 127) * 2 ** shift; shift += 7; } while (byte & 128 && at < bytes.length);
            return value;
        };
        while (at < bytes.length) {
            const key = varint(), field = Math.floor(key / 8), wire = key % 8;
            if (field === 6 && wire === 0) return true;
            if (wire === 0) varint();
            else if (wire === 1) at += 8;
            else if (wire === 2) { const length = varint(); at += length; }  // not `at += varint()`: it moves `at`
            else if (wire === 5) at += 4;
            else return false;
        }
        return false;
    };
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
        constructor(...args) {
            super(...args);
            this.addEventListener('message', (event) => { if (finished(event.data)) window.__tacRuns += 1; });
        }
    };
})();
"""


def runs_done(page) -> int:
    return page.evaluate("window.__tacRuns")


def after_run(page, before: int, timeout: int = STEP_MS) -> None:
    """Wait until a script run has finished since ``before`` (a :func:`runs_done` count), then settle."""
    page.wait_for_function("n => window.__tacRuns > n", arg=before, timeout=timeout)
    settle(page, timeout)


def settle(page, timeout: int = STEP_MS) -> None:
    """Wait until the app's script run is over (``stApp``'s script state; no element left stale from the run
    before) and every image on the page has loaded. Call it after the text an action leads to has appeared:
    right after a click the state still says "notRunning", and a run that calls ``st.rerun()`` is two runs."""
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && app.getAttribute('data-test-connection-state') === 'CONNECTED'
                && !document.querySelector('[data-stale="true"]')
                && Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);
        }""", timeout=timeout)


def shot(page, folder: Path, name: str) -> None:
    """A screenshot of the page down to the end of its content. The window is tall (``VIEWPORT``) so whole pages
    fit without scrolling: Streamlit scrolls inside its main area, which a full-page screenshot does not see,
    and resizing the window mid-test makes the next dropdown flaky."""
    settle(page)
    bottom = page.evaluate("""() => {
        const block = document.querySelector('[data-testid="stMainBlockContainer"]');
        return block ? block.getBoundingClientRect().bottom : 0; }""")
    height = int(min(max(bottom + 24, 800), VIEWPORT["height"]))
    page.screenshot(path=str(folder / f"{name}.png"),
                    clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})


def button(page, name: str, shortcut: str = ""):
    """The button labelled ``name``; one with a keyboard shortcut is named "<label> Shortcut <key>"."""
    return page.get_by_role("button", name=f"{name} Shortcut {shortcut}" if shortcut else name, exact=True)


def textbox(page, name: str):
    return page.get_by_role("textbox", name=name, exact=True)


def heading(page, name: str):
    return page.get_by_role("heading", name=name, exact=True)


def click(page, target) -> None:
    """Click ``target`` (a locator) and wait for the script run the click starts."""
    settle(page)
    before = runs_done(page)
    target.click()
    after_run(page, before)


def see(page, text: str | re.Pattern, timeout: int = STEP_MS):
    """Wait until ``text`` (a substring or a pattern) is visible and the run that drew it is over."""
    locator = page.get_by_text(text).first
    locator.wait_for(state="visible", timeout=timeout)
    settle(page, timeout)
    return locator


def type_into(page, label: str, value: str) -> None:
    """Fill a text or number input, commit it the way a user does (Enter) and wait for the run it starts."""
    settle(page)
    box = page.get_by_label(label, exact=True)
    before = runs_done(page)
    box.fill(value)
    box.press("Enter")
    after_run(page, before)
    expect(box).to_have_value(value)


def choose(page, label: str, option: str, search: str = "") -> None:
    """Pick the option starting with ``option`` in the selectbox or multiselect labelled ``label``; typing
    ``search`` first filters the list (it is virtual: options far down are not in the page until scrolled to)."""
    settle(page)
    listbox = page.get_by_role("listbox")  # one open list at a time; its name comes from aria-labelledby
    for attempt in range(3):  # a click landing while the page redraws may leave the list closed
        page.get_by_role("combobox", name=label, exact=True).click()
        try:
            listbox.wait_for(state="visible", timeout=5000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    if search:
        page.keyboard.type(search)
    before = runs_done(page)
    page.get_by_role("option", name=re.compile("^" + re.escape(option))).first.click()
    page.keyboard.press("Escape")
    expect(listbox).to_have_count(0)
    after_run(page, before)  # a new choice reruns the script
    box = page.get_by_role("combobox", name=label, exact=True)
    widget = page.locator('[data-testid="stMultiSelect"], [data-testid="stSelectbox"]').filter(has=box)
    if widget.get_attribute("data-testid") == "stSelectbox":  # the choice is the input's text
        expect(box).to_have_value(re.compile("^" + re.escape(option)))
    else:  # a chip per choice
        expect(widget).to_contain_text(option)


def go(page, title: str) -> None:
    """Follow the step link (``st.page_link``) to the page ``title`` and wait for its heading; the URL is the page's
    name and keeps the open workspace."""
    page.get_by_test_id("stMain").get_by_role("link", name=title, exact=True).click()
    heading(page, title).wait_for()
    expect(page).to_have_url(re.compile(rf"/{title.lower()}\?ws=[^&]+$"))


def sidebar_link(page, title: str):
    return page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True)


def expect_sidebar(page, server: Server) -> None:
    """The sidebar is the router's ``st.navigation`` (``ui/navigation.py``): two sections, every page by its title with a Material icon and a
    readable URL; never Streamlit's legacy list of file names (whose first entry reads "app")."""
    nav = page.get_by_test_id("stSidebarNav")
    sections = nav.get_by_test_id("stNavSectionHeader").get_by_test_id("stMarkdownContainer")
    expect(sections).to_have_text(["Prepare", "Check and export"])
    links = nav.get_by_test_id("stSidebarNavLink")
    expect(links).to_have_text([re.compile(re.escape(title) + "$") for title, _ in SIDEBAR])
    expect(links.get_by_test_id("stIconMaterial")).to_have_count(len(SIDEBAR))
    assert [link.get_attribute("href") for link in links.all()] == [f"{server.url}/{path}" for _, path in SIDEBAR]


def legend(page) -> dict[int, int]:
    """The map's legend: cluster id -> size (entries read "<id> · <name> (<size>)")."""
    page.locator(".tacmap .legendtext").first.wait_for()  # the chart draws after the script run
    entries = page.locator(".tacmap .legendtext").all_text_contents()
    found = [re.match(r"^(\d+) · .* \((\d+)\)$", text) for text in entries]
    return {int(m[1]): int(m[2]) for m in found if m}


def stage_bars(page, stage: str) -> list[str]:
    """The texts of the progress bars of ``stage`` on the page ("embedding vocabulary: 1,243 / 16,667 · …")."""
    return [text for text in page.get_by_test_id("stProgress").all_inner_texts() if text.startswith(f"{stage}: ")]


def wait_for_bar(page, stage: str, wanted, timeout: float = RUN_TIMEOUT_S) -> str:
    """Poll until a bar of ``stage`` satisfies ``wanted(text)``; returns that text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [text for text in stage_bars(page, stage) if wanted(text)]
        if found:
            return found[0]
        page.wait_for_timeout(200)
    raise AssertionError(f"no {stage} bar as wanted within {timeout} s; bars: {stage_bars(page, stage)}")


def bar_count(text: str) -> tuple[int, int]:
    """(done, total) of a bar's text; (0, 0) for a stage not started ("waiting")."""
    found = re.match(r"^[^:]+: ([\d,]+) / ([\d,]+)", text)
    return (int(found[1].replace(",", "")), int(found[2].replace(",", ""))) if found else (0, 0)


def audit_item(page) -> tuple[str, int | None]:
    """The Audit page's current item: its relative path, and the cluster suggested for it (None if none)."""
    header = page.get_by_text(re.compile(r"^#\d+ in the queue · image \d+ · ")).inner_text()
    suggestion = page.get_by_test_id("stMarkdown").filter(has_text="Suggested cluster").locator(
        "xpath=following::*[@data-testid='stText'][1]").inner_text()
    found = re.match(r"^(\d+) · ", suggestion)
    return header.split(" · ", 2)[2], int(found[1]) if found else None


def audit_progress(page) -> int:
    """How many images of the audit queue are reviewed ("<n> of <m> reviewed")."""
    return int(re.search(r"(\d+) of \d+ reviewed", page.get_by_test_id("stProgress").first.inner_text())[1])


def metric(page, label: str):
    """The value of the ``st.metric`` labelled ``label``."""
    return page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)).get_by_test_id("stMetricValue")


# -- images ---------------------------------------------------------------------------------------------------
def elpv_folder(root: Path) -> Path:
    """``N_IMAGES`` real elpv solar-cell PNGs (every 43rd) in ``line3/station-a`` and ``line3/station-b``."""
    source = importlib.resources.files("elpv_dataset") / "data" / "images"
    names = sorted(p.name for p in source.iterdir() if p.name.endswith(".png"))[::43][:N_IMAGES]
    folder = root / "line3"
    for index, name in enumerate(names):
        target = folder / ("station-a" if index % 2 == 0 else "station-b")
        target.mkdir(parents=True, exist_ok=True)
        with importlib.resources.as_file(source / name) as path:
            shutil.copy(path, target / name)
    assert len(names) == N_IMAGES
    return folder


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the whole workflow ------------------------------------------------------------------------------------
@pytest.mark.timeout(900)  # every page, a real run whose quick vocabulary is cancelled half-way and run again
def test_whole_workflow(server, page, output_dir, tmp_path, tiny_model_config, tiny_checkpoint):
    timings: dict[str, float] = {}
    started = time.monotonic()
    folder = elpv_folder(tmp_path / "photos")

    # home: create a workspace
    page.goto(server.url)
    heading(page, "TAC Studio").wait_for()  # the first paint can be blank
    textbox(page, "Workspace name").fill("Line 3 solar cells")
    button(page, "Create workspace").click()
    see(page, "Open workspace: Line 3 solar cells")
    expect_sidebar(page, server)
    shot(page, output_dir, "1-home")

    # images: upload a whole folder (the directory uploader)
    go(page, "Images")
    page.locator("input[type=file][webkitdirectory]").set_input_files(folder)  # the browser's folder picker
    page.wait_for_function(  # every file sent to the server: a chip each, none still spinning or failed
        """n => document.querySelectorAll('[data-testid="stFileChip"]').length === n && !document.querySelector(
               '[data-testid="stFileChipIconSpinner"], [data-testid="stFileChipIconError"]')""", arg=N_IMAGES)
    button(page, "Add uploaded folder").click()
    see(page, f"Added from uploaded folder line3: {N_IMAGES} new image(s), 0 duplicate(s), 0 skipped")
    shot(page, output_dir, "2-images")
    timings["upload"] = time.monotonic() - started

    # vocabulary: a domain term on top of the first set, which on a computer without a GPU is the quick setting
    go(page, "Vocabulary")
    see(page, "Saved automatically on every change (version 1)")
    see(page, "Quick setting: this computer has no CUDA GPU")
    expect(page.get_by_role("button", name=re.compile(r"^Use the paper's full setting \(67,186 terms"))).to_be_visible()
    textbox(page, "Domain term").fill("hairline crack")
    textbox(page, "Note (optional)").fill("thin dark line across the cell")
    button(page, "Add domain term").click()
    see(page, "Added 1 term(s).")
    see(page, "Saved automatically on every change (version 2)")
    active = metric(page, "Active terms")
    spec = {**vocab_spec.quick_spec(), "domain_terms": [{"term": "hairline crack", "note": "thin dark line across the "
                                                                                          "cell"}]}
    n_terms = len(vocab_spec.build_vocabulary(spec))
    expect(active).to_have_text(f"{n_terms:,}")  # the quick categories and the term
    shot(page, output_dir, "3-vocabulary")

    # cluster: the tiny model (JSON config + checkpoint), K = 4, the PCA layout (UMAP's numba compile takes a
    # minute on 2 cores); the run is a real `python -m tac_core run-job` subprocess
    go(page, "Cluster")
    type_into(page, "Model", str(tiny_model_config))
    type_into(page, "Checkpoint file (optional)", str(tiny_checkpoint))
    type_into(page, "Number of clusters (K)", "4")
    page.get_by_text("More options", exact=True).click()
    click(page, page.get_by_text("PCA (instant, less faithful)", exact=True))
    expect(page.get_by_label("Number of clusters (K)", exact=True)).to_have_value("4")
    expect(page.get_by_role("radio", name="PCA (instant, less faithful)")).to_be_checked()
    see(page, f"to encode {n_terms:,} terms × 3 prompts")  # the vocabulary's cost, before the run starts
    run_started = time.monotonic()
    button(page, "Start run").click()
    see(page, "Started run 1.")
    button(page, "Cancel run").wait_for()
    # cancel half-way through the vocabulary (more than 64 terms encoded), with the time left on its bar
    half_way = wait_for_bar(page, "embedding vocabulary", lambda text: 64 < bar_count(text)[0] < n_terms
                            and " left" in text)
    assert len(stage_bars(page, "embedding images")) == 1  # one set of bars: the live ones (bug 3)
    shot(page, output_dir, "4-cluster-running")
    button(page, "Cancel run").click()
    see(page, "Run 1: cancelled", timeout=RUN_TIMEOUT_S * 1000)
    [workspace_dir] = [p for p in server.data.iterdir() if p.is_dir()]
    with open_workspace(workspace_dir) as workspace:
        encoded = next(s for s in jobs.read_stages(workspace, 1) if s["stage"] == "embedding vocabulary")["done"]
    assert bar_count(half_way)[0] <= encoded < n_terms
    button(page, "Run again").click()
    see(page, "Run 1 started again.")
    resumed = wait_for_bar(page, "embedding vocabulary", lambda text: f" · {encoded:,} cached" in text)
    assert bar_count(resumed)[0] >= encoded  # the vocabulary starts from the terms encoded before the cancel
    see(page, "Run 1: done", timeout=RUN_TIMEOUT_S * 1000)
    with open_workspace(workspace_dir) as workspace:
        stage = next(s for s in jobs.read_stages(workspace, 1) if s["stage"] == "embedding vocabulary")
    assert stage["first_done"] == encoded and stage["done"] == n_terms
    timings["run"] = time.monotonic() - run_started
    expect(button(page, "Cancel run")).to_have_count(0)
    shot(page, output_dir, "5-cluster-done")

    # review: the map and the clusters of run 1
    button(page, "Review this run").click()
    heading(page, "Review").wait_for()
    expect(page).to_have_url(re.compile(r"/review\?ws=[^&]+&run=1$"))
    page.locator(".tacmap").first.wait_for()
    see(page, "0 edit(s) in effect on run 1.")
    expect(page.locator(".tacmap")).not_to_have_attribute("data-thumbnails", re.compile("^0?$"))  # thumbnails
    shot(page, output_dir, "6-review")
    expect(page.get_by_text("Layout: PCA picture of the images' image and text features")).to_be_visible()
    sizes = legend(page)
    assert len(sizes) == 4 and sum(sizes.values()) == N_IMAGES, sizes
    target = max(sizes, key=sizes.get)  # the page opens the largest cluster
    expect(page.get_by_text(f"Name: cluster {target}", exact=True)).to_be_visible()
    source = min((c for c in sizes if c != target), key=sizes.get)
    closed = next(c for c in sorted(sizes) if c not in (target, source))

    # merge the smallest cluster into the open one
    choose(page, "Clusters to merge into this one", f"{source} · cluster {source} (")
    button(page, "Merge").click()
    see(page, f"Merged cluster {source} 'cluster {source}' into cluster {target}")
    assert legend(page) == {**{c: n for c, n in sizes.items() if c not in (source, target)},
                            target: sizes[target] + sizes[source]}
    # rename it; undo; redo
    type_into(page, "New name", "hairline cracks")
    button(page, "Rename cluster").click()
    see(page, f"Renamed cluster {target} from 'cluster {target}' to 'hairline cracks'.")
    expect(page.get_by_text("Name: hairline cracks", exact=True)).to_be_visible()
    button(page, "Undo", "U").click()
    see(page, re.compile(r"^Undid #2: renamed cluster"))
    expect(page.get_by_text(f"Name: cluster {target}", exact=True)).to_be_visible()
    assert legend(page)[target] == sizes[target] + sizes[source]
    button(page, "Redo", "Y").click()
    see(page, re.compile(r"^Redid #2: renamed cluster"))
    expect(page.get_by_text("Name: hairline cracks", exact=True)).to_be_visible()
    # another cluster: a name a spreadsheet would run as a formula, and the whole cluster verified
    choose(page, "Cluster", f"{closed} · cluster {closed} (")
    see(page, f"Name: cluster {closed}")
    type_into(page, "New name", "=1+1 edge")
    button(page, "Rename cluster").click()
    see(page, "Name: =1+1 edge")
    button(page, "Verify cluster", "V").click()
    see(page, f"Marked cluster {closed} '=1+1 edge' verified.")
    expect(page.get_by_text("Verified cluster", exact=True)).to_be_visible()
    see(page, "4 edit(s) in effect on run 1.")
    shot(page, output_dir, "7-review-edited")

    # audit: keep the first image of the queue, move the next one that has a suggestion, exclude the next
    sidebar_link(page, "Audit").click()
    heading(page, "Audit").wait_for()
    expect(page).to_have_url(re.compile(r"/audit\?ws=[^&]+&run=1$"))  # the page puts the place back in the URL
    see(page, "4 edit(s) in effect on run 1.")
    kept, _ = audit_item(page)
    reviewed = audit_progress(page)
    button(page, "Keep", "K").click()
    see(page, "Marked 1 image(s) verified.")
    assert audit_item(page)[0] != kept and audit_progress(page) == reviewed + 1
    for _ in range(10):  # skip items without another cluster to suggest (Skip records nothing)
        moved, suggested = audit_item(page)
        if suggested is not None:
            break
        button(page, "Skip", "N").click()
        expect(page.get_by_text(re.compile(r"^#\d+ in the queue · image "))).not_to_have_text(
            re.compile(re.escape(moved) + "$"))
        settle(page)
    assert suggested is not None, "no item of the audit queue suggests another cluster"
    button(page, "Move to suggested", "S").click()
    see(page, re.compile(rf"^Moved 1 image\(s\) to cluster {suggested} "))
    assert audit_progress(page) == reviewed + 2
    excluded, _ = audit_item(page)
    button(page, "Exclude", "X").click()
    see(page, "Excluded 1 image(s).")
    assert audit_progress(page) == reviewed + 3 and audit_item(page)[0] not in (kept, moved, excluded)
    see(page, "7 edit(s) in effect on run 1.")
    shot(page, output_dir, "8-audit")

    # sign-off: approve the renamed cluster on the Review page; the History page shows who approved it and when
    sidebar_link(page, "Review").click()
    heading(page, "Review").wait_for()
    see(page, "7 edit(s) in effect on run 1.")
    if not page.get_by_text("Name: hairline cracks", exact=True).is_visible():  # the page reopens the last cluster
        choose(page, "Cluster", f"{target} · hairline cracks (")
    see(page, "Not approved")
    button(page, "Approve cluster").click()
    see(page, f"Approved cluster {target} 'hairline cracks'.")
    approver = local_user().name  # local mode: the operating-system user (no other name was typed)
    see(page, re.compile(rf"^Approved by {re.escape(approver)} on \d{{4}}-\d\d-\d\d \d\d:\d\d UTC \(#10\)$"))
    expect(button(page, "Withdraw approval")).to_be_visible()
    sidebar_link(page, "History").click()
    heading(page, "History").wait_for()
    see(page, "1 of 3 clusters approved.")
    see(page, "10 of 10 events.")
    with page.expect_download() as download_info:
        button(page, "Download history CSV").click()
    history = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text("utf-8-sig"), newline="")))
    assert [(r["event_id"], r["user"], r["action"], r["clusters"]) for r in history][-1] == (
        "10", approver, "approve", str(target))
    shot(page, output_dir, "8b-history")

    # export: all rows, downloaded through the browser
    sidebar_link(page, "Export").click()
    heading(page, "Export").wait_for()
    see(page, "Preview: the first")
    expect(page.get_by_role("radio", name="All images (except excluded ones)")).to_be_checked()
    expect(metric(page, "Rows")).to_have_text(str(N_IMAGES - 1))
    expect(metric(page, "Excluded images")).to_have_text("1")
    button(page, "Create export").click()
    see(page, f"Exported {N_IMAGES - 1} rows. A copy is kept in the workspace:")
    with page.expect_download() as download_info:
        button(page, "Download CSV").click()
    download = download_info.value
    assert re.fullmatch(r"labels_run1_\d{8}T\d{6}Z\.csv", download.suggested_filename), download.suggested_filename
    csv_bytes = Path(download.path()).read_bytes()
    shot(page, output_dir, "9-export")
    button(page, "Create bundle").click()  # the bundle for a training pipeline, as one zip
    see(page, f"Bundle written: {N_IMAGES - 1} rows, 0 of them duplicates.")
    with page.expect_download() as download_info:
        button(page, "Download bundle").click()
    bundle = download_info.value
    assert re.fullmatch(r"bundle_run1_\d{8}T\d{6}Z\.zip", bundle.suggested_filename), bundle.suggested_filename
    bundle_path = Path(download.path()).with_name(bundle.suggested_filename)
    bundle.save_as(bundle_path)
    timings["total"] = time.monotonic() - started

    assert (workspace_dir / "exports" / download.suggested_filename).read_bytes() == csv_bytes
    workspace = open_workspace(workspace_dir)
    try:  # the run was a job subprocess of the server (an inline job stores no pid)
        run = workspace.run(1)
        assert run["status"] == "done" and run["pid"] and run["params"]["n_clusters"] == 4
        assert run["params"]["model"]["checkpoint"] == str(tiny_checkpoint)
        assert "run 1 done" in jobs.log_tail(workspace, 1)
    finally:
        workspace.close()
    check_export(csv_bytes, folder, merged=source, renamed=target, formula=closed, moved=(moved, suggested),
                 kept=kept, excluded=excluded)
    check_bundle(bundle_path, csv_bytes, workspace_dir, approved=(target, "hairline cracks", approver))

    # a cancelled run listed next to a finished one, then: no traceback anywhere in the server's log (bug 8)
    sidebar_link(page, "Cluster").click()
    heading(page, "Cluster").wait_for()
    button(page, "Start run").click()
    see(page, "Started run 2.")
    button(page, "Cancel run").click()
    see(page, "Run 2: cancelled", timeout=RUN_TIMEOUT_S * 1000)
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible()
    shot(page, output_dir, "10-cluster-runs")
    assert server.tracebacks() == [], server.tracebacks()
    print("browser workflow timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def check_export(csv_bytes: bytes, folder: Path, merged: int, renamed: int, formula: int, moved: tuple[str, int],
                 kept: str, excluded: str) -> None:
    """The exported CSV holds one row per image not excluded, with the decisions made in the browser."""
    assert csv_bytes.startswith("\ufeff".encode()) and b"\r\n" in csv_bytes  # BOM for Excel, RFC 4180 line ends
    rows = list(csv.reader(io.StringIO(csv_bytes.decode("utf-8-sig"), newline="")))
    header, rows = rows[0], [dict(zip(rows[0], row)) for row in rows[1:]]
    assert header == ["relative_path", "sha256", "cluster_id", "label", "verified", "confidence", "top_anchors",
                      "run_id", "source"]
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*.png")}
    by_path = {row["relative_path"]: row for row in rows}
    assert len(by_path) == len(rows) == N_IMAGES - 1  # one row per image, the excluded one left out
    assert set(by_path) == set(files) - {excluded}
    for path, row in by_path.items():
        assert row["sha256"] == sha256_of(files[path]), path  # the content hash of the uploaded file
        assert row["run_id"] == "1" and row["source"] == "1: uploaded folder line3"
        assert 0.0 <= float(row["confidence"]) <= 1.0 and re.fullmatch(r"\d\.\d{4}", row["confidence"])
        assert row["top_anchors"] and re.fullmatch(r"[^;]+ \(-?\d\.\d\d\)(; [^;]+ \(-?\d\.\d\d\)){0,2}",
                                                   row["top_anchors"]), row["top_anchors"]
    clusters = {int(row["cluster_id"]) for row in rows}
    assert merged not in clusters and {renamed, formula} <= clusters and len(clusters) == 3
    labels = {int(row["cluster_id"]): row["label"] for row in rows}
    assert labels[renamed] == "hairline cracks"  # a normal name is left as it is
    assert labels[formula] == "'=1+1 edge"  # a formula is neutralised with a leading quote
    other = ({0, 1, 2, 3} - {merged, renamed, formula}).pop()
    assert labels[other] == f"cluster {other}"
    assert not any(path.startswith("'") for path in by_path)  # file names are normal text
    moved_path, moved_to = moved
    assert int(by_path[moved_path]["cluster_id"]) == moved_to
    verified = {path for path, row in by_path.items() if row["verified"] == "true"}
    assert {row["verified"] for row in rows} <= {"true", "false"}
    in_closed = {path for path, row in by_path.items() if int(row["cluster_id"]) == formula}
    assert verified == in_closed | {kept, moved_path}  # the verified cluster, the kept and the moved image


def check_bundle(bundle: Path, csv_bytes: bytes, workspace_dir: Path, approved: tuple[int, str, str]) -> None:
    """The downloaded bundle holds the plain export's rows (plus duplicate_of), lists the approval made in the
    browser (``approved``: cluster, label, approver) and verifies."""
    from tac_core.workspace.manifest import verify_bundle

    with zipfile.ZipFile(bundle) as archive:
        labels = archive.read("labels.csv").decode("utf-8-sig")
        manifest = json.loads(archive.read("manifest.json"))
    [approval] = manifest["approvals"]
    assert (approval["cluster"], approval["label"], approval["approved_by"], approval["event_id"]) == (*approved, 10)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", approval["approved_at"])
    plain = list(csv.reader(io.StringIO(csv_bytes.decode("utf-8-sig"), newline="")))
    rows = list(csv.reader(io.StringIO(labels, newline="")))
    assert [row[:9] for row in rows] == plain and rows[0][9:] == ["duplicate_of"]
    assert {row[9] for row in rows[1:]} == {""}
    workspace = open_workspace(workspace_dir)
    try:
        assert verify_bundle(bundle, workspace) == []
    finally:
        workspace.close()


# -- a server killed in the middle of a review ---------------------------------------------------------------
def test_review_edits_survive_a_server_kill(start_server, page, output_dir, tmp_path, elpv_images):
    from review_workspace import real_workspace
    from tac_core.workspace.review import ReviewSession

    workspace, run_id, ids = real_workspace(tmp_path / "data", elpv_images)  # 24 images, 3 clusters (9, 8, 7)
    workspace.close()
    first = start_server()
    page.goto(f"{first.url}/review?ws={workspace.path.name}&run={run_id}")  # a fresh server's first request
    see(page, f"0 edit(s) in effect on run {run_id}.")
    expect_sidebar(page, first)  # routed by app.py's navigation although pages/review.py was asked for first
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert legend(page) == {0: 9, 1: 8, 2: 7}
    expect(page.get_by_text("Name: cluster 0", exact=True)).to_be_visible()  # the largest cluster is open

    # edits through the browser: rename, merge, verify a cluster; rename another, verify an image, undo that
    type_into(page, "New name", "cracks")
    button(page, "Rename cluster").click()
    see(page, "Name: cracks")
    choose(page, "Clusters to merge into this one", "2 · cluster 2 (7)")
    button(page, "Merge").click()
    see(page, "Merged cluster 2 'cluster 2' into cluster 0 'cracks'")
    button(page, "Verify cluster", "V").click()
    see(page, "Marked cluster 0 'cracks' verified.")
    choose(page, "Cluster", "1 · cluster 1 (8)")
    type_into(page, "New name", "fingers")
    button(page, "Rename cluster").click()
    see(page, "Name: fingers")
    first_member = page.get_by_role("checkbox", name=re.compile(r"^Select image \d+$")).first
    image_id = int(first_member.get_attribute("aria-label").split()[-1])
    member_box = page.get_by_role("checkbox", name=f"Select image {image_id}", exact=True)
    click(page, page.get_by_test_id("stCheckbox").filter(has=member_box).locator("label"))
    expect(first_member).to_be_checked()
    see(page, "1 image(s) selected (1 in cluster 1).")
    button(page, "Verify selected").click()
    see(page, "Marked 1 image(s) verified.")
    button(page, "Undo", "U").click()
    see(page, "Undid #5: marked 1 image(s) verified.")
    see(page, f"4 edit(s) in effect on run {run_id}.")
    expect(button(page, "Redo", "Y")).to_be_enabled()
    shot(page, output_dir, "1-review-before-kill")

    # SIGKILL the server (no shutdown code runs), start a new one on the same data folder and port, reload
    first.kill()
    assert first.process.returncode == -signal.SIGKILL
    second = start_server(port=first.port)
    page.reload()  # the new server's first request is this page, not the home page
    see(page, f"4 edit(s) in effect on run {run_id}.")
    expect_sidebar(page, second)
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert legend(page) == {0: 16, 1: 8}
    assert sorted(page.locator(".tacmap .legendtext").all_text_contents()) == ["0 · cracks (16)",
                                                                                     "1 · fingers (8)"]
    expect(page.get_by_text("Name: cracks", exact=True)).to_be_visible()
    expect(page.get_by_text("Verified cluster", exact=True)).to_be_visible()
    shot(page, output_dir, "2-review-after-restart")

    # the undo history goes on: redo the undone edit, then undo two
    button(page, "Redo", "Y").click()
    see(page, "Redid #5: marked 1 image(s) verified.")
    see(page, f"5 edit(s) in effect on run {run_id}.")
    button(page, "Undo", "U").click()
    see(page, "Undid #5: marked 1 image(s) verified.")
    button(page, "Undo", "U").click()
    see(page, "Undid #4: renamed cluster 1 from 'cluster 1' to 'fingers'.")
    see(page, f"3 edit(s) in effect on run {run_id}.")
    assert sorted(page.locator(".tacmap .legendtext").all_text_contents()) == ["0 · cracks (16)",
                                                                                     "1 · cluster 1 (8)"]
    second.stop()

    reopened = open_workspace(workspace.path)
    try:
        with reopened.connection() as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        state = ReviewSession(reopened, run_id).state
        assert state.names == {0: "cracks", 1: "cluster 1"} and state.verified_clusters == {0}
        assert not state.verified[state.positions([image_id])].any()
        kinds = [row[0] for row in reopened.connection().execute(
            "SELECT kind FROM events WHERE run_id = ? ORDER BY id", (run_id,))]
        assert kinds == ["rename", "merge", "verify_cluster", "rename", "verify_images", "undo", "redo", "undo",
                         "undo"]
    finally:
        reopened.close()


# -- a second batch after the first review ---------------------------------------------------------------------
def test_a_second_batch_is_sorted_into_the_reviewed_run(server, page, output_dir, tmp_path, monkeypatch,
                                                        elpv_images, textile_images, tiny_model_config,
                                                        tiny_checkpoint):
    """A reviewed run of line 1's photos; line 2's batch added by folder path, described by the saved path
    pattern, sorted into the run from the Review page: the new images are ringed on the map, and the map is
    coloured by line."""
    from tac_core.run import params as run_params
    from tac_core.workspace import ingest
    from tac_core.workspace.review import ReviewSession
    from tac_core.workspace.workspace import create_workspace

    cells = sorted(elpv_images.glob("*.png"))
    first, second = tmp_path / "photos" / "batch1", tmp_path / "photos" / "batch2"
    for index, path in enumerate(cells[:16]):
        (first / "line1" / f"cam{index % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, first / "line1" / f"cam{index % 2}" / path.name)
    (second / "line2" / "cam0").mkdir(parents=True)
    for path in [*cells[16:], *sorted(textile_images.rglob("*.jpg"))[:6]]:
        shutil.copy(path, second / "line2" / "cam0" / f"{path.parent.name}_{path.stem}.png")
    monkeypatch.setenv(jobs.INLINE_ENV, "1")  # the run is computed here, before the browser opens the workspace
    workspace = create_workspace("Two shifts", server.data)
    try:
        ingest.add_folder(workspace, first)
        spec = {**vocab_spec.default_spec(), "categories": ["noun.shape"], "templates": "photo1"}
        model = {"name": str(tiny_model_config), "pretrained": "openai", "checkpoint": str(tiny_checkpoint)}
        run_id = jobs.start_run(workspace, run_params.RunParams(model=model, vocab_set="small", vocab_spec=spec,
                                                                n_clusters=3, projection="pca", suggest_k=False))
        assert workspace.run(run_id)["status"] == "done", workspace.run(run_id)["error"]
        ReviewSession(workspace, run_id).rename(0, "dark cells")  # the first review
        folder = workspace.path.name
    finally:
        workspace.close()

    # images: where each photo comes from, read from its path; then the next shift's folder
    page.goto(f"{server.url}/images?ws={folder}")
    heading(page, "Images").wait_for()
    type_into(page, "Path pattern", "{line}/{camera}/*.png")
    click(page, button(page, "Preview"))
    see(page, "The pattern fits 16 of 16 images.")
    click(page, button(page, "Apply to all images"))
    see(page, "Stored line, camera for 16 image(s).")
    page.get_by_role("tab", name="Folder on this machine").click()  # tabs switch in the browser: no script run
    page.get_by_label("Folder path", exact=True).fill(str(second))  # sent with the click (a rerun resets tabs)
    click(page, button(page, "Add folder"))
    see(page, "14 new image(s)")
    shot(page, output_dir, "1-images-metadata")

    # review: the batch waits behind one button; sorted in, the new images are ringed on the map
    page.goto(f"{server.url}/review?ws={folder}&run={run_id}")
    see(page, "14 image(s) were added to the workspace after this run.")
    click(page, button(page, "Sort 14 new image(s) into this run"))
    see(page, re.compile(r"^Added 14 new image\(s\) to the reviewed clusters"), timeout=RUN_TIMEOUT_S * 1000)
    see(page, f"2 edit(s) in effect on run {run_id}.")  # the rename and the intake
    page.locator(".tacmap .legendtext").first.wait_for()
    entries = page.locator(".tacmap .legendtext").all_text_contents()
    assert "new (14)" in entries, entries
    assert sum(int(m[1]) for m in (re.match(r"^\d+ · .* \((\d+)\)$", e) for e in entries) if m) == 30
    shot(page, output_dir, "2-review-new")

    # colour the map by line: line 1's 16 photos and line 2's 14
    choose(page, "Colour by", "line")
    expect(page.locator(".tacmap .legendtext")).to_contain_text(["line1 (16)", "line2 (14)"])
    shot(page, output_dir, "3-review-by-line")
