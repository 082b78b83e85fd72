"""Server-rendered `/status` page: everything essential is in the HTML with inline CSS, so it
works without JavaScript and on a phone; a few lines of optional script reload it on change."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape

from bastion.status.derive import advisory
from bastion.status.model import LABELS, Component, Incident
from bastion.status.service import View
from bastion.status.statuspage import active_maintenances, page_status, upcoming_maintenances
from bastion.status.uptime import DayUptime, overall

COLORS = {
    "operational": "#1f9d55",
    "under_maintenance": "#2f6fde",
    "degraded_performance": "#c99a00",
    "partial_outage": "#e0731b",
    "major_outage": "#d63b3b",
    None: "#c5cad3",
}
BANNER = {"none": "#1f9d55", "minor": "#c99a00", "major": "#e0731b", "critical": "#d63b3b"}
ACTIONS = {
    "continue": "No action needed yet",
    "reduce_activity": "Reduce trading activity",
    "cancel_open_orders": "Cancel open orders",
    "stop_new_orders": "Stop placing new orders",
    "disconnect_and_wait": "Disconnect and wait for the all-clear",
}
PHASES = {
    "announced": "Announced",
    "reminder_24h": "Starts within 24 hours",
    "approaching_30m": "Starts within 30 minutes",
    "imminent_5m": "Starts within 5 minutes",
    "final_warning_30s": "Starts within 30 seconds",
    "in_progress": "In progress",
}

CSS = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f5f6f8;color:#1c2330}
main{max-width:860px;margin:0 auto;padding:16px}
h1{font-size:1.35rem;margin:4px 0 14px}
h2{font-size:1.05rem;margin:22px 0 8px;color:#4a5568;text-transform:uppercase;letter-spacing:.04em}
.banner{color:#fff;border-radius:10px;padding:14px 16px;font-weight:650;font-size:1.1rem}
.card{background:#fff;border:1px solid #e2e5ea;border-radius:10px;padding:12px 14px;margin:10px 0}
.group{font-weight:650;padding:10px 14px;background:#eef0f4;border-radius:10px 10px 0 0;border:1px solid #e2e5ea;border-bottom:0;margin-top:12px}
.group+.comps{border-radius:0 0 10px 10px;margin-top:0}
.comps{background:#fff;border:1px solid #e2e5ea;border-radius:10px}
.comp{padding:10px 14px;border-top:1px solid #eef0f4}
.comp:first-child{border-top:0}
.row{display:flex;justify-content:space-between;align-items:baseline;gap:10px;flex-wrap:wrap}
.name{font-weight:600}
.st{font-weight:600;font-size:.92rem;white-space:nowrap}
.bars{display:flex;gap:1px;height:26px;margin:8px 0 2px}
.bars i{flex:1;border-radius:1px;min-width:1px}
.axis{display:flex;justify-content:space-between;font-size:.75rem;color:#6b7482}
.why{font-size:.85rem;color:#4a5568}
.inc h3{margin:0 0 6px;font-size:1.02rem}
.upd{margin:8px 0 0;padding-left:10px;border-left:3px solid #e2e5ea}
.meta{font-size:.8rem;color:#6b7482}
.pill{display:inline-block;border-radius:99px;padding:1px 9px;color:#fff;font-size:.8rem;font-weight:600}
.advice{margin-top:6px;font-weight:600}
footer{margin:26px 0 8px;font-size:.85rem;color:#6b7482}
a{color:#2f6fde}
@media (prefers-color-scheme:dark){
body{background:#11151c;color:#e3e7ee}.card,.comps{background:#1a2029;border-color:#2a323e}
.group{background:#222a35;border-color:#2a323e}.comp{border-color:#252c37}h2{color:#a9b3c1}
.why,.meta,.axis,footer{color:#9aa4b2}.upd{border-color:#2a323e}}
"""

SCRIPT = """
(function(){if(!("WebSocket" in window))return;var t;
function go(){var ws=new WebSocket((location.protocol==="https:"?"wss://":"ws://")+location.host+"/ws/status");
ws.onmessage=function(m){var e=JSON.parse(m.data);if(e.type!=="snapshot"){clearTimeout(t);t=setTimeout(function(){location.reload()},300)}};
ws.onclose=function(){setTimeout(go,5000)}}go()})();
"""


