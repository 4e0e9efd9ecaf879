"""Where a run's steps execute: in the run's process, in one process per step, or on Celery workers.

One executor, `charattr`, with a selector in its configuration, so the same definitions run on a
laptop or a cluster and the launchpad shows (and switches) the choice:

    execution: {config: {in_process: {}}}     one process; CLIP loads once
    execution: {config: {multiprocess: {}}}   one process per step (Dagster's default)
    execution: {config: {celery: {broker: redis://..., backend: redis://...}}}   dagster-celery

The default is `CHARATTR_EXECUTOR` (unset: multiprocess for launched runs; `charattr run` asks
for in_process). `clip_embeddings` carries the op tag `dagster-celery/queue: gpu`; every other
step goes to dagster-celery's default queue (`dagster`).

Worker loss (docs/cluster.md): the Celery settings below make a task acknowledged only when it
ends (`task_acks_late`) and requeued when the process running it dies
(`task_reject_on_worker_lost`); a task whose whole worker vanished is redelivered by Redis after
the visibility timeout. That timeout must exceed the longest step, or a healthy long step is
delivered twice: the longest step is one stage over one range run, `shards_per_run` shards, so
it is `2 x shards_per_run x CHARATTR_CELERY_SHARD_SECONDS` (the time one shard may take on the
slowest worker, default 600 s), at least 10 s.

`reconstructable_job` is how a job crosses process and machine boundaries: workers rebuild it
from the settings of the run that submitted it, so they need no CHARATTR_* environment of
their own — except a database password, which is never put into a run (see
`definitions.database_url_config`): workers read it from `CHARATTR_DATABASE_URL`.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import dagster as dg
from dagster._core.definitions.executor_definition import (_core_in_process_executor_creation,
                                                          _core_multiprocess_executor_creation,
                                                          multiple_process_executor_requirements)
from dagster._core.execution.retries import get_retries_config

from .settings import Settings

GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "dagster"  # dagster-celery's task_default_queue; `charattr worker --queue default`
QUEUE_TAG = "dagster-celery/queue"
MIN_VISIBILITY_TIMEOUT = 10
DEFAULT_EXECUTOR = "multiprocess"  # for launched runs when CHARATTR_EXECUTOR is unset


def visibility_timeout(settings: Settings) -> int:
    """Seconds before Redis hands an unacknowledged task to another worker (see the docstring)."""
    return max(MIN_VISIBILITY_TIMEOUT, 2 * settings.shards_per_run * settings.celery_shard_seconds)


def celery_app_settings(settings: Settings) -> dict[str, Any]:
    """The Celery settings that orchestrator and workers share (the fix for a worker killed
    mid-step; docs/cluster.md). `broker_transport_options` replaces dagster-celery's defaults
    rather than merging with them, so it is given whole."""
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # a worker holds no task it has not started
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout(settings),
            "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
        },
    }


def _merged_app_settings(base: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = {**base, **(given or {})}
    merged["broker_transport_options"] = {**base["broker_transport_options"],
                                          **((given or {}).get("broker_transport_options") or {})}
    return merged


def _url_config(url: str, variable: str) -> str | dict[str, str]:
    """A broker/backend URL as a config default; one holding a password is referred to by its
    environment variable (set here for this process), so the password is not stored with runs."""
    import os

    from charattr_core.store import redact_url

    if redact_url(url) == url:
        return url
    os.environ[variable] = url
    return {"env": variable}


def build_executor(settings: Settings) -> dg.ExecutorDefinition:
    """The `charattr` executor with its defaults taken from `settings`."""
    from dagster_celery.executor import CeleryExecutor

    base = celery_app_settings(settings)
    celery_config = {
        "broker": dg.Field(dg.StringSource, default_value=_url_config(settings.celery_broker, "CHARATTR_CELERY_BROKER"),
                           description="Celery broker URL (CHARATTR_CELERY_BROKER)."),
        "backend": dg.Field(dg.StringSource, default_value=_url_config(settings.celery_backend, "CHARATTR_CELERY_BACKEND"),
                            description="Celery result backend URL (CHARATTR_CELERY_BACKEND)."),
        "include": dg.Field([str], is_required=False, description="Modules every worker should import."),
        "config_source": dg.Field(dg.Permissive(), default_value=base,
                                  description="Celery settings; keys given here override charattr's "
                                              "(acks late, requeue on worker loss, visibility timeout)."),
        "retries": get_retries_config(),
    }
    default = settings.executor or DEFAULT_EXECUTOR

    def requirements(config: Mapping[str, Any]):
        return [] if "in_process" in config else multiple_process_executor_requirements()

    @dg.executor(
        name="charattr",
        config_schema=dg.Field(dg.Selector({
            # Dagster's own schemas: every option of its in-process and multiprocess executors
            # (start_method, tag_concurrency_limits, ...) stays available.
            "in_process": dg.in_process_executor.config_schema.as_field(),
            "multiprocess": dg.multiprocess_executor.config_schema.as_field(),
            "celery": celery_config,
        }), default_value={default: {}}),
        requirements=requirements,
    )
    def charattr_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
        (kind, config), = init_context.executor_config.items()
        if kind == "in_process":
            return _core_in_process_executor_creation(config)
        if kind == "multiprocess":
            return _core_multiprocess_executor_creation(config)
        from celery.exceptions import DuplicateTaskNameWarning
        from dagster._core.execution.retries import RetryMode

        # dagster-celery declares its one task again for every step it submits; harmless, but loud.
        warnings.filterwarnings("ignore", category=DuplicateTaskNameWarning)
        return CeleryExecutor(broker=config["broker"], backend=config["backend"], include=config.get("include"),
                              config_source=_merged_app_settings(base, config.get("config_source")),
                              retries=RetryMode.from_config(config["retries"]))

    return charattr_executor


def executor_run_config(settings: Settings) -> dict[str, Any]:
    """The run configuration that picks the executor `charattr run` uses: the setting, or in-process."""
    return {"execution": {"config": {settings.executor or "in_process": {}}}}


# ---- crossing process boundaries ------------------------------------------------------------

def settings_payload(settings: Settings) -> dict[str, Any]:
    """The settings as plain values for a reconstructable job, without a database password."""
    from charattr_core.store import redact_url

    fields = settings.model_dump(mode="json")
    if redact_url(settings.database_url) != settings.database_url:
        fields["database_url"] = None  # read from $CHARATTR_DATABASE_URL where the job is rebuilt
    return fields


def job_from_settings(fields: Mapping[str, Any], job_name: str) -> dg.JobDefinition:
    """Rebuild one job from `settings_payload` (called by Dagster in step processes and workers)."""
    import os

    from charattr_core.errors import ConfigError

    from .definitions import DATABASE_URL_ENV, build_definitions

    values = dict(fields)
    if values.get("database_url") is None:
        values["database_url"] = os.environ.get(DATABASE_URL_ENV)
        if not values["database_url"]:
            raise ConfigError(f"This run's results database URL holds a password, which runs never carry; "
                              f"set {DATABASE_URL_ENV} in this worker's environment.")
    return build_definitions(Settings(**values)).resolve_job_def(job_name)


def reconstructable_job(settings: Settings, job_name: str) -> dg.ReconstructableJob:
    """A job that step processes and Celery workers rebuild with exactly these settings."""
    return dg.build_reconstructable_job(__name__, job_from_settings.__name__,
                                        reconstructable_kwargs={"fields": settings_payload(settings),
                                                                "job_name": job_name})

