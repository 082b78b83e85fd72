"""The native REST surface (``/v1``): routes, bodies and renderings."""
