"""The console in a real browser: headless Debian Chromium driven by Playwright.

Usage: console_page.py BASE_URL TOKEN EVENT_ID SHOTS_DIR

Checks, in order: the page with no token shows the sign-in form and no event; signed in through
the `#token=` fragment, the running event's row advances; its Cancel button (confirmed) makes it
`cancelled`. Saves screenshots of the running and the finished states in SHOTS_DIR. Exits 0 when
every check held, 1 naming the first that did not.
"""

import sys
import time

from playwright.sync_api import sync_playwright

BASE, TOKEN, EVENT, SHOTS = sys.argv[1:5]
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def fail(why):
    print(f"FAILED: {why}", flush=True)
    sys.exit(1)


def row(page):
    return page.locator(f'tr[data-event-id="{EVENT}"]')


def progress_value(page):
    return float(row(page).locator("progress").get_attribute("value") or 0)


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 860})

    page.goto(f"{BASE}/ui")
    page.wait_for_selector("#sign-in-form")
    time.sleep(1.5)
    if page.locator("tr[data-event-id]").count() != 0:
        fail("events were shown without a token")
    if not page.locator("#sign-in").is_visible():
        fail("the sign-in form is not shown without a token")

    page.goto(f"{BASE}/ui#token={TOKEN}")
    row(page).wait_for(timeout=30_000)
    if "token=" in page.url:
        fail("the token stayed in the address")
    deadline = time.time() + 30
    while "running" not in row(page).inner_text() and time.time() < deadline:
        time.sleep(0.2)
    first = progress_value(page)
    time.sleep(2.5)
    later = progress_value(page)
    if not later > first:
        fail(f"the running event's progress did not advance ({first} then {later})")
    bar = row(page).locator("progress")
    if bar.get_attribute("aria-label") is None:
        fail("the progress bar has no accessible name")
    page.screenshot(path=f"{SHOTS}/running.png", full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    row(page).get_by_role("button", name=f"Cancel {EVENT}").click()
    deadline = time.time() + 30
    while "cancelled" not in row(page).inner_text():
        if time.time() > deadline:
            fail(f"the event never showed cancelled: {row(page).inner_text()}")
        time.sleep(0.2)
    page.screenshot(path=f"{SHOTS}/finished.png", full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=f"{SHOTS}/phone.png", full_page=True)
    browser.close()
print("ok", flush=True)
