"""The asset graph, one module per stage group:

    ingest    raw_images
    signals   tag_parses, clip_embeddings
    learning  attribute_probes, fusion_policy (adapted: adapted_clip, an explicit step)
    product   fused_attributes, attribute_report

Each module exposes a `build_*` factory taking the asset's code version (computed from the
settings at load time, see `versions.py`). The asset modules do not use
`from __future__ import annotations`: Dagster reads the asset functions' annotations (context
type, resource types) at definition time, and string annotations would hide them.
"""

from __future__ import annotations

import warnings

import dagster as dg

from ..automation import with_automation
from ..versions import CodeVersions
from .adapted import build_adapted_clip
from .ingest import build_raw_images
from .learning import build_attribute_probes, build_fusion_policy
from .product import build_fused_attributes
from .report import build_attribute_report
from .signals import build_clip_embeddings, build_tag_parses


def build_assets(versions: CodeVersions, shards_per_run: int) -> list[dg.AssetsDefinition]:
    """Every asset, with its code version; partitioned stages batch up to `shards_per_run`
    shards into one run when backfilled."""
    with warnings.catch_warnings():
        # Range-run backfills are what make thousands of shards affordable; the parameter is beta-flagged.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return with_automation(_build(versions, dg.BackfillPolicy.multi_run(max_partitions_per_run=shards_per_run)))


def _build(versions: CodeVersions, per_shard: dg.BackfillPolicy) -> list[dg.AssetsDefinition]:
    return [
        build_raw_images(versions.raw_images, per_shard),
        build_tag_parses(versions.tag_parses, per_shard),
        build_clip_embeddings(versions.clip_embeddings, per_shard),
        build_attribute_probes(versions.attribute_probes),
        build_fusion_policy(versions.fusion_policy),
        build_fused_attributes(versions.fused_attributes, per_shard),
        build_attribute_report(versions.attribute_report),
        build_adapted_clip(),
    ]