def fmt(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _label(status: str) -> str:
    return LABELS.get(status, status.replace("_", " ").capitalize())


def _bars(days: list[DayUptime]) -> str:
    cells = []
    for d in days:
        pct = "no data" if d.uptime is None else f"{d.uptime:.2f}% uptime"
        worst = "" if d.worst is None else f", worst: {_label(d.worst).lower()}"
        cells.append(f'<i style="background:{COLORS[d.worst]}" title="{d.date}: {pct}{worst}"></i>')
    total = overall(days)
    pct = "no data" if total is None else f"{total:.2f}% uptime"
    return (
        f'<div class="bars" role="img" aria-label="{len(days)}-day uptime: {pct}">{"".join(cells)}</div>'
        f'<div class="axis"><span>{len(days)} days ago</span><span>{pct}</span><span>Today</span></div>'
    )


def _component(c: Component, days: list[DayUptime]) -> str:
    why = escape(c.derived_reason or c.operator_note) if c.status != "operational" else ""
    return (
        f'<div class="comp" id="component-{escape(c.id)}" data-status="{c.status}">'
        f'<div class="row"><span class="name">{escape(c.name)}</span>'
        f'<span class="st" style="color:{COLORS[c.status]}">{_label(c.status)}</span></div>'
        + (f'<div class="why">{why}</div>' if why else "")
        + _bars(days)
        + "</div>"
    )


def _updates(i: Incident) -> str:
    return "".join(
        f'<div class="upd"><b>{escape(u.status.replace("_", " ").capitalize())}</b> &mdash; {escape(u.body)}'
        f'<div class="meta">{fmt(u.display_ms)}</div></div>'
        for u in reversed(i.updates)
    )


def _affected(i: Incident, comps: Mapping[str, Component]) -> str:
    names = [escape(comps[c].name) for c in i.component_ids if c in comps]
    return f'<div class="meta">Affected: {", ".join(names)}</div>' if names else ""


def _incident(i: Incident, comps: Mapping[str, Component]) -> str:
    color = BANNER.get(i.impact, "#6b7482")
    return (
        f'<article class="card inc" id="incident-{escape(i.id)}"><h3>{escape(i.name)}</h3>'
        f'<span class="pill" style="background:{color}">{escape(i.impact)} impact</span> '
        f'<span class="meta">since {fmt(i.started_ms or i.created_ms)}</span>'
        f"{_affected(i, comps)}{_updates(i)}</article>"
    )


def _maintenance(m: Incident, comps: Mapping[str, Component], now_ms: int) -> str:
    adv = advisory(now_ms, m.scheduled_for_ms or now_ms, m.status)
    advice = ""
    if adv:
        advice = f'<div class="advice">{PHASES[adv[0]]}: {ACTIONS[adv[1]]}</div>'
    over = ""
    if m.scheduled_until_ms and now_ms > m.scheduled_until_ms:
        over = '<div class="advice" style="color:#d63b3b">Taking longer than scheduled</div>'
    return (
        f'<article class="card inc" id="maintenance-{escape(m.id)}"><h3>{escape(m.name)}</h3>'
        f'<span class="pill" style="background:#2f6fde">{escape(m.status.replace("_", " "))}</span> '
        f'<span class="meta">{fmt(m.scheduled_for_ms)} &rarr; {fmt(m.scheduled_until_ms)}</span>'
        f"{_affected(m, comps)}{advice}{over}{_updates(m)}</article>"
    )


def render_page(v: View, uptime: Mapping[str, list[DayUptime]]) -> str:
    """The whole page for one consistent view."""
    comps = {c.id: c for c in v.components}
    indicator, description = page_status(v)
    open_incidents = [i for i in v.incidents if i.open]
    recent = [
        i for i in v.incidents if not i.open and v.now_ms - (i.resolved_ms or 0) < 7 * 86_400_000
    ][:10]
    parts = [
        f'<div class="banner" id="overall" data-indicator="{indicator}" style="background:{BANNER[indicator]}">'
        f"{escape(description)}</div>"
    ]
    if open_incidents:
        parts.append('<h2>Active incidents</h2><section id="incidents">')
        parts += [_incident(i, comps) for i in open_incidents]
        parts.append("</section>")
    active = active_maintenances(v)
    upcoming = upcoming_maintenances(v)
    if active or upcoming:
        parts.append('<h2>Maintenance</h2><section id="maintenance">')
        parts += [_maintenance(m, comps, v.now_ms) for m in active + upcoming]
        parts.append("</section>")
    parts.append('<h2>Components</h2><section id="components">')
    for g in v.groups:
        children = [c for c in v.components if c.group_id == g.id]
        if children:
            parts.append(f'<div class="group">{escape(g.name)}</div><div class="comps">')
            parts += [_component(c, uptime.get(c.id, [])) for c in children]
            parts.append("</div>")
    loose = [c for c in v.components if c.group_id is None]
    if loose:
        parts.append('<div class="comps" style="margin-top:12px">')
        parts += [_component(c, uptime.get(c.id, [])) for c in loose]
        parts.append("</div>")
    parts.append("</section>")
    if recent:
        parts.append('<h2>Resolved in the last 7 days</h2><section id="resolved">')
        parts += [_incident(i, comps) for i in recent]
        parts.append("</section>")
    title = escape(v.page["name"])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title} status: {escape(description)}</title>"
        '<noscript><meta http-equiv="refresh" content="30"></noscript>'
        f'<link rel="alternate" type="application/atom+xml" title="{title} incidents" href="/status/feed.atom">'
        f"<style>{CSS}</style></head><body><main>"
        f"<h1>{title} status</h1>{''.join(parts)}"
        f'<footer>Updated {fmt(v.now_ms)} &middot; <a href="/api/v2/summary.json">Status API</a> &middot; '
        f'<a href="/status/feed.atom">Atom feed</a> &middot; <a href="/api/v5/system/status">OKX-style API</a></footer>'
        f"</main><script>{SCRIPT}</script></body></html>"
    )
