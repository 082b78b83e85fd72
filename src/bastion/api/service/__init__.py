"""The use-case layer: intents in, journaled commands and typed outcomes out."""
