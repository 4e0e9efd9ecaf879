"""`raw_images`: one row per image of a shard — content id, size, format, tags, ok/failed."""

import dataclasses

import dagster as dg
from dagster import AssetExecutionContext

from charattr_core.batching import batched
from charattr_core.records import ImageRecord, SourceItem
from charattr_core.sources.hashing import content_hash
from charattr_core.sources.validate import inspect_image
from charattr_core.stages import Codec, StageCounts, run_cached

from ..checks import FailureTally, failed_fraction_spec
from ..asset_keys import RAW_IMAGES
from ..metadata import StageLedger
from ..partitions import shards_partitions
from ..resources import STORE_RETRY_POLICY, PipelineSettings, ResultStoreResource, SourceResource
from ..tables import RAW_SCHEMA
from ..versions import raw_images_stage_version
from ..warehouse import Warehouse

# What validation learns about a content hash does not depend on where the bytes live, so it is
# cached by image_id; uri, shard and tags come from the item on every run.
_IMAGE_FACTS = Codec(
    encode=lambda r: ({"width": r.width, "height": r.height, "format": r.format}, None),
    decode=lambda image_id, payload, _blob: ImageRecord(image_id=image_id, source_uri="", shard="", **payload),
    is_failure=lambda r: not r.ok,
)


def inspect_cached(items: list[SourceItem], store, stage_version: str, max_pixels: int
                   ) -> tuple[list[ImageRecord], StageCounts]:
    """`inspect_image` for a batch, skipping the full decode of bytes already validated.

    Items without bytes or with a read error are always inspected (they fail, and failures are
    never cached)."""
    cacheable = [it for it in items if it.data is not None and not it.error]
    validated, counts = run_cached(cacheable, lambda it: content_hash(it.data),
                                   lambda batch: (inspect_image(it, max_pixels) for it in batch),
                                   _IMAGE_FACTS, store, RAW_IMAGES, stage_version)
    by_position = iter(validated)
    records = []
    for item in items:
        if item.data is not None and not item.error:
            facts = next(by_position)
            records.append(dataclasses.replace(facts, source_uri=item.uri, shard=item.shard, raw_tags=item.tags))
        else:
            records.append(inspect_image(item, max_pixels))
            counts.failed += 1
    return records, counts


def build_raw_images(code_version: str, backfill_policy: dg.BackfillPolicy) -> dg.AssetsDefinition:
    @dg.asset(
        name=RAW_IMAGES, group_name="ingest", partitions_def=shards_partitions, backfill_policy=backfill_policy,
        code_version=code_version, kinds={"python", "parquet"}, check_specs=[failed_fraction_spec(RAW_IMAGES)],
        retry_policy=STORE_RETRY_POLICY,
        description="One row per image of a shard: image_id (content hash), source uri, width, height, format, "
                    "raw tag string, status ok/failed and the reason. Images are referenced, never copied; "
                    "bytes already validated (same image_id) are not decoded again.",
    )
    def raw_images(context: AssetExecutionContext, source: SourceResource, results_store: ResultStoreResource,
                   warehouse: Warehouse, settings: PipelineSettings) -> dg.MaterializeResult:
        src, store = source.open(), results_store.open()
        version = raw_images_stage_version(settings.max_image_pixels)
        ledger, tally = StageLedger(RAW_IMAGES, warehouse), FailureTally()
        formats: dict[str, int] = {}
        for shard in context.partition_keys:
            counts = StageCounts()
            with warehouse.writer(RAW_IMAGES, shard, RAW_SCHEMA) as out:
                for items in batched(src.read(shard), settings.stage_batch_size):
                    records, batch_counts = inspect_cached(items, store, version, settings.max_image_pixels)
                    counts += batch_counts
                    for r in records:
                        tally.add(r)
                        if r.ok:
                            formats[r.format or "?"] = formats.get(r.format or "?", 0) + 1
                    out.write_rows([r.to_dict() for r in records])
            ledger.add(shard, counts, out.rows)
        metadata = ledger.metadata()
        metadata.update({"stage_version": version, "ok": tally.total - tally.failed,
                         "failed_fraction": round(tally.fraction, 4),
                         "formats": dg.MetadataValue.json(formats)})
        return dg.MaterializeResult(metadata=metadata, check_results=[tally.result(settings.max_failed_fraction)])

    return raw_images
