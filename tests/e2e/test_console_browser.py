"""The ops console in a real browser: Debian's Chromium driven by Playwright
against `goodfellaz17 serve` on loopback, with a worker delivering slowly
enough to watch.

No browser is ever downloaded: Playwright drives /usr/bin/chromium (`make
test` installs the Debian package). Every test fails on any console error or
uncaught exception in the page, and the pages are photographed at 1280x800
and 390x844 into test-artifacts/console/ (the run prints the folder).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import OPERATOR_KEY, database_from_template
from tests.e2e.conftest import CONSOLE_SCREENSHOTS, SCREENSHOTS_TAKEN
from tests.e2e.procs import Proc, service_env
from tests.helpers import free_port, health_is_up, insert_order, set_task_states, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TASK_SECONDS = 1.2  # the simulated backend's latency: one task at a time, slow enough to watch
WAIT_MS = 20_000


# ---------------------------------------------------------------- the server, the browser


@pytest.fixture(scope="module")
def console_db(pg_base_url: str, template_url: str) -> Iterator[str]:
    with database_from_template(pg_base_url, f"gf_console_browser_{os.getpid()}") as url:
        yield url


@pytest.fixture(scope="module")
def base_url(console_db: str) -> Iterator[str]:
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="goodfellaz17-console-"))
    server = Proc(
        ["serve"],
        service_env(
            console_db,
            port=port,
            sim_latency_ms=int(TASK_SECONDS * 1000),
            worker_concurrency=1,
            worker_batch_size=1,
            invariant_check_interval_seconds=2,
            log_format="console",
        ),
        logs / "server.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: health_is_up(base), within=60, interval=0.2, what="console server up")
        yield base
    finally:
        exit_code = server.terminate()
        server.close()
        output = server.output()
        shutil.rmtree(logs, ignore_errors=True)
        assert exit_code == 0, output[-3000:]
        assert "Traceback" not in output, output[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make debian-deps` installs Debian's package")
    from playwright.sync_api import sync_playwright

    # launch() gives Chromium a fresh throw-away profile of its own each time.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots(request: pytest.FixtureRequest) -> Path:
    shutil.rmtree(CONSOLE_SCREENSHOTS, ignore_errors=True)
    CONSOLE_SCREENSHOTS.mkdir(parents=True)
    request.config.stash[SCREENSHOTS_TAKEN] = 0
    return CONSOLE_SCREENSHOTS


class Console:
    """One browser context (its own cookies) on the console, recording every
    console error and uncaught page exception."""

    def __init__(self, browser: Any, base: str, folder: Path, config: pytest.Config) -> None:
        self.base = base
        self.folder = folder
        self.config = config
        self.context = browser.new_context(viewport=DESKTOP, base_url=base)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def log_in(self, key: str = OPERATOR_KEY, path: str = "/console") -> None:
        self.page.goto(path)
        self.page.fill("#api_key", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"**{path}")

    def shoot(self, name: str) -> None:
        """The current page, whole, at desktop and phone size."""
        for label, size in (("1280x800", DESKTOP), ("390x844", PHONE)):
            self.page.set_viewport_size(size)
            self.page.screenshot(path=str(self.folder / f"{name}-{label}.png"), full_page=True)
            self.config.stash[SCREENSHOTS_TAKEN] = self.config.stash.get(SCREENSHOTS_TAKEN, 0) + 1
        self.page.set_viewport_size(DESKTOP)

    def mark_page(self) -> None:
        """A marker that a navigation would erase: proves a change came by refresh."""
        self.page.evaluate("window.gfNoReload = true")

    def assert_not_reloaded(self) -> None:
        assert self.page.evaluate("window.gfNoReload === true"), "the page was reloaded"

    def number(self, selector: str, attribute: str) -> int:
        value = self.page.locator(selector).first.get_attribute(attribute)
        assert value is not None, (selector, attribute)
        return int(value)

    def wait_for_number(
        self, selector: str, attribute: str, predicate: str, timeout: int = WAIT_MS
    ) -> None:
        """Wait until `Number(el.getAttribute(attribute)) <predicate>` (JS), e.g. '> 400'."""
        self.page.wait_for_function(
            f"""() => {{
                const el = document.querySelector({selector!r});
                return el !== null && Number(el.getAttribute({attribute!r})) {predicate};
            }}""",
            timeout=timeout,
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(
    browser: Any, base_url: str, screenshots: Path, request: pytest.FixtureRequest
) -> Iterator[Console]:
    c = Console(browser, base_url, screenshots, request.config)
    try:
        yield c
        assert c.errors == [], f"errors in the browser console: {c.errors}"
    finally:
        c.close()


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"X-Api-Key": OPERATOR_KEY}, timeout=10) as c:
        yield c


def order(api: httpx.Client, quantity: int, target: str) -> str:
    response = api.post("/api/orders", json={"quantity": quantity, "target": target})
    assert response.status_code == 201, response.text
    order_id: str = response.json()["id"]
    return order_id


# ---------------------------------------------------------------- the tests


def test_without_a_key_the_console_is_the_login_page_and_refuses_posts(
    console: Console, base_url: str
) -> None:
    page = console.page
    page.goto("/console/orders")
    page.wait_for_url(lambda url: url.endswith("/console/login?next=%2Fconsole%2Forders"))
    assert page.locator("#api_key").is_visible()
    console.shoot("login")

    page.fill("#api_key", "not-a-key-0123456789")
    page.click("button[type=submit]")
    assert page.locator("#login-error").inner_text() == "That API key is not valid."
    # The refused login is a 401 page: the one error Chromium logs for it.
    assert console.errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    console.errors.clear()

    request = console.context.request
    for path in ("/console/chaos/disable", "/console/chaos/enable", "/console/nodes"):
        refused = request.post(path, form={"csrf_token": "guess"}, max_redirects=0)
        assert refused.status == 401, path
    assert request.get("/console/partials/overview", max_redirects=0).status == 401

    console.log_in(path="/console/orders")
    assert page.locator("h1").first.inner_text() == "Orders"
    # Signed in, a POST without the session's CSRF token is still refused.
    forged = request.post("/console/chaos/enable", form={"failure_rate_percent": "50"})
    assert forged.status == 403
    wrong = request.post("/console/chaos/enable", form={"csrf_token": "guess"})
    assert wrong.status == 403
    assert not _chaos_active(base_url)


def test_an_orders_progress_bar_advances_while_the_worker_delivers(
    console: Console, api: httpx.Client
) -> None:
    order_id = order(api, 8000, "browser-progress")  # 20 tasks, one every TASK_SECONDS
    console.log_in(path="/console/orders")
    bar = f'tr[data-order-id="{order_id}"] .progress'
    console.page.wait_for_selector(bar)
    console.mark_page()
    first = console.number(bar, "data-delivered")
    assert first < 8000
    console.wait_for_number(bar, "data-delivered", f"> {first}")
    second = console.number(bar, "data-delivered")
    console.wait_for_number(bar, "data-delivered", f"> {second}")
    console.assert_not_reloaded()
    console.shoot("orders")

    console.page.click(f'tr[data-order-id="{order_id}"] a.order-link')
    console.page.wait_for_url(f"**/console/orders/{order_id}")
    console.mark_page()
    on_detail = console.number("#progress .progress", "data-delivered")
    console.wait_for_number("#progress .progress", "data-delivered", f"> {on_detail}")
    console.assert_not_reloaded()
    assert console.page.locator("#invariants [data-value]").first.get_attribute("data-value") == (
        "passed"
    )
    console.shoot("order-detail")

    # Cancel the rest (with force: a task is executing), so the worker is free.
    console.page.click("#action-cancel")
    console.page.wait_for_url(f"**/console/orders/{order_id}/actions/cancel")
    assert "go to the dead-letter queue" in console.page.locator("#effect").inner_text()
    console.shoot("confirm-cancel")
    console.page.check("#force")
    console.page.click("#confirm-button")
    console.page.wait_for_url(lambda url: url.endswith(f"/console/orders/{order_id}"))
    assert "Cancelled" in console.page.locator("#notice").inner_text()
    assert console.number("#dead-letters .count", "data-value") > 0


def test_draining_a_dead_letter_moves_it_back_to_delivery(
    console: Console, console_db: str
) -> None:
    with psycopg.connect(console_db, autocommit=True) as sql, sql.transaction():
        # Made dead in the same transaction, so the worker never sees it pending.
        order_id = insert_order(sql, quantity=800, target="browser-dead-letters")
        set_task_states(sql, order_id, ["FAILED_PERMANENT", "FAILED_PERMANENT"])
    console.log_in(path=f"/console/orders/{order_id}")
    page = console.page
    assert page.locator("#dead-letters tbody tr").count() == 2
    assert page.locator("#dead-letters .error-text").first.inner_text() == "seeded failure"
    assert console.number("#dead-letters .count", "data-value") == 2
    console.shoot("order-dead-letters")

    page.click("#action-drain-dead-letters")
    page.wait_for_url(f"**/console/orders/{order_id}/actions/drain-dead-letters")
    assert "2 dead-letter task(s) (800 units) move from FAILED_PERMANENT" in (
        page.locator("#effect").inner_text()
    )
    console.shoot("confirm-drain")
    page.click("#confirm-button")
    page.wait_for_url(lambda url: url.endswith(f"/console/orders/{order_id}"))
    assert "Drained 2 dead-letter task(s) (800 units)" in page.locator("#notice").inner_text()
    assert console.number("#dead-letters .count", "data-value") == 0
    console.mark_page()
    # The worker picks the drained tasks up: delivered climbs to 800 by refresh.
    console.wait_for_number("#progress .progress", "data-delivered", "=== 800", timeout=30_000)
    console.assert_not_reloaded()
    assert page.locator(".order-flags .badge").inner_text() == "COMPLETED"
    assert page.locator('#history td[data-label="Action"]').first.inner_text() == (
        "drain_dead_letters"
    )


def test_chaos_shows_a_loud_banner_until_it_is_disabled(
    console: Console, base_url: str, api: httpx.Client
) -> None:
    page = console.page
    console.log_in()
    banner = page.locator("#chaos-active")
    assert banner.count() == 0
    console.shoot("overview")

    page.fill('input[name="ttl_minutes"]', "5")
    page.click("#chaos-enable")
    page.wait_for_url(f"{base_url}/console")
    assert banner.is_visible()
    assert "CHAOS INJECTION IS ON" in banner.inner_text()  # text-transform: uppercase
    assert "in 5 min" in banner.inner_text()
    assert _chaos_active(base_url)
    console.shoot("overview-chaos")
    page.click("#chaos-disable")
    page.wait_for_url(f"{base_url}/console")
    assert banner.count() == 0
    assert not _chaos_active(base_url)

    # Switched by someone else (the API): the banner follows within a refresh.
    console.mark_page()
    assert api.post("/api/admin/testing/enable", json={"ttlSeconds": 120}).status_code == 200
    banner.wait_for(state="visible", timeout=10_000)
    assert api.post("/api/admin/testing/disable").status_code == 200
    banner.wait_for(state="detached", timeout=10_000)
    console.assert_not_reloaded()


def test_workers_and_nodes_show_health_and_a_node_can_be_added_and_disabled(
    console: Console,
) -> None:
    page = console.page
    console.log_in(path="/console/workers")
    assert page.locator('#workers tr[data-state="ALIVE"]').count() == 1
    identifier = f"sim-browser-{uuid.uuid4().hex[:6]}"
    page.fill('input[name="node_identifier"]', identifier)
    page.fill('input[name="capacity_per_hour"]', "360000")
    page.click("#node-add")
    page.wait_for_url("**/console/workers")
    row = page.locator("#nodes tr", has_text=identifier)
    assert row.get_attribute("data-state") == "CLOSED"
    console.shoot("workers")

    row.locator("a", has_text="Disable").click()
    page.wait_for_url("**/console/nodes/*/disable")
    console.shoot("confirm-disable-node")
    page.click("#confirm-button")
    page.wait_for_url("**/console/workers")
    assert page.locator("#nodes tr", has_text=identifier).get_attribute("data-state") == (
        "DISABLED"
    )


def test_the_chart_draws_the_delivered_units_of_the_last_hour(console: Console) -> None:
    console.log_in()
    chart = console.page.locator("#chart .chart")
    assert console.page.locator("#chart rect.chart-bar").count() == 60
    total = chart.get_attribute("data-total")
    assert total is not None
    assert int(total) >= 800
    assert console.page.locator("#stat-workers .stat-value").get_attribute("data-value") == "1"
    started = time.monotonic()
    console.page.wait_for_function(
        "() => document.querySelector('#overview').dataset.refreshedAt !== undefined",
        timeout=10_000,
    )
    assert time.monotonic() - started < 10


def _chaos_active(base: str) -> bool:
    status = httpx.get(f"{base}/api/admin/testing/status", headers={"X-Api-Key": OPERATOR_KEY})
    active: bool = status.json()["active"]
    return active
