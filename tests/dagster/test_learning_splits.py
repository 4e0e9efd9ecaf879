"""On the Dagster path, no image that taught a stage is ever used to evaluate it: the ids that
reach probe training, policy training and the held-out evaluation are recorded as the
`train_fusion` job runs, and the three sets must be disjoint and non-empty."""

from __future__ import annotations

from pathlib import Path

import pytest

import charattr_core.learning as learning
from charattr_core.policy import FusionPolicy
from charattr_core.synthetic import write_demo_dataset
from charattr_dagster.definitions import build_definitions

from dagster_testing import make_settings, register, run_job

N_IMAGES = 48  # ~10 images per policy split: enough for every set to be non-empty


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("splits") / "sample"
    write_demo_dataset(out, n_images=N_IMAGES, n_shards=2, size=48, seed=3)
    return out


def test_training_and_held_out_image_ids_never_overlap(source, tmp_path, instance, monkeypatch):
    seen: dict[str, set[str]] = {"probes": set(), "policy": set(), "evaluation": set()}

    real_train_probes = learning.train_probes

    def train_probes(make_batches, *args, **kwargs):
        def recorded():
            for batch in make_batches():
                seen["probes"].update(batch.image_ids)
                yield batch
        return real_train_probes(recorded, *args, **kwargs)

    real_update = FusionPolicy.update

    def update(self, examples):
        def recorded():
            for example in examples:
                seen["policy"].add(example.image_id)
                yield example
        return real_update(self, recorded())

    real_evaluate = learning.evaluate

    def evaluate(examples, *args, **kwargs):
        def recorded():
            for example in examples:
                seen["evaluation"].add(example.image_id)
                yield example
        return real_evaluate(recorded(), *args, **kwargs)

    monkeypatch.setattr(learning, "train_probes", train_probes)
    monkeypatch.setattr(FusionPolicy, "update", update)
    monkeypatch.setattr(learning, "evaluate", evaluate)

    defs = build_definitions(make_settings(source, tmp_path))
    shards = ["shard_000", "shard_001"]
    register(instance, shards)
    run_job(defs, instance, "ingest_shards", shards)
    run_job(defs, instance, "train_fusion")

    assert all(seen.values()), {k: len(v) for k, v in seen.items()}
    assert not seen["evaluation"] & seen["policy"], "the policy was evaluated on images it was trained on"
    assert not seen["evaluation"] & seen["probes"], "the evaluation scored images the probes were trained on"
    assert not seen["policy"] & seen["probes"], "the policy learnt from images the probes were fitted on"
