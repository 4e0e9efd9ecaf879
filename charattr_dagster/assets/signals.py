"""The per-shard signals: `tag_parses` (Danbooru tags) and `clip_embeddings` (image embeddings).

Both read `raw_images` of the same shard in streamed batches, run the core stage through the
cache-aware `run_cached` (one store lookup and one write transaction per batch), and write one
row per usable image, in `raw_images` order.
"""

from collections import Counter
from typing import Iterator

import dagster as dg
from dagster import AssetExecutionContext

from charattr_core.records import ImageRecord
from charattr_core.stages import (EMBEDDING_CODEC, STAGE_CLIP, STAGE_TAGS, TAG_PARSE_CODEC, StageCounts, ok_records,
                                  run_cached)

from ..checks import EmbeddingTally, EstimateTally, embedding_specs, estimate_specs, model_available_result
from ..asset_keys import CLIP_EMBEDDINGS, RAW_IMAGES, TAG_PARSES
from ..metadata import StageLedger
from ..partitions import shards_partitions
from ..resources import STORE_RETRY_POLICY, ClipModelResource, PipelineSettings, ResultStoreResource, SourceResource
from ..tables import CLIP_SCHEMA, clip_row, tag_parse_row, tag_parse_schema
from ..warehouse import Warehouse


def raw_batches(warehouse: Warehouse, shard: str, batch_size: int) -> Iterator[list[ImageRecord]]:
    """The usable images of a shard's `raw_images`, batch by batch."""
    if not warehouse.has(RAW_IMAGES, shard):
        raise dg.Failure(f"raw_images has no data for shard {shard!r}; materialize raw_images for it first.",
                         allow_retries=False)
    for batch in warehouse.iter_batches(RAW_IMAGES, [shard], batch_size=batch_size):
        records = ok_records(ImageRecord.from_dict(row) for row in batch.to_pylist())
        if records:
            yield records


def build_tag_parses(code_version: str, backfill_policy: dg.BackfillPolicy) -> dg.AssetsDefinition:
    @dg.asset(
        name=TAG_PARSES, group_name="signals", deps=[RAW_IMAGES], partitions_def=shards_partitions,
        backfill_policy=backfill_policy, code_version=code_version, kinds={"python", "parquet"},
        check_specs=estimate_specs(TAG_PARSES), retry_policy=STORE_RETRY_POLICY,
        description="Per image and attribute: what the Danbooru tags say — value(s), confidence and the tags "
                    "that gave the evidence — plus the tag and character counts. Posts with several characters "
                    "get lower confidence.",
    )
    def tag_parses(context: AssetExecutionContext, results_store: ResultStoreResource, warehouse: Warehouse,
                   settings: PipelineSettings) -> dg.MaterializeResult:
        from charattr_core.tags import TagParser, parse_tags, tags_stage_version

        vocabulary = settings.load_vocabulary()
        parser, version, store = TagParser(vocabulary), tags_stage_version(vocabulary), results_store.open()
        ledger, tally = StageLedger(TAG_PARSES, warehouse), EstimateTally(vocabulary)
        schema = tag_parse_schema(vocabulary)
        for shard in context.partition_keys:
            counts = StageCounts()
            with warehouse.writer(TAG_PARSES, shard, schema) as out:
                for records in raw_batches(warehouse, shard, settings.stage_batch_size):
                    parses, batch_counts = run_cached(records, lambda r: r.image_id, lambda rs: parse_tags(rs, parser),
                                                      TAG_PARSE_CODEC, store, STAGE_TAGS, version,
                                                      tags_digest=lambda r: r.tags_digest)
                    counts += batch_counts
                    for p in parses:
                        tally.add(p.image_id, p.estimates)
                    out.write_rows([tag_parse_row(p) for p in parses])
            ledger.add(shard, counts, out.rows)
        metadata = ledger.metadata()
        metadata.update({"stage_version": version, "value_distribution": tally.distribution()})
        return dg.MaterializeResult(metadata=metadata, check_results=tally.results())

    return tag_parses


