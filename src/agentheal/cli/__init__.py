"""`agentheal …`: the command line, one module per group of commands over `_common`.

`main(argv)` returns an exit code so tests call it directly. Exit codes: 0 healed (or the
command did what it said), 1 not healed (escalated, failed, rejected, awaiting approval) or an
unhealthy status, 2 a usage error (bad flag, bad gap, bad file). Heavy libraries are imported
inside the commands that need them, so `agentheal --help` answers at once.
"""

from __future__ import annotations

import importlib

import typer

from agentheal.cli._common import EXIT_OK, EXIT_USAGE, UsageProblem, _err, app

__all__ = ["app", "main"]

# The command modules, each registering its commands on `app`: healing first, as people use them.
_COMMANDS = [
    "heal",
    "admin",
    "detect",
    "agents",
    "faults",
    "eval",
    "serve",
    "protocols",
    "chat",
    "status",
    "db",
    "workers",
]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting."""
    for name in _COMMANDS:  # registering their commands, in the order --help lists them
        importlib.import_module(f"agentheal.cli.{name}")
    from agentheal.embedding import EmbeddingError
    from agentheal.storage import StorageError

    try:
        code = app(args=argv, standalone_mode=False, prog_name="agentheal")
    # EmbeddingError: a damaged model file, an endpoint down; StorageError: a store to upgrade, a
    # database out of reach — each message says what to do
    except (UsageProblem, EmbeddingError, StorageError) as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 0))
    except (typer.Abort, KeyboardInterrupt):
        _err("interrupted")
        return 130
    except typer.TyperException as exc:  # click's usage errors: bad flag, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            _err(f"error: {exc}")
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    return code if isinstance(code, int) else EXIT_OK
