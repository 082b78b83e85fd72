"""The ``bastion`` command: ``bastion run`` starts the embedded exchange; the rest are tools."""

import typer

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


if __name__ == "__main__":
    app()
