"""The demo page (``GET /``) in headless Chromium against a real ``wdrec-serve``: it loads clean,
finds and recommends for a user, explains items, shows similar items, and shows the API's errors.

Run with ``make test-browser`` (``pytest -m browser tests/browser``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from servers import Server

pytestmark = pytest.mark.browser
TIMEOUT_MS = 15_000
# Chromium reports every 4xx/5xx answer to a fetch as a console error: expected where a test provokes one.
FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d")


@dataclass
class Tab:
    page: object  # playwright.sync_api.Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def open(self, server: Server) -> None:
        """The page, loaded: the model's summary and the first known users are shown."""
        self.page.goto(f"{server.url}/")
        self.page.wait_for_selector("body[data-ready='true']", timeout=TIMEOUT_MS)

    def pick_user(self, prefix: str, user_id: str) -> None:
        """Search the known users by ``prefix`` and choose ``user_id`` among the matches."""
        self.page.get_by_label("User id").fill(prefix)
        self.page.get_by_role("button", name=f"Recommend for user {user_id}", exact=True).click(timeout=TIMEOUT_MS)
        self.page.wait_for_selector("#results > li.item", timeout=TIMEOUT_MS)

    def error_text(self) -> str:
        box = self.page.locator("#error")
        box.wait_for(state="visible", timeout=TIMEOUT_MS)
        return box.inner_text()


@pytest.fixture
def tab(browser) -> Iterator[Tab]:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    tab = Tab(page)
    page.on("console", lambda message: tab.console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
    yield tab
    context.close()
    assert not tab.page_errors, f"uncaught errors in the page: {tab.page_errors}"


def test_the_page_loads_with_no_console_errors(tab: Tab, page_server: Server) -> None:
    tab.open(page_server)
    model = tab.page.locator("#model").inner_text()
    assert "wdrec" in model and "version 1" in model and "binary" in model and "943 users" in model
    assert tab.page.locator("#user-matches button").count() == 20  # the first known users, to pick from
    labels = [tab.page.locator(f"label[for='cold-{name}']").inner_text() for name in ("age", "gender", "occupation")]
    assert labels == ["age", "gender", "occupation"]  # the model's cold-start features
    assert tab.console_errors == []  # nothing refused by the CSP, no missing file, no failed request
    assert tab.page.title() == "wdrec · demo"


def test_the_page_fits_a_phone_screen(tab: Tab, page_server: Server) -> None:
    tab.page.set_viewport_size({"width": 375, "height": 740})
    tab.open(page_server)
    tab.pick_user("19", "196")
    overflow = tab.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a 375 px screen"


def test_choosing_a_user_renders_ten_items(tab: Tab, page_server: Server) -> None:
    tab.open(page_server)
    tab.pick_user("19", "196")
    items = tab.page.locator("#results > li.item")
    assert items.count() == 10
    assert tab.page.locator("#results-heading").inner_text() == "Top 10 for user 196"
    assert "a known user" in tab.page.locator("#results-note").inner_text()
    scores = [float(s) for s in items.locator(".score-value").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    titles = items.locator(".title strong").all_inner_texts()
    assert len(set(titles)) == 10 and all(t and not t.startswith("item ") for t in titles)  # the catalogue's titles
    assert items.first.locator(".tags .tag").count() >= 1  # genres


def test_the_keyboard_alone_gets_recommendations(tab: Tab, page_server: Server) -> None:
    tab.open(page_server)
    tab.page.get_by_label("User id").focus()
    tab.page.keyboard.type("42")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector("#results > li.item")
    assert tab.page.locator("#results > li.item").count() == 10
    assert tab.page.locator("#results-heading").inner_text() == "Top 10 for user 42"
    assert tab.page.evaluate("document.activeElement.id") == "results-heading"  # focus moves to the new list


def test_an_explanation_and_similar_items_appear(tab: Tab, page_server: Server, screenshot) -> None:  # noqa: ANN001
    # Needs POST /v1/recommend {"explain": true} and GET /v1/items/{id}/similar (issue 16.2).
    tab.open(page_server)
    tab.pick_user("19", "196")
    first = tab.page.locator("#results > li.item").first
    why = first.locator("details.why")
    why.wait_for(state="visible")
    assert why.get_attribute("open") is not None  # the first item's explanation is open
    terms = why.locator("tbody tr.term")
    assert terms.count() >= 2
    values = [float(v.replace("−", "-")) for v in terms.locator(".term-value").all_inner_texts()]
    assert any(v != 0 for v in values)
    assert set(terms.locator(".term-kind").all_inner_texts()) <= {"wide", "deep", "rest"}

    title = first.locator(".title strong").inner_text()
    first.get_by_role("button", name=re.compile("^Items similar to")).click()
    similar = tab.page.locator("#similar > li.item")
    similar.first.wait_for(state="visible")
    assert similar.count() >= 1
    assert tab.page.locator("#similar-heading").inner_text() == f"Similar to {title}"
    assert title not in similar.locator(".title strong").all_inner_texts()
    assert tab.page.evaluate("document.activeElement.id") == "similar-heading"  # focus follows the new list
    assert tab.page.locator("#error").is_hidden()
    assert tab.console_errors == []
    screenshot(tab.page, "demo_page")


def test_api_errors_are_shown_to_the_user(tab: Tab, page_server: Server, screenshot) -> None:  # noqa: ANN001
    tab.open(page_server)
    too_long = "9" * 300  # ids are at most 256 characters
    tab.page.get_by_label("User id").fill(too_long)  # the search as you type: GET /v1/users?prefix=... (422)
    assert "query.prefix: String should have at most 256 characters" in tab.error_text()
    tab.page.get_by_role("button", name="Recommend", exact=True).click()  # POST /v1/recommend (422)
    # A locator, not wait_for_function: its string predicate is an eval, which the page's CSP refuses.
    tab.page.locator("#error", has_text="user_id").wait_for(timeout=TIMEOUT_MS)
    text = tab.error_text()
    assert "Recommending failed (HTTP 422)" in text and re.search(r"user_id: .*at most 256", text), text
    screenshot(tab.page, "demo_page_error")

    tab.page.get_by_label("age").fill("abc")  # a cold start with a bad feature: the API's own message
    tab.page.get_by_role("button", name="Recommend for a new user").click()
    tab.page.locator("#error", has_text="user_features.age").wait_for(timeout=TIMEOUT_MS)
    assert "user_features.age: numeric feature 'age' expects numbers" in tab.error_text()
    assert tab.page.locator("#results > li.item").count() == 0

    tab.page.get_by_label("age").fill("31")  # fixed: the error goes, the items come
    tab.page.get_by_role("button", name="Recommend for a new user").click()
    tab.page.wait_for_selector("#results > li.item")
    assert tab.page.locator("#error").is_hidden()
    assert tab.page.locator("#results-heading").inner_text() == "Top 10 for a new user"
    assert all(FAILED_LOAD.match(text) for text in tab.console_errors), tab.console_errors


def test_an_unknown_user_is_a_cold_start_not_an_error(tab: Tab, page_server: Server) -> None:
    tab.open(page_server)
    tab.page.get_by_label("User id").fill("someone-new")
    tab.page.get_by_role("button", name="Recommend", exact=True).click()
    tab.page.wait_for_selector("#results > li.item")
    assert "cold start" in tab.page.locator("#results-note").inner_text()
    tab.page.locator("#user-matches-note", has_text="No known user starting with “someone-new”").wait_for()
    assert tab.page.locator("#error").is_hidden()
