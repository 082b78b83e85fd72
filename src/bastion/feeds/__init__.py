"""Outside parties that feed the exchange: price feeders and funding timers (demo grade)."""
