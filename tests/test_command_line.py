"""The `charattr` command, end to end in a subprocess-free way (main(argv)) and once for real."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from charattr_core.cli import main

TINY = ["--model", "charattr-tiny", "--pretrained", "random"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_extract_prints_seed_json(capsys, demo_source, tmp_path):
    image = sorted((demo_source / "shard_000").glob("*.png"))[0]
    code, out, _err = _run(capsys, "extract", str(image), "--tags", "1girl, long hair, aqua eyes", "--no-clip",
                           "--database-url", f"sqlite:///{tmp_path / 'c.db'}")
    assert code == 0
    result = json.loads(out)
    assert result["Hair Length"] == "long" and result["Eye Color"] == ["aqua"]
    assert 0.0 <= result["Confidence Score"] <= 1.0


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_batch_writes_every_format(capsys, demo_source, tmp_path, suffix):
    out_file = tmp_path / f"results{suffix}"
    code, _out, err = _run(capsys, "batch", str(demo_source), "--out", str(out_file), "--quiet", *TINY,
                           "--database-url", f"sqlite:///{tmp_path / 'c.db'}")
    assert code == 0, err
    assert "24 images, 0 failed, 24 rows" in err
    if suffix == ".parquet":
        table = pq.read_table(out_file)
        assert table.num_rows == 24 and "hair_color_confidence" in table.column_names
    elif suffix == ".csv":
        rows = list(csv.DictReader(out_file.open()))
        assert len(rows) == 24 and all(r["image_id"] for r in rows)
    else:
        rows = [json.loads(line) for line in out_file.read_text().splitlines()]
        assert len(rows) == 24 and isinstance(rows[0]["hair_color"], list)
    assert not list(tmp_path.glob(f".{out_file.name}.*"))  # no temporary or lock file left


@pytest.mark.parametrize("argv, exit_code, needle", [
    (["batch", "/no/such/folder", "--out", "x.parquet"], 1, "does not exist"),
    (["batch", ".", "--out", "results.xlsx"], 1, "must end in .parquet, .csv or .jsonl"),
    (["extract", "/no/such.png"], 1, "does not exist"),
    (["batch", "."], 2, "--out"),
    (["batch", ".", "--out", "x.csv", "--strategy", "magic"], 2, "invalid choice"),
    (["extract", "x.png", "--threshold", "lots"], 2, "invalid float"),
    (["frobnicate"], 2, "invalid choice"),
    (["batch", ".", "--out", "/tmp/i9-never.csv", "--no-clip", "--no-cache", "--policy", "/no/policy"], 1,
     "No fusion policy at /no/policy"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(capsys, argv, exit_code, needle):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == exit_code
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_database_url_is_one_line(capsys, demo_source, tmp_path):
    code, _out, err = _run(capsys, "batch", str(demo_source), "--out", str(tmp_path / "r.csv"), "--no-clip",
                           "--database-url", "postgresql://user:s3cret@127.0.0.1:1/db")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "s3cret" not in err


def test_demo_data_then_help_for_every_command(capsys, tmp_path):
    code, _out, err = _run(capsys, "demo-data", str(tmp_path / "d"), "--images", "6", "--shards", "2", "--size", "64")
    assert code == 0 and (tmp_path / "d" / "ground_truth.jsonl").is_file()
    assert len(list((tmp_path / "d").rglob("*.png"))) == 6
    for command in ("extract", "batch", "demo-data"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert "usage: charattr " + command in capsys.readouterr().out


def test_console_script_runs_as_installed(tmp_path):
    exe = Path(sys.executable).with_name("charattr")
    proc = subprocess.run([str(exe), "batch", str(tmp_path / "missing"), "--out", "r.csv"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"charattr: error: Source {tmp_path / 'missing'} does not exist."


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` and holds no pixel data (a decompression-bomb header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_pillow_warnings_do_not_reach_the_terminal(tmp_path):
    """100M pixels: over Pillow's warning limit, under its error limit; charattr refuses it itself."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.png").write_bytes(_png_header_only(10_000, 10_000))
    done = subprocess.run([sys.executable, "-m", "charattr_core.cli", "batch", str(tmp_path / "src"),
                           "--out", str(tmp_path / "out.csv"), "--no-clip", "--no-cache", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 images, 1 failed" in done.stderr and "decompression bomb" in done.stderr
    assert "Warning" not in done.stderr and "warnings.warn" not in done.stderr


def _picture(path: Path) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), "white").save(path)
    return path


@pytest.mark.parametrize("sidecar", ["a.png.txt", "a.txt"])
def test_extract_reads_the_sidecar_tags_like_batch(capsys, tmp_path, sidecar):
    image = _picture(tmp_path / "src" / "a.png")
    (tmp_path / "src" / sidecar).write_text("1girl, long_hair, aqua_eyes", encoding="utf-8")
    code, out, err = _run(capsys, "extract", str(image), "--no-clip", "--no-cache")
    assert code == 0, err
    result = json.loads(out)
    assert result["Hair Length"] == "long" and result["Eye Color"] == ["aqua"]
    # --tags still wins over the sidecar
    code, out, _err = _run(capsys, "extract", str(image), "--tags", "1girl, short_hair", "--no-clip", "--no-cache")
    assert code == 0 and json.loads(out)["Hair Length"] == "short"


def test_extract_refuses_an_ambiguous_sidecar_as_batch_does(capsys, tmp_path):
    image = _picture(tmp_path / "src" / "a.png")
    _picture(tmp_path / "src" / "a.jpg")
    (tmp_path / "src" / "a.txt").write_text("1girl, long_hair", encoding="utf-8")
    code, out, err = _run(capsys, "extract", str(image), "--no-clip", "--no-cache")
    assert code == 1 and out == "" and "ambiguous tags file" in err and len(err.strip().splitlines()) == 1


def test_extract_without_tags_or_clip_says_it_had_no_signal(capsys, tmp_path):
    image = _picture(tmp_path / "src" / "a.png")
    code, out, err = _run(capsys, "extract", str(image), "--no-clip", "--no-cache")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "No signal for" in lines[0] and "no tags" in lines[0] and "CLIP is not used" in lines[0]


def test_batch_summary_names_the_signals_used(capsys, demo_source, tmp_path):
    code, _out, err = _run(capsys, "batch", str(demo_source), "--out", str(tmp_path / "r.parquet"), "--quiet",
                           "--no-clip", "--limit", "2", "--database-url", f"sqlite:///{tmp_path / 'c.db'}")
    assert code == 0, err
    assert "  tags: used" in err and "  clip: not used: CLIP disabled" in err
    assert "  policy: not used: the fixed strategy confidence_weighted decides" in err
