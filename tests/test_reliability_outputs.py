"""Issue 10, classes 2-4: outputs never overwrite inputs, one bad file never stops the run, and
mistakes end in one sentence, checked before any work starts.

Each test runs the real `charattr` command (`main(argv)`, or a subprocess where signals or
stderr of a fresh interpreter matter) on small generated inputs, without CLIP.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from badinput import IS_ROOT, png_bytes
from charattr_core.cli import main
from charattr_core.outputs import OutputLock

BIN = Path(sys.executable).parent


def _run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    _out, err = capsys.readouterr()
    return code, err


def _one_sentence(err: str) -> bool:
    lines = [line for line in err.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("charattr") and "Traceback" not in err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _images(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"img{i}.png").write_bytes(png_bytes(100 + i))
        (folder / f"img{i}.txt").write_text("1girl long_hair")
    return folder


def _parquet(path: Path, n: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": [png_bytes(200 + i) for i in range(n)], "tags": ["1girl"] * n}), path)
    return path


def _batch(source: Path, out: Path | str, db: Path, *extra: str) -> list[str]:
    return ["batch", str(source), "--out", str(out), "--no-clip", "--quiet", "--database-url", f"sqlite:///{db}", *extra]


# -- class 2: an output never overwrites an input --------------------------------------------


def test_out_equal_to_the_input_parquet_file_is_refused(capsys, tmp_path):
    data = _parquet(tmp_path / "data.parquet")
    before = _digest(data)
    code, err = _run(capsys, *_batch(data, data, tmp_path / "c.db"))
    assert code == 1 and _one_sentence(err) and "is the input" in err
    assert _digest(data) == before


def test_out_onto_a_file_inside_the_input_folder_is_refused(capsys, tmp_path):
    shard = _parquet(tmp_path / "src" / "part-0.parquet")
    before = _digest(shard)
    code, err = _run(capsys, *_batch(shard.parent, shard, tmp_path / "c.db"))
    assert code == 1 and _one_sentence(err) and "file of the input" in err
    assert _digest(shard) == before


def test_out_equal_to_the_sqlite_database_is_refused(capsys, tmp_path):
    source = _images(tmp_path / "src")
    db = tmp_path / "cache.parquet"  # a database file that happens to carry an output's suffix
    assert _run(capsys, *_batch(source, tmp_path / "first.parquet", db))[0] == 0
    before = _digest(db)
    code, err = _run(capsys, *_batch(source, db, db))
    assert code == 1 and _one_sentence(err) and "results database" in err
    assert _digest(db) == before


def test_failures_equal_to_out_is_refused(capsys, tmp_path):
    source = _images(tmp_path / "src")
    out = tmp_path / "r.parquet"
    code, err = _run(capsys, *_batch(source, out, tmp_path / "c.db", "--failures", str(out)))
    assert code == 1 and _one_sentence(err) and "same file" in err and not out.exists()


def test_results_written_into_the_image_folder_do_not_make_it_a_parquet_source(capsys, tmp_path):
    source = _images(tmp_path / "src" / "shard")
    for name in ("results.parquet", "failed.parquet"):
        args = _batch(source.parent, source.parent / name, tmp_path / "c.db")
        if name == "failed.parquet":
            args = _batch(source.parent, source.parent / "again.parquet", tmp_path / "c.db", "--failures",
                          str(source.parent / name))
        code, err = _run(capsys, *args)
        assert code == 0, err
        assert "3 images, 0 failed, 3 rows written" in err  # the images again, not the results table
    assert pq.read_table(source.parent / "again.parquet").num_rows == 3


def test_a_second_writer_of_the_same_output_stops_with_one_sentence(capsys, tmp_path):
    source = _images(tmp_path / "src")
    out = tmp_path / "r.parquet"
    with OutputLock(out):  # another run holds the output
        code, err = _run(capsys, *_batch(source, out, tmp_path / "c.db"))
    assert code == 1 and _one_sentence(err) and "Another charattr run is writing" in err
    assert not out.exists()
    code, err = _run(capsys, *_batch(source, out, tmp_path / "c.db"))  # released: it works again
    assert code == 0 and pq.read_table(out).num_rows == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db", "r.parquet", "src"]  # no lock or temp left


def test_two_runs_at_once_never_share_a_temporary_file(tmp_path):
    from charattr_core.outputs import temp_name
    out = tmp_path / "r.parquet"
    names = {temp_name(out) for _ in range(50)}
    assert len(names) == 50 and all(n.parent == tmp_path and n.name.startswith(".r.parquet.") for n in names)


# -- class 4: one sentence, before the work ---------------------------------------------------


def _never_reads_the_source(monkeypatch):
    import charattr_core.pipeline as pipeline

    def refuse(*_a, **_k):
        raise AssertionError("the source was read before the outputs were checked")
    monkeypatch.setattr(pipeline, "open_source", refuse)


@pytest.mark.parametrize("make_out, words", [
    (lambda t: (t / "dir.parquet").mkdir() or t / "dir.parquet", "is an existing folder"),
    (lambda t: (t / "file").write_text("x") and t / "file" / "r.parquet", "which is a file, not a folder"),
    (lambda t: t / ("x" * 250 + ".parquet"), "too long"),
    (lambda t: t / "missing" / "r.parquet", "does not exist"),
])
def test_an_unusable_out_is_one_sentence_before_the_work(capsys, tmp_path, monkeypatch, make_out, words):
    source = _images(tmp_path / "src")
    out = make_out(tmp_path)
    _never_reads_the_source(monkeypatch)
    code, err = _run(capsys, *_batch(source, out, tmp_path / "c.db"))
    assert code == 1 and _one_sentence(err) and words in err, err
    assert not (tmp_path / "c.db").exists()  # not even the cache was opened
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_an_unwritable_output_folder_is_one_sentence(capsys, tmp_path, monkeypatch):
    source = _images(tmp_path / "src")
    locked = tmp_path / "locked"
    locked.mkdir()
    if IS_ROOT:  # root writes anywhere: make the folder look read-only to the check
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    else:
        locked.chmod(0o555)
    code, err = _run(capsys, *_batch(source, locked / "r.parquet", tmp_path / "c.db"))
    assert code == 1 and _one_sentence(err) and "not writable" in err


def test_a_full_disk_while_writing_is_one_sentence_and_leaves_nothing(capsys, tmp_path, monkeypatch):
    import charattr_core.writers as writers
    source = _images(tmp_path / "src")

    def disk_full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(writers._ParquetRows, "write", disk_full)
    code, err = _run(capsys, *_batch(source, tmp_path / "r.parquet", tmp_path / "c.db"))
    assert code == 1 and _one_sentence(err) and "the disk is full" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db", "src"]  # no output, temp or lock file


def test_a_sqlite_folder_that_cannot_be_created_is_one_sentence(capsys, tmp_path):
    source = _images(tmp_path / "src")
    (tmp_path / "file").write_text("x")
    code, err = _run(capsys, *_batch(source, tmp_path / "r.parquet", tmp_path / "file" / "sub" / "c.db"))
    assert code == 1 and _one_sentence(err) and "Cannot create the folder" in err


def test_a_sqlite_path_with_a_tilde_goes_to_the_home_folder(capsys, tmp_path, monkeypatch):
    source = _images(tmp_path / "src")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    code, err = _run(capsys, "batch", str(source), "--out", str(tmp_path / "r.parquet"), "--no-clip", "--quiet",
                     "--database-url", "sqlite:///~/cache/x.db")
    assert code == 0, err
    assert (home / "cache" / "x.db").is_file() and not (work / "~").exists()


@pytest.mark.parametrize("argv, words", [
    (["batch", "SRC", "--out", "OUT", "--limit", "-1"], "-1 is negative"),
    (["eval", "SRC", "--bootstrap", "0", "--no-clip"], "--bootstrap must be at least 1"),
    (["eval", "SRC", "--out-dir", "FILE", "--no-clip"], "is a file, not a folder"),
    (["demo-data", "FILE"], "is a file, not a folder"),
])
def test_bad_options_are_one_sentence_before_the_work(capsys, tmp_path, monkeypatch, argv, words):
    source = _images(tmp_path / "src")
    (tmp_path / "file").write_text("keep")
    _never_reads_the_source(monkeypatch)
    monkeypatch.chdir(tmp_path)
    replace = {"SRC": str(source), "OUT": str(tmp_path / "r.parquet"), "FILE": str(tmp_path / "file")}
    code, err = _run(capsys, *[replace.get(a, a) for a in argv])
    assert code in (1, 2) and len(err.strip().splitlines()) == 1 and words in err, err
    assert (tmp_path / "file").read_text() == "keep"
    assert not (tmp_path / "data").exists()  # no database, no report folder


def test_a_truncated_policy_file_is_one_sentence(capsys, tmp_path):
    from charattr_core.policy import FusionPolicy
    from charattr_core.schema import load_vocabulary
    FusionPolicy(load_vocabulary()).save(tmp_path / "policy")
    tensors = tmp_path / "policy" / "policy.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    code, err = _run(capsys, *_batch(_images(tmp_path / "src"), tmp_path / "r.parquet", tmp_path / "c.db",
                                     "--policy", str(tmp_path / "policy")))
    assert code == 1 and _one_sentence(err) and "fusion policy" in err and "cannot be read" in err


def test_a_policy_missing_a_field_is_one_sentence(capsys, tmp_path):
    from charattr_core.policy import FusionPolicy
    from charattr_core.schema import load_vocabulary
    FusionPolicy(load_vocabulary()).save(tmp_path / "policy")
    meta_path = tmp_path / "policy" / "policy.json"
    meta = json.loads(meta_path.read_text())
    del meta["ridge"]
    meta_path.write_text(json.dumps(meta))
    code, err = _run(capsys, *_batch(_images(tmp_path / "src"), tmp_path / "r.parquet", tmp_path / "c.db",
                                     "--policy", str(tmp_path / "policy")))
    assert code == 1 and _one_sentence(err) and "incomplete or malformed" in err


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.replace('[attributes.age.values.child]', '[attributes.age.values]\nchild = "young"\n'
                         '[attributes.age.values.unused_x]', 1), "must be a table"),
    (lambda t: t.replace('"a drawing of {}"', '"a drawing of {name}"', 1), "no other {...} field"),
])
def test_a_vocabulary_of_the_wrong_shape_is_one_sentence(capsys, tmp_path, edit, words):
    from charattr_core.schema import DEFAULT_VOCABULARY_PATH
    vocabulary = tmp_path / "v.toml"
    vocabulary.write_text(edit(DEFAULT_VOCABULARY_PATH.read_text(encoding="utf-8")), encoding="utf-8")
    code, err = _run(capsys, *_batch(_images(tmp_path / "src"), tmp_path / "r.parquet", tmp_path / "c.db",
                                     "--vocabulary", str(vocabulary)))
    assert code == 1 and _one_sentence(err) and words in err, err


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    source = _images(tmp_path / "src", 40)
    out = tmp_path / "r.parquet"
    # A slow run: each image waits a little in the tag parser (a sitecustomize only this child loads).
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "sitecustomize.py").write_text(
        "import time, charattr_core.tags as t\n_parse = t.parse_tags\n"
        "def slow(*a, **k):\n    time.sleep(0.5)\n    return _parse(*a, **k)\nt.parse_tags = slow\n"
        "import charattr_core.pipeline as p\np.parse_tags = slow\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'slow'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([str(BIN / "charattr"), *_batch(source, out, tmp_path / "c.db", "--batch-size", "1")],
                             stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".r.parquet.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".r.parquet.*.tmp")), "the run never started writing"
    time.sleep(0.3)  # into the loop over images (each takes 0.5 s here), not inside the writer's setup
    child.send_signal(signal.SIGTERM)
    _out, err = child.communicate(timeout=60)
    assert child.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    assert not out.exists() and not list(tmp_path.glob(".r.parquet*"))  # no temp file, no lock file left


# -- class 3: one bad file never stops the run ------------------------------------------------


def test_a_parquet_folder_with_a_metadata_file_still_writes_the_good_rows(capsys, tmp_path):
    source = tmp_path / "hf"
    _parquet(source / "data" / "train-0.parquet")
    pq.write_table(pa.table({"split": ["train"], "rows": [3]}), source / "data" / "_metadata_info.parquet")
    code, err = _run(capsys, *_batch(source, tmp_path / "r.parquet", tmp_path / "c.db"))
    assert code == 0, err
    assert "4 images, 1 failed, 3 rows written" in err and "no image column" not in err.splitlines()[0]
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 3


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_non_utf8_file_and_folder_names_in_every_output_format(capsys, tmp_path, suffix):
    source = tmp_path / "src"
    odd_folder = source / os.fsdecode(b"d\xe9j\xe0")
    odd_folder.mkdir(parents=True)
    (odd_folder / os.fsdecode(b"caf\xe9.png")).write_bytes(png_bytes(300))
    (odd_folder / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"1girl")
    (source / "plain").mkdir()
    (source / "plain" / "ok.png").write_bytes(png_bytes(301))
    out, failures = tmp_path / f"r{suffix}", tmp_path / f"f{suffix}"
    code, err = _run(capsys, *_batch(source, out, tmp_path / "c.db", "--failures", str(failures)))
    assert code == 0 and "2 images, 0 failed, 2 rows written" in err, err
    text = out.read_text(encoding="utf-8", errors="strict") if suffix != ".parquet" else ""
    uris = (pq.read_table(out).column("source_uri").to_pylist() if suffix == ".parquet"
            else [json.loads(line)["source_uri"] for line in text.splitlines()] if suffix == ".jsonl"
            else [line.split(",")[1] for line in text.splitlines()[1:]])
    assert f"file://{source}/d%E9j%E0/caf%E9.png" in uris
    from charattr_core.sources import open_source
    odd = next(u for u in uris if u.startswith("file://"))
    assert open_source(source).load_bytes(odd) == png_bytes(300)  # the uri leads back to the file


def test_a_malformed_row_in_the_results_cache_is_recomputed(capsys, tmp_path):
    source = _images(tmp_path / "src")
    db = tmp_path / "c.db"
    assert _run(capsys, *_batch(source, tmp_path / "a.parquet", db))[0] == 0
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT DISTINCT image_id FROM stage_results ORDER BY image_id")]
        conn.execute("UPDATE stage_results SET payload = 'not json {' WHERE image_id = ?", (ids[0],))
        conn.execute("UPDATE stage_results SET payload = '[1, 2]' WHERE image_id = ?", (ids[1],))
        conn.execute("UPDATE stage_results SET payload = '{}' WHERE image_id = ?", (ids[2],))
        conn.execute("UPDATE fused_attributes SET payload = '{\"image_id\": 1}'")
    code, err = _run(capsys, *_batch(source, tmp_path / "b.parquet", db))
    assert code == 0 and "Traceback" not in err, err
    assert "3 images, 0 failed, 3 rows written" in err
    first, second = (pq.read_table(tmp_path / n).sort_by("image_id") for n in ("a.parquet", "b.parquet"))
    assert first.column("gender").to_pylist() == second.column("gender").to_pylist()


def test_an_image_too_costly_to_prepare_for_clip_says_so_in_its_row(capsys, tmp_path):
    """1 x 20,000,000 pixels passes the pixel limit, but scaling its short side up to the model's
    input would take terabytes: refused by a memory bound, and the row's notes say why."""
    from badinput import bilevel_png
    source = tmp_path / "src"
    source.mkdir()
    (source / "strip.png").write_bytes(bilevel_png(20_000_000, 1))
    (source / "strip.txt").write_text("1girl")
    (source / "plain.png").write_bytes(png_bytes(500))
    out = tmp_path / "r.jsonl"
    code, err = _run(capsys, "batch", str(source), "--out", str(out), "--quiet", "--model", "charattr-tiny",
                     "--pretrained", "random", "--device", "cpu", "--database-url", f"sqlite:///{tmp_path / 'c.db'}")
    assert code == 0, err
    rows = {Path(r["source_uri"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert "clip failed" in rows["strip.png"]["notes"] and "over the limit" in rows["strip.png"]["notes"]
    assert rows["strip.png"]["gender"] == ["female"]  # the tags still answer
    assert "clip failed" not in (rows["plain.png"]["notes"] or "")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_results_inside_the_source_folder_can_be_written_again_but_no_other_file_there(capsys, tmp_path, suffix):
    source = _images(tmp_path / "src" / "shard")
    out = source.parent / f"results{suffix}"
    for _attempt in range(2):  # the second run rewrites its own earlier results
        code, err = _run(capsys, *_batch(source.parent, out, tmp_path / "c.db"))
        assert code == 0 and "3 images, 0 failed, 3 rows written" in err, err
    notes = source.parent / f"notes{suffix}"
    notes.write_text("image,caption\nx,y\n" if suffix != ".parquet" else "")
    if suffix == ".parquet":
        pq.write_table(pa.table({"caption": ["mine"]}), notes)
    before = _digest(notes)
    code, err = _run(capsys, *_batch(source.parent, notes, tmp_path / "c.db"))
    assert code == 1 and "file of the input" in err and _digest(notes) == before
