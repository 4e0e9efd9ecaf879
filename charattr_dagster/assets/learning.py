"""The stages that learn, over every shard: `attribute_probes` and `fusion_policy`.

Both are unpartitioned. They gather their inputs — the partitioned signals, streamed back from
the warehouse one batch at a time (`tables.iter_signals`), the published artefacts and the
warm-start state — call `charattr_core.learning` (the same functions as `charattr eval`) to
split, train, evaluate and judge, and describe the result. No learning logic lives here: which
image may teach which stage, the warm start and the publication gate are all decided in core.

Artefacts (safetensors + JSON, never pickle) live in the asset's warehouse folder, where
`fused_attributes` finds them. Without CLIP weights both stages have nothing to learn from; they
still materialize, with metadata saying they were skipped and why.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import dagster as dg
import xxhash
from dagster import AssetExecutionContext

from ..artifacts import policy_in_use, probes_in_use
from ..asset_keys import ATTRIBUTE_PROBES, CLIP_EMBEDDINGS, FUSION_POLICY, RAW_IMAGES, TAG_PARSES
from ..metadata import Stopwatch
from ..partitions import SHARDS
from ..resources import ClipModelResource, PipelineSettings
from ..tables import iter_signals
from ..warehouse import Warehouse
from .zero_shot import lazy_zero_shot

EVALUATION_MARKDOWN = "evaluation.md"
EVALUATION_CSV = "evaluation.csv"
RELIABILITY_PNG = "reliability.png"
TRAINING_STATE = "training_state.json"


def _save_atomically(save: Callable[[Path], Any], folder: Path) -> None:
    """Save into a temporary folder beside `folder`, then move the files in (no half-written
    artefact is ever read: `save` may write several files)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        save(tmp)
        for f in sorted(tmp.iterdir(), key=lambda p: p.suffix == ".json"):  # the JSON (the index) last
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _shards_with(context: AssetExecutionContext, warehouse: Warehouse, *assets: str) -> list[str]:
    """Registered shards whose files of all `assets` exist."""
    return [k for k in context.instance.get_dynamic_partitions(SHARDS)
            if all(warehouse.has(a, k) for a in assets)]


def _warehouse_signals(warehouse: Warehouse, shards: Sequence[str], batch_size: int):
    """A `learning.SignalSource` over these shards of the warehouse: each call streams them again;
    images that `keep` rejects are dropped before their tag parse is decoded."""
    def source(keep: Callable[[str], bool]):
        return (batch for shard in shards
                for batch in iter_signals(warehouse, shard, keep=keep, batch_size=batch_size))
    return source


def _skipped(reason: str, check: str | None = None) -> dg.MaterializeResult:
    """Nothing to learn from: say why; a check of the asset passes with the same reason (nothing
    new was published, so nothing got worse)."""
    checks = [dg.AssetCheckResult(check_name=check, passed=True, metadata={"reason": reason})] if check else []
    return dg.MaterializeResult(metadata={"skipped": True, "skip_reason": reason}, check_results=checks)


# ---- attribute_probes -------------------------------------------------------------------------------