def build_clip_embeddings(code_version: str, backfill_policy: dg.BackfillPolicy) -> dg.AssetsDefinition:
    @dg.asset(
        name=CLIP_EMBEDDINGS, group_name="signals", deps=[RAW_IMAGES], partitions_def=shards_partitions,
        backfill_policy=backfill_policy, code_version=code_version, kinds={"pytorch", "parquet"}, pool="gpu",
        check_specs=embedding_specs(CLIP_EMBEDDINGS), retry_policy=STORE_RETRY_POLICY,
        description="Per image: the L2-normalised CLIP image embedding (float16) and the model key. Zero-shot "
                    "scores are computed later from these and cached text embeddings. When the weights are not "
                    "available offline, the partition is written empty and the model_available check warns.",
    )
    def clip_embeddings(context: AssetExecutionContext, clip: ClipModelResource, source: SourceResource,
                        results_store: ResultStoreResource, warehouse: Warehouse,
                        settings: PipelineSettings) -> dg.MaterializeResult:
        ledger, tally = StageLedger(CLIP_EMBEDDINGS, warehouse), EmbeddingTally()
        unavailable = clip.unavailable_reason()
        if unavailable is not None:
            (context.log.info if not clip.use_clip else context.log.warning)(f"CLIP not used: {unavailable}")
            for shard in context.partition_keys:
                with warehouse.writer(CLIP_EMBEDDINGS, shard, CLIP_SCHEMA):
                    pass  # an empty partition: fused_attributes continues with the remaining signals
                ledger.add(shard, StageCounts(), 0)
            metadata = ledger.metadata()
            metadata.update({"clip_available": False, "clip_unavailable_reason": unavailable,
                             "model": f"{clip.model_name}/{clip.pretrained}"})
            return dg.MaterializeResult(metadata=metadata, check_results=[
                tally.result(), model_available_result(unavailable, f"{clip.model_name}/{clip.pretrained}",
                                                       switched_off=not clip.use_clip)])

        from charattr_core.clip import embed_images, verified_loader  # here: a run without CLIP never imports torch
        from charattr_core.clip_version import clip_stage_version

        model_key = clip.model_key()
        version, store, src = clip_stage_version(model_key), results_store.open(), source.open()

        def embed(records: list[ImageRecord]):
            # Re-read by path: the bytes must still hash to the image_id that raw_images gave them.
            return embed_images(records, clip.get(), verified_loader(lambda r: src.load_bytes(r.source_uri)),
                                batch_size=clip.clip_batch_size, num_workers=clip.num_workers)

        errors: Counter[str] = Counter()  # failure reasons, without the per-image detail in parentheses
        for shard in context.partition_keys:
            counts = StageCounts()
            with warehouse.writer(CLIP_EMBEDDINGS, shard, CLIP_SCHEMA) as out:
                for records in raw_batches(warehouse, shard, settings.stage_batch_size):
                    embeddings, batch_counts = run_cached(records, lambda r: r.image_id, embed, EMBEDDING_CODEC,
                                                          store, STAGE_CLIP, version)
                    counts += batch_counts
                    for e in embeddings:
                        tally.add(e.image_id, e.embedding)
                        if e.error:
                            errors[e.error.split(" (")[0]] += 1
                    out.write_rows([clip_row(e) for e in embeddings])
            ledger.add(shard, counts, out.rows)
        metadata = ledger.metadata()
        metadata.update({"clip_available": True, "model": model_key, "stage_version": version,
                         "embedding_dim": next(iter(tally.dims), 0), "errors": dg.MetadataValue.json(dict(errors))})
        return dg.MaterializeResult(metadata=metadata,
                                    check_results=[tally.result(), model_available_result(None, model_key)])

    return clip_embeddings
