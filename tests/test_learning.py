"""The learning stages end to end: `learn_and_evaluate` and `charattr eval` on a small synthetic
sample with the tiny random-weight CLIP model (probes, policy and evaluation on their own splits)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from charattr_core.cli import main
from charattr_core.config import ALL_STRATEGIES
from charattr_core.fusion import LEARNED_POLICY
from charattr_core.learning import RANDOM_BASELINE, Signals, learn_and_evaluate
from charattr_core.pipeline import create_pipeline
from charattr_core.policy import FusionPolicy
from charattr_core.probes import AttributeProbes
from charattr_core.records import SOURCES
from charattr_core.signal_spill import SignalSpill
from charattr_core.splits import split_of
from charattr_core.synthetic import load_ground_truth, write_demo_dataset

N_IMAGES = 160  # ~80 probe_fit images: enough confident tags for most probes, still a few seconds
TINY = {"model_name": "charattr-tiny", "pretrained": None}
TINY_ARGS = ["--model", "charattr-tiny", "--pretrained", "random"]
CLAIM = re.compile(r"learned_policy (?:(?:beats|trails) (\w+) by \d+\.\d points of accuracy|ties (\w+) on accuracy) "
                   r"\(overall; 95% CI of the difference \[-?\d+\.\d, -?\d+\.\d\]\)")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("learning") / "sample"
    write_demo_dataset(out, n_images=N_IMAGES, n_shards=2, seed=5, size=64)
    return out


@pytest.fixture(scope="module")
def truth(sample: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    return {i: {k: tuple(v) for k, v in attrs.items() if v}
            for i, attrs in load_ground_truth(sample / "ground_truth.jsonl").items()}


@pytest.fixture(scope="module")
def cache_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One results cache for the module: the CLI runs reuse the embeddings computed here."""
    return f"sqlite:///{tmp_path_factory.mktemp('cache') / 'cache.db'}"


def replay(batches: list[list[Signals]]):
    """A `learning.SignalSource` over batches held in a list (the tests look at them afterwards)."""
    return lambda keep: ([s for s in batch if keep(s.record.image_id)] for batch in batches)


@pytest.fixture(scope="module")
def learned(sample, truth, cache_url, tmp_path_factory):
    with create_pipeline({**TINY, "database_url": cache_url}, use_rl=False) as pipe, \
            SignalSpill(tmp_path_factory.mktemp("spill"), batch_size=pipe.config.stage_batch_size) as spill:
        # The spill `charattr eval` uses (float16 embeddings): the same probes, the same numbers.
        spill.write(pipe.iter_signals(sample, batch_size=pipe.config.stage_batch_size))
        signals = list(spill(lambda _i: True))
        result = learn_and_evaluate(replay(signals), pipe.vocabulary, model_key=pipe.clip.model_key,
                                    scorer=pipe._zero_shot(), user_labels=truth, thresholds=pipe.thresholds,
                                    n_bootstrap=200)
        return signals, result, pipe.vocabulary


def _ids(signals: list[list[Signals]], split: str, with_embedding: bool = False) -> list[str]:
    return [s.record.image_id for batch in signals for s in batch
            if split_of(s.record.image_id) == split and (s.embedding is not None or not with_embedding)]


def _csv(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(r["method"], r["attribute"], r["metric"]): r for r in csv.DictReader(path.open(encoding="utf-8"))}


def test_every_method_is_scored_on_the_held_out_images_against_the_ground_truth(learned, truth):
    signals, result, vocab = learned
    report = result.report
    holdout = _ids(signals, "holdout")
    assert sum(len(batch) for batch in signals) == N_IMAGES and holdout
    assert report.n_images == len(holdout)
    for key in vocab.keys:  # the synthetic truth is the reference: every held-out image that has a value counts
        expected = sum(1 for i in holdout if truth[i].get(key))
        assert report.n_items.get(key, 0) == expected, key
    assert set(report.methods) == {*SOURCES, *ALL_STRATEGIES, LEARNED_POLICY, RANDOM_BASELINE}
    assert report.best_fixed() in ALL_STRATEGIES  # the random baseline is never "the best fixed strategy"
    assert CLAIM.fullmatch(report.policy_claim().removesuffix(" — not significant at 95%"))
    # Tags are shown to the fusion (ground truth is independent of them) and are right most of the time.
    assert report.metric("tags", metric="selective_accuracy").value > 0.7
    # Choosing per attribute and image beats choosing at random, even on a few dozen images (paired bootstrap).
    assert report.compare(LEARNED_POLICY, RANDOM_BASELINE).low > 0


