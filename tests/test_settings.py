"""One settings model (charattr_core.settings): the command line's options, the Python API's keys
and the README's table are built from it; errors are one sentence naming what the user gave."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from charattr_core.cli import build_parser, main
from charattr_core.errors import ConfigError
from charattr_core.pipeline import create_pipeline
from charattr_core.settings import (GRAPH, PIPELINE, Settings, add_options, env_var, markdown_table, option_strings,
                                    options_given, table_in)

ROOT = Path(__file__).resolve().parents[1]


def test_readme_settings_table_is_the_generated_one():
    """Regenerate with `python -m charattr_core.settings --update-readme README.md`."""
    assert table_in((ROOT / "README.md").read_text(encoding="utf-8")) == markdown_table()


def test_every_setting_is_in_the_table_with_its_variable_and_default():
    table = markdown_table()
    for name, field in Settings.model_fields.items():
        [row] = [line for line in table.splitlines() if line.startswith(f"| `{name}` |")]
        assert f"`{env_var(name)}`" in row and field.description in row


@pytest.mark.parametrize("scope", [PIPELINE, GRAPH])
def test_the_command_line_options_are_generated_from_the_model(scope):
    parser = argparse.ArgumentParser()
    add_options(parser, scope)
    expected = {name for name in Settings.model_fields if scope in Settings.model_fields[name].json_schema_extra[
        "charattr"].scopes and option_strings(name)}
    assert options_given(parser.parse_args([])) == {}  # nothing given: the environment decides
    for name in expected:
        action = next(a for a in parser._actions if a.dest == f"setting__{name}")
        assert action.option_strings == list(option_strings(name))
        assert env_var(name) in action.help  # the help names the variable and the model's default
    assert {a.dest.removeprefix("setting__") for a in parser._actions if a.dest.startswith("setting__")} == expected


def test_an_option_overrides_its_variable_which_overrides_the_default():
    parser = build_parser()
    env = {"CHARATTR_CONFIDENCE_THRESHOLD": "0.7", "CHARATTR_STAGE_BATCH_SIZE": "64"}
    from_env = Settings.from_options(parser.parse_args(["batch", ".", "--out", "x.csv"]), env=env)
    assert (from_env.confidence_threshold, from_env.stage_batch_size, from_env.clip_batch_size) == (0.7, 64, 32)
    given = Settings.from_options(parser.parse_args(["batch", ".", "--out", "x.csv", "--threshold", "0.9",
                                                     "--clip-batch-size", "4", "--no-learned-policy"]), env=env)
    assert (given.confidence_threshold, given.clip_batch_size, given.use_learned_policy) == (0.9, 4, False)


def test_thresholds_are_options_of_charattr_run_and_reach_the_dagster_environment(tmp_path):
    from charattr_dagster.cli import settings_from_args

    args = build_parser().parse_args(["run", str(tmp_path), "--confidence-threshold", "0.75",
                                      "--low-threshold", "0.2", "--stage-batch-size", "16"])
    settings = settings_from_args(args)
    assert (settings.confidence_threshold, settings.low_confidence_threshold) == (0.75, 0.2)
    assert settings.source == str(tmp_path) and settings.stage_batch_size == 16
    # The `dagster dev` line carries them, so the UI loads the definitions this run used.
    env = settings.to_env({})
    assert env["CHARATTR_CONFIDENCE_THRESHOLD"] == "0.75" and env["CHARATTR_LOW_CONFIDENCE_THRESHOLD"] == "0.2"
    assert Settings.from_env(env) == settings


@pytest.mark.parametrize("env, needle", [
    ({"CHARATTR_USE_CLIP": "maybe"}, "Environment variable CHARATTR_USE_CLIP must be 1 or 0"),
    ({"CHARATTR_STAGE_BATCH_SIZE": "zero"}, "Environment variable CHARATTR_STAGE_BATCH_SIZE must be a whole number"),
    ({"CHARATTR_CONFIDENCE_THRESHOLD": "1.5"}, "Environment variable CHARATTR_CONFIDENCE_THRESHOLD must be at most 1"),
    ({"CHARATTR_DEVICE": "tpu"}, "Environment variable CHARATTR_DEVICE must be one of: auto, cpu, cuda, mps"),
    ({"CHARATTR_BATCH_SIZE": "64"}, "CHARATTR_BATCH_SIZE is no longer read; set CHARATTR_CLIP_BATCH_SIZE"),
    ({"CHARATTR_LOW_CONFIDENCE_THRESHOLD": "0.9"}, "low_confidence_threshold <= confidence_threshold"),
])
@pytest.mark.parametrize("command", ["batch", "run"])
def test_a_bad_variable_stops_early_with_one_sentence(command, env, needle, monkeypatch, capsys, tmp_path):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    argv = [command, str(tmp_path)] + (["--out", str(tmp_path / "r.csv")] if command == "batch" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("charattr: error:")
    assert needle in err
    assert not (tmp_path / "home").exists() and not (tmp_path / "r.csv").exists()  # nothing ran


def test_a_bad_option_value_names_the_option(capsys, tmp_path):
    assert main(["batch", str(tmp_path), "--out", str(tmp_path / "r.csv"), "--threshold", "1.5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "charattr: error: Option --confidence-threshold must be at most 1.0 (got 1.5)."


def test_the_api_takes_the_seed_keys_and_refuses_unknown_ones_in_one_sentence():
    with create_pipeline({"confidence_threshold": 0.7, "fusion_strategy": "tag_priority", "use_rl": False,
                          "cache_results": False, "use_clip": False, "batch_size": 8}) as pipe:
        config = pipe.config
    assert (config.confidence_threshold, config.fusion_strategy) == (0.7, "tag_priority")
    assert config.use_learned_policy is False and config.cache_results is False and config.clip_batch_size == 8
    with pytest.raises(ConfigError) as info:
        create_pipeline({"confidance_threshold": 0.8})
    message = str(info.value)
    assert message.startswith("Unknown setting(s) confidance_threshold;") and message.count(".") == 1
    with pytest.raises(ConfigError, match=r"^Setting fusion_strategy must be one of: .*\(got 'magic'\)\.$"):
        create_pipeline({"fusion_strategy": "magic"})


def test_the_api_does_not_read_the_environment(monkeypatch):
    monkeypatch.setenv("CHARATTR_CONFIDENCE_THRESHOLD", "0.55")
    assert Settings.from_mapping({}).confidence_threshold == 0.8
    assert Settings.from_env().confidence_threshold == 0.55


def test_derived_locations_follow_the_data_dir_and_the_source(tmp_path):
    a = Settings(data_dir=str(tmp_path), source=str(tmp_path / "a"))
    b = a.with_source(tmp_path / "b")
    assert a.database_url == b.database_url == f"sqlite:///{tmp_path / 'charattr.db'}"  # shared cache
    assert Path(a.warehouse).parent == a.source_dir and Path(b.warehouse).parent == b.source_dir
    assert a.source_dir != b.source_dir and a.source_dir.parent == tmp_path / "sources"
    given = a.replace(warehouse=str(tmp_path / "mine")).with_source(tmp_path / "c")
    assert given.warehouse == str(tmp_path / "mine")  # what the user gave stays
