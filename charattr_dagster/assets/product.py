"""`fused_attributes`: the product — one row per image, one column per attribute with its
confidence, the overall confidence, the strategy and the versions that produced it.

Per shard it streams `raw_images` joined with `tag_parses` and `clip_embeddings` (see
`tables.iter_signals`), fuses each batch with `stages.fuse_batch` through the cache, writes the
flat rows to Parquet and upserts them into the results database (`store.put_fused`). Probes and
the learned policy are used when their assets have produced them; without them (or without
CLIP) fusion runs on the signals that remain.
"""

from collections import Counter
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from charattr_core.records import FusedAttributes
from charattr_core.stages import (STAGE_FUSED, Codec, StageCounts, fuse_batch, fused_code_version, fused_stage_version,
                                  fused_versions, run_cached, tags_key)

from ..artifacts import signals_in_use
from ..checks import EstimateTally, estimate_specs
from ..asset_keys import (ATTRIBUTE_PROBES, CLIP_EMBEDDINGS, FUSED_ATTRIBUTES, FUSION_POLICY, RAW_IMAGES,
                          TAG_PARSES)
from ..lineage import lineage_tags
from ..metadata import StageLedger
from ..partitions import shards_partitions
from ..resources import STORE_RETRY_POLICY, ClipModelResource, PipelineSettings, ResultStoreResource, SourceResource
from ..tables import iter_signals
from ..warehouse import Warehouse
from .zero_shot import lazy_zero_shot

FUSED_CODEC: Codec[FusedAttributes] = Codec(
    encode=lambda f: (f.to_record(), None), decode=lambda _i, payload, _b: FusedAttributes.from_record(payload))


def require_inputs(warehouse: Warehouse, shard: str, with_embeddings: bool) -> None:
    """Fusing a shard without its signals would silently drop a source; say what is missing instead
    (typically a stage that a failed blocking check stopped)."""
    needed = [RAW_IMAGES, TAG_PARSES] + ([CLIP_EMBEDDINGS] if with_embeddings else [])
    missing = [asset for asset in needed if not warehouse.has(asset, shard)]
    if missing:
        raise dg.Failure(f"Shard {shard!r} has no {' or '.join(missing)} data yet (not materialized, or stopped by a "
                         "failed blocking check); materialize them for this shard first.", allow_retries=False)


def remove_vanished(store, warehouse: Warehouse, shard: str, before: set[str], namespace: str) -> int:
    """Product rows of images that were in the shard's previous output and are gone now (deleted
    from the source), unless another shard still holds the same bytes; returns how many."""
    gone = before - image_ids(warehouse, [shard])
    if gone:  # rare: only then read the other shards' ids
        gone -= image_ids(warehouse, [k for k in warehouse.partitions(FUSED_ATTRIBUTES) if k != shard])
    return store.delete_fused(gone, source_namespace=namespace) if gone else 0


def image_ids(warehouse: Warehouse, shards: list[str]) -> set[str]:
    """The image ids in the shards' fused_attributes files (one column, streamed)."""
    found: set[str] = set()
    for batch in warehouse.iter_batches(FUSED_ATTRIBUTES, shards, columns=["image_id"]):
        found.update(batch.column(0).to_pylist())
    return found


NO_EMBEDDING_NOTE = "clip embedding missing: clip_embeddings failed for this image (see its error column)"


def fused_key(record) -> tuple[str, str]:
    """The identity of a fused row: the image and its tags (`stages.tags_key`)."""
    return record.image_id, tags_key(record.tags_digest)


def _store_row(fused: FusedAttributes, tags: str) -> dict[str, Any]:
    return {"image_id": fused.image_id, "tags_digest": tags, "source_uri": fused.source_uri,
            "confidence": fused.confidence, "strategy": fused.strategy, "payload": fused.to_record()}


