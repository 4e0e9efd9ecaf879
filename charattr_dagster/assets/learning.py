"""The stages that learn, over every shard: `attribute_probes` and `fusion_policy`.

Both are unpartitioned and read the partitioned signals back from the warehouse in streamed
batches (`tables.iter_signals`), never a whole table in memory. Which image may teach which
stage is decided by `charattr_core.splits` (by image_id hash): probes fit and calibrate on their
buckets, the policy trains on `policy_train`, and the evaluation scores `holdout` only.

Artefacts (safetensors + JSON, never pickle) live in the asset's warehouse folder, where
`fused_attributes` finds them. Without CLIP weights both stages have nothing to learn from; they
still materialize, with metadata saying they were skipped and why.

The policy learns online: its statistics are exact sums, so a run adds only the examples of
shards it has not seen (warm start); when a seen shard's signals, the probes, the CLIP model or
the thresholds changed, it retrains from scratch.
"""

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import dagster as dg
import xxhash
from dagster import AssetExecutionContext

from charattr_core.schema import Vocabulary

from ..artifacts import policy_in_use, probes_in_use
from ..asset_keys import ATTRIBUTE_PROBES, CLIP_EMBEDDINGS, FUSION_POLICY, RAW_IMAGES, TAG_PARSES
from ..metadata import Stopwatch
from ..partitions import SHARDS
from ..resources import ClipModelResource, PipelineSettings
from ..tables import iter_signals
from ..warehouse import Warehouse

EVALUATION_MARKDOWN = "evaluation.md"
EVALUATION_CSV = "evaluation.csv"
RELIABILITY_PNG = "reliability.png"
TRAINING_STATE = "training_state.json"


# ---- loading the artefacts (also used by fused_attributes) ----------------------------------------

def load_probes(warehouse: Warehouse, vocabulary: Vocabulary, model_key: str | None):
    """The trained probes for this CLIP model and vocabulary, or None (none trained, or trained for
    another model/vocabulary: those are ignored rather than misapplied)."""
    return probes_in_use(warehouse, vocabulary, model_key)[0]


def load_policy(warehouse: Warehouse, vocabulary: Vocabulary, model_key: str | None):
    """The published fusion policy for this CLIP model and vocabulary, or None."""
    return policy_in_use(warehouse, vocabulary, model_key)[0]


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
        from charattr_core.learning import probe_batches
        from charattr_core.probes import ProbeBatch, train_probes
        from charattr_core.splits import is_probe_train

        clock = Stopwatch()
        unavailable = clip.unavailable_reason()
        if unavailable:
            return _skipped(f"CLIP is unavailable, so there are no embeddings to train on: {unavailable}")
        shards = _shards_with(context, warehouse, RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS)
        if not shards:
            return _skipped("No shard has tag_parses and clip_embeddings yet.")
        vocabulary, config, model_key = settings.load_vocabulary(), settings.pipeline_config(), clip.model_key()

        def make_batches() -> Iterator[ProbeBatch]:
            return probe_batches((batch for shard in shards for batch in
                                  iter_signals(warehouse, shard, keep=is_probe_train, batch_size=settings.batch_size)),
                                 is_probe_train)

        probes = train_probes(make_batches, vocabulary, model_key, accept=config.confidence_threshold)
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


def _examples(warehouse: Warehouse, shards: Sequence[str], split: str, vocabulary: Vocabulary, scorer, probes,
              user_labels: dict, accept: float, batch_size: int, limit: int | None = None) -> Iterator:
    """Labelled examples of one split, streamed over the shards (`learning.iter_examples`)."""
    from charattr_core.learning import iter_examples
    from charattr_core.splits import split_of

    batches = (batch for shard in shards
               for batch in iter_signals(warehouse, shard, keep=lambda i: split_of(i) == split, batch_size=batch_size))
    return itertools.islice(iter_examples(batches, split, vocabulary, scorer, probes, user_labels, accept), limit)


def _evaluation_table(report) -> dg.TableMetadataValue:
    """Held-out accuracy per method (sources, fixed strategies, learned policy) and attribute."""
    from charattr_core.evaluation import OVERALL

    columns = [OVERALL, *report.attributes]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"method": m, **{c: round(report.metric(m, c).value, 4) for c in columns}})
                 for m in report.methods],
        schema=dg.TableSchema(columns=[dg.TableColumn("method", "string"),
                                       *(dg.TableColumn(c, "float") for c in columns)]))


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
        from charattr_core.evaluation import evaluate
        from charattr_core.fusion import Thresholds
        from charattr_core.policy import train_policy
        from charattr_core.policy_gate import CURRENT_POLICY, judge_candidate
        from charattr_core.policy_labels import load_labels

        from .product import lazy_zero_shot

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
        probes = load_probes(warehouse, vocabulary, model_key)
        scorer = lazy_zero_shot(clip, vocabulary)
        user_labels = load_labels(settings.labels_path, vocabulary) if settings.labels_path else {}
        folder = warehouse.asset_dir(FUSION_POLICY)

        # Online learning: keep the saved statistics when everything they were learnt from still holds.
        signature = {"model": model_key, "probes": probes.probes_version if probes else None,
                     "thresholds": [thresholds.accept, thresholds.low], "labels": settings.labels_path,
                     "default_strategy": config.fusion_strategy}
        stamps = {k: _content_stamp(warehouse.path(TAG_PARSES, k), warehouse.path(CLIP_EMBEDDINGS, k)) for k in shards}
        state_file = folder / TRAINING_STATE
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        current = load_policy(warehouse, vocabulary, model_key)  # the published one, scored beside the candidate
        seen = state.get("shards", {})
        warm = (current is not None and state.get("signature") == signature
                and all(stamps.get(k) == v for k, v in seen.items()))
        new_shards = [k for k in shards if k not in seen] if warm else shards
        candidate = train_policy(  # warm start from a second copy: training updates it in place
            _examples(warehouse, new_shards, "policy_train", vocabulary, scorer, probes, user_labels,
                      thresholds.accept, settings.batch_size),
            vocabulary, previous=load_policy(warehouse, vocabulary, model_key) if warm else None, thresholds=thresholds,
            default_strategy=config.fusion_strategy, model_key=model_key)

        report = evaluate(_examples(warehouse, shards, "holdout", vocabulary, scorer, probes, user_labels,
                                    thresholds.accept, settings.batch_size, limit=settings.max_eval_images),
                          vocabulary, policy=candidate, thresholds=thresholds, n_bootstrap=settings.eval_bootstrap,
                          choosers={CURRENT_POLICY: current} if current is not None else None)
        verdict = judge_candidate(report, has_current=current is not None)

        def save(tmp: Path) -> None:
            candidate.save(tmp)
            (tmp / EVALUATION_MARKDOWN).write_text(report.to_markdown(), encoding="utf-8")
            report.to_csv(tmp / EVALUATION_CSV)
            if report.n_images:
                report.reliability_plot(tmp / RELIABILITY_PNG)
            if verdict.publish:
                (tmp / TRAINING_STATE).write_text(json.dumps({"signature": signature, "shards": stamps}, indent=2))

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
            "warm_start": warm, "shards": len(shards), "new_shards": len(new_shards),
            "training_items": dg.MetadataValue.json(candidate.training_counts()),
            "holdout_images": report.n_images, "evaluation": dg.MetadataValue.md(report.to_markdown()),
            "path": dg.MetadataValue.path(str(folder / "policy.json")), "seconds": round(clock.seconds, 3),
        }
        if report.n_images:
            metadata["holdout_accuracy"] = _evaluation_table(report)
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