def test_probes_and_policy_learn_only_from_their_own_splits(learned, truth):
    signals, result, vocab = learned
    assert result.probe_skip_reason is None and result.probes.heads
    assert result.probes.training["fit_rows"] == len(_ids(signals, "probe_fit", with_embedding=True))
    policy_train = _ids(signals, "policy_train")
    counts = result.policy.training_counts()
    for key in vocab.keys:
        assert counts[key] == sum(1 for i in policy_train if truth[i].get(key)), key


def test_without_clip_no_probes_are_trained_and_the_tags_still_get_evaluated(learned, truth):
    signals, _result, vocab = learned
    no_embeddings = [[Signals(s.record, s.tag_parse, None) for s in batch] for batch in signals]
    result = learn_and_evaluate(replay(no_embeddings), vocab, model_key=None, scorer=None, user_labels=truth,
                                thresholds=learned[1].policy.thresholds, n_bootstrap=50)
    assert result.probes is None and result.probe_skip_reason == "no CLIP embeddings"
    report = result.report
    for source in ("clip", "probe"):
        assert report.metric(source, metric="coverage").value == 0.0
    assert report.metric(LEARNED_POLICY).value == pytest.approx(report.metric("tags_only").value)


def test_eval_command_writes_report_policy_and_probes_and_prints_the_claim(sample, cache_url, learned, capsys,
                                                                          tmp_path):
    _signals, result, vocab = learned
    out_dir = tmp_path / "eval"
    code = main(["eval", str(sample), *TINY_ARGS, "--database-url", cache_url, "--out-dir", str(out_dir),
                 "--bootstrap", "200"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"reference: synthetic ground truth {sample / 'ground_truth.jsonl'}" in err
    claim = CLAIM.search(err)
    assert claim and (claim.group(1) or claim.group(2)) == result.report.best_fixed()
    assert f"{N_IMAGES} images (0 failed)" in err

    markdown = (out_dir / "evaluation.md").read_text(encoding="utf-8")
    assert markdown.strip() == out.strip()  # the report printed is the report written
    assert f"| {LEARNED_POLICY} |" in markdown and f"| {RANDOM_BASELINE} |" in markdown
    assert f"**{claim.group(0)}" in markdown
    rows = _csv(out_dir / "evaluation.csv")
    for method in (*SOURCES, *ALL_STRATEGIES, LEARNED_POLICY, RANDOM_BASELINE):
        assert (method, "overall", "accuracy") in rows, method
    # The same images, splits, seed and ground truth as learn_and_evaluate above: the same numbers.
    for method in (LEARNED_POLICY, "simple_average", RANDOM_BASELINE):
        row = rows[(method, "overall", "accuracy")]
        assert float(row["value"]) == pytest.approx(result.report.metric(method).value, abs=1e-5)
    assert (out_dir / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    policy = FusionPolicy.load(out_dir / "policy", vocab)
    assert policy.content_hash() == result.policy.content_hash()
    # Calibrated ECE beside the raw one, and the calibration the saved policy carries.
    assert "ECE before calibration" in markdown and (LEARNED_POLICY, "overall", "raw_ece") in rows
    assert "learned_policy ECE on held-out images: " in err and policy.calibration_state() in err
    from charattr_core.clip import clip_model_key

    probes = AttributeProbes.load(out_dir / "probes", vocab, clip_model_key("charattr-tiny", None))
    assert set(probes.heads) == set(result.probes.heads)


def test_a_labels_file_wins_over_the_synthetic_ground_truth(sample, truth, cache_url, capsys, tmp_path):
    # Corrections that contradict the ground truth on purpose: every image is labelled bald.
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,attribute,value\n" + "".join(f"{i},hair_length,bald\n" for i in truth),
                      encoding="utf-8")
    out_dir = tmp_path / "eval"
    code = main(["eval", str(sample), *TINY_ARGS, "--database-url", cache_url, "--out-dir", str(out_dir),
                 "--bootstrap", "50", "--labels", str(labels)])
    _out, err = capsys.readouterr()
    assert code == 0, err
    assert f"reference: labels file {labels}" in err and "synthetic ground truth" not in err
    rows = _csv(out_dir / "evaluation.csv")
    holdout = [i for i in truth if split_of(i) == "holdout"]
    bald = sum(1 for i in holdout if truth[i]["hair_length"] == ("bald",))
    # hair_length is scored against the file: every held-out image, and "bald" is what counts as right.
    assert int(rows[("tags", "hair_length", "accuracy")]["n_items"]) == len(holdout)
    assert float(rows[("tags", "hair_length", "accuracy")]["value"]) <= bald / len(holdout)
    # Other attributes have no correction, so their labels are the confident tags, hidden from the sources:
    # the ground truth is not used, and the tags source has nothing to answer with.
    gender = rows[("tags", "gender", "coverage")]
    assert float(gender["value"]) == 0.0
    assert 0 < int(gender["n_items"]) < len(holdout)


def test_the_splits_are_enforced_in_core_even_when_a_source_ignores_keep(learned, truth, monkeypatch):
    """A source may filter early, but the split is decided in `learning`: a source that yields every
    image to every pass still trains the policy on `policy_train` and evaluates on `holdout` only."""
    import charattr_core.learning as learning

    signals, result, vocab = learned
    seen: dict[str, list[str]] = {"policy": [], "evaluation": []}
    real_update, real_evaluate = FusionPolicy.update, learning.evaluate

    def update(self, examples):
        return real_update(self, (seen["policy"].append(e.image_id) or e for e in examples))

    def evaluate(examples, *args, **kwargs):
        return real_evaluate((seen["evaluation"].append(e.image_id) or e for e in examples), *args, **kwargs)

    monkeypatch.setattr(FusionPolicy, "update", update)
    monkeypatch.setattr(learning, "evaluate", evaluate)
    everything = lambda _keep: iter(signals)  # noqa: E731  (ignores the split it is asked for)
    outcome = learning.train_and_judge_policy(everything, everything, vocab, model_key=result.probes.model_key,
                                              scorer=None, probes=result.probes,
                                              user_labels=truth, thresholds=result.policy.thresholds,
                                              default_strategy="confidence_weighted", n_bootstrap=20)
    assert seen["policy"] and seen["evaluation"]
    assert {split_of(i) for i in seen["policy"]} == {"policy_train"}
    assert {split_of(i) for i in seen["evaluation"]} == {"holdout"}
    assert outcome.report.n_images == len(seen["evaluation"]) == len(_ids(signals, "holdout"))


def test_warm_start_only_adds_unseen_parts_and_retrains_when_anything_it_learnt_from_changed():
    from charattr_core.learning import plan_warm_start, training_state

    signature = {"model": "m", "probes": "p1", "thresholds": [0.8, 0.3], "labels": None,
                 "default_strategy": "confidence_weighted"}
    saved = training_state(signature, {"a": "1", "b": "2"})
    plan = plan_warm_start(saved, signature, {"a": "1", "b": "2", "c": "3"}, has_current=True)
    assert (plan.warm, plan.new_parts) == (True, ("c",))
    assert plan_warm_start(saved, signature, {"a": "1", "b": "2"}, has_current=True).new_parts == ()
    for cold in [plan_warm_start(saved, signature, {"a": "1", "b": "CHANGED", "c": "3"}, has_current=True),
                 plan_warm_start(saved, {**signature, "probes": "p2"}, {"a": "1", "b": "2"}, has_current=True),
                 plan_warm_start(saved, signature, {"a": "1", "b": "2"}, has_current=False),
                 plan_warm_start(None, signature, {"a": "1", "b": "2"}, has_current=True)]:
        assert not cold.warm and {"a", "b"} <= set(cold.new_parts)  # everything again, from scratch
    # The state the asset wrote before this function existed ({"signature", "shards"}) still reads.
    assert plan_warm_start({"signature": signature, "shards": {"a": "1"}}, signature, {"a": "1", "d": "4"},
                           has_current=True).new_parts == ("d",)
