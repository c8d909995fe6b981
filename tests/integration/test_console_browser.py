"""The live console in a real browser, on a real busybox VM: Playwright drives Debian's
Chromium against the portal served over ASGI (uvicorn in a thread, on the test database),
as `./tt.sh run` serves it.

Here rather than in tests/browser because it boots a guest on the real QEMU node: the
real-guest tests run one after another on one worker (tests/xdist_schedule.py). Marked
`browser` as well, so the unit loop (-m "not integration and not browser") never runs it.

What a user checks: Alice opens the console, types `echo $((6*7))` and Enter, and sees 42;
Olga, a second browser, sees that output but her keystrokes are refused; Bob's websocket is
refused, and so is one opened by a page of another origin with Alice's cookies. The time
from the page's load to the first prompt line is printed (the issue's measure).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import expect, sync_playwright

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# The terminal's text as a user reads it (xterm.js draws rows of spans; spaces may be NBSPs).
SCREEN = "document.querySelector('#terminal .xterm-rows')"
SCREEN_TEXT = f"({SCREEN} ? {SCREEN}.textContent.replace(/\\u00a0/g, ' ') : '')"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def asgi_server(transactional_db):
    """The portal over ASGI (ttportal/asgi.py) on a free port, in a thread: its URL."""
    import uvicorn

    from ttportal.asgi import application

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)
    connections.close_all()


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop runs in this thread
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (tt.sh installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    connections.close_all()


def signed_in(browser, base: str, username: str):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-" + username)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_be_visible()
    return page


def screen_shows(page, text: str, timeout: float = 30_000) -> None:
    page.wait_for_function(f"{SCREEN_TEXT}.includes({text!r})", timeout=timeout)


def type_line(page, line: str) -> None:
    page.click("#terminal")
    page.keyboard.type(line)
    page.keyboard.press("Enter")


def websocket_close_code(page, url: str) -> int:
    """Open a websocket from `page` and wait for its close: the code the browser reports."""
    return page.evaluate("""url => new Promise(resolve => {
        const ws = new WebSocket(url);
        ws.onclose = event => resolve(event.code);
    })""", url)


def test_the_console_in_the_browser(asgi_server, browser, boot_env, alice, olga, bob):
    from django.contrib.staticfiles import finders

    assert finders.find("vendor/xterm/xterm.js"), "no xterm.js in static/vendor/: run ./tt.sh setup (npm ci)"
    vm = boot_env().vms.get()
    page_url = f"{asgi_server}/vms/{vm.pk}/"
    ws_url = asgi_server.replace("http://", "ws://") + f"/ws/vms/{vm.pk}/console/"

    # Alice opens the VM page and its console: a prompt, then the answer to what she types.
    alice_page = signed_in(browser, asgi_server, "alice")
    loaded = time.monotonic()
    alice_page.goto(page_url)
    alice_page.click("#console-open")
    screen_shows(alice_page, "/ #")
    to_prompt = time.monotonic() - loaded
    in_page = alice_page.evaluate("performance.now()")
    print(f"\nconsole: page load to first prompt line {to_prompt * 1000:.0f} ms "
          f"(in the page, navigation start to prompt: {in_page:.0f} ms)")
    expect(alice_page.locator("#console-state")).to_have_text("you are typing")
    type_line(alice_page, "echo $((6*7))")
    screen_shows(alice_page, "42")

    # Olga (staff with the console permission) watches: she sees the output, cannot type.
    olga_page = signed_in(browser, asgi_server, "olga")
    olga_page.goto(page_url)
    olga_page.click("#console-open")
    expect(olga_page.locator("#console-state")).to_contain_text("watching: alice is typing")
    screen_shows(olga_page, "42")  # what Alice's command printed, from the console's recent past
    type_line(alice_page, "echo seen-$((2*3))")
    screen_shows(olga_page, "seen-6")  # and live
    type_line(olga_page, "echo olga-$((5*5))")
    expect(olga_page.locator("#console-note")).to_contain_text("you are watching")
    type_line(alice_page, "echo after-$((1+1))")
    screen_shows(alice_page, "after-2")
    assert "olga-" not in alice_page.evaluate(SCREEN_TEXT)  # her keystrokes never reached the guest

    # Bob may not: his websocket is refused (after the handshake, with the API's 403).
    bob_page = signed_in(browser, asgi_server, "bob")
    assert websocket_close_code(bob_page, ws_url) == 4403

    # A page of another origin, in Alice's browser (her cookies go along: same site), is
    # refused at the handshake.
    evil = "http://127.0.0.1:9/evil"
    alice_page.context.route(evil, lambda route: route.fulfill(body="<!doctype html><title>evil</title>",
                                                               content_type="text/html"))
    other = alice_page.context.new_page()
    other.goto(evil)
    assert websocket_close_code(other, ws_url) == 1006  # the handshake failed (403)
