"""The `Definitions` that `workspace.yaml` loads: assets, checks, jobs, sensor, schedule, resources.

Everything is assembled from one `Settings` value (the CHARATTR_* environment, see
`settings.py`), so resource defaults and asset code versions always agree. `build_definitions`
takes explicit settings for tests and for `charattr run`.

The shard sensor and the backfill schedule start stopped (turn them on in the UI). GPU steps
(`clip_embeddings`) are in the pool "gpu"; its limit is instance configuration
(`concurrency: pools: default_limit: 1` in dagster.yaml, which `charattr run` writes for a new
DAGSTER_HOME).
"""

from __future__ import annotations

import os

import dagster as dg

from .assets import build_assets
from .jobs import ALL_JOBS
from .resources import ClipModelResource, PipelineSettings, ResultStoreResource, SourceResource
from .schedules import build_backfill_schedule
from .sensors import build_shard_sensor
from .settings import Settings
from .versions import code_versions
from .warehouse import Warehouse


DATABASE_URL_ENV = "CHARATTR_DATABASE_URL"


def database_url_config(url: str) -> str | dg.EnvVar:
    """The results-database URL as resource configuration, without its password.

    Dagster stores a resource's literal configuration in the job snapshot (kept in its own
    database and shown in the UI's launchpad), but of an `EnvVar` only the variable's name. So a
    URL holding a password is handed over through $CHARATTR_DATABASE_URL (set here for this
    process and the step processes it starts) and read back when the resource is used.
    """
    from charattr_core.store import redact_url

    if redact_url(url) == url:
        return url
    os.environ[DATABASE_URL_ENV] = url
    return dg.EnvVar(DATABASE_URL_ENV)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "clip": ClipModelResource.from_settings(settings),
        "results_store": ResultStoreResource(database_url=database_url_config(settings.database_url)),
        "source": SourceResource(path=settings.source),
        "warehouse": Warehouse(root=settings.warehouse),
        "settings": PipelineSettings.from_settings(settings),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The whole code location for `settings` (default: read from the environment)."""
    settings = settings or Settings.from_env()
    return dg.Definitions(
        assets=build_assets(code_versions(settings), settings.shards_per_run),
        jobs=list(ALL_JOBS),
        sensors=[build_shard_sensor(settings.shards_per_run)],
        schedules=[build_backfill_schedule(settings.shards_per_run)],
        resources=build_resources(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
