"""`charattr train-clip`: contrastive adaptation from tags, on the training split only (issue 14)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from charattr_core.clip_loading import load_clip
from charattr_core.clip_training import (CONFIG_FILE, WEIGHTS_FILE, TrainingSettings, caption_phrases, make_caption,
                                         resolve_adapted_model, rows_from_source, train_clip, train_clip_from_source,
                                         training_data)
from charattr_core.cli import main
from charattr_core.errors import ConfigError
from charattr_core.schema import load_vocabulary
from charattr_core.splits import split_of
from charattr_core.tags import TagParser

VOCAB = load_vocabulary()
TINY = dict(model_name="charattr-tiny", epochs=1, batch_size=4)


@pytest.fixture(scope="module")
def rows(demo_source: Path) -> list:
    return list(rows_from_source(demo_source, VOCAB))


@pytest.fixture(scope="module")
def trained(demo_source: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapted") / "model"
    train_clip_from_source(demo_source, out, TrainingSettings(**TINY), VOCAB, progress=False)
    return out


def test_training_uses_only_the_training_split(rows):
    data = training_data(rows, VOCAB)
    used = {image.image_id for image in data.images}
    captionable = {i for i, b, _t, p in rows if b is not None and caption_phrases(p, VOCAB)}
    assert used, "the sample must have training images, or this test proves nothing"
    assert all(split_of(i) == "probe_fit" for i in used)
    assert not used & {i for i in captionable if split_of(i) == "holdout"}
    # and every captionable training-split image is used (the filter is the split, nothing else)
    assert used == {i for i in captionable if split_of(i) == "probe_fit"}
    assert data.skipped["not in the training split"] == sum(1 for i, *_ in rows if split_of(i) != "probe_fit")


def test_trained_model_records_the_training_images_it_saw(trained, rows):
    meta = json.loads((trained / CONFIG_FILE).read_text())
    expected = training_data(rows, VOCAB)
    assert meta["data_fingerprint"] == expected.fingerprint
    assert meta["n_images"] == len(expected.images)
    held_out = training_data(rows, VOCAB, keep=lambda i: split_of(i) == "holdout")
    assert meta["data_fingerprint"] != held_out.fingerprint
    assert meta["architecture"] == "charattr-tiny" and meta["vocabulary_fingerprint"] == VOCAB.fingerprint
    assert len(meta["epoch_losses"]) == 1 and meta["epoch_losses"][0] > 0


def test_captions_come_from_tags_through_the_prompts():
    parse = TagParser(VOCAB).parse("1girl blonde_hair long_hair smile", "x")
    phrases = caption_phrases(parse, VOCAB)
    blonde = VOCAB.attribute("hair_color").value("blonde").prompts
    assert blonde in phrases
    caption = make_caption(phrases, VOCAB.prompt_templates, random.Random(0))
    assert any(t.split("{}")[0] in caption for t in VOCAB.prompt_templates)
    assert any(p in caption for phrase in phrases for p in phrase)
    assert caption_phrases(TagParser(VOCAB).parse("", "y"), VOCAB) == []


def test_pretrained_dir_round_trip(trained):
    adapted = resolve_adapted_model(trained)
    assert adapted is not None and adapted.model_name == "charattr-tiny"
    assert adapted.checkpoint == trained / WEIGHTS_FILE
    assert adapted.model_key.startswith("charattr-tiny/adapted:")
    clip = load_clip(adapted.model_name, adapted.checkpoint, device="cpu", precision="fp32")
    saved = load_file(str(adapted.checkpoint))
    loaded = clip.model.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    random_init = load_clip("charattr-tiny", None, device="cpu", precision="fp32").model.state_dict()
    assert not torch.equal(random_init["visual.conv1.weight"], saved["visual.conv1.weight"])  # training moved it
    assert resolve_adapted_model(trained.parent / "missing") is None
    assert resolve_adapted_model("openai") is None and resolve_adapted_model(None) is None


def test_the_folder_alone_selects_the_adapted_model(trained, demo_source, tmp_path, capsys):
    from charattr_core.clip import clip_model_key
    from charattr_core.cli import main

    adapted = resolve_adapted_model(trained)
    # The folder's JSON names the architecture: the default model name does not matter.
    clip = load_clip("ViT-B-32", str(trained), device="cpu", precision="fp32")
    assert clip.model_name == adapted.model_name and clip.model_key == adapted.model_key
    assert clip_model_key("ViT-B-32", str(trained), precision="fp32") == adapted.model_key
    saved = load_file(str(adapted.checkpoint))
    assert all(torch.equal(clip.model.state_dict()[k], saved[k]) for k in saved)
    code = main(["batch", str(demo_source), "--out", str(tmp_path / "out.csv"), "--pretrained", str(trained),
                 "--precision", "fp32", "--database-url", f"sqlite:///{tmp_path / 'c.db'}", "--limit", "4"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"clip: used: {adapted.model_key}" in err


def _edited_key(src: Path, dst: Path, edit) -> str:
    dst.mkdir()
    (dst / WEIGHTS_FILE).write_bytes((src / WEIGHTS_FILE).read_bytes())
    meta = json.loads((src / CONFIG_FILE).read_text())
    edit(meta)
    (dst / CONFIG_FILE).write_text(json.dumps(meta))
    return resolve_adapted_model(dst).model_key


def test_model_key_follows_data_config_and_weights(trained, tmp_path):
    key = resolve_adapted_model(trained).model_key
    assert _edited_key(trained, tmp_path / "same", lambda m: None) == key
    assert _edited_key(trained, tmp_path / "data", lambda m: m.update(data_fingerprint="0" * 16)) != key
    assert _edited_key(trained, tmp_path / "epochs", lambda m: m["settings"].update(epochs=9)) != key
    assert _edited_key(trained, tmp_path / "vocab", lambda m: m.update(vocabulary_fingerprint="x")) != key
    weights = tmp_path / "weights"
    _edited_key(trained, weights, lambda m: None)
    tensors = load_file(str(weights / WEIGHTS_FILE))
    tensors["logit_scale"] = tensors["logit_scale"] + 1
    from safetensors.torch import save_file
    save_file(tensors, str(weights / WEIGHTS_FILE))
    assert resolve_adapted_model(weights).model_key != key


def test_retraining_on_other_data_changes_the_key(rows, trained, tmp_path):
    data = training_data(rows, VOCAB)
    data.images = data.images[:-1]
    other = train_clip(data, VOCAB, tmp_path / "fewer", TrainingSettings(**TINY), progress=False)
    assert other.model_key != resolve_adapted_model(trained).model_key


def test_other_resolution_registers_a_derived_architecture(rows, tmp_path):
    data = training_data(rows, VOCAB)
    result = train_clip(data, VOCAB, tmp_path / "res32", TrainingSettings(**TINY, resolution=32), progress=False)
    assert result.model_name == "charattr-tiny-32px"
    adapted = resolve_adapted_model(tmp_path / "res32")
    clip = load_clip(adapted.model_name, adapted.checkpoint, device="cpu", precision="fp32")
    assert clip.image_size == (32, 32)


def test_the_folder_keeps_loading_when_the_bundled_architecture_changes(trained, monkeypatch):
    """The folder carries its architecture: if `charattr-tiny`'s bundled config changed after training
    (a new release), the weights are built with the config they were trained with, under a new name."""
    import open_clip
    from open_clip import factory

    before = resolve_adapted_model(trained)
    changed = json.loads(json.dumps(open_clip.get_model_config("charattr-tiny")))
    changed["vision_cfg"]["width"] *= 2  # these weights would not fit it
    monkeypatch.setitem(factory._MODEL_CONFIGS, "charattr-tiny", changed)
    after = resolve_adapted_model(trained)
    assert after.model_name.startswith("charattr-tiny-cfg") and after.model_key != before.model_key
    clip = load_clip(after.model_name, after.checkpoint, device="cpu", precision="fp32")
    assert clip.model.visual.conv1.out_channels == changed["vision_cfg"]["width"] // 2  # the trained width


def test_an_output_path_that_cannot_hold_the_model_is_a_one_line_error(demo_source, tmp_path, capsys):
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"not a folder")
    for out, message in ((a_file, "is a file"), (demo_source / "adapted", "inside the source")):
        assert main(["train-clip", str(demo_source), "--out", str(out), "--model", "charattr-tiny", "--epochs", "1",
                     "-q", "--database-url", f"sqlite:///{tmp_path / 'cache.db'}"]) == 1
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert a_file.read_bytes() == b"not a folder" and not (demo_source / "adapted").exists()


def test_retraining_into_a_folder_replaces_the_whole_model(rows, trained, tmp_path):
    """The description is rewritten with the weights (never an old JSON beside new weights)."""
    import shutil

    folder = tmp_path / "again"
    shutil.copytree(trained, folder)
    before = resolve_adapted_model(folder)
    train_clip(training_data(rows, VOCAB), VOCAB, folder, TrainingSettings(**{**TINY, "seed": 1}), progress=False)
    after = resolve_adapted_model(folder)
    assert after.metadata["settings"]["seed"] == 1 and after.model_key != before.model_key
    assert after.metadata["weights_digest"] != before.metadata["weights_digest"]


def test_bad_settings_are_one_sentence_errors(rows, trained, tmp_path):
    data = training_data(rows, VOCAB)
    with pytest.raises(ConfigError, match="epochs"):
        train_clip(data, VOCAB, tmp_path / "x", TrainingSettings(**{**TINY, "epochs": 0}), progress=False)
    with pytest.raises(ConfigError, match="resolution"):  # fine-tuning keeps the architecture's resolution
        train_clip(data, VOCAB, tmp_path / "y", TrainingSettings(**TINY, resolution=32,
                                                                 pretrained=str(trained / WEIGHTS_FILE)),
                   progress=False)
    with pytest.raises(ConfigError, match="training image"):
        train_clip(training_data([], VOCAB), VOCAB, tmp_path / "z", TrainingSettings(**TINY), progress=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="train-clip"):
        resolve_adapted_model(tmp_path / "broken")


def test_fine_tunes_from_a_checkpoint(rows, trained, tmp_path):
    data = training_data(rows, VOCAB)
    result = train_clip(data, VOCAB, tmp_path / "ft", TrainingSettings(**TINY, pretrained=str(trained / WEIGHTS_FILE)),
                        progress=False)
    meta = json.loads((tmp_path / "ft" / CONFIG_FILE).read_text())
    assert meta["settings"]["pretrained"] == str(trained / WEIGHTS_FILE) and result.model_name == "charattr-tiny"
    again = train_clip(data, VOCAB, tmp_path / "ft-dir", TrainingSettings(**{**TINY, "model_name": "ViT-B-32"},
                                                                         pretrained=str(trained)), progress=False)
    assert again.model_name == "charattr-tiny"  # a train-clip directory brings its own architecture


def test_cli_train_clip(demo_source, tmp_path, capsys):
    out = tmp_path / "cli-model"
    db = tmp_path / "cache.db"
    assert main(["train-clip", str(demo_source), "--out", str(out), "--model", "charattr-tiny", "--epochs", "1",
                 "--batch-size", "4", "-q", "--database-url", f"sqlite:///{db}"]) == 0
    err = capsys.readouterr().err
    assert "charattr-tiny/adapted:" in err and f"--pretrained {out}" in err
    assert resolve_adapted_model(out) is not None
    assert main(["train-clip", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_cli_train_clip_parses_tags_through_the_results_cache(demo_source, tmp_path):
    """--database-url: train-clip's tag parses land in the results cache, where `batch`/`run` find them."""
    from charattr_core.pipeline import RunSummary, create_pipeline
    from charattr_core.sources import inspect_image, open_source
    from charattr_core.stages import STAGE_TAGS

    db = f"sqlite:///{tmp_path / 'cache.db'}"
    assert main(["train-clip", str(demo_source), "--model", "charattr-tiny", "--epochs", "1", "--batch-size", "4",
                 "-q", "--database-url", db, "--out", str(tmp_path / "model")]) == 0
    src = open_source(demo_source)
    records = [r for shard in src.shards() for r in (inspect_image(i) for i in src.read(shard)) if r.ok]
    summary = RunSummary()
    with create_pipeline({"database_url": db, "use_clip": False}) as pipe:
        parses = pipe.tag_parses(records, summary=summary)
    assert len(parses) == len(records) == 24
    assert summary.stages[STAGE_TAGS].skipped == len(records) and summary.stages[STAGE_TAGS].computed == 0
