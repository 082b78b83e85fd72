"""The OpenAPI 3.1 document (``/openapi.json``); ``bastion.api.docs`` serves it as Swagger UI.

Generated from the route table (``bastion.api.routes``), the same list the router is built from,
with the schemas of the msgspec Structs the handlers decode and encode
(``msgspec.json.schema_components``), so the document describes exactly what the server does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bastion.api.errors import status_for
from bastion.api.native import schemas as S
from bastion.api.routes import OPS, Op
from bastion.status import schemas as SS
from bastion.status.routes import ADMIN_ERRORS, StatusOp
from bastion.status.routes import OPS as STATUS_OPS
from bastion.status.statuspage import OKX_STATES

REF = "#/components/schemas/{name}"

_STATUS_TEXT = {400: "invalid request", 401: "missing or invalid credentials, signature, "
                "timestamp, or a replay", 403: "the key lacks the permission",
                404: "not found", 409: "conflict with the current state",
                422: "a value is refused (the message names it)",
                413: "request body too large", 429: "rate limited (see Retry-After)",
                500: "internal error", 503: "not accepting commands right now (see "
                "Retry-After)"}


def _error_responses(by_status: dict[int, list[str]], body: str) -> dict[str, Any]:
    """One response per HTTP status, naming the stable codes answered with it."""
    return {str(status): {
        "description": f"{_STATUS_TEXT.get(status, 'refused')}: "
                       + ", ".join(f"`{c}`" for c in dict.fromkeys(codes)),
        "content": {"application/json": {"schema": {"$ref": REF.format(name=body)}}}}
        for status, codes in sorted(by_status.items())}


def _path_params(path: str) -> list[dict[str, Any]]:
    out = []
    for part in path.split("/"):
        if part.startswith("{"):
            name = part[1:-1]
            schema: dict[str, Any] = ({"type": "integer", "minimum": 1} if name == "order_id"
                                      else {"type": "string", "minLength": 1, "maxLength": 64})
            out.append({"name": name, "in": "path", "required": True, "schema": schema})
    return out


def _operation_id(method: str, path: str) -> str:
    return (f"{method}_{path}".replace("/", "_").replace("{", "").replace("}", "")
            .replace("-", "_").replace(".", "_"))


def _operation(method: str, path: str, summary: str, tag: str, params: list[dict[str, Any]],
               body_schema: Any, status: int, media: str, resp_schema: Any,
               errors: dict[str, Any]) -> dict[str, Any]:
    """The parts every operation shares, native or status."""
    o: dict[str, Any] = {"summary": summary, "tags": [tag],
                         "operationId": _operation_id(method, path)}
    if params:
        o["parameters"] = params
    if body_schema is not None:
        o["requestBody"] = {"required": True,
                            "content": {"application/json": {"schema": body_schema}}}
    success: dict[str, Any] = {"description": "success"}
    if status != 204:
        success["content"] = {media: {"schema": resp_schema}}
    o["responses"] = {str(status): success, **errors}
    return o


def _native_op(op: Op, body_schema: Any, resp_schema: Any) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in op.codes():
        by_status.setdefault(status_for(code), []).append(code)
    params = _path_params(op.doc_path) + [
        {"name": n, "in": "query", "required": req, "schema": sch} for n, sch, req in op.query]
    o = _operation(op.method, op.doc_path, op.summary, op.tag, params, body_schema, op.status,
                   "application/json", resp_schema or {}, _error_responses(by_status, "Error"))
    if op.auth == "admin":
        o["security"] = [{"operator": []}]
    elif op.auth != "none":
        o["security"] = [{"apiKey": [], "timestamp": [], "signature": []}]
        o["description"] = f"Needs the `{op.auth}` permission."
    return o


def _status_op(op: StatusOp, body_schema: Any, resp_schema: Any) -> dict[str, Any]:
    """A status API operation: its own lower-case codes and `{code, message}` error body."""
    params = _path_params(op.path)
    if op.handler == "uptime":
        params.append({"name": "days", "in": "query", "required": False,
                       "schema": {"type": "integer", "minimum": 1, "maximum": 366}})
    elif op.handler == "okx":
        params.append({"name": "state", "in": "query", "required": False,
                       "schema": {"type": "string", "enum": list(OKX_STATES)}})
    by_status: dict[int, list[str]] = {}
    for code, status in (*op.errors, *(ADMIN_ERRORS if op.auth == "admin" else ())):
        by_status.setdefault(status, []).append(code)
    default = {"type": "object"} if op.media == "application/json" else {"type": "string"}
    o = _operation(op.method, op.path, op.summary, "status", params, body_schema, op.status,
                   op.media, resp_schema or default, _error_responses(by_status, "ErrorBody"))
    if op.auth == "admin":
        o["security"] = [{"operator": []}]
    return o


def build_spec(title: str = "Bastion trading API", version: str = "1",
               ops: tuple[Op, ...] = OPS,
               status_ops: tuple[StatusOp, ...] = STATUS_OPS) -> dict[str, Any]:
    types: list[Any] = [S.Error, SS.ErrorBody]
    for body, response in [(o.body, o.response) for o in ops] + [
            (o.body, o.response) for o in status_ops]:
        if body is not None:
            types.append(body)
        if response is not None:
            types.append(response)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    it = iter(schemas[2:])
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        body_schema = next(it) if op.body is not None else None
        resp_schema = next(it) if op.response is not None else None
        paths.setdefault(op.doc_path, {})[op.method] = _native_op(op, body_schema, resp_schema)
    for sop in status_ops:
        body_schema = next(it) if sop.body is not None else None
        resp_schema = next(it) if sop.response is not None else None
        paths.setdefault(sop.path, {})[sop.method] = _status_op(sop, body_schema, resp_schema)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": (
            "Money is always a decimal string. Private calls are signed: X-BX-SIGNATURE = hex "
            "HMAC-SHA256(secret, X-BX-TIMESTAMP + METHOD + path[?query] + body).")},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-BX-APIKEY"},
                "timestamp": {"type": "apiKey", "in": "header", "name": "X-BX-TIMESTAMP"},
                "signature": {"type": "apiKey", "in": "header", "name": "X-BX-SIGNATURE"},
                "operator": {"type": "http", "scheme": "bearer"},
            },
        },
    }
