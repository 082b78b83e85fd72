"""One way every operator command reports an expected failure: ``error: CODE: message`` on
stderr and exit status 2, so scripts branch on the code and nobody sees a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from bastion.journal.errors import DurabilityError

P = ParamSpec("P")
R = TypeVar("R")

err = Console(stderr=True, highlight=False, soft_wrap=True)


def clean_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn every expected failure into ``error: CODE: message`` and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DurabilityError as exc:
            err.print(f"error: {exc.code}: {exc.message}", markup=False)
        except PermissionError as exc:
            err.print(f"error: PERMISSION: {exc}", markup=False)
        except OSError as exc:
            err.print(f"error: IO_ERROR: {exc}", markup=False)
        raise typer.Exit(2)

    return wrapper
