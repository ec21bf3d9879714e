"""The ``rs-plugin`` command line: ``certify``, ``audit``, ``bench`` and ``plugins``.

What lives here: the argument parsers (:mod:`~rs_plugin.cli.arguments`, torch-free so that
``--help`` answers at once), the commands (:mod:`~rs_plugin.cli.certify`,
:mod:`~rs_plugin.cli.audit`), the one table from library parameters to flags and the parsing of
flag text (:mod:`~rs_plugin.cli.flags`), ``--threads`` (:mod:`~rs_plugin.cli.threads`), the
``--model`` text turned into a model (:mod:`~rs_plugin.cli.models`), the
append-only result store (:mod:`~rs_plugin.cli.store`), outputs that must be regular files
(:mod:`~rs_plugin.cli.outputs`), a user's JSON Lines file scanned line by line
(:mod:`~rs_plugin.cli.linescan`), runs that fail midway with the records kept
(:mod:`~rs_plugin.cli.failures`) and run summaries
(:mod:`~rs_plugin.cli.summary`). The job a run describes is :mod:`rs_plugin.runs`, below the
command line. It may import every other part of the core and the adapters; nothing imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from rs_plugin._validation import MissingExtraError, RSValueError, RSWarning
from rs_plugin.cli.arguments import (
    Parser,
    add_audit_parser,
    add_bench_parser,
    add_certify_parser,
    add_plugins_parser,
)
from rs_plugin.cli.failures import RunFailed
from rs_plugin.cli.flags import as_flags

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rs-plugin",
        description="Randomized smoothing: certify, audit, benchmark, list plugins.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_certify_parser(commands)
    add_audit_parser(commands)
    add_bench_parser(commands)
    add_plugins_parser(commands)
    return parser


@contextmanager
def _plain_warnings(command: str) -> Iterator[None]:
    """Print an RSWarning as one line naming the command, not with Python's source line."""
    previous = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, RSWarning):
            print(f"rs-plugin {command}: warning: {message}", file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _plain_warnings(args.command):
        return _run(args)


def _run(args: Any) -> int:
    try:
        if args.command == "certify":
            from rs_plugin.cli.certify import certify_command

            return certify_command(args)
        if args.command == "audit":
            from rs_plugin.cli.audit import audit_command

            return audit_command(args)
        if args.command == "bench":
            from rs_plugin.bench.speed import bench_command

            return bench_command(args)
        from rs_plugin._registry import format_plugins

        print(format_plugins())
        return 0
    except RSValueError as error:
        print(f"rs-plugin {args.command}: error: {as_flags(error)}", file=sys.stderr)
        return 2
    except MissingExtraError as error:
        print(f"rs-plugin {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RunFailed as error:
        print(f"rs-plugin {args.command}: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of stdout closed it (`rs-plugin certify ... | head`); the records are in
        # the --out file already. Point stdout at /dev/null so the flush at exit cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"rs-plugin {args.command}: stdout was closed by its reader", file=sys.stderr)
        return 141  # 128 + SIGPIPE, what a program the broken pipe had killed would report
    except OSError as error:  # the machine (closing a full disk's file, reading a folder)
        print(f"rs-plugin {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"rs-plugin {args.command}: interrupted; every finished record is saved",
            file=sys.stderr,
        )
        return 130