def build_attribute_probes(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=ATTRIBUTE_PROBES, group_name="learning", deps=[RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS],
        code_version=code_version, kinds={"numpy", "safetensors"},
        description="Per attribute, a linear classifier on CLIP embeddings, trained on images whose tag parse is "
                    "confident (probe_fit buckets) and temperature-calibrated (probe_calibration buckets). It "
                    "predicts attributes for images with missing or poor tags. safetensors + JSON.",
    )
    def attribute_probes(context: AssetExecutionContext, clip: ClipModelResource, warehouse: Warehouse,
                         settings: PipelineSettings) -> dg.MaterializeResult:
        from charattr_core.learning import train_split_probes

        clock = Stopwatch()
        unavailable = clip.unavailable_reason()
        if unavailable:
            return _skipped(f"CLIP is unavailable, so there are no embeddings to train on: {unavailable}")
        shards = _shards_with(context, warehouse, RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS)
        if not shards:
            return _skipped("No shard has tag_parses and clip_embeddings yet.")
        vocabulary, config, model_key = settings.load_vocabulary(), settings.pipeline_config(), clip.model_key()
        probes = train_split_probes(_warehouse_signals(warehouse, shards, settings.stage_batch_size), vocabulary, model_key,
                                    accept=config.confidence_threshold)
        folder = warehouse.asset_dir(ATTRIBUTE_PROBES)
        _save_atomically(probes.save, folder)
        rows = [dg.TableRecord({"attribute": key, "values": len(head.values),
                                "examples": int(sum(head.counts.values())) if head.counts else 0,
                                **{k: round(float(v), 4) for k, v in head.metrics.items()
                                   if isinstance(v, (int, float)) and k in ("accuracy", "ece_before", "ece_after")}})
                for key, head in probes.heads.items()]
        metadata: dict[str, Any] = {
            "version": probes.probes_version, "model": model_key, "shards": len(shards),
            "trained_attributes": len(probes.heads), "skipped_attributes": dg.MetadataValue.json(probes.skipped),
            "path": dg.MetadataValue.path(str(folder / "probes.json")), "seconds": round(clock.seconds, 3),
            "skipped": False,
        }
        if rows:
            metadata["heads"] = dg.MetadataValue.table(records=rows)
        return dg.MaterializeResult(metadata=metadata)

    return attribute_probes


# ---- fusion_policy ----------------------------------------------------------------------------------

def _content_stamp(*paths: Path) -> str:
    """A hash of the files' bytes: a shard re-materialized with the same content keeps its stamp
    (the Parquet writer is deterministic), a changed one does not."""
    digest = xxhash.xxh3_64()
    for path in paths:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _evaluation_table(report) -> dg.TableMetadataValue:
    """Held-out accuracy per method (sources, fixed strategies, learned policy) and attribute."""
    from charattr_core.evaluation import OVERALL

    columns = [OVERALL, *report.attributes]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"method": m, **{c: round(report.metric(m, c).value, 4) for c in columns}})
                 for m in report.methods],
        schema=dg.TableSchema(columns=[dg.TableColumn("method", "string"),
                                       *(dg.TableColumn(c, "float") for c in columns)]))


def _policy_ece(report) -> dict[str, float]:
    """The candidate's held-out ECE with the confidences fusion reports (calibrated, when it has a
    calibration) and with raw ones, side by side; left out when the policy answered no item."""
    import math

    from charattr_core.evaluation import RAW_ECE
    from charattr_core.fusion import LEARNED_POLICY

    names = {"policy_ece": "ece", "policy_ece_raw": RAW_ECE if report.calibrated else "ece"}
    values = {key: report.metric(LEARNED_POLICY, metric=metric).value for key, metric in names.items()}
    return {key: round(v, 4) for key, v in values.items() if not math.isnan(v)}


POLICY_NOT_WORSE = "not_worse_than_current_and_simple_average"
REJECTED = "rejected"  # subfolder: the last candidate that the check refused, kept for inspection


