"""The trading gateway: native REST + WebSocket API, API-key auth, limits, and a
Binance-compatible surface, in front of one node (see docs/trading-api.md).

Modules, each with one job: ``app`` (ASGI assembly, lifespan), ``server`` (run it, demo seed,
health), ``service`` (the one door to the node), ``auth``/``keys`` (signatures, key store),
``ratelimit``, ``convert`` (decimal strings <-> integer units), ``readmodel`` (history kept from
events), ``marketdata`` (book deltas), ``native``/``fastpath``/``ws``/``binance``/``admin``
(the surfaces), ``perps`` (perpetual views), ``openapi`` (document and docs page).
"""
