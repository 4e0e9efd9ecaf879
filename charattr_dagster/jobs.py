"""Asset jobs: the partitioned stages per shard range, the learning stages, the report.

`charattr run` executes them in order (ingest -> train -> fuse -> report); the shard sensor and
the backfill schedule launch `process_shards` (every partitioned stage, fusing with whatever
probes and policy exist at that moment).

Every step without a retry policy of its own (the learning stages, the report) gets
`STEP_RETRY_POLICY`: on a cluster a step can fail for reasons outside it (a worker's machine
going away between two Celery deliveries, a lost connection), and a retry resumes from what
was stored. Which executor runs the steps is decided by `executors.py`.
"""

from __future__ import annotations

import dagster as dg

from .asset_keys import (ATTRIBUTE_PROBES, ATTRIBUTE_REPORT, CLIP_EMBEDDINGS, FUSED_ATTRIBUTES, FUSION_POLICY,
                         PARTITIONED_ASSETS, RAW_IMAGES, TAG_PARSES)

STEP_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

process_shards_job = dg.define_asset_job(
    "process_shards", selection=dg.AssetSelection.assets(*PARTITIONED_ASSETS),
    description="Every partitioned stage for a range of shards: read, parse tags, embed, fuse.",
    op_retry_policy=STEP_RETRY_POLICY)
ingest_shards_job = dg.define_asset_job(
    "ingest_shards", selection=dg.AssetSelection.assets(RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS),
    description="The per-shard signals: read, parse tags, embed.",
    op_retry_policy=STEP_RETRY_POLICY)
train_job = dg.define_asset_job(
    "train_fusion", selection=dg.AssetSelection.assets(ATTRIBUTE_PROBES, FUSION_POLICY),
    description="Train the attribute probes and the fusion policy on every shard's signals.",
    op_retry_policy=STEP_RETRY_POLICY)
fuse_shards_job = dg.define_asset_job(
    "fuse_shards", selection=dg.AssetSelection.assets(FUSED_ATTRIBUTES),
    description="Fuse the signals of a range of shards with the current probes and policy.",
    op_retry_policy=STEP_RETRY_POLICY)
report_job = dg.define_asset_job(
    "report", selection=dg.AssetSelection.assets(ATTRIBUTE_REPORT),
    description="Distributions, coverage, agreement and accuracy as plots and an HTML report.",
    op_retry_policy=STEP_RETRY_POLICY)

adapt_clip_job = dg.define_asset_job(
    "adapt_clip", selection=dg.AssetSelection.assets("adapted_clip"),
    description="Adapt CLIP to the collection from its tags (train-clip); not part of `charattr run`.")

ALL_JOBS = (process_shards_job, ingest_shards_job, train_job, fuse_shards_job, report_job, adapt_clip_job)
