"""The Binance-compatible surface: REST (spot, USD-M), WebSocket streams, listen keys."""
