"""The ``bastion`` command: ``bastion run`` starts the embedded exchange; the rest are tools."""

import typer

from bastion.cli.cluster import cluster_app, gateway_cmd, node_cmd
from bastion.cli.custody import custody_sim_cmd
from bastion.cli.drill import drill_cmd
from bastion.cli.durability import journal_app, replay_cmd, rollback_cmd, snapshot_app
from bastion.cli.migrate import migrate_app
from bastion.cli.ops import (
    cancel_cmd,
    compensate_cmd,
    halt_cmd,
    maintenance_app,
    resume_cmd,
    snapshot_online_cmd,
)
from bastion.cli.shadow import shadow_cmd
from bastion.cli.status import status_app
from bastion.cli.upgrade import upgrade_cmd

app = typer.Typer(help="Bastion exchange core: run it, inspect its journal, drill incidents.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def _main() -> None:
    """Bastion exchange core."""


@app.command()
def run() -> None:
    """Start the embedded single-node exchange with demo markets."""
    from bastion.cli.run import run_embedded

    run_embedded()


app.add_typer(journal_app, name="journal")
app.add_typer(snapshot_app, name="snapshot")
app.command("replay")(replay_cmd)
app.command("rollback")(rollback_cmd)
app.add_typer(status_app, name="status")
app.command("drill")(drill_cmd)
app.command("custody-sim")(custody_sim_cmd)
app.command("shadow")(shadow_cmd)
app.add_typer(migrate_app, name="migrate")
app.command("halt")(halt_cmd)
app.command("resume")(resume_cmd)
app.command("cancel")(cancel_cmd)
app.command("compensate")(compensate_cmd)
app.add_typer(maintenance_app, name="maintenance")
snapshot_app.command("online")(snapshot_online_cmd)
app.command("upgrade")(upgrade_cmd)
app.add_typer(cluster_app, name="cluster")
app.command("node")(node_cmd)
app.command("gateway")(gateway_cmd)


if __name__ == "__main__":
    app()
