"""`charattr run SOURCE`: the whole graph into a persistent DAGSTER_HOME, with a summary; and
configuration errors as one sentence and a non-zero exit code."""

from __future__ import annotations

import dagster as dg
import pytest

from charattr_core.cli import main
from charattr_dagster.partitions import SHARDS
from dagster_testing import IMAGES_PER_SHARD, SHARD_KEYS

ALL_ASSETS = ("raw_images", "tag_parses", "clip_embeddings", "attribute_probes", "fusion_policy",
              "fused_attributes", "attribute_report")


@pytest.fixture
def run_args(tmp_path):
    def args(source, *extra):
        return ["run", str(source), "--model", "charattr-tiny", "--pretrained", "random",
                "--database-url", f"sqlite:///{tmp_path / 'out' / 'charattr.db'}",
                "--warehouse", str(tmp_path / "out" / "warehouse"), "--reports", str(tmp_path / "out" / "reports"),
                *extra]
    return args


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_run_materializes_the_graph_into_dagster_home_and_reruns_from_cache(demo_source, run_args, dagster_home,
                                                                            tmp_path, capsys):
    assert main(run_args(demo_source)) == 0
    out = capsys.readouterr().err
    n = IMAGES_PER_SHARD * len(SHARD_KEYS)
    assert f"{n} images in {len(SHARD_KEYS)} shards" in out
    assert f"fused_attributes: {n} computed, 0 skipped" in out
    assert str(tmp_path / "out" / "reports" / "attribute_report.html") in out
    assert (tmp_path / "out" / "reports" / "attribute_report.html").is_file()
    # Both shards in one range run per stage group: ingest, training, fusion, report.
    assert "4 runs" in out
    assert "fusion_policy: trained, generation 1" in out and "; published" in out
    assert "  clip: used: charattr-tiny/random" in out and "  policy: used: " in out  # the signals fused
    # The UI must load the definitions with the same settings as this run, or it shows them stale.
    [browse] = [line for line in out.splitlines() if line.startswith("browse it:")]
    assert "CHARATTR_MODEL=charattr-tiny" in browse and "CHARATTR_PRETRAINED=random" in browse
    assert f"CHARATTR_SOURCE={demo_source}" in browse and "dagster dev -w workspace.yaml" in browse

    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions(SHARDS) == list(SHARD_KEYS)
        for asset in ALL_ASSETS:
            assert instance.get_latest_materialization_event(dg.AssetKey(asset)) is not None, asset
        assert instance.get_materialized_partitions(dg.AssetKey("fused_attributes")) == set(SHARD_KEYS)
    assert (dagster_home / "dagster.yaml").is_file()

    assert main(run_args(demo_source)) == 0
    again = capsys.readouterr().err
    assert f"({0} new)" in again
    for stage in ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes"):
        assert f"{stage}: 0 computed, {n} skipped" in again


@pytest.mark.parametrize("case, expected", [
    ("missing source", "does not exist"),
    ("bad database url", "database"),
    ("unknown model", "Unknown CLIP model"),
])
def test_configuration_errors_exit_non_zero_with_one_sentence(case, expected, demo_source, run_args, dagster_home,
                                                              tmp_path, capsys):
    args = run_args(demo_source)
    if case == "missing source":
        args[1] = str(tmp_path / "nowhere")
    elif case == "bad database url":
        args[args.index("--database-url") + 1] = "nosuchdb://user@host/db"
    else:
        args[args.index("--model") + 1] = "ViT-Nope-99"
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("charattr: error:")
    assert expected.lower() in err.lower()
    assert not (dagster_home / "dagster.yaml").exists()  # nothing was run


# A `charattr run --no-clip` in a fresh interpreter in which importing torch fails: tags-only
# users (a laptop, no weights) never pay for torch, and nothing on that path needs it.
_WITHOUT_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "open_clip"):
            raise ImportError(f"{name} imported on a run without CLIP")

sys.meta_path.insert(0, NoTorch())
from charattr_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_without_clip_never_imports_torch_and_checks_pass(demo_source, run_args, dagster_home, tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, *run_args(demo_source, "--no-clip")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    n = IMAGES_PER_SHARD * len(SHARD_KEYS)
    assert f"fused_attributes: {n} computed" in done.stderr and "CLIP disabled by configuration" in done.stderr
    assert "check failed" not in done.stderr and "CHARATTR_USE_CLIP=0" in done.stderr
    with dg.DagsterInstance.get() as instance:  # passes when CLIP is off on purpose (warns when weights are missing)
        record = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey("clip_embeddings"), "model_available"))
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed and "disabled by configuration" in evaluation.metadata["reason"].value


def test_use_clip_setting():
    from charattr_core.errors import ConfigError
    from charattr_dagster.settings import Settings

    assert Settings.from_env({"CHARATTR_USE_CLIP": "0"}).use_clip is False
    assert Settings.from_env({}).use_clip is True
    with pytest.raises(ConfigError, match="CHARATTR_USE_CLIP must be 1 or 0"):
        Settings.from_env({"CHARATTR_USE_CLIP": "maybe"})
