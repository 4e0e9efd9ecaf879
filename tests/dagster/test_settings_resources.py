"""The Dagster resources are built from the one settings model: same names, same defaults, the
values of the `Settings` the definitions were built from; thresholds are in the code versions."""

from __future__ import annotations

import pytest

from charattr_core.settings import Settings
from charattr_dagster.definitions import build_resources
from charattr_dagster.resources import ClipModelResource, PipelineSettings
from charattr_dagster.versions import code_versions


@pytest.mark.parametrize("resource", [ClipModelResource, PipelineSettings])
def test_resource_fields_are_settings_with_the_models_defaults(resource):
    for name, field in resource.model_fields.items():
        assert name in Settings.model_fields, f"{resource.__name__}.{name} is not a setting"
        assert field.default == Settings.model_fields[name].default, name


def test_resources_carry_the_values_of_the_settings(settings):
    changed = settings.replace(confidence_threshold=0.7, low_confidence_threshold=0.2, stage_batch_size=16,
                               clip_batch_size=4, num_workers=0, use_learned_policy=False, precision="fp32")
    resources = build_resources(changed)
    stages, clip = resources["settings"], resources["clip"]
    assert (stages.confidence_threshold, stages.low_confidence_threshold) == (0.7, 0.2)
    assert (stages.stage_batch_size, stages.use_learned_policy) == (16, False)
    assert (clip.clip_batch_size, clip.num_workers, clip.precision) == (4, 0, "fp32")
    assert stages.pipeline_config().confidence_threshold == 0.7
    assert resources["warehouse"].root == changed.warehouse and resources["source"].path == changed.source


def test_thresholds_are_in_the_code_versions_of_the_assets_they_decide(settings):
    base = code_versions(settings)
    for changes in ({"confidence_threshold": 0.7}, {"low_confidence_threshold": 0.2}):
        other = code_versions(settings.replace(**changes))
        for asset in ("attribute_probes", "fusion_policy", "fused_attributes", "attribute_report"):
            assert getattr(other, asset) != getattr(base, asset), (changes, asset)
        for asset in ("raw_images", "tag_parses", "clip_embeddings"):
            assert getattr(other, asset) == getattr(base, asset), (changes, asset)
    without_policy = code_versions(settings.replace(use_learned_policy=False))
    assert without_policy.fused_attributes != base.fused_attributes
