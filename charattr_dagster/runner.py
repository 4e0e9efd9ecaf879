"""Materialize the whole asset graph over one source into a persistent Dagster instance — what
`charattr run SOURCE` does — so that a later `dagster dev` shows the runs, materializations and
lineage.

Order: register the source's shards as partitions; the per-shard signals (raw_images,
tag_parses, clip_embeddings) as partition-range runs; the learning stages; fused_attributes as
range runs; the report. Runs are executed from this process with `execute_job` on a
reconstructable job, so the configured executor is used: in-process by default (no daemon or
run launcher needed, and CLIP loads once per process), one process per step, or Celery workers
(`CHARATTR_EXECUTOR`, `--executor`; docs/cluster.md).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import dagster as dg

from charattr_core.settings import derived_locations, env_var

from .instance import prepare_dagster_home
from .asset_keys import (ATTRIBUTE_PROBES, ATTRIBUTE_REPORT, CLIP_EMBEDDINGS, FUSED_ATTRIBUTES, FUSION_POLICY,
                         RAW_IMAGES, TAG_PARSES)
from .executors import executor_run_config, reconstructable_job
from .jobs import fuse_shards_job, ingest_shards_job, report_job, train_job
from .partitions import SHARDS, contiguous_ranges, range_tags
from .settings import Settings

COUNTED_STAGES = (RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS, FUSED_ATTRIBUTES)
# Run tags naming the `charattr run` process that executes a run, so that a later one can tell
# the runs of a killed process from runs that are still going (see `release_crashed_runs`).
RUN_HOST_TAG = "charattr/host"
RUN_PID_TAG = "charattr/pid"
PARTITION_TAG = "dagster/partition"  # what `execute_in_process(partition_key=...)` sets
_UNFINISHED = (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)


def dagster_home(settings: Settings | None = None) -> Path:
    """$DAGSTER_HOME when set, else the source's own instance (`Settings.dagster_home`;
    data/dagster_home without settings); created with charattr's dagster.yaml when new
    (`instance.prepare_dagster_home`)."""
    return prepare_dagster_home(os.environ.get("DAGSTER_HOME") or (settings.dagster_home if settings is not None
                                                                   else None))


def source_claims(settings: Settings) -> list[tuple[Path, str, str]]:
    """The folders that must belong to `settings.source` alone: (folder, what it is, how to give
    this source its own). One source, one namespace (charattr_core.namespaces)."""
    own = derived_locations(settings.data_dir, settings.source)
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).expanduser().resolve()
    folders = [(home, "Dagster instance", f"unset DAGSTER_HOME to use the source's own instance "
                                          f"({settings.dagster_home}), or point DAGSTER_HOME elsewhere")]
    for name, option in (("warehouse", "--warehouse"), ("reports", "--reports")):
        where = getattr(settings, name)
        if "://" not in where:
            folders.append((Path(where), f"{name} folder", f"leave {option} and {env_var(name)} unset to use the "
                                                            f"source's own ({own[name]})"))
    return folders


@dataclass
class StageTotals:
    computed: int = 0
    skipped: int = 0
    failed: int = 0
    rows: int = 0


@dataclass
class GraphRunSummary:
    """What `run_graph` did, for the command line."""

    shards: int = 0
    new_shards: int = 0
    stages: dict[str, StageTotals] = field(default_factory=lambda: defaultdict(StageTotals))
    learning: dict[str, str] = field(default_factory=dict)  # asset -> one line
    failed_runs: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    signals: dict[str, str] = field(default_factory=dict)  # tags/clip/probes/policy -> used, or why not
    notes: list[str] = field(default_factory=list)
    report: str | None = None
    runs: int = 0

    @property
    def images(self) -> int:
        return self.stages[RAW_IMAGES].rows

    @property
    def failed_images(self) -> int:
        return self.stages[RAW_IMAGES].failed


def _value(entry) -> object:
    return getattr(entry, "value", entry)


def _collect(result: dg.ExecuteInProcessResult | dg.JobExecutionResult, summary: GraphRunSummary) -> None:
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        asset, meta = mat.asset_key.to_user_string(), {k: _value(v) for k, v in mat.metadata.items()}
        if asset in COUNTED_STAGES:  # each partition's event carries that shard's own numbers
            totals = summary.stages[asset]
            for name in ("computed", "skipped", "failed", "rows"):
                setattr(totals, name, getattr(totals, name) + int(meta.get(name, 0) or 0))
            if asset == FUSED_ATTRIBUTES and isinstance(meta.get("signals"), dict):
                summary.signals = dict(meta["signals"])  # which signals fusion used, and why one was not
            if asset == CLIP_EMBEDDINGS and meta.get("clip_available") is False:
                note = f"CLIP not used: {meta.get('clip_unavailable_reason')}"
                if note not in summary.notes:
                    summary.notes.append(note)
        elif asset in (ATTRIBUTE_PROBES, FUSION_POLICY):
            if meta.get("skipped"):  # the first clause; the full reason is in the asset's metadata
                summary.learning[asset] = f"skipped: {str(meta.get('skip_reason')).split(': ')[0]}"
            elif asset == ATTRIBUTE_PROBES:
                summary.learning[asset] = (f"{meta.get('trained_attributes')} attribute heads trained "
                                           f"({meta.get('version')})")
            else:
                verdict = "published" if meta.get("published") else "NOT published (see the failed check)"
                summary.learning[asset] = (f"trained, generation {meta.get('generation')}, "
                                           f"{meta.get('holdout_images')} held-out images evaluated; {verdict}")
        elif asset == ATTRIBUTE_REPORT:
            summary.report = str(meta.get("html_report"))
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            summary.failed_checks.append(f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}: "
                                         f"{evaluation.description or 'failed'}")


def _failure_reason(result: dg.ExecuteInProcessResult | dg.JobExecutionResult) -> str:
    """The first failed step and its error message, without the exception's class path."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            lines = [ln.strip() for ln in event.step_failure_data.error.message.strip().splitlines() if ln.strip()]
            message = re.sub(r"^[\w.]+(Error|Failure|Exception): ", "", " ".join(lines[:2]))
            return f"{event.step_key}: {message}"
    return "see the run in the Dagster UI"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def release_crashed_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs that a `charattr run` on this machine started but whose process has
    died (killed, out of memory, power cut), and free the concurrency slots they held.

    Without this, a run killed inside clip_embeddings keeps the "gpu" pool's only slot forever and
    every later run waits for it. Runs of live processes, of other machines and runs that
    charattr did not start (e.g. launched from `dagster dev`) are left alone. Returns the run ids.
    """
    host = socket.gethostname()
    released = []
    records = instance.get_run_records(dg.RunsFilter(statuses=list(_UNFINISHED), tags={RUN_HOST_TAG: host}))
    for record in records:
        run = record.dagster_run
        pid = int(run.tags.get(RUN_PID_TAG) or 0)
        if pid == os.getpid() or (pid and _process_alive(pid)):
            continue
        instance.report_run_failed(run, message=f"The charattr run process (pid {pid}) ended without finishing "
                                                "this run (killed or crashed); its results so far are kept.")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released


def run_graph(settings: Settings, instance: dg.DagsterInstance, *, verbose: bool = False,
              progress: Callable[[str], None] = lambda _line: None) -> GraphRunSummary:
    """Materialize every asset over every shard of `settings.source`; returns what happened."""
    from charattr_core.sources import open_source

    from .definitions import database_url_config

    shards = open_source(settings.source).shards()
    # A database URL with a password reaches the jobs (rebuilt from the settings, in this process or
    # in workers) only through $CHARATTR_DATABASE_URL, never through the run's stored settings.
    database_url_config(settings.database_url)
    summary = GraphRunSummary(shards=len(shards))
    crashed = release_crashed_runs(instance)
    if crashed:
        summary.notes.append(f"{len(crashed)} run(s) of an earlier, killed `charattr run` marked failed")
    known = set(instance.get_dynamic_partitions(SHARDS))
    new = [k for k in shards if k not in known]
    if new:
        instance.add_dynamic_partitions(SHARDS, new)
    summary.new_shards = len(new)
    ordered = instance.get_dynamic_partitions(SHARDS)
    ranges = list(contiguous_ranges(shards, ordered, settings.shards_per_run))
    # Failures are summarised at the end; Dagster's own console log is for --verbose.
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}},
                  **executor_run_config(settings)}
    process_tags = {RUN_HOST_TAG: socket.gethostname(), RUN_PID_TAG: str(os.getpid())}

    def execute(job_name: str, keys: Sequence[str] | None) -> bool:
        label = job_name if keys is None else f"{job_name} [{keys[0]}]" if len(keys) == 1 else \
            f"{job_name} [{keys[0]} … {keys[-1]}, {len(keys)} shards]"
        started = time.perf_counter()
        tags = dict(process_tags)
        if keys is not None:
            tags.update({PARTITION_TAG: keys[0]} if len(keys) == 1 else range_tags(keys))
        # execute_job, not execute_in_process: the latter ignores the job's executor (Celery).
        with dg.execute_job(reconstructable_job(settings, job_name), instance=instance, run_config=run_config,
                            tags=tags, raise_on_error=False) as result:
            summary.runs += 1
            _collect(result, summary)
            if not result.success:
                summary.failed_runs.append(f"{label}: {_failure_reason(result)}")
            status = "ok" if result.success else f"FAILED ({_failure_reason(result)})"
            progress(f"{label}: {status} in {time.perf_counter() - started:.1f} s (run {result.run_id[:8]})")
            return result.success

    ingested = [keys for keys in ranges if execute(ingest_shards_job.name, keys)]
    execute(train_job.name, None)
    for keys in ranges:
        if keys in ingested:
            execute(fuse_shards_job.name, keys)
        else:
            summary.notes.append(f"not fused: {keys[0]} … {keys[-1]} (its ingest run failed)")
    execute(report_job.name, None)
    return summary


def print_summary(summary: GraphRunSummary, settings: Settings, home: Path, write: Callable[[str], None]) -> None:
    from charattr_core.store import redact_url

    write(f"{summary.images} images in {summary.shards} shards ({summary.new_shards} new), "
          f"{summary.failed_images} failed; {summary.runs} runs")
    for stage in COUNTED_STAGES:
        t = summary.stages[stage]
        write(f"  {stage}: {t.computed} computed, {t.skipped} skipped (cached), {t.failed} failed")
    for asset in (ATTRIBUTE_PROBES, FUSION_POLICY):
        if asset in summary.learning:
            write(f"  {asset}: {summary.learning[asset]}")
    for signal, state in summary.signals.items():
        write(f"  {signal}: {state}")
    for note in summary.notes:
        write(f"  note: {note}")
    for check in summary.failed_checks:
        write(f"  check failed: {check}")
    for run in summary.failed_runs:
        write(f"  run failed: {run}")
    write("outputs:")
    write(f"  warehouse  {settings.warehouse}")
    write(f"  database   {redact_url(settings.database_url)}")
    if summary.report:
        write(f"  report     {summary.report}")
    env = " ".join(f"{k}={shlex.quote(redact_url(v) if k == 'CHARATTR_DATABASE_URL' else v)}"
                   for k, v in settings.to_env().items())
    write(f"  dagster    {home}")
    write(f"browse it:   {env + ' ' if env else ''}DAGSTER_HOME={home} dagster dev -w workspace.yaml -h 127.0.0.1")


def validate_settings(settings: Settings) -> None:
    """Fail early, with one sentence, on settings that would only fail inside a run (the values
    themselves were validated when `settings` was built)."""
    from charattr_core.namespaces import check_claim
    from charattr_core.sources import open_source
    from charattr_core.store import ResultStore

    from .versions import code_versions

    open_source(settings.source)
    for folder, what, fix in source_claims(settings):
        check_claim(folder, settings.source, what, fix)
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    ResultStore(settings.database_url).close()
    if "://" in settings.warehouse:  # object storage: reachable, and a shared folder for the artefacts
        from .warehouse import Warehouse
        Warehouse(root=settings.warehouse, artifacts=settings.warehouse_artifacts).asset_dir("attribute_probes")
        remote = Warehouse(root=settings.warehouse).remote()
        remote.fs.makedirs(remote.root, exist_ok=True)
    code_versions(settings)  # bad vocabulary; unknown model, weights tag or checkpoint file
