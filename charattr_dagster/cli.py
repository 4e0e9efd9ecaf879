"""`charattr run SOURCE`: the command that `charattr_core.cli` discovers through the
`charattr.commands` entry point (so the core never imports dagster).

`register` only declares arguments; dagster is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from charattr_core.settings import GRAPH, add_options

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `run` subcommand to the `charattr` command's subparsers."""
    p = subparsers.add_parser(
        "run", help="materialize the Dagster asset graph over a folder, Parquet files or tar shards",
        description="Register the source's shards as partitions and materialize every asset (raw_images -> "
                    "attribute_report) into a persistent Dagster instance: $DAGSTER_HOME, else the source's "
                    "own, <data_dir>/sources/<name>-<hash>/dagster_home, beside its warehouse and reports (one "
                    "source, one namespace); then the `dagster dev` line printed at the end shows the runs and "
                    "lineage. Settings default to the CHARATTR_* environment variables.")
    p.add_argument("source", help="folder with sidecar .txt tags, Parquet file/folder, or WebDataset tars")
    add_options(p, GRAPH)  # every setting of the graph, generated from charattr_core.settings
    p.set_defaults(func=run_command)


def settings_from_args(args: argparse.Namespace):
    """The environment's settings, overridden by the options given and pointed at SOURCE."""
    from charattr_core.settings import Settings

    return Settings.from_options(args, source=args.source)


def run_command(args: argparse.Namespace) -> int:
    """Handler of `charattr run`: exit code 0 when every run succeeded, 1 otherwise. Settings that
    cannot work raise `ConfigError` before anything runs (printed as one line by the CLI)."""
    import dagster as dg

    from charattr_core.namespaces import claim

    from .runner import dagster_home, print_summary, run_graph, source_claims, validate_settings

    settings = settings_from_args(args)
    validate_settings(settings)
    home = dagster_home(settings)
    for folder, _what, _fix in source_claims(settings):
        claim(folder, settings.source)
    with dg.DagsterInstance.get() as instance:
        summary = run_graph(settings, instance, verbose=getattr(args, "verbose", False), progress=_stderr)
    print_summary(summary, settings, home, _stderr)
    return 1 if summary.failed_runs else 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
