"""A real headless Chromium loads `/status`: rendered text of components and incidents, with and
without JavaScript, and a phone-sized screenshot saved to artifacts/status.png."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from bastion.status import StatusService, create_app
from chromium_setup import dump_dom, png_pixels, require_chromium, screenshot
from status_support import ManualClock, serve

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DAY = 86_400_000
HOUR = 3_600_000
MIN = 60_000


class TextOf(HTMLParser):
    """Visible text per element id, the way a reader would see it."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.text: dict[str, list[str]] = {}
        self.all: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "link", "br", "img", "input"):
            self.stack.append(dict(attrs).get("id"))

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("meta", "link", "br", "img", "input") and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not data.strip() or "script" in self.lasttag or "style" in self.lasttag:
            return
        self.all.append(data.strip())
        for ident in self.stack:
            if ident:
                self.text.setdefault(ident, []).append(data.strip())

    def of(self, ident: str) -> str:
        return " ".join(self.text.get(ident, []))


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


@pytest.fixture
def page_url(tmp_path: Path) -> Iterator[str]:
    clock = ManualClock()
    today = clock() + 14 * HOUR
    clock.now_ms = today - 95 * DAY
    svc = StatusService(tmp_path / "status.db", page_name="Bastion", clock=clock)
    for market in ("BTC-USDT", "ETH-USDT", "SOL-USDT-PERP"):
        svc.tracker.register_market(market)
    for asset in ("BTC", "USDT"):
        svc.tracker.register_asset(asset)
    clock.advance(30 * DAY)
    svc.tracker.observe_market_mode("ETH-USDT", "halted", "oracle stale")
    clock.advance(3 * HOUR)
    svc.tracker.observe_market_mode("ETH-USDT", "open", "oracle fresh")
    svc.operator.update_incident(svc.view().incidents[0].id, "resolved", "Oracle sources restored.")
    clock.advance(40 * DAY)
    svc.tracker.observe_market_mode("SOL-USDT-PERP", "post_only", "reopening after upgrade")
    clock.advance(20 * MIN)
    svc.tracker.observe_market_mode("SOL-USDT-PERP", "open")
    svc.operator.update_incident(svc.view().incidents[0].id, "resolved", "Reopened.")
    clock.now_ms = today - 2 * HOUR
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "funding index guard tripped")
    (inc,) = [i for i in svc.view().incidents if i.open]
    clock.advance(10 * MIN)
    svc.operator.update_incident(
        inc.id,
        "identified",
        "A bad funding index update was refused; the market is halted while we roll back.",
    )
    clock.now_ms = today
    svc.operator.schedule_maintenance(
        "Engine upgrade",
        "New engine version, verified in shadow against the live journal.",
        ["market-eth-usdt", "rest-api"],
        today + 20 * MIN,
        today + 80 * MIN,
    )
    with serve(create_app(svc, "browser-test-token")) as url:
        yield url
    svc.close()


def check_essentials(dom: str) -> None:
    parsed = TextOf()
    parsed.feed(dom)
    assert parsed.of("overall") == "Major System Outage"
    btc = parsed.of("component-market-btc-usdt")
    assert btc.startswith("BTC-USDT trading Major outage"), btc
    assert "funding index guard tripped" in btc
    for cid, name in (
        ("market-eth-usdt", "ETH-USDT trading"),
        ("rest-api", "REST API"),
        ("wallet-usdt", "USDT deposits & withdrawals"),
    ):
        assert parsed.of(f"component-{cid}").startswith(f"{name} Operational"), cid
    incidents = parsed.of("incidents")
    assert "BTC-USDT trading: major outage" in incidents
    assert "critical impact" in incidents
    assert "Identified — A bad funding index update was refused" in incidents
    assert "Investigating — Automatically detected" in incidents
    maintenance = parsed.of("maintenance")
    assert "Engine upgrade" in maintenance
    assert "Starts within 30 minutes: Reduce trading activity" in maintenance
    assert "Affected: ETH-USDT trading, REST API" in maintenance
    assert "Oracle sources restored." not in incidents  # resolved long ago: not active
    bars = re.search(
        r'id="component-market-eth-usdt".*?<div class="bars"[^>]*>(.*?)</div>', dom, re.S
    )
    assert bars and bars.group(1).count("<i ") == 90
    assert "99.86% uptime" in parsed.of("component-market-eth-usdt")  # 3 h down in 90 days


def test_status_page_in_headless_chromium(chromium: str, page_url: str) -> None:
    dom = dump_dom(f"{page_url}/status")
    check_essentials(dom)
    # Without JavaScript: the server's HTML alone already carries every essential (headless
    # Chromium cannot dump or screenshot with scripts disabled, so read the raw response).
    raw = httpx.get(f"{page_url}/status", timeout=5).text
    check_essentials(raw)
    raw_text, dom_text = TextOf(), TextOf()
    raw_text.feed(raw)
    dom_text.feed(dom)
    assert dom_text.all == raw_text.all  # script adds nothing essential

    shot = screenshot(f"{page_url}/status", ARTIFACTS / "status.png", width=412, height=915)
    width, bpp, rows = png_pixels(shot)
    assert (width, len(rows)) == (412, 915)
    outage_red = bytes((214, 59, 59))
    red = sum(
        row[x * bpp : x * bpp + 3] == outage_red for row in rows[:200] for x in range(0, width, 4)
    )
    assert red > 500, "the red outage banner should be near the top of the phone screenshot"
    print(f"screenshot saved to {shot} ({shot.stat().st_size} bytes)")
