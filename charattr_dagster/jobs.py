"""Asset jobs: the partitioned stages per shard range, the learning stages, the report.

`charattr run` executes them in order (ingest -> train -> fuse -> report); the shard sensor and
the backfill schedule launch `process_shards` (every partitioned stage, fusing with whatever
probes and policy exist at that moment).
"""

from __future__ import annotations

import dagster as dg

from .asset_keys import (ATTRIBUTE_PROBES, ATTRIBUTE_REPORT, CLIP_EMBEDDINGS, FUSED_ATTRIBUTES, FUSION_POLICY,
                         PARTITIONED_ASSETS, RAW_IMAGES, TAG_PARSES)

process_shards_job = dg.define_asset_job(
    "process_shards", selection=dg.AssetSelection.assets(*PARTITIONED_ASSETS),
    description="Every partitioned stage for a range of shards: read, parse tags, embed, fuse.")
ingest_shards_job = dg.define_asset_job(
    "ingest_shards", selection=dg.AssetSelection.assets(RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS),
    description="The per-shard signals: read, parse tags, embed.")
train_job = dg.define_asset_job(
    "train_fusion", selection=dg.AssetSelection.assets(ATTRIBUTE_PROBES, FUSION_POLICY),
    description="Train the attribute probes and the fusion policy on every shard's signals.")
fuse_shards_job = dg.define_asset_job(
    "fuse_shards", selection=dg.AssetSelection.assets(FUSED_ATTRIBUTES),
    description="Fuse the signals of a range of shards with the current probes and policy.")
report_job = dg.define_asset_job(
    "report", selection=dg.AssetSelection.assets(ATTRIBUTE_REPORT),
    description="Distributions, coverage, agreement and accuracy as plots and an HTML report.")

adapt_clip_job = dg.define_asset_job(
    "adapt_clip", selection=dg.AssetSelection.assets("adapted_clip"),
    description="Adapt CLIP to the collection from its tags (train-clip); not part of `charattr run`.")

ALL_JOBS = (process_shards_job, ingest_shards_job, train_job, fuse_shards_job, report_job, adapt_clip_job)
