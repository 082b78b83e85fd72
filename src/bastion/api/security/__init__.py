"""Who may call and how often: signatures, API keys, rate limits, connection limits."""
