"""The instance settings every entry point writes into a fresh DAGSTER_HOME."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from charattr_dagster.instance import prepare_dagster_home


def test_a_fresh_home_gets_settings_that_dagster_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    home = prepare_dagster_home()
    assert home == (tmp_path / "data" / "dagster_home").resolve()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.telemetry_enabled
        assert not instance.nux_enabled
        assert instance.run_monitoring_enabled
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_backfill_settings()["use_threads"]


def test_an_existing_dagster_yaml_is_left_alone(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    prepare_dagster_home(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


def test_make_ui_prepares_the_home_through_the_module(tmp_path):
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, "-m", "charattr_dagster.instance", str(home)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == str(home.resolve()) and "nux" in (home / "dagster.yaml").read_text()
