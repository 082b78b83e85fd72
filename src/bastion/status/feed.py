"""Atom feed of incidents and maintenance (RFC 4287), for feed readers and chat integrations."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html import escape

from bastion.status.html import fmt
from bastion.status.model import Incident
from bastion.status.service import View
from bastion.status.statuspage import iso

ATOM = "http://www.w3.org/2005/Atom"


def _content(i: Incident) -> str:
    return "".join(
        f"<p><small>{fmt(u.display_ms)}</small><br><strong>{escape(u.status.replace('_', ' '))}</strong>"
        f" - {escape(u.body)}</p>"
        for u in reversed(i.updates)
    )


def render_feed(v: View, base_url: str) -> bytes:
    """Newest 50 incidents and maintenances; an entry's `updated` moves with every update."""
    ET.register_namespace("", ATOM)
    base = base_url.rstrip("/")
    feed = ET.Element(f"{{{ATOM}}}feed")
    items = sorted(v.incidents + v.maintenances, key=lambda i: i.updated_ms, reverse=True)[:50]

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = text
        return el

    sub(feed, "id", f"urn:bastion:status:{v.page['id']}")
    sub(feed, "title", f"{v.page['name']} status")
    sub(feed, "updated", iso(max([i.updated_ms for i in items], default=v.updated_ms or v.now_ms)))
    sub(sub(feed, "author"), "name", v.page["name"])
    sub(feed, "link", rel="self", href=f"{base}/status/feed.atom")
    sub(feed, "link", rel="alternate", href=f"{base}/status")
    for i in items:
        entry = sub(feed, "entry")
        sub(entry, "id", f"urn:bastion:{i.kind}:{i.id}")
        prefix = "Maintenance" if i.kind == "maintenance" else "Incident"
        sub(entry, "title", f"{prefix}: {i.name} ({i.status.replace('_', ' ')})")
        sub(entry, "published", iso(i.created_ms))
        sub(entry, "updated", iso(i.updated_ms))
        sub(entry, "link", rel="alternate", href=f"{base}/status#{i.kind}-{i.id}")
        sub(entry, "content", _content(i), type="html")
    xml: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return xml
