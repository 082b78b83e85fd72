"""The withdrawal pipeline outside the core: the worker that moves approved withdrawals to
custody and back, the deposit watcher, and their adapter to a running node. Sits beside
node/ops in the layering; the core never imports it."""
