"""The learning assets on the Dagster path: no image that taught a stage is ever used to evaluate
it, and `attribute_probes` / `fusion_policy` do what `charattr eval` does (the same core
functions), so the two evaluations of one source have the same shape."""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import pytest

import charattr_core.learning as learning
from charattr_core.cli import main
from charattr_core.policy import FusionPolicy
from charattr_core.schema import load_vocabulary
from charattr_core.synthetic import load_ground_truth, write_demo_dataset
from charattr_dagster.asset_keys import FUSION_POLICY
from charattr_dagster.definitions import build_definitions
from charattr_dagster.warehouse import Warehouse

from dagster_testing import make_settings, materialization, register, run_job

N_IMAGES = 48  # ~10 images per policy split: enough for every set to be non-empty
SHARDS = ["shard_000", "shard_001"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("splits") / "sample"
    write_demo_dataset(out, n_images=N_IMAGES, n_shards=len(SHARDS), size=48, seed=3)
    return out


def _recording(seen: dict[str, set[str]], patch: pytest.MonkeyPatch) -> None:
    """Record the image ids that reach probe training, policy training and the evaluation."""
    real_train_probes, real_update, real_evaluate = learning.train_probes, FusionPolicy.update, learning.evaluate

    def train_probes(make_batches, *args, **kwargs):
        def recorded():
            for batch in make_batches():
                seen["probes"].update(batch.image_ids)
                yield batch
        return real_train_probes(recorded, *args, **kwargs)

    def update(self, examples):
        return real_update(self, (seen["policy"].add(e.image_id) or e for e in examples))

    def evaluate(examples, *args, **kwargs):
        return real_evaluate((seen["evaluation"].add(e.image_id) or e for e in examples), *args, **kwargs)

    patch.setattr(learning, "train_probes", train_probes)
    patch.setattr(FusionPolicy, "update", update)
    patch.setattr(learning, "evaluate", evaluate)


@pytest.fixture(scope="module")
def labels(source) -> Path:
    """User corrections for hair length (from the demo's ground truth), given to both paths."""
    truth = load_ground_truth(source / "ground_truth.jsonl")
    path = source.parent / "labels.csv"
    path.write_text("image_id,attribute,value\n" + "".join(f"{i},hair_length,{t['hair_length'][0]}\n"
                                                         for i, t in truth.items() if t.get("hair_length")))
    return path


@pytest.fixture(scope="module")
def trained(source, labels, tmp_path_factory):
    """`ingest_shards` then `train_fusion` over the source, with the ids each stage saw."""
    root = tmp_path_factory.mktemp("dagster")
    settings = make_settings(source, root, labels=str(labels))
    defs = build_definitions(settings)
    seen: dict[str, set[str]] = {"probes": set(), "policy": set(), "evaluation": set()}
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as patch:
        _recording(seen, patch)
        register(instance, SHARDS)
        run_job(defs, instance, "ingest_shards", SHARDS)
        result = run_job(defs, instance, "train_fusion")
        yield seen, settings, materialization(result, FUSION_POLICY)


def test_training_and_held_out_image_ids_never_overlap(trained):
    seen, _settings, _policy = trained
    assert all(seen.values()), {k: len(v) for k, v in seen.items()}
    assert not seen["evaluation"] & seen["policy"], "the policy was evaluated on images it was trained on"
    assert not seen["evaluation"] & seen["probes"], "the evaluation scored images the probes were trained on"
    assert not seen["policy"] & seen["probes"], "the policy learnt from images the probes were fitted on"


def _csv(path: Path) -> dict[tuple[str, str, str], str]:
    return {(r["method"], r["attribute"], r["metric"]): r["n_items"] for r in csv.DictReader(path.open(encoding="utf-8"))}


def test_the_assets_and_charattr_eval_split_train_and_evaluate_alike(trained, source, labels, tmp_path, capsys):
    seen, settings, policy = trained
    out_dir = tmp_path / "eval"
    code = main(["eval", str(source), "--model", "charattr-tiny", "--pretrained", "random", "--batch-size", "8",
                 "--database-url", settings.database_url, "--out-dir", str(out_dir), "--bootstrap", "20",
                 "--labels", str(labels)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "publication gate: passed" in err or "publication gate: refused" in err

    asset_rows = _csv(Warehouse(root=settings.warehouse).asset_dir(FUSION_POLICY) / "evaluation.csv")
    eval_rows = _csv(out_dir / "evaluation.csv")
    # The same methods (sources, fixed strategies, the policy, the random baseline), attributes, metrics
    # and held-out item counts: the same split, the same labels, the same evaluation.
    assert eval_rows == asset_rows
    assert policy["holdout_images"] == len(seen["evaluation"])
    assert FusionPolicy.load(out_dir / "policy", load_vocabulary()).training_counts() == policy["training_items"]


def test_the_policy_asset_keeps_its_calibration_and_shows_calibrated_ece_beside_raw(trained):
    _seen, settings, policy = trained
    folder = Warehouse(root=settings.warehouse).asset_dir(FUSION_POLICY)
    saved = FusionPolicy.load(folder if policy["published"] else folder / "rejected", load_vocabulary())
    assert policy["calibration"] == saved.calibration_state()  # the maps travel in the policy's own files
    assert 0.0 <= policy["policy_ece"] <= 1.0 and 0.0 <= policy["policy_ece_raw"] <= 1.0
    assert "ECE before calibration" in policy["evaluation"]
