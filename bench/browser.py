"""What a reviewer feels in a real browser: ``python -m bench.browser``.

Builds synthetic runs (``tests/review_workspace.py``: 12 clusters, one of exactly 100 images, a coloured
thumbnail per cluster), starts ``streamlit run app.py`` on each and drives headless Chromium (Playwright, Debian's
``/usr/bin/chromium``, like ``tests/test_browser.py``) through the Review and Audit pages. Every action is timed
from the click (or key press) to *idle*: the script run it started is over, no element is stale, every image has
loaded and no new script run started for a quarter second (an action that reruns several parts of the page
runs them one after the other); the time is when that idle began. Bytes are the WebSocket frames the browser
received for it. The same steps run against two checkouts, side by side on the same machine: ``before`` (the
code when issue #17 was taken up, ``--baseline``, extracted with ``git archive``) and ``after`` (this tree, or ``--after``).

Two tables:
- actions at ``--sizes`` images (default 2,000 / 20,000 / 200,000): first render on a fresh server, rename,
  merge, move 100 selected, verify, exclude, undo, audit keep / move (median of ``--reps``);
- the map at ``--map-sizes`` points (default 50,000 / 200,000 / 1,000,000, no thumbnails): first render, a rerun
  (the ``R`` key), verify, rename and a box selection on the map, each with its bytes.

Timings on a shared 2-core machine are noisy: the load average is printed with the tables. ``--json PATH``
keeps the raw numbers.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from review_workspace import synthetic_workspace  # noqa: E402
from test_browser import CHROMIUM, CHROMIUM_ARGS, COUNT_RUNS, Server, free_port, settle  # noqa: E402

BASELINE = "6c93026"  # main when #17 was taken up: the "before" column
CLUSTERS = 12
SMALL = 100  # images in the last cluster: "move 100 selected" moves all of them
VIEWPORT = {"width": 1400, "height": 1000}
STEP_S = 600  # the longest one timed step may take before it is reported as a timeout
QUIET_MS = 250  # idle this long with no new script run: the action is over (st.rerun of parts chains runs)
MARK_INPUTS = """
window.__tacClickAt = null;  // when the last timed input happened (performance.now())
for (const type of ['pointerdown', 'keydown'])
    document.addEventListener(type, () => { window.__tacClickAt = performance.now(); }, true);
