"""Attribute probes on synthetic embeddings with class-dependent means (numpy, fixed seeds)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from charattr_core.errors import ConfigError
from charattr_core.evaluation import answer_score
from charattr_core.probes import AttributeProbes, ProbeBatch, fit_temperature, train_probes
from charattr_core.records import AttributeEstimate, TagParse
from charattr_core.schema import load_vocabulary
from charattr_core.splits import split_of

VOCAB = load_vocabulary()
MODEL_KEY = "test-model/random"
LENGTHS = ("short", "medium", "long")
COLORS = ("black", "blonde", "red", "blue")


def make_data(n: int, dim: int, seed: int, label_noise: float = 0.0, scale: float = 1.0):
    """Embeddings = class means (+ colour means) + noise, L2-normalised; confident tag parses."""
    rng = np.random.default_rng(seed)
    length_means = rng.normal(size=(len(LENGTHS), dim)) * scale
    color_means = rng.normal(size=(len(COLORS), dim)) * scale
    ids, rows, parses, truth = [], [], [], []
    for i in range(n):
        length = int(rng.integers(len(LENGTHS)))
        colors = sorted(set(rng.choice(len(COLORS), size=int(rng.integers(1, 3)), replace=False).tolist()))
        x = length_means[length] + color_means[colors].sum(axis=0) + rng.normal(size=dim)
        rows.append(x / np.linalg.norm(x))
        tagged = length if rng.random() >= label_noise else int(rng.integers(len(LENGTHS)))
        confident = rng.random() < 0.9  # a tenth of the parses are not confident enough to teach
        parses.append(TagParse(f"img{i}", {
            "hair_length": AttributeEstimate("hair_length", (LENGTHS[tagged],), 0.9 if confident else 0.5),
            "hair_color": AttributeEstimate("hair_color", tuple(COLORS[c] for c in colors), 0.95),
        }))
        ids.append(f"img{i}")
        truth.append((LENGTHS[length], tuple(COLORS[c] for c in colors)))
    return ids, np.array(rows, dtype=np.float16), parses, truth


def batches_of(ids, emb, parses, size=250):
    calls = {"n": 0}

    def make_batches():
        calls["n"] += 1
        for s in range(0, len(ids), size):
            yield ProbeBatch(ids[s:s + size], emb[s:s + size], parses[s:s + size])

    return make_batches, calls


@pytest.fixture(scope="module")
def data():
    return make_data(2400, 32, seed=1)


@pytest.fixture(scope="module")
def trained(data):
    ids, emb, parses, _ = data
    make_batches, calls = batches_of(ids, emb, parses)
    probes = train_probes(make_batches, VOCAB, MODEL_KEY, epochs=6, seed=0)
    return probes, calls["n"]


def test_streaming_calls_make_batches_once_per_epoch_plus_scan_and_calibration(trained):
    _, calls = trained
    assert calls == 6 + 2


def test_probe_reaches_high_held_out_accuracy(data, trained):
    probes, _ = trained
    ids, emb, _, truth = data
    held = [i for i, image_id in enumerate(ids) if split_of(image_id) == "holdout"]
    predicted = probes.predict(emb[held])
    length_acc = np.mean([p["hair_length"].value == truth[i][0] for p, i in zip(predicted, held)])
    color_jaccard = np.mean([answer_score(p["hair_color"].values, truth[i][1], True) for p, i in zip(predicted, held)])
    assert length_acc > 0.9
    assert color_jaccard > 0.85
    one = predicted[0]["hair_length"]
    assert one.evidence == ("probe",)
    assert sum(one.scores.values()) == pytest.approx(1.0)
    assert one.confidence == pytest.approx(max(one.scores.values()))


def test_attributes_without_enough_examples_get_no_probe(trained):
    probes, _ = trained
    assert set(probes.heads) == {"hair_length", "hair_color"}
    assert "fewer than" in probes.skipped["age"]
    head = probes.heads["hair_length"]
    assert head.counts["fit"] > 0
    assert sum(head.value_counts.values()) == head.counts["fit"]  # single-valued: one value per example
    assert head.value_counts["bald"] == 0 and head.value_counts["short"] > 0


def test_one_value_only_is_skipped_not_an_error():
    ids, emb, _, _ = make_data(300, 16, seed=2)
    parses = [TagParse(i, {"gender": AttributeEstimate("gender", ("female",), 0.9)}) for i in ids]
    make_batches, _ = batches_of(ids, emb, parses)
    probes = train_probes(make_batches, VOCAB, MODEL_KEY, epochs=1, min_examples=5)
    assert "gender" not in probes.heads
    assert "only 1 value" in probes.skipped["gender"]


def test_save_load_round_trip_is_identical_and_pickle_free(data, trained, tmp_path):
    probes, _ = trained
    probes.save(tmp_path / "probes")
    files = sorted(p.name for p in (tmp_path / "probes").iterdir())
    assert files == ["probes.json", "probes.safetensors"]
    raw = (tmp_path / "probes" / "probes.safetensors").read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + header_len])  # safetensors: a JSON header, then raw tensors
    assert "hair_length.weight" in header
    meta = json.loads((tmp_path / "probes" / "probes.json").read_text())
    assert meta["model_key"] == MODEL_KEY and meta["attributes"]["hair_length"]["values"][0] == "bald"
    loaded = AttributeProbes.load(tmp_path / "probes", VOCAB, MODEL_KEY)
    _, emb, _, _ = data
    for a, b in zip(probes.predict(emb[:50]), loaded.predict(emb[:50])):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].values == b[key].values
            assert a[key].confidence == b[key].confidence
            assert a[key].scores == b[key].scores
    assert loaded.probes_version == probes.probes_version


def test_load_refuses_another_model_or_vocabulary(trained, tmp_path):
    probes, _ = trained
    probes.save(tmp_path)
    with pytest.raises(ConfigError, match="trained on test-model/random embeddings, not ViT-B-32/openai"):
        AttributeProbes.load(tmp_path, VOCAB, "ViT-B-32/openai")
    other = tmp_path / "other.toml"
    other.write_text('[attributes.mood]\nlabel = "Mood"\n[attributes.mood.values.calm]\nprompts = ["a calm person"]\n')
    with pytest.raises(ConfigError, match="vocabulary"):
        AttributeProbes.load(tmp_path, load_vocabulary(other), MODEL_KEY)
    with pytest.raises(ConfigError, match="No attribute probes"):
        AttributeProbes.load(tmp_path / "missing", VOCAB, MODEL_KEY)


def test_predict_handles_bad_rows_and_refuses_wrong_width(trained):
    probes, _ = trained
    emb = np.zeros((2, 32), dtype=np.float32)
    emb[0, 0] = 1.0
    emb[1, 3] = np.nan
    out = probes.predict(emb)
    assert set(out[0]) == {"hair_length", "hair_color"} and out[1] == {}
    with pytest.raises(ConfigError, match="32-dimensional"):
        probes.predict(np.zeros((1, 8)))


def test_training_never_reads_labels_outside_the_probe_splits(data):
    ids, emb, parses, _ = data
    make_batches, _ = batches_of(ids, emb, parses)
    clean = train_probes(make_batches, VOCAB, MODEL_KEY, epochs=2, seed=0)
    scrambled = [TagParse(p.image_id, {"hair_length": AttributeEstimate("hair_length", ("bald",), 1.0)})
                 if split_of(p.image_id) in ("policy_train", "holdout") else p for p in parses]
    make_scrambled, _ = batches_of(ids, emb, scrambled)
    other = train_probes(make_scrambled, VOCAB, MODEL_KEY, epochs=2, seed=0)
    np.testing.assert_array_equal(clean.heads["hair_length"].weight, other.heads["hair_length"].weight)
    assert clean.probes_version == other.probes_version


def test_calibration_lowers_ece_of_an_over_confident_probe():
    # Few examples, many dimensions, 40% label noise, no weight decay, long training: the probe
    # memorises the noise and is far too sure of itself on the calibration slice.
    ids, emb, parses, _ = make_data(900, 128, seed=5, label_noise=0.4, scale=0.3)
    make_batches, _ = batches_of(ids, emb, parses)
    probes = train_probes(make_batches, VOCAB, MODEL_KEY, epochs=60, learning_rate=0.05, weight_decay=0.0,
                          min_examples=10, seed=0)
    m = probes.heads["hair_length"].metrics
    assert m["temperature"] > 1.5
    assert m["ece_after"] < m["ece_before"] - 0.05
    assert m["nll_after"] < m["nll_before"]


def test_fit_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 4)) * 2
    p = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(4, p=row) for row in p])
    t = fit_temperature(true_logits * 3.0, targets, multi=False)  # logits three times too sharp
    assert t == pytest.approx(3.0, rel=0.15)
