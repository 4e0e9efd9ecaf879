"""One source, one namespace: `charattr run` over source A then source B gives two separate
products (warehouse, product-table rows, probes/policy, report, Dagster partitions), and A's
outputs are untouched; a folder named explicitly for both is refused with one sentence."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import pytest

from charattr_core.cli import main
from charattr_core.namespaces import source_namespace
from charattr_core.store import ResultStore
from charattr_core.synthetic import write_demo_dataset
from charattr_dagster.partitions import SHARDS


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (but the Dagster instance, which logs each run) by content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "dagster_home" not in p.parts}


def _partitions(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_dynamic_partitions(SHARDS)


@pytest.fixture
def two_sources(tmp_path):
    a, b = tmp_path / "images_a", tmp_path / "images_b"
    write_demo_dataset(a, n_images=6, n_shards=2, size=48, seed=1)
    write_demo_dataset(b, n_images=4, n_shards=1, size=48, seed=2)  # its only shard is also "shard_000"
    return a, b


def _run(source: Path, data: Path, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # each source's own instance (a run exports its home)
    code = main(["run", str(source), "--no-clip", "--data-dir", str(data)])
    return code, capsys.readouterr().err


@pytest.mark.slow  # ~35 s on 2 shared cores: two tags-only `charattr run`s
def test_a_second_source_gets_its_own_namespace_and_leaves_the_first_untouched(two_sources, tmp_path,
                                                                                monkeypatch, capsys):
    a, b = two_sources
    data = tmp_path / "data"
    code, out_a = _run(a, data, monkeypatch, capsys)
    assert code == 0, out_a
    folder_a = data / "sources" / source_namespace(a)
    report_a = folder_a / "reports" / "attribute_report.html"
    assert "6 images in 2 shards" in out_a and str(report_a) in out_a
    before = _snapshot(folder_a)
    assert any(name.startswith("warehouse/fused_attributes/") for name in before)

    code, out_b = _run(b, data, monkeypatch, capsys)
    assert code == 0, out_b
    folder_b = data / "sources" / source_namespace(b)
    assert folder_b != folder_a
    assert "4 images in 1 shards (1 new)" in out_b  # not 10: A's images are not B's
    assert str(folder_b / "reports" / "attribute_report.html") in out_b
    assert (folder_b / "reports" / "attribute_report.html").is_file()
    assert _snapshot(folder_a) == before  # A's warehouse, probes, policy and report untouched

    # Partitions: each source's own instance; "shard_000" of B is not A's shard_000.
    assert _partitions(folder_a / "dagster_home") == ["shard_000", "shard_001"]
    assert _partitions(folder_b / "dagster_home") == ["shard_000"]
    # The shared results database keeps one product per source.
    with ResultStore(f"sqlite:///{data / 'charattr.db'}") as store:
        assert store.count_fused(source_namespace=source_namespace(a)) == 6
        assert store.count_fused(source_namespace=source_namespace(b)) == 4
        assert {r["source_uri"].startswith(str(b)) for r in store.iter_fused(source_namespace=source_namespace(b))} \
            == {True}


def test_an_instance_or_warehouse_named_for_two_sources_is_refused(two_sources, tmp_path, monkeypatch, capsys):
    a, b = two_sources
    data = tmp_path / "data"
    assert _run(a, data, monkeypatch, capsys)[0] == 0
    home_a = data / "sources" / source_namespace(a) / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home_a))
    assert main(["run", str(b), "--no-clip", "--data-dir", str(data)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"The Dagster instance {home_a} holds the results of source {a}" in err and "unset DAGSTER_HOME" in err
    assert _partitions(home_a) == ["shard_000", "shard_001"]  # nothing of B registered

    monkeypatch.delenv("DAGSTER_HOME")
    warehouse_a = data / "sources" / source_namespace(a) / "warehouse"
    assert main(["run", str(b), "--no-clip", "--data-dir", str(data), "--warehouse", str(warehouse_a)]) == 1
    err = capsys.readouterr().err.strip()
    assert f"The warehouse folder {warehouse_a} holds the results of source {a}" in err
    assert "--warehouse" in err and len(err.splitlines()) == 1