window.__tacRunStartedAt = 0;  // when a script run last started
new MutationObserver(records => {
    for (const record of records)
        if (record.oldValue !== 'running' && record.target.getAttribute('data-test-script-state') === 'running')
            window.__tacRunStartedAt = performance.now();
}).observe(document, {subtree: true, attributeOldValue: true, attributeFilter: ['data-test-script-state']});
"""
IDLE = """([before, limit, fromNavigation, quiet]) => new Promise((resolve, reject) => {
    const NO_RUN_MS = 60000;  // an input that starts no script run (a disabled button) is a failed step
    const start = performance.now();
    let idleSince = null;
    const idle = () => {
        const app = document.querySelector('[data-testid="stApp"]');
        return window.__tacRuns > before && app && app.getAttribute('data-test-script-state') === 'notRunning'
            && app.getAttribute('data-test-connection-state') === 'CONNECTED'
            && !document.querySelector('[data-stale="true"]')
            && Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);
    };
    const check = () => {
        const now = performance.now();
        if (!idle()) {
            idleSince = null;
        } else if (idleSince === null || window.__tacRunStartedAt > idleSince) {
            idleSince = now;  // idle from this frame on, unless another run starts within the quiet time
        } else if (now - idleSince >= quiet) {
            resolve(idleSince - (fromNavigation ? 0 : window.__tacClickAt));
            return;
        }
        if (window.__tacRuns <= before && window.__tacRunStartedAt < (window.__tacClickAt || 0)
                && now - start > NO_RUN_MS) {
            reject(new Error('the input started no script run within ' + NO_RUN_MS + ' ms'));
            return;
        }
        if (now - start > limit) {
            reject(new Error('not idle after ' + limit + ' ms'));
            return;
        }
        requestAnimationFrame(check);
    };
    check();
})"""


# -- checkouts, workspaces, servers -------------------------------------------------------------------------
def checkout(revision: str, into: Path) -> Path:
    """The tree of ``revision`` (``git archive``) in ``into``."""
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


@contextmanager
def served(root: Path, data: Path, log: Path) -> Iterator[Server]:
    server = Server(data, free_port(), log, root=root).start(timeout=180)
    try:
        yield server
    finally:
        server.stop()


class Tab:
    """One Chromium tab with the timing hooks, counting the WebSocket bytes it receives."""

    def __init__(self, browser) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.add_init_script(COUNT_RUNS)
        self.context.add_init_script(MARK_INPUTS)
        self.page = self.context.new_page()
        self.page.set_default_timeout(STEP_S * 1000)
        self.received = 0
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._count))

    def _count(self, payload) -> None:
        self.received += len(payload)

    def close(self) -> None:
        self.context.close()

    def runs(self) -> int:
        return self.page.evaluate("window.__tacRuns")

    def open(self, url: str, ready: str) -> tuple[float, int]:
        """Load ``url``; milliseconds from navigation to idle (with ``ready`` text shown) and bytes received."""
        self.received = 0
        self.page.goto(url)
        self.page.get_by_text(ready).first.wait_for(timeout=STEP_S * 1000)
        return self.page.evaluate(IDLE, [0, STEP_S * 1000, True, QUIET_MS]), self.received

    def timed(self, act: Callable[[], None]) -> tuple[float, int]:
        """Milliseconds from the input ``act`` makes to idle, and the bytes received meanwhile."""
        settle(self.page, STEP_S * 1000)
        before, self.received = self.runs(), 0
        act()
        return self.page.evaluate(IDLE, [before, STEP_S * 1000, False, QUIET_MS]), self.received

    def untimed(self, act: Callable[[], None]) -> None:
        self.timed(act)

    # -- widgets by their Streamlit key (the ``st-key-<key>`` class, the same in both checkouts) -------------
    def key(self, key: str):
        return self.page.locator(f".st-key-{key}")

    def press(self, key: str) -> Callable[[], None]:
        return lambda: self.key(key).locator("button").first.click()

    def enabled(self, key: str) -> bool:
        """Whether the button with this key is on the page and enabled (one look: the page may be redrawing)."""
        return self.page.evaluate("""key => { const b = document.querySelector('.st-key-' + key + ' button');
                                             return !!b && !b.disabled; }""", key)

    def type_text(self, key: str, value: str) -> None:
        box = self.key(key).locator("input")
        self.untimed(lambda: (box.fill(value), box.press("Enter")))

    def choose(self, key: str, option: str) -> None:
        """Pick the first option starting with ``option`` in a select box or multiselect (nothing to do when a
        select box shows it already: choosing it again would start no run)."""
        settle(self.page, STEP_S * 1000)
        box = self.key(key).get_by_role("combobox")
        if (box.input_value() or "").startswith(option):
            return
        box.click()
        self.page.keyboard.type(option)

        def pick() -> None:
            self.page.get_by_role("option", name=re.compile("^" + re.escape(option))).first.click()
            self.page.keyboard.press("Escape")
        self.untimed(pick)


def median_ms(samples: list[tuple[float, int]]) -> Optional[tuple[float, float]]:
    return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)) if samples else None


def attempt(results: dict, name: str, step: Callable[[], list[tuple[float, int]] | tuple[float, int]]) -> bool:
    """Run one measured step; a failure or timeout is reported in the table instead of ending the bench.
    Whether it worked."""
    try:
        samples = step()
        results[name] = median_ms(samples if isinstance(samples, list) else [samples])
    except Exception as exc:  # noqa: BLE001 - one broken step must not lose the others
        results[name] = None
        print(f"    {name}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})", flush=True)
        return False
    value = results[name]
    print(f"    {name}: {value[0]:.0f} ms, {value[1] / 1e3:.0f} kB", flush=True)
    return True


# -- the scenarios --------------------------------------------------------------------------------------------
def review_actions(tab: Tab, url: str, reps: int) -> dict:
    """Review and Audit actions on a run with ``CLUSTERS`` clusters (the last one ``SMALL`` images)."""
    out: dict = {}
    if not attempt(out, "first render", lambda: tab.open(url, "edit(s) in effect")):
        return out  # a page that never drew has no buttons to time
    attempt(out, "reload (warm server)", lambda: tab.open(url, "edit(s) in effect"))
    small = CLUSTERS - 1
    tab.choose("review_cluster", "2 · ")  # whichever cluster a reload opened: the timed choice changes it
    attempt(out, "open a cluster (select box)", lambda: tab.timed(lambda: tab.choose("review_cluster", "1 · ")))
    tab.choose("review_cluster", "0 · ")  # cluster 0 open: merges take clusters from the other end

    def rename() -> list:
        samples = []
        for i in range(reps):
            tab.type_text("review_new_name", f"defect {i}")
            samples.append(tab.timed(tab.press("review_rename")))
        return samples
    attempt(out, "rename", rename)
    merges, undos = [], []

    def merge() -> list:
        for i in range(reps):
            tab.choose("review_merge_sources", f"{small - 1 - i} · ")
            merges.append(tab.timed(tab.press("review_merge")))
            undos.append(tab.timed(tab.press("review_undo")))
        return merges
    attempt(out, "merge", merge)
    out["undo"] = median_ms(undos)

    attempt(out, "verify cluster", lambda: verify_samples(tab, reps))

    def move() -> list:
        tab.choose("review_cluster", f"{small} · ")
        samples = []
        for _ in range(reps):
            tab.untimed(tab.press("review_select_cluster"))
            samples.append(tab.timed(tab.press("review_move")))
            tab.untimed(tab.press("review_undo"))
            tab.untimed(tab.press("review_clear_selection"))
        return samples
    attempt(out, f"move {SMALL} selected", move)

    def exclude() -> list:
        samples = []
        tab.untimed(tab.press("review_select_page"))
        for _ in range(reps):
            samples.append(tab.timed(tab.press("review_exclude")))
            tab.untimed(tab.press("review_undo"))
        tab.untimed(tab.press("review_clear_selection"))
        return samples
    attempt(out, "exclude page selection", exclude)

    audit_url = url.replace("/review?", "/audit?")
    attempt(out, "audit: first render", lambda: tab.open(audit_url, "reviewed"))

    def audit_keep() -> list:
        return [tab.timed(tab.press("audit_keep")) for _ in range(reps)]
    attempt(out, "audit: keep", audit_keep)

    def audit_move() -> list:
        samples = []
        for _ in range(reps):
            for _ in range(20):
                if tab.enabled("audit_move_suggested"):
                    break
                tab.untimed(tab.press("audit_skip"))
            samples.append(tab.timed(tab.press("audit_move_suggested")))
        return samples
    attempt(out, "audit: move to suggested", audit_move)
    return out


def verify_samples(tab: Tab, reps: int) -> list:
    """``reps`` clicks of the open cluster's verify button (or its undoing twin), each timed to idle."""
    samples = []
    for _ in range(reps):
        settle(tab.page, STEP_S * 1000)  # the buttons of a page still redrawing are disabled
        key = "review_verify_cluster" if tab.enabled("review_verify_cluster") else "review_unverify_cluster"
        samples.append(tab.timed(tab.press(key)))
    return samples


