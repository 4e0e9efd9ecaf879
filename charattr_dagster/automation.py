"""Declarative automation: the unpartitioned assets follow their upstreams by themselves.

- attribute_report: `eager()` — rebuilt after any shard's fused_attributes (or the policy)
  updates, but only once no upstream is missing or in progress, so a burst of new shards gives
  one report at the end, not one per shard.
- attribute_probes, fusion_policy: retrained at most once an hour (a cron tick since the last
  run), only when an upstream got new data since the last run and none is being materialized
  right now: training reads every shard, so it must not run after each one.

fused_attributes is not automated: a new policy would otherwise re-fuse every shard at once;
the shard sensor fuses new shards with whatever probes and policy exist then.

The conditions run in the daemon (`dagster dev`) through `charattr_automation`, which is
running by default and evaluates every 30 s.
"""

from __future__ import annotations

from typing import Sequence

import dagster as dg

from .asset_keys import ATTRIBUTE_PROBES, ATTRIBUTE_REPORT, FUSION_POLICY

LEARNING_CRON = "0 * * * *"
AUTOMATION_SENSOR = "charattr_automation"


def report_condition() -> dg.AutomationCondition:
    return dg.AutomationCondition.eager()


def learning_condition(cron: str = LEARNING_CRON) -> dg.AutomationCondition:
    """A cron tick and an upstream update both since this asset was last requested, and nothing
    upstream (or this asset) in progress."""
    cond = dg.AutomationCondition
    return (cond.cron_tick_passed(cron).since_last_handled().with_label(f"cron tick ({cron}) since last run")
            & cond.any_deps_updated().since_last_handled().with_label("upstream data since last run")
            & ~cond.any_deps_in_progress() & ~cond.in_progress()).with_label("hourly, after new upstream data")


CONDITIONS = {ATTRIBUTE_REPORT: report_condition, ATTRIBUTE_PROBES: learning_condition,
              FUSION_POLICY: learning_condition}


def with_automation(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """`assets` with charattr's automation conditions attached."""
    result = []
    for asset in assets:
        name = asset.key.to_user_string()
        result.append(asset.with_attributes(automation_condition=CONDITIONS[name]()) if name in CONDITIONS else asset)
    return result


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR, target=dg.AssetSelection.assets(*CONDITIONS), minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Rebuilds attribute_report after new fused shards and retrains the probes and the fusion "
                    "policy at most hourly after new shard data.")
