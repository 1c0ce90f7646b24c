"""Access in a real browser against a real ``streamlit run app.py``: the address the server listens on by default,
the refusal of an exposed server without sign-in, and ``proxy`` mode with and without the proxy's header for
several users behind a stand-in for the single-sign-on proxy (``header_proxy.py``)."""
from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

import test_browser as tb
from header_proxy import COOKIE, HeaderProxy
from review_workspace import real_workspace
from tac_core.workspace.access import User
from tac_core.workspace.workspace import create_workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not tb.CHROMIUM.exists(), reason="the browser tests need Debian's chromium"),
              pytest.mark.skipif(sys.platform != "linux", reason="reads the listening sockets from /proc/net")]

# the browser test's fixtures, used here as they are
output_dir, start_server, playwright_driver, page = tb.output_dir, tb.start_server, tb.playwright_driver, tb.page
SECRET = "Secret line 7"


def listening(port: int) -> set[str]:
    """The addresses of the sockets listening on ``port`` (TCP, IPv4 and IPv6), from the kernel's tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word little-endian
            found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words))
    return found


@pytest.fixture
def browser(playwright_driver):
    launched = playwright_driver.chromium.launch(executable_path=str(tb.CHROMIUM), args=tb.CHROMIUM_ARGS,
                                                 headless=True)
    yield launched
    launched.close()


def tab(browser, proxy: HeaderProxy, user: str | None = None, forged: str | None = None):
    """A new browser profile signed in to the proxy as ``user`` (None: not signed in), sending ``X-Forwarded-User:
    forged`` itself on every request it can (the proxy must drop it)."""
    context = browser.new_context(viewport=tb.VIEWPORT,
                                  extra_http_headers={"X-Forwarded-User": forged} if forged else {})
    if user:
        context.add_cookies([{"name": COOKIE, "value": user, "url": proxy.url}])
    context.set_default_timeout(tb.STEP_MS)
    context.add_init_script(tb.COUNT_RUNS)
    return context.new_page()


def body(page) -> str:
    tb.settle(page)
    return page.inner_text("body")


# -- where the server listens ---------------------------------------------------------------------------
def test_started_without_settings_the_server_listens_on_127_0_0_1_only(start_server, page):
    server = start_server(address=None)  # the README's command: no --server.address
    assert listening(server.port) == {"127.0.0.1"}
    page.goto(server.url)
    tb.heading(page, "TAC Studio").wait_for()


def test_exposed_without_sign_in_it_serves_only_the_setting_to_add(start_server, page, tmp_path, elpv_images):
    workspace, run_id, _ = real_workspace(tmp_path / "data", elpv_images)
    workspace.close()
    server = start_server(address="0.0.0.0")
    assert listening(server.port) == {"0.0.0.0"}
    page.goto(f"http://127.0.0.1:{server.port}/review?ws={workspace.path.name}&run={run_id}")
    tb.heading(page, "TAC Studio is not available").wait_for()
    text = body(page)
    assert "Add the setting TAC_STUDIO_AUTH=proxy or TAC_STUDIO_AUTH=oidc" in text
    assert "review test" not in text and page.locator("img[src*='/media/']").count() == 0
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)


# -- proxy mode ----------------------------------------------------------------------------------------------
def test_proxy_mode_with_and_without_the_header(start_server, browser, tmp_path, elpv_images, output_dir):
    data = tmp_path / "data"
    workspace, run_id, _ = real_workspace(data, elpv_images)  # "review test": 24 images, 3 clusters
    workspace.add_member("carl", "reviewer")
    workspace.add_member("bob", "viewer")
    workspace.close()
    secret = create_workspace(SECRET, data, creator=User("dora"))
    secret.close()
    server = start_server(env={"TAC_STUDIO_AUTH": "proxy", "TAC_STUDIO_PROXY_SECRET": "only-the-proxy-knows"})
    proxy = HeaderProxy(server.port, secret="only-the-proxy-knows")
    review = f"{proxy.url}/review?ws={workspace.path.name}&run={run_id}"

    # no header (not signed in at the proxy, or the app reached without the proxy): the sign-in page and
    # nothing else, at every address
    anonymous, direct = tab(browser, proxy), tab(browser, proxy, forged="bob")
    for client, url in ((anonymous, proxy.url), (anonymous, review),
                        (anonymous, f"{proxy.url}/images?ws={secret.path.name}"),
                        (direct, review.replace(proxy.url, server.url))):
        client.goto(url)
        tb.heading(client, "Sign-in required").wait_for()
        text = body(client)
        assert "review test" not in text and SECRET not in text and workspace.path.name not in text
        assert client.locator("img[src*='/media/']").count() == 0
        expect(client.get_by_test_id("stSidebarNav")).to_have_count(0)
    anonymous.screenshot(path=str(output_dir / "1-sign-in.png"))

    # bob, a viewer: the review is read only, every edit control disabled, and the page says why
    bob = tab(browser, proxy, "bob")
    bob.goto(review)
    tb.see(bob, "Read only: bob is a viewer of this workspace; to edit the review they need the reviewer role")
    for name, shortcut in (("Rename cluster", ""), ("Verify cluster", "V"), ("Merge", ""), ("Undo", "U")):
        expect(tb.button(bob, name, shortcut)).to_be_disabled(timeout=tb.STEP_MS)  # the panel draws after the banner
    expect(bob.get_by_label("New name", exact=True)).to_be_disabled(timeout=tb.STEP_MS)
    bob.screenshot(path=str(output_dir / "2-viewer.png"))
    # ... and tampering with the address opens no other workspace
    for folder in (secret.path.name, "..", ".creating-x"):
        bob.goto(f"{proxy.url}/export?ws={folder}")
        tb.see(bob, "There is no workspace at this address that you may open.")
        assert SECRET not in body(bob)

    # carl, a reviewer: his edit is recorded under his name and the history shows it
    carl = tab(browser, proxy, "carl")
    carl.goto(review)
    tb.see(carl, f"0 edit(s) in effect on run {run_id}.")
    expect(carl.get_by_text("Read only", exact=False)).to_have_count(0)
    tb.type_into(carl, "New name", "cracks")
    tb.button(carl, "Rename cluster").click()
    tb.see(carl, "Name: cracks")
    carl.get_by_role("button", name=re.compile(r"^History \(1\)")).click()  # the toolbar's popover
    expect(carl.get_by_text(re.compile(r"^Latest: #1 by carl, \d\d:\d\d:\d\d UTC: renamed cluster 0 from "
                                        r"'cluster 0' to 'cracks'$"))).to_be_visible()
    carl.screenshot(path=str(output_dir / "3-reviewer.png"))
    bob.goto(review)  # the viewer sees carl's edit, and may not undo it
    tb.see(bob, "Name: cracks")
    expect(tb.button(bob, "Undo", "U")).to_be_disabled(timeout=tb.STEP_MS)

    # eve, not a member (and sending "X-Forwarded-User: dora" herself, which the proxy drops): no trace of
    # either workspace anywhere
    eve = tab(browser, proxy, "eve", forged="dora")
    eve.goto(proxy.url)
    tb.see(eve, "No workspaces yet: create one below.")
    expect(eve.get_by_test_id("stSidebarUserContent").get_by_text("eve", exact=True)).to_be_visible(timeout=tb.STEP_MS)
    for url in (proxy.url, review, f"{proxy.url}/review?ws={secret.path.name}"):
        eve.goto(url)
        text = body(eve)
        assert "review test" not in text and SECRET not in text and "cracks" not in text
        assert eve.locator("img[src*='/media/']").count() == 0
    tb.see(eve, "There is no workspace at this address that you may open.")
    eve.screenshot(path=str(output_dir / "4-non-member.png"))
    proxy.close()
