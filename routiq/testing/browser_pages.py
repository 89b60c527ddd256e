"""pytest fixtures for browser tests: one Chromium for the session, and pages that look at every page they load.

``open_page(portal, **context options)`` gives a page in a context of its own. Every document that page shows
(each navigation, including htmx's pushed URLs) is, before the test next touches the page,

- screenshotted (full page) into ``$ROUTIQ_TEST_ARTIFACTS`` (default ``test-artifacts/screenshots/`` in the
  checkout) as ``<test id>/<step number>-<path>.png``, and
- checked with axe-core (``vendor/axe.min.js``) if it is one of the portal's own pages and JavaScript is on:
  violations of impact "serious" or "critical" fail the test when it ends; every page's findings are in
  ``accessibility.json`` beside the screenshots.

So a new browser test gets both without a line of its own. ``look(page)`` looks again at a page changed in
place with no new URL. When the test ends, a last screenshot shows the page as it was left.

Why "before the test next touches the page": this Playwright build cannot make calls from its event handlers
or route handlers while the test waits in another call (they hang, or find the document gone), so the look is
made in the test's own flow: a navigation only raises a flag, and the page's next public attribute the test uses
(``page.get_by_role``, ``page.goto``, ``page.url``, ...) looks first.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import pytest
from django.db import connections
from playwright.sync_api import Browser, Frame, Page, sync_playwright

from routiq.testing.browser_portal import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_MISSING, ROOT, Portal

ARTIFACTS = Path(os.environ.get("ROUTIQ_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "screenshots")
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"  # axe-core; its version: vendor/README.md
FAILING_IMPACTS = {"serious", "critical"}
RUN_AXE = """async () => {
  const results = await window.axe.run(document, {resultTypes: ["violations"]});
  return results.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                        nodes: v.nodes.slice(0, 10).map(n => n.target.join(" "))}));
}"""
ID_SEGMENT = re.compile(r"^([0-9a-f-]{32,36}|\d+|cs_\w+)$")


@functools.cache
def axe_source() -> str:
    # page.add_script_tag(path=AXE) writes an inline <script>: the portal's CSP (script-src 'self') blocks it, and
    # the blocked attempt is a console error the tests assert against. page.evaluate() of the source goes over
    # the DevTools protocol, outside the page's CSP, so no bypass_csp: the pages are checked as they are served
    # (and it works with JavaScript off too). A statement list, not a function for evaluate() to call.
    return AXE.read_text() + "\n;void 0"


def pytest_collection_modifyitems(items) -> None:
    """The browser tests run last, together (a stable sort keeps every other order): see ``browser``."""
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def browser(django_db_setup) -> Iterator[Browser]:
    """One Playwright driver and one Chromium for the whole run (starting them is most of a small test's time);
    each test gets fresh contexts from it, which is all the isolation it needs (cookies and storage are per
    context).

    Playwright's sync API marks its event loop as running in this thread for as long as it lives, and Django
    then refuses database calls here (SynchronousOnlyOperation), the db fixture's transaction among them.
    Nothing here is async (the portal runs in a process of its own), so the check is turned off while the
    browser lives, which is only for the browser tests: they run last. It needs the test database so that it is
    stopped before that is dropped."""
    if not Path(CHROMIUM).exists():
        pytest.skip(CHROMIUM_MISSING)
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
        # Django keeps the connections it opened while the loop was marked running apart from the others
        # (asgiref's Local): close them now, or they outlive the end of the run and the test database's drop.
        connections.close_all()


def step_name(url: str) -> str:
    """'/patients/<uuid>/' -> 'patients-id'; '/' -> 'home'."""
    segments = ["id" if ID_SEGMENT.match(part) else part for part in urlsplit(url).path.split("/") if part]
    return re.sub(r"[^\w.-]+", "_", "-".join(segments) or "home")


@dataclass
class Looks:
    """What one test's pages showed: the screenshots taken, the pages checked and their findings."""

    folder: Path
    origin: str  # only the portal's own pages are checked with axe (not a vendor stand-in's)
    steps: int = 0
    checked: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def look(self, page: Page, *, check: bool = True) -> None:
        """Screenshot the page's document and, with ``check``, run axe on it if it is the portal's."""
        url = page.url
        if url == "about:blank" or page.is_closed():
            return
        page.wait_for_load_state("load")
        self.steps += 1
        page.screenshot(path=str(self.folder / f"{self.steps:02d}-{step_name(url)}.png"), full_page=True)
        if check and url.startswith(self.origin + "/"):
            if page.evaluate("typeof window.axe") == "undefined":
                page.evaluate(axe_source())
            violations = page.evaluate(RUN_AXE)
            self.checked.append({"step": self.steps, "url": url, "violations": violations})
            self.problems += [f"step {self.steps} {url}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
                              for v in violations if v["impact"] in FAILING_IMPACTS]

    def report(self) -> None:
        (self.folder / "accessibility.json").write_text(json.dumps(self.checked, indent=2))


class WatchedPage(Page):
    """A Page that looks at each loaded document before the test next uses it (see the module docstring).
    Made by changing an open page's class, so Playwright's own references to it are this object too."""

    def __getattribute__(self, name: str):
        if not name.startswith("_"):
            state = object.__getattribute__(self, "__dict__")
            if state.get("_look_pending") and not state.get("_looking"):
                state["_look_pending"], state["_looking"] = False, True
                try:
                    state["_looks"].look(self, check=state["_check"])
                finally:
                    state["_looking"] = False
        return super().__getattribute__(name)


def watch(page: Page, looks: Looks, *, check: bool) -> WatchedPage:
    page.__dict__.update(_looks=looks, _check=check, _look_pending=False, _looking=False)

    # At commit, not at load: a test may act on a page before its load event has come. Same-document
    # navigations count too (htmx's hx-push-url): the swapped page is looked at as well. The handler must not
    # touch the page's public attributes (that would make the look in the handler).
    def navigated(frame: Frame) -> None:
        if frame.parent_frame is None:
            page.__dict__["_look_pending"] = True

    page.on("framenavigated", navigated)
    page.__class__ = WatchedPage
    return cast(WatchedPage, page)


def look(page: WatchedPage) -> None:
    """Look at the page now: after a change in place that no navigation announces."""
    page.__dict__["_look_pending"] = True
    page.is_closed()  # any public attribute makes the look


@pytest.fixture
def open_page(browser, request) -> Iterator:
    """open_page(portal, **context options) -> a watched page in a new context (see the module docstring)."""
    test_id = re.sub(r"[^\w.-]+", ".", request.node.nodeid.replace(".py::", "."))
    folder = ARTIFACTS / test_id
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pages: list[WatchedPage] = []
    looks: Looks | None = None

    def open_page(portal: Portal, **context_options) -> WatchedPage:
        nonlocal looks
        looks = looks or Looks(folder, portal.base)
        page = browser.new_context(**context_options).new_page()
        page.set_default_timeout(10_000)
        # axe needs JavaScript (its run waits on timers, which never fire with it off): a page without it is
        # only screenshotted; its templates are the ones the tests check with JavaScript on.
        pages.append(watch(page, looks, check=context_options.get("java_script_enabled", True)))
        return page

    yield open_page
    for page in pages:
        looked_at_last_load = not page.__dict__["_look_pending"]
        if page.is_closed():  # (this call makes the look at a last load the test did not touch the page after)
            continue
        if looked_at_last_load and looks is not None:  # the page as the test left it, e.g. after an htmx swap or a failure
            looks.look(page, check=False)
        page.context.close()
    if looks is not None:
        looks.report()
        assert not looks.problems, "accessibility (axe-core), serious or critical:\n" + "\n".join(looks.problems)