def map_reruns(tab: Tab, url: str, reps: int) -> dict:
    """The Review page at many points: first render, opening a cluster, verify, rename, a box selection."""
    out: dict = {}
    if not attempt(out, "first render", lambda: tab.open(url, "edit(s) in effect")):
        return out

    def open_cluster() -> list:
        tab.choose("review_cluster", "0 · ")  # then 1, 2, 1, ...: every timed choice changes the open cluster
        return [tab.timed(lambda i=i: tab.choose("review_cluster", f"{1 + i % 2} · ")) for i in range(reps)]
    attempt(out, "open a cluster (select box)", open_cluster)

    attempt(out, "verify cluster", lambda: verify_samples(tab, reps))

    def rename() -> list:
        samples = []
        for i in range(reps):
            tab.type_text("review_new_name", f"defect {i}")
            samples.append(tab.timed(tab.press("review_rename")))
        return samples
    attempt(out, "rename", rename)

    def box() -> list:
        tab.page.locator(".tacmap button[data-tool=box]").click()
        area = tab.page.locator(".tacmap canvas.overlay").bounding_box()
        samples = []
        for i in range(reps):
            x0, y0 = area["x"] + area["width"] * (0.30 + 0.02 * i), area["y"] + area["height"] * 0.30
            x1, y1 = x0 + area["width"] * 0.25, y0 + area["height"] * 0.25

            def drag() -> None:
                mouse = tab.page.mouse
                mouse.move(x0, y0)
                mouse.down()
                mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
                mouse.move(x1, y1, steps=4)
                mouse.up()
            samples.append(tab.timed(drag))
        return samples
    attempt(out, "box selection", box)
    return out


