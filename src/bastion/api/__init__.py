"""The trading gateway: native REST + WebSocket API, API-key auth, limits, and a
Binance-compatible surface, in front of one node (see docs/trading-api.md).

Layout, each part with one job: ``app`` (ASGI assembly, lifespan), ``server`` (run it),
``service/`` (the use cases on parsed integers and their typed outcomes, the order-entry fast
path, the rejection table), ``routes`` (the one route table of ``/v1`` and ``/admin``: router,
``openapi`` document and ``docs`` page), ``native/``, ``ws/``, ``binance/``, ``operator/``,
``wallet`` (the surfaces: parse, authenticate, render), ``security/`` (signatures, keys, rate
limits), ``read/`` (the read model kept from events), ``convert`` (decimal strings <-> integer
units), ``metrics`` and ``health``.
"""
