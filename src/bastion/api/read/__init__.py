"""The read side: the read model kept from the event stream, and its checkpoints."""