# -- running and printing -------------------------------------------------------------------------------------
def measure(checkouts: dict[str, Path], sizes: list[int], map_sizes: list[int], reps: int, work: Path,
            keep: Optional[Path] = None) -> dict:
    from playwright.sync_api import sync_playwright

    results: dict = {"actions": {}, "map": {}}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        for table, counts, scenario, thumbs in (("actions", sizes, review_actions, True),
                                                ("map", map_sizes, map_reruns, False)):
            for n in counts:
                for label, root in checkouts.items():
                    folder = work / f"{table}-{n}-{label}"
                    started = time.perf_counter()
                    workspace, run_id = synthetic_workspace(folder / "data", n, CLUSTERS, thumbnails=thumbs,
                                                            small=SMALL)
                    name = workspace.path.name
                    workspace.close()
                    print(f"{table} · {n:,} images · {label}: built in {time.perf_counter() - started:.0f} s, "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
                    with served(root, folder / "data", folder / "server.log") as server:
                        tab = Tab(browser)
                        try:
                            results[table].setdefault(str(n), {})[label] = scenario(
                                tab, f"{server.url}/review?ws={name}&run={run_id}", reps)
                        finally:
                            tab.close()
                    shutil.rmtree(folder / "data", ignore_errors=True)
                    if keep is not None:  # what is measured so far survives a bench stopped half-way
                        keep.parent.mkdir(parents=True, exist_ok=True)
                        keep.write_text(json.dumps(results, indent=1), encoding="utf-8")
        browser.close()
    return results


def print_tables(results: dict, labels: list[str]) -> None:
    for table, title in (("actions", "click to idle"), ("map", "the map at many points")):
        for n, by_label in results[table].items():
            print(f"\n{title}, {int(n):,} images (median ms · kB received)")
            names = list(dict.fromkeys(name for label in labels for name in by_label.get(label, {})))
            header = f"{'':<28}" + "".join(f"{label:>22}" for label in labels)
            print(header + ("   after/before" if len(labels) == 2 else ""))
            for name in names:
                cells, values = [], []
                for label in labels:
                    value = by_label.get(label, {}).get(name)
                    values.append(value)
                    cells.append(f"{value[0]:>10.0f} ms {value[1] / 1e3:>7.0f} kB" if value else f"{'—':>22}")
                ratio = (f"   {values[1][0] / values[0][0]:>10.2f}" if len(values) == 2 and all(values)
                         and values[0][0] else "")
                print(f"{name:<28}" + "".join(cells) + ratio)
    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"({os.cpu_count()} cores)")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))  # stop the servers and browsers on the way out
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2_000, 20_000, 200_000])
    parser.add_argument("--map-sizes", type=int, nargs="*", default=[50_000, 200_000, 1_000_000])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline", default=BASELINE, help="the 'before' revision (git); 'none' to skip it")
    parser.add_argument("--only", choices=["before", "after"], help="measure one checkout only")
    parser.add_argument("--after", help="the 'after' revision (git); this working tree when not given")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--step-s", type=int, default=STEP_S, help="seconds before one step counts as timed out")
    args = parser.parse_args()
    globals()["STEP_S"] = args.step_s
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="tac-browser-bench-") as tmp:
        work = Path(tmp)
        checkouts: dict[str, Path] = {}
        if args.baseline != "none" and args.only != "after":
            checkouts["before"] = checkout(args.baseline, work / "before")
        if args.only != "before":
            checkouts["after"] = checkout(args.after, work / "after") if args.after else REPO
        print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} at the start", flush=True)
        results = measure(checkouts, args.sizes, args.map_sizes, args.reps, work, args.json)
    results["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print_tables(results, list(checkouts))


if __name__ == "__main__":
    main()
