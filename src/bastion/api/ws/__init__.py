"""The native WebSocket API (``/v1/ws``) and its book mirrors."""
