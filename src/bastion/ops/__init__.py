"""The operator's emergency kit: selective cancel, halts, maintenance windows, online
snapshots, reopening in recovery, and counterfactual compensation. Every action is a journaled
command through the running node; the compensation engine only reads the journal.
Safe change: metadata migrations (``ops.migrations``) and shadow runs (``ops.shadow``)."""
