"""`charattr run SOURCE`: the command that `charattr_core.cli` discovers through the
`charattr.commands` entry point (so the core never imports dagster).

`register` only declares arguments; dagster is imported when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

# option -> Settings field; only options the user gives override the environment.
_OVERRIDES = {
    "model": "model_name", "pretrained": "pretrained", "vocabulary": "vocabulary", "database_url": "database_url",
    "warehouse": "warehouse", "reports": "reports", "device": "device", "batch_size": "batch_size",
    "strategy": "fusion_strategy", "shards_per_run": "shards_per_run",
    "max_failed_fraction": "max_failed_fraction", "labels": "labels", "max_image_pixels": "max_image_pixels",
}
_PATHS = ("vocabulary", "warehouse", "reports", "labels")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `run` subcommand to the `charattr` command's subparsers."""
    p = subparsers.add_parser(
        "run", help="materialize the Dagster asset graph over a folder, Parquet files or tar shards",
        description="Register the source's shards as partitions and materialize every asset (raw_images -> "
                    "attribute_report) into a persistent Dagster instance ($DAGSTER_HOME, default "
                    "data/dagster_home); then `dagster dev -w workspace.yaml` shows the runs and lineage. "
                    "Settings default to the CHARATTR_* environment variables.")
    p.add_argument("source", help="folder with sidecar .txt tags, Parquet file/folder, or WebDataset tars")
    p.add_argument("--no-clip", action="store_true", default=None,
                   help="tags only: no CLIP, no probes, no learned policy (and torch is never imported)")
    p.add_argument("--model", help="open_clip architecture (default ViT-B-32)")
    p.add_argument("--pretrained", help="open_clip tag, local checkpoint path, or 'random' (default openai)")
    p.add_argument("--device", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=int, help="images per CLIP batch (default 32)")
    p.add_argument("--vocabulary", help="attribute vocabulary TOML (default: the bundled one)")
    p.add_argument("--strategy", help="fixed fusion strategy when no policy is trained (default confidence_weighted)")
    p.add_argument("--labels", help="user corrections (CSV/Parquet: image_id, attribute, value)")
    p.add_argument("--database-url", help="results database (default sqlite:///data/charattr.db)")
    p.add_argument("--warehouse", help="Parquet warehouse folder (default data/warehouse)")
    p.add_argument("--reports", help="report folder (default data/reports)")
    p.add_argument("--shards-per-run", type=int, help="shards materialized per run (default 1: each partition keeps its own lineage)")
    p.add_argument("--max-failed-fraction", type=float,
                   help="share of unreadable images above which a shard's later stages are blocked (default 0.5)")
    p.add_argument("--max-image-pixels", type=int,
                   help="refuse larger images as decompression bombs (default 89478485, Pillow's limit)")
    p.set_defaults(func=run_command)


def settings_from_args(args: argparse.Namespace):
    """The environment's settings, overridden by the options given and pointed at SOURCE."""
    from pathlib import Path

    from charattr_core.errors import ConfigError

    from .settings import NO_WEIGHTS, Settings

    settings = Settings.from_env()
    changes = {}
    for option, name in _OVERRIDES.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if option in _PATHS:
            value = str(Path(value).resolve())
        if option == "pretrained" and value.strip().lower() in NO_WEIGHTS:
            value = None
        changes[name] = value
    if getattr(args, "no_clip", None):
        changes["use_clip"] = False
    if changes.get("shards_per_run", 1) < 1 or changes.get("batch_size", 1) < 1:
        raise ConfigError("--shards-per-run and --batch-size must be at least 1.")
    if not 0.0 <= changes.get("max_failed_fraction", 0.0) <= 1.0:
        raise ConfigError("--max-failed-fraction must lie between 0 and 1.")
    return dataclasses.replace(settings, **changes).with_source(args.source)


def run_command(args: argparse.Namespace) -> int:
    """Handler of `charattr run`: exit code 0 when every run succeeded, 1 otherwise. Settings that
    cannot work raise `ConfigError` before anything runs (printed as one line by the CLI)."""
    import dagster as dg

    from .runner import dagster_home, print_summary, run_graph, validate_settings

    settings = settings_from_args(args)
    validate_settings(settings)
    home = dagster_home()
    with dg.DagsterInstance.get() as instance:
        summary = run_graph(settings, instance, verbose=getattr(args, "verbose", False), progress=_stderr)
    print_summary(summary, settings, home, _stderr)
    return 1 if summary.failed_runs else 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
