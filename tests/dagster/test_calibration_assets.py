"""Calibrated confidence on the Dagster path (issue 14): `fused_attributes` maps confidences with
the calibration the published policy carries, says so in its metadata, and never serves rows
fused under another calibration from the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from charattr_core.calibration import POOLED, RAW_CONFIDENCE, ConfidenceCalibration
from charattr_core.fusion import LEARNED_POLICY
from charattr_core.policy import FusionPolicy
from charattr_core.schema import load_vocabulary
from charattr_dagster.asset_keys import FUSED_ATTRIBUTES, FUSION_POLICY
from charattr_dagster.definitions import build_definitions
from charattr_dagster.warehouse import Warehouse

from dagster_testing import SHARD_KEYS, make_settings, materialization, register, run_job

HALVED = (np.array([0.0, 1.0]), np.array([0.0, 0.5]))  # every confidence halved


def _rows(settings) -> list[dict]:
    return list(Warehouse(root=settings.warehouse).iter_rows(FUSED_ATTRIBUTES, list(SHARD_KEYS)))


def test_fused_attributes_applies_the_published_policys_calibration(demo_source, tmp_path, instance):
    settings = make_settings(demo_source, tmp_path, use_clip=False)
    defs = build_definitions(settings)
    register(instance)
    run_job(defs, instance, "ingest_shards", list(SHARD_KEYS))
    vocabulary = load_vocabulary()
    folder = Warehouse(root=settings.warehouse).asset_dir(FUSION_POLICY)

    # A policy for runs without CLIP that takes the tags; published first without, then with a calibration.
    FusionPolicy(vocabulary, default_strategy="tags_only", model_key=None).save(folder)
    raw = materialization(run_job(defs, instance, "fuse_shards", list(SHARD_KEYS)), FUSED_ATTRIBUTES)
    assert raw["policy_used"] is True and raw["confidences_calibrated"] is False
    assert raw["signals"]["calibration"].startswith("uncalibrated")
    raw_rows = {r["image_id"]: r for r in _rows(settings)}

    calibrated_policy = FusionPolicy(vocabulary, default_strategy="tags_only", model_key=None)
    calibrated_policy.calibration = ConfidenceCalibration({(LEARNED_POLICY, POOLED): HALVED})
    calibrated_policy.save(folder)
    calibrated = materialization(run_job(defs, instance, "fuse_shards", list(SHARD_KEYS)), FUSED_ATTRIBUTES)
    assert calibrated["confidences_calibrated"] is True
    assert calibrated["signals"]["calibration"].startswith("calibrated: isotonic maps of learned_policy")
    assert calibrated["stage_version"] != raw["stage_version"]  # no cached row of the raw policy is reused
    assert calibrated["versions"]["fusion_policy"].endswith(calibrated_policy.fingerprint)

    answered = 0
    for row in _rows(settings):
        before = raw_rows[row["image_id"]]
        evidence = json.loads(row["evidence"])
        for attribute in vocabulary.keys:
            assert row[attribute] == before[attribute]  # the same answers
            if before[attribute] != ["unknown"]:
                answered += 1
                assert row[f"{attribute}_confidence"] == pytest.approx(before[f"{attribute}_confidence"] / 2, abs=1e-4)
                assert f"{RAW_CONFIDENCE}:{before[f'{attribute}_confidence']:.4f}" in evidence[attribute]
    assert answered > 0