def build_fused_attributes(code_version: str, backfill_policy: dg.BackfillPolicy) -> dg.AssetsDefinition:
    @dg.asset(
        name=FUSED_ATTRIBUTES, group_name="product",
        deps=[RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS, ATTRIBUTE_PROBES, FUSION_POLICY],
        partitions_def=shards_partitions, backfill_policy=backfill_policy, code_version=code_version,
        kinds={"python", "parquet", "sql"}, check_specs=estimate_specs(FUSED_ATTRIBUTES),
        retry_policy=STORE_RETRY_POLICY,
        description="The product: one row per image with every attribute, its confidence and evidence, the "
                    "overall confidence, the strategy (or learned policy) that decided and the versions that "
                    "produced it. Written to Parquet and to the results database.",
    )
    def fused_attributes(context: AssetExecutionContext, clip: ClipModelResource,
                         results_store: ResultStoreResource, warehouse: Warehouse,
                         settings: PipelineSettings, source: SourceResource) -> dg.MaterializeResult:
        from charattr_core.fusion import Thresholds
        from charattr_core.writers import fused_arrow_schema

        config = settings.pipeline_config()
        vocabulary, thresholds = settings.load_vocabulary(), Thresholds.from_config(config)
        store = results_store.open()
        namespace = source.namespace()  # this source's rows in the product table (one source, one namespace)
        unavailable = clip.unavailable_reason()
        model_key = None if unavailable else clip.model_key()
        probes, policy, signals = signals_in_use(warehouse, vocabulary, model_key, unavailable,
                                                 settings.use_learned_policy, config.fusion_strategy)
        versions = fused_versions(vocabulary, model_key, probes, policy, config.fusion_strategy, thresholds)
        version = fused_stage_version(versions)
        notes = ((f"clip unavailable: {unavailable}",) if unavailable else ()) + signals.notes()
        scorer = None if unavailable else lazy_zero_shot(clip, vocabulary)

        ledger, tally = StageLedger(FUSED_ATTRIBUTES, warehouse, context), EstimateTally(vocabulary)
        missing = {"tag_parses": 0, "clip_embeddings": 0}
        schema = fused_arrow_schema(vocabulary)
        database_rows = 0
        for shard in context.partition_keys:
            require_inputs(warehouse, shard, with_embeddings=unavailable is None)
            before = image_ids(warehouse, [shard])
            counts, shard_tally, shard_strategies = StageCounts(), EstimateTally(vocabulary), Counter()
            with warehouse.writer(FUSED_ATTRIBUTES, shard, schema) as out:
                for batch in iter_signals(warehouse, shard, with_embeddings=unavailable is None,
                                          batch_size=settings.stage_batch_size):
                    records = [s.record for s in batch]
                    parses = {s.record.source_uri: s.tag_parse for s in batch if s.tag_parse is not None}
                    embeddings = {s.record.image_id: s.embedding for s in batch if s.embedding is not None}
                    missing["tag_parses"] += len(batch) - len(parses)
                    missing["clip_embeddings"] += len(batch) - len(embeddings)

                    fresh: set[tuple[str, str]] = set()  # keys fused now (new images, or other tags)

                    def compute(rs, extra_notes=()):
                        fresh.update(fused_key(r) for r in rs)
                        return fuse_batch(rs, parses, embeddings, vocabulary=vocabulary, zero_shot_scorer=scorer,
                                          probes=probes, policy=policy, strategy=config.fusion_strategy,
                                          thresholds=thresholds, versions=versions, notes=notes + extra_notes)

                    # An image whose embedding failed (unreadable, or changed since it was ingested) is
                    # fused without CLIP, never cached under versions that say CLIP, and kept out of
                    # the product table; its Parquet row says why.
                    complete = [i for i, r in enumerate(records) if unavailable or r.image_id in embeddings]
                    incomplete = [i for i, r in enumerate(records) if not (unavailable or r.image_id in embeddings)]
                    fused: list[FusedAttributes | None] = [None] * len(records)
                    done, batch_counts = run_cached([records[i] for i in complete], lambda r: r.image_id, compute,
                                                    FUSED_CODEC, store, STAGE_FUSED, version,
                                                    tags_digest=lambda r: r.tags_digest)
                    counts += batch_counts
                    for i, f in zip(complete, done):
                        fused[i] = f
                    if incomplete:
                        for i, f in zip(incomplete, compute([records[i] for i in incomplete], (NO_EMBEDDING_NOTE,))):
                            fused[i] = f
                        counts.computed += len(incomplete)
                    rows = []
                    for record, f in zip(records, fused):
                        assert f is not None
                        f.source_uri = record.source_uri  # the same bytes may live at several paths
                        tally.add(f.image_id, f.attributes, f.confidence)
                        shard_tally.add(f.image_id, f.attributes, f.confidence)
                        shard_strategies[f.strategy] += 1
                        rows.append(f.to_flat())
                    out.write_rows(rows)
                    # The product table gets what it lacks: rows fused now, and cached rows missing
                    # after a crash between the two writes. A re-run then writes nothing. One row per
                    # image and tags: the same picture under other tags is another answer.
                    keys = {i: fused_key(records[i]) for i in complete}
                    cached = [k for k in keys.values() if k not in fresh]
                    present = store.fused_keys(version, cached, source_namespace=namespace) if cached else set()
                    needed = {k: _store_row(fused[i], k[1]) for i, k in keys.items() if k in fresh or k not in present}
                    if needed:
                        database_rows += store.put_fused(version, list(needed.values()), source_namespace=namespace)
            removed = remove_vanished(store, warehouse, shard, before, namespace)
            ledger.add(shard, counts, out.rows, value_distribution=shard_tally.distribution(),
                       strategies=dg.MetadataValue.json(dict(shard_strategies)), images_removed=removed)
        metadata = ledger.metadata()
        metadata.update({
            "stage_version": version, "code_version": fused_code_version(versions),
            "versions": dg.MetadataValue.json(versions),
            "clip_used": unavailable is None, "probes_used": probes is not None, "policy_used": policy is not None,
            "confidences_calibrated": policy is not None and policy.calibration is not None,
            "signals": dg.MetadataValue.json(signals.describe()),
            "images_without": dg.MetadataValue.json(missing), "database": results_store.redacted_url(),
            "source_namespace": namespace,
            "database_rows_written": database_rows,
        })
        if unavailable:
            metadata["clip_unavailable_reason"] = unavailable
        return dg.MaterializeResult(metadata=metadata, check_results=tally.results(),
                                    tags=lineage_tags(context, [RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS]))

    return fused_attributes