def build_fusion_policy(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=FUSION_POLICY, group_name="learning", deps=[RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS, ATTRIBUTE_PROBES],
        code_version=code_version, kinds={"numpy", "safetensors"},
        check_specs=[dg.AssetCheckSpec(
            POLICY_NOT_WORSE, asset=FUSION_POLICY, blocking=True,
            description="The newly trained policy is published only if, on held-out images, its accuracy is not "
                        "significantly below (95% paired-bootstrap interval entirely under zero) simple averaging "
                        "and the policy published now; otherwise the current policy stays in use.")],
        description="A contextual bandit that chooses, per image and attribute, among the fusion strategies. "
                    "Trained on policy_train images (labels: confident tags hidden from the sources, or user "
                    "corrections) and evaluated on holdout images next to every fixed strategy and source.",
    )
    def fusion_policy(context: AssetExecutionContext, clip: ClipModelResource, warehouse: Warehouse,
                      settings: PipelineSettings) -> dg.MaterializeResult:
        from charattr_core.fusion import Thresholds
        from charattr_core.learning import plan_warm_start, policy_signature, train_and_judge_policy, training_state
        from charattr_core.policy_labels import load_labels

        clock = Stopwatch()
        unavailable = clip.unavailable_reason()
        if unavailable:
            return _skipped(f"CLIP is unavailable, so the policy has no visual source to choose: {unavailable}",
                            check=POLICY_NOT_WORSE)
        shards = _shards_with(context, warehouse, RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS)
        if not shards:
            return _skipped("No shard has tag_parses and clip_embeddings yet.", check=POLICY_NOT_WORSE)
        vocabulary, config, model_key = settings.load_vocabulary(), settings.pipeline_config(), clip.model_key()
        thresholds = Thresholds.from_config(config)
        probes = probes_in_use(warehouse, vocabulary, model_key)[0]
        user_labels = load_labels(settings.labels, vocabulary) if settings.labels else {}
        folder = warehouse.asset_dir(FUSION_POLICY)

        signature = policy_signature(model_key=model_key, probes=probes, thresholds=thresholds,
                                     labels=settings.labels, default_strategy=config.fusion_strategy)
        stamps = {k: _content_stamp(warehouse.path(TAG_PARSES, k), warehouse.path(CLIP_EMBEDDINGS, k)) for k in shards}
        state_file = folder / TRAINING_STATE
        current = policy_in_use(warehouse, vocabulary, model_key)[0]  # the published one, scored beside the candidate
        plan = plan_warm_start(json.loads(state_file.read_text()) if state_file.is_file() else None, signature,
                               stamps, has_current=current is not None)
        outcome = train_and_judge_policy(
            _warehouse_signals(warehouse, plan.new_parts, settings.stage_batch_size),
            _warehouse_signals(warehouse, shards, settings.stage_batch_size), vocabulary, model_key=model_key,
            scorer=lazy_zero_shot(clip, vocabulary), probes=probes, user_labels=user_labels, thresholds=thresholds,
            default_strategy=config.fusion_strategy, current=current, warm_start=plan.warm,
            n_bootstrap=settings.eval_bootstrap, max_eval_images=settings.max_eval_images)
        candidate, report, verdict = outcome.candidate, outcome.report, outcome.verdict

        def save(tmp: Path) -> None:
            candidate.save(tmp)
            (tmp / EVALUATION_MARKDOWN).write_text(report.to_markdown(), encoding="utf-8")
            report.to_csv(tmp / EVALUATION_CSV)
            if report.n_images:
                report.reliability_plot(tmp / RELIABILITY_PNG)
            if verdict.publish:
                (tmp / TRAINING_STATE).write_text(json.dumps(training_state(signature, stamps), indent=2))

        # Published: where fused_attributes loads it. Refused: beside it, for a person to look at.
        _save_atomically(save, folder if verdict.publish else folder / REJECTED)
        if verdict.publish:
            shutil.rmtree(folder / REJECTED, ignore_errors=True)
        else:
            context.log.warning(f"New fusion policy not published: {verdict.reason}")
        metadata: dict[str, Any] = {
            "version": candidate.version, "generation": candidate.generation, "skipped": False,
            "published": verdict.publish,
            "in_use": candidate.version if verdict.publish else current.version if current else "none (fixed strategy)",
            "warm_start": plan.warm, "shards": len(shards), "new_shards": len(plan.new_parts),
            "training_items": dg.MetadataValue.json(candidate.training_counts()),
            "holdout_images": report.n_images, "evaluation": dg.MetadataValue.md(report.to_markdown()),
            "path": dg.MetadataValue.path(str(folder / "policy.json")), "seconds": round(clock.seconds, 3),
        }
        metadata["calibration"] = candidate.calibration_state()
        if report.n_images:
            metadata["holdout_accuracy"] = _evaluation_table(report)
            metadata.update(_policy_ece(report))
            claim = report.policy_claim()
            if claim:
                metadata["policy_vs_best_fixed"] = claim
        check_metadata: dict[str, Any] = {"reason": verdict.reason, "candidate": candidate.version,
                                          "current": current.version if current is not None else "none"}
        if verdict.comparisons:
            check_metadata["comparison"] = dg.MetadataValue.table(records=[dg.TableRecord(r) for r in verdict.rows()])
        return dg.MaterializeResult(metadata=metadata, check_results=[dg.AssetCheckResult(
            check_name=POLICY_NOT_WORSE, passed=verdict.publish, metadata=check_metadata,
            description=verdict.reason)])

    return fusion_policy
