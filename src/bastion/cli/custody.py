"""``bastion custody-sim``: the custody/chain simulator as its own process."""

from pathlib import Path

import typer


def custody_sim_cmd(
    port: int = typer.Option(8090, help="HTTP port (loopback)"),
    data: Path = typer.Option(Path("data/custody-sim"), help="ledger and fault switches"),
    block_ms: int = typer.Option(1000, help="one simulated block every N ms"),
    host: str = typer.Option("127.0.0.1"),
) -> None:
    """Run the custody/chain simulator (restarts itself after a simulated crash)."""
    from bastion.custody.sim import supervise

    raise typer.Exit(supervise(port, data, block_ms, host))
