"""``/docs``: Swagger UI served offline from the ``swagger-ui-bundle`` package's assets.

The bundled Swagger UI (4.x) renders OpenAPI 3.0 only, so it reads ``/docs/openapi-3.0.json``:
the same document as ``/openapi.json`` (3.1, JSON Schema 2020-12 from msgspec) with the few
constructs 3.0 lacks rewritten (``null`` in ``anyOf`` becomes ``nullable``, tuples become
bounded arrays, ``examples`` becomes ``example``, an empty ``required`` goes). Nothing is fetched from the network.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from bastion.api.http import encode

#: the only asset files served (no directory listing, no path from the request reaches disk)
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

_INIT = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/docs/openapi-3.0.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
"""


def asset_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return Path(swagger_ui_path)


def page(title: str) -> str:
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<title>{title}</title><meta name=viewport content="width=device-width, initial-scale=1">
<link rel=icon type=image/png href=/docs/assets/favicon-32x32.png>
<link rel=stylesheet href=/docs/assets/swagger-ui.css></head><body>
<p style="font:14px system-ui,sans-serif;margin:1em 2em">Machine-readable:
<a href=/openapi.json>/openapi.json</a> (OpenAPI 3.1). WebSocket: <code>/v1/ws</code>.
Binance-compatible surface under <code>/api/v3</code>, <code>/fapi</code>. Metrics:
<a href=/metrics>/metrics</a>.</p>
<div id=swagger-ui></div>
<script src=/docs/assets/swagger-ui-bundle.js></script>
<script src=/docs/init.js></script></body></html>"""


def to_openapi_30(spec: dict[str, Any]) -> dict[str, Any]:
    """The 3.1 document rewritten for a 3.0 reader (see the module docstring)."""
    out: dict[str, Any] = _schema30(copy.deepcopy(spec))
    out["openapi"] = "3.0.3"
    return out


def _schema30(node: Any) -> Any:
    if isinstance(node, list):
        return [_schema30(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _schema30(v) for k, v in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            node.update(rest[0])
        elif len(rest) == 1:
            node["allOf"] = rest
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    if "prefixItems" in node:
        kinds = node.pop("prefixItems")
        node["items"] = kinds[0] if all(k == kinds[0] for k in kinds) else {}
    if node.get("items") is False:
        node.pop("items")
    if node.get("required") == []:  # 3.0 wants at least one name
        node.pop("required")
    examples = node.get("examples")
    if isinstance(examples, list):
        node.pop("examples")
        if examples:
            node["example"] = examples[0]
    return node


def routes(spec: dict[str, Any]) -> list[Route]:
    """``/docs``, its assets and the 3.0 document."""
    title = str(spec["info"]["title"])
    html = page(title)
    spec30 = encode(to_openapi_30(spec))
    base = asset_dir()

    async def docs(request: Request) -> Response:
        return HTMLResponse(html)

    async def init(request: Request) -> Response:
        return Response(_INIT, media_type="text/javascript")

    async def openapi30(request: Request) -> Response:
        return Response(spec30, media_type="application/json")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        kind = ASSETS.get(name)
        if kind is None:
            return Response(b'{"code":"NOT_FOUND","message":"no such asset"}',
                            status_code=404, media_type="application/json")
        return FileResponse(base / name, media_type=kind,
                            headers={"cache-control": "public, max-age=86400"})

    return [
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/init.js", init, methods=["GET"]),
        Route("/docs/openapi-3.0.json", openapi30, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]
