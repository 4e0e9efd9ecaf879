"""`charattr worker --queue gpu|default`: a Celery worker for runs on the `celery` executor.

It is `celery -A dagster_celery.app worker` started in this process, with the Celery settings
that the orchestrator uses (`executors.celery_app_settings`: acks late, requeue when the process
running a task dies, the visibility timeout) handed over as the `dagster_celery_config` module
that dagster-celery's app reads — so no configuration file, no DAGSTER_HOME, and no `celery`
on PATH are needed. The worker runs in this process (no wrapper around a child), so SIGTERM
reaches Celery itself: a warm shutdown that lets the running step finish, then exits 0
(SIGQUIT stops at once; the unfinished task is then redelivered).

    charattr worker --queue gpu --gpu 0        # one per GPU; takes clip_embeddings
    charattr worker --queue default            # everything else

A GPU worker sets CUDA_VISIBLE_DEVICES to its `--gpu` before anything imports torch, runs one
task at a time, and keeps the model loaded between tasks (`resources.cached_clip_model`).
Broker and backend come from CHARATTR_CELERY_BROKER / CHARATTR_CELERY_BACKEND (or the options);
the visibility timeout from CHARATTR_SHARDS_PER_RUN and CHARATTR_CELERY_SHARD_SECONDS, which
must match the orchestrator's.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import sys
import types
from typing import Any, Mapping

QUEUES = ("gpu", "default")
CONFIG_MODULE = "dagster_celery_config"  # the module name dagster_celery.make_app looks for


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `worker` subcommand to the `charattr` command's subparsers."""
    p = subparsers.add_parser(
        "worker", help="run a Celery worker for the celery executor (docs/cluster.md)",
        description="Start a dagster-celery worker that takes the steps of one queue: `gpu` (clip_embeddings) or "
                    "`default` (every other step). Needs the Redis broker of CHARATTR_CELERY_BROKER, the "
                    "Dagster instance on PostgreSQL and storage shared with the other machines (docs/cluster.md). "
                    "Stops cleanly on SIGTERM after the running step.")
    p.add_argument("--queue", choices=QUEUES, required=True, help="gpu: clip_embeddings; default: every other step")
    p.add_argument("--gpu", metavar="INDEX", help="the GPU this worker uses (sets CUDA_VISIBLE_DEVICES; one worker per GPU)")
    p.add_argument("--name", help="worker name (default: the queue, the GPU index or the pid, @ the host name)")
    p.add_argument("--concurrency", type=int,
                   help="steps run at once (default: 1 for gpu, the number of CPUs for default)")
    p.add_argument("--broker", help="Celery broker URL (default CHARATTR_CELERY_BROKER, redis://127.0.0.1:6379/0)")
    p.add_argument("--backend", help="Celery result backend URL (default CHARATTR_CELERY_BACKEND, redis://127.0.0.1:6379/1)")
    p.add_argument("--loglevel", default="INFO", help="Celery's log level (default INFO)")
    p.set_defaults(func=worker_command)


def worker_config(broker: str, backend: str, app_settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the `dagster_celery_config` module holds: the broker, the backend and the shared settings."""
    return {"broker_url": broker, "result_backend": backend, **app_settings}


def install_config_module(config: Mapping[str, Any]) -> None:
    """Make `import dagster_celery_config` give `config` (read by dagster_celery.app at import)."""
    module = types.ModuleType(CONFIG_MODULE)
    module.__spec__ = importlib.machinery.ModuleSpec(CONFIG_MODULE, loader=None)
    module.__dict__.update(config)
    sys.modules[CONFIG_MODULE] = module


def celery_argv(queue: str, name: str, concurrency: int, loglevel: str) -> list[str]:
    from .executors import DEFAULT_QUEUE, GPU_QUEUE

    return ["worker", "--queues", GPU_QUEUE if queue == "gpu" else DEFAULT_QUEUE, "--hostname", name,
            "--concurrency", str(concurrency), "--prefetch-multiplier", "1", "--loglevel", loglevel,
            "--without-gossip", "--without-mingle"]  # faster start; workers need not know each other


def _check_broker(app, broker: str) -> None:
    from charattr_core.errors import ConfigError
    from charattr_core.store import redact_url

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # kombu raises the transport's own errors
        raise ConfigError(f"Cannot reach the Celery broker at {redact_url(broker)} ({type(exc).__name__}); "
                          "start Redis or set CHARATTR_CELERY_BROKER / --broker.") from None


def worker_command(args: argparse.Namespace) -> int:
    """Handler of `charattr worker`: runs until stopped; exit code 0 after a clean shutdown."""
    from charattr_core.errors import ConfigError

    if args.gpu is not None:
        if args.queue != "gpu":
            raise ConfigError("--gpu only applies to --queue gpu.")
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)  # before anything imports torch
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1.")

    from .executors import celery_app_settings
    from .settings import Settings

    settings = Settings.from_env()
    broker, backend = args.broker or settings.celery_broker, args.backend or settings.celery_backend
    install_config_module(worker_config(broker, backend, celery_app_settings(settings)))
    from dagster_celery.app import app  # reads the module installed above

    _check_broker(app, broker)
    concurrency = args.concurrency or (1 if args.queue == "gpu" else os.cpu_count() or 1)
    suffix = args.gpu if args.gpu is not None else os.getpid()
    name = args.name or f"{args.queue}{suffix}@%h"
    app.worker_main(celery_argv(args.queue, name, concurrency, args.loglevel))
    return 0
