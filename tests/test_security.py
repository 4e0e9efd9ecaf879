"""Safe to run on files from the internet: no pickles, Pillow's safety nets on, decompression
bombs refused at a configurable size, the web UI on loopback only, database passwords never in
Dagster's stored configuration, and no source that makes charattr read outside its root."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "dagster"))  # the Dagster tests' helpers (dagster_testing)

from badinput import IMAGE_STRUCT, add_member, png_bytes
from charattr_core.config import PipelineConfig
from charattr_core.errors import ConfigError
from charattr_core.pipeline import RunSummary, create_pipeline
from charattr_core.sources.validate import DEFAULT_MAX_PIXELS
from charattr_dagster.definitions import build_definitions
from charattr_dagster.settings import Settings
from charattr_dagster.warehouse import Warehouse
from dagster_testing import make_settings, register, run_job

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("charattr_core", "charattr_dagster", "charattr_app", "benchmarks")

# -- no pickles -------------------------------------------------------------------------------

UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _call_name(node: ast.Call) -> str:
    """`a.b.c(...)` -> "a.b.c"; "" when the callee is not a plain dotted name."""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
        return ".".join(reversed(parts))
    return ""


def _keyword_is(node: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in node.keywords)


def unsafe_loads(source: str, filename: str = "<code>") -> list[str]:
    """Lines of `source` that unpickle, load a checkpoint unsafely or switch off Pillow's nets."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad = [n for n in names if n.split(".")[0] in UNPICKLING_MODULES - {"pickle"}]
            if isinstance(node, ast.ImportFrom) and (node.module or "") == "pickle":
                bad += [f"pickle.{a.name}" for a in node.names if "load" in a.name.lower()]
            found += [f"{where}: imports {n}" for n in bad]
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            last = name.rsplit(".", 1)[-1]
            if name.split(".")[0] in UNPICKLING_MODULES and ("load" in last.lower() or last == "Unpickler"):
                found.append(f"{where}: {name}()")
            elif last == "read_pickle":
                found.append(f"{where}: {name}()")
            elif (name.endswith("torch.load") or last == "load_checkpoint") and not _keyword_is(node, "weights_only", True):
                found.append(f"{where}: {name}() without weights_only=True")
            elif name in ("np.load", "numpy.load") and not _keyword_is(node, "allow_pickle", False) and any(
                    k.arg == "allow_pickle" for k in node.keywords):
                found.append(f"{where}: {name}() with allow_pickle")
            elif name in ("yaml.load", "yaml.unsafe_load") and not any(
                    k.arg == "Loader" and "Safe" in ast.unparse(k.value) for k in node.keywords):
                found.append(f"{where}: {name}() without a safe loader")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in ("MAX_IMAGE_PIXELS", "LOAD_TRUNCATED_IMAGES"):
                    found.append(f"{where}: sets {ast.unparse(target)}")
    return found


def _python_files() -> Iterator[Path]:
    for folder in CODE_DIRS:
        yield from sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("snippet", [
    "import pickle\npickle.load(open('x', 'rb'))",
    "import pickle\npickle.loads(b'')",
    "from pickle import loads",
    "import joblib",
    "import cloudpickle",
    "import torch\ntorch.load('x.pt')",
    "import torch\ntorch.load('x.pt', weights_only=False)",
    "import open_clip\nopen_clip.load_checkpoint(m, 'x.pt')",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
    "import pandas as pd\npd.read_pickle('x.pkl')",
    "import yaml\nyaml.load(text)",
    "from PIL import Image\nImage.MAX_IMAGE_PIXELS = None",
    "from PIL import ImageFile\nImageFile.LOAD_TRUNCATED_IMAGES = True",
])
def test_the_unsafe_load_finder_finds_each_kind(snippet):
    assert unsafe_loads(snippet), snippet  # so that an empty report below means something


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load('x.pt', weights_only=True)",
    "import numpy as np\nnp.load('x.npy')",
    "import pickle\ntry:\n    pass\nexcept pickle.UnpicklingError:\n    pass",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "from safetensors.torch import load_file\nload_file('x.safetensors')",
])
def test_the_unsafe_load_finder_accepts_safe_loading(snippet):
    assert unsafe_loads(snippet) == []


def test_no_code_loads_pickles_or_switches_off_pillow_safety():
    files = list(_python_files())
    assert len(files) > 20
    found = [line for path in files for line in unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert found == []


# -- decompression bombs: the limit holds and is configurable ------------------------------------


def _two_images(folder: Path) -> tuple[Path, Path]:
    """A 64x48 (3,072 px) and a 40x30 (1,200 px) image in one shard."""
    (folder / "s").mkdir(parents=True)
    big, small = folder / "s" / "big.png", folder / "s" / "small.png"
    Image.new("RGB", (64, 48), "red").save(big)
    Image.new("RGB", (40, 30), "blue").save(small)
    return big, small


def test_max_image_pixels_of_the_pipeline_refuses_larger_images(tmp_path):
    assert PipelineConfig().max_image_pixels == DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    big, small = _two_images(tmp_path / "src")
    summary = RunSummary()
    with create_pipeline({"use_clip": False, "cache_results": False, "max_image_pixels": 2000}) as pipe:
        results = {r.source_uri: (r, f) for r, f in pipe.iter_results(tmp_path / "src", summary=summary)}
    record, fused = results[str(big)]
    assert fused is None and record.status == "failed"
    assert "decompression bomb" in record.error and "3,072 pixels" in record.error and "2,000" in record.error
    assert results[str(small)][1] is not None and summary.failed == 1
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS  # Pillow's process-wide net is left alone
    with pytest.raises(ConfigError, match="max_image_pixels"):
        PipelineConfig(max_image_pixels=0)


def test_max_image_pixels_of_the_command_line(tmp_path, capsys):
    from charattr_core.cli import main

    _two_images(tmp_path / "src")
    code = main(["batch", str(tmp_path / "src"), "--out", str(tmp_path / "out.csv"), "--no-clip", "--no-cache",
                 "--max-image-pixels", "2000", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and "2 images, 1 failed, 1 rows written" in err and "decompression bomb" in err


def test_max_image_pixels_of_the_dagster_settings(tmp_path):
    from charattr_core.cli import build_parser
    from charattr_dagster.cli import settings_from_args

    assert Settings.from_env({"CHARATTR_MAX_IMAGE_PIXELS": "2000"}).max_image_pixels == 2000
    big, small = _two_images(tmp_path / "src")
    args = build_parser().parse_args(["run", str(tmp_path / "src"), "--max-image-pixels", "2000"])
    assert settings_from_args(args).max_image_pixels == 2000  # `charattr run --max-image-pixels`
    defs = build_definitions(make_settings(tmp_path / "src", tmp_path, max_image_pixels=2000, max_failed_fraction=1.0))
    with dg.instance_for_test() as instance:
        register(instance, ["s"])
        run_job(defs, instance, "ingest_shards", ["s"])
    rows = {r["source_uri"]: r for r in Warehouse(root=str(tmp_path / "warehouse")).iter_rows("raw_images", ["s"])}
    assert rows[str(big)]["status"] == "failed" and "decompression bomb" in rows[str(big)]["error"]
    assert rows[str(small)]["status"] == "ok"


# -- the web UI listens on loopback only ----------------------------------------------------------


def test_the_web_ui_binds_loopback_unless_told_otherwise():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    ui = re.search(r"^ui:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert ui and re.search(r"dagster dev .*(-h|--host) 127\.0\.0\.1", ui.group(1))
    texts = {p: p.read_text(encoding="utf-8") for p in [REPO / "Makefile", REPO / "README.md", REPO / "workspace.yaml",
                                                         *(REPO / "docs").glob("*.md"), *_python_files()]}
    assert not [str(p) for p, text in texts.items() if "0.0.0.0" in text or "--host=0" in text]
    for path, text in texts.items():  # a webserver started without a host uses the default below
        for line in text.splitlines():
            if re.search(r"\bdagster(-webserver| dev)\b", line) and re.search(r"(-h|--host)[ =]", line):
                assert re.search(r"(-h|--host)[ =](127\.0\.0\.1|localhost)\b", line), f"{path}: {line}"
    from dagster_webserver.cli import dagster_webserver
    assert next(p.default for p in dagster_webserver.params if p.name == "host") == "127.0.0.1"


# -- database passwords stay out of Dagster's stored configuration --------------------------------


def test_a_database_password_is_not_stored_in_the_job_snapshot(tmp_path, monkeypatch):
    from dagster._serdes import serialize_value

    monkeypatch.setenv("CHARATTR_DATABASE_URL", "")  # restored after the test: building sets it
    secret = "s3cret-in-the-url"
    settings = make_settings(tmp_path, tmp_path, database_url=f"postgresql://charattr:{secret}@db.example:5432/x")
    defs = build_definitions(settings)
    with dg.instance_for_test():  # resolving definitions reads the current instance's state storage
        for job in ("ingest_shards", "fuse_shards", "process_shards"):
            snapshot = serialize_value(defs.resolve_job_def(job).get_job_snapshot())
            assert secret not in snapshot and "CHARATTR_DATABASE_URL" in snapshot
        plain = build_definitions(make_settings(tmp_path, tmp_path))
        plain_snapshot = serialize_value(plain.resolve_job_def("ingest_shards").get_job_snapshot())
    assert str(tmp_path / "charattr.db") in plain_snapshot  # a URL without a password is kept as it is
    # A run still gets the real URL, read from the environment when the resource is built.
    with dg.build_resources({"results_store": defs.resources["results_store"]}) as resources:
        assert resources.results_store.database_url == settings.database_url
        assert secret not in resources.results_store.redacted_url()


# -- a source cannot make charattr read outside its root -----------------------------------------


_AUDIT: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if _AUDIT and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _AUDIT[-1].append(str(args[0] if not isinstance(args[0], bytes) else args[0].decode(errors="replace")))


sys.addaudithook(_audit)  # cannot be removed; records only while `recording_opens` is active


@contextlib.contextmanager
def recording_opens() -> Iterator[list[str]]:
    """Every path this process opens inside the block (seen by a Python audit hook)."""
    opened: list[str] = []
    _AUDIT.append(opened)
    try:
        yield opened
    finally:
        _AUDIT.remove(opened)


def test_parquet_path_cells_are_never_followed(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(1))
    root = tmp_path / "src"
    root.mkdir()
    cells = [{"bytes": None, "path": "../../etc/passwd"}, {"bytes": None, "path": str(secret)},
             {"bytes": None, "path": "../secret.png"}, {"bytes": png_bytes(2), "path": "../secret.png"}]
    pq.write_table(pa.table({"image": pa.array(cells, IMAGE_STRUCT)}), root / "manifest.parquet")
    with create_pipeline({"use_clip": False, "cache_results": False}) as pipe, recording_opens() as opened_paths:
        results = list(pipe.iter_results(root))
    assert [r.status for r, _f in results] == ["failed", "failed", "failed", "ok"]
    for record, _f in results[:3]:
        assert "only a path" in record.error and "does not follow" in record.error
    assert results[3][0].image_id != results[1][0].image_id  # the bytes in the cell, not the file at the path
    assert not [p for p in opened_paths if p.endswith(("passwd", "secret.png"))]


def test_folder_symlinks_out_of_the_root_are_refused_without_opening_the_target(tmp_path):
    secret_dir = tmp_path / "private"
    secret_dir.mkdir()
    (secret_dir / "secret.png").write_bytes(png_bytes(3))
    shard = tmp_path / "src" / "s"
    shard.mkdir(parents=True)
    (shard / "ok.png").write_bytes(png_bytes(4))
    (shard / "link.png").symlink_to(secret_dir / "secret.png")
    (shard / "link.txt").symlink_to("/etc/hostname")
    (shard / "dir").symlink_to(secret_dir, target_is_directory=True)
    with create_pipeline({"use_clip": False, "cache_results": False}) as pipe, recording_opens() as opened_paths:
        results = {Path(r.source_uri).name: r for r, _f in pipe.iter_results(tmp_path / "src")}
    assert set(results) == {"ok.png", "link.png"}  # the folder symlink is not walked
    assert results["ok.png"].ok
    assert results["link.png"].status == "failed" and "outside the source folder" in results["link.png"].error
    assert "unreadable tags file" in results["link.png"].error
    assert any(p.endswith("/s/ok.png") for p in opened_paths)  # the recording does see what is read
    assert not [p for p in opened_paths if "private" in p or p == "/etc/hostname"]


def test_tar_member_names_with_dot_dot_are_only_keys(tmp_path):
    root = tmp_path / "deep" / "tars"
    root.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add_member(tar, "../../escape.png", png_bytes(5))
        add_member(tar, "../../escape.txt", b"1girl")
        add_member(tar, "/abs/olute.png", png_bytes(6))
    (root / "shard.tar").write_bytes(buf.getvalue())
    with create_pipeline({"use_clip": False, "cache_results": False}) as pipe, recording_opens() as opened_paths:
        results = [(r, f) for r, f in pipe.iter_results(root)]
    assert [r.source_uri for r, _f in results] == [f"{root}/shard.tar#../../escape.png", f"{root}/shard.tar#/abs/olute.png"]
    assert all(r.ok and f is not None for r, f in results)
    assert results[0][0].raw_tags == "1girl"
    assert not (tmp_path / "escape.png").exists() and not Path("/abs/olute.png").exists()
    assert not [p for p in opened_paths if "escape" in p or p.startswith("/abs")]


# -- crafted tar shards cannot hang or flood a run (issue 10) -------------------------------------

# Reads a shard in a child process, so that a reader that loops (as Python 3.11's tarfile does on
# these files) fails the test at the time limit instead of hanging the suite.
_READ_SHARD = """
import json, sys
from charattr_core.sources import open_source
source = open_source(sys.argv[1])
items = [(i.uri.rpartition("#")[2], i.error) for shard in source.shards() for i in source.read(shard)]
print(json.dumps(items))
"""


@pytest.mark.parametrize("kind, reason", [("negative", "negative member size"), ("pax", "extended header"),
                                          ("pax_negative", "points back")])
def test_a_crafted_tar_header_becomes_one_failed_item_at_once(tmp_path, kind, reason):
    import json
    import subprocess

    from badinput import crafted_tar
    crafted_tar(tmp_path / "bad.tar", kind)
    done = subprocess.run([sys.executable, "-c", _READ_SHARD, str(tmp_path / "bad.tar")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)
    assert [name for name, _error in items] == ["a.jpg", ""]  # the member before the damage, then the shard
    assert items[0][1] is None and reason in items[1][1] and items[1][1].startswith("unreadable tar file")


def test_the_tar_guard_checks_every_header_of_an_extended_header_chain(tmp_path):
    from charattr_core.sources.targuard import MAX_EXTENDED_HEADER, check_header_chain

    def header(kind: bytes, size: int) -> bytes:
        block = bytearray(512)
        block[0:5] = b"x.jpg"
        block[124:136] = b"%011o\0" % size
        block[156:157] = kind
        return bytes(block)

    small = header(b"x", 100) + b"a" * 512  # a pax header of 100 bytes, then a second, huge one
    huge = header(b"L", MAX_EXTENDED_HEADER + 1)
    data = small + huge + b"\0" * (MAX_EXTENDED_HEADER + 2048)
    with pytest.raises(tarfile.ReadError, match="extended header at byte 1,024"):
        check_header_chain(io.BytesIO(data), 0, len(data))
    check_header_chain(io.BytesIO(small + header(b"0", 10) + b"\0" * 1024), 0, len(small) + 1536)  # a plain member


# -- database URLs: everything between scheme and host is secret (issue 10) ------------------------


@pytest.mark.parametrize("url", ["postgresql://bob:p@ss@w0rd@db.example:5432/x",
                                 "postgresql+psycopg://bob:tail@end@127.0.0.1:1/x",
                                 "postgresql://bob:a:b@c@db.example/x"])
def test_a_password_with_an_unencoded_at_sign_never_shows(url, tmp_path):
    from charattr_core.store import ResultStore, redact_url
    secret = url.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
    pieces = [secret] + [secret.split("@", k)[-1] for k in range(1, secret.count("@") + 1)]
    assert all(piece not in redact_url(url).split("://", 1)[1] for piece in pieces), redact_url(url)
    assert redact_url(url).endswith(url.rsplit("@", 1)[1]) and ":***@" in redact_url(url)
    with pytest.raises(ConfigError) as caught:
        ResultStore(url)
    message = str(caught.value)
    assert not [p for p in pieces if p in message.split("://", 1)[1].split("/", 1)[0]], message
    assert "%40" in message  # and it says how to write the password


def test_a_driver_message_quoting_the_misparsed_host_is_scrubbed():
    from charattr_core.store import ResultStore
    store = ResultStore.__new__(ResultStore)
    from charattr_core.store import _raw_secrets
    store._secrets = sorted(_raw_secrets("postgresql://bob:p@ss@db.example/x"), key=len, reverse=True)
    reason = store._reason(Exception('failed to resolve host "ss@db.example": Name or service not known'))
    assert "ss@" not in reason and '"***@db.example"' in reason


# -- a vocabulary cannot overwrite output columns (issue 10) --------------------------------------


@pytest.mark.parametrize("key, words", [("image_id", "output column 'image_id'"),
                                        ("gender_confidence", "confidence column of the attribute 'gender'"),
                                        ("notes", "output column 'notes'")])
def test_a_vocabulary_attribute_named_like_an_output_column_is_refused(tmp_path, key, words):
    from charattr_core.schema import DEFAULT_VOCABULARY_PATH, load_vocabulary
    text = DEFAULT_VOCABULARY_PATH.read_text(encoding="utf-8")
    text += f'\n[attributes.{key}]\nlabel = "X"\n[attributes.{key}.values.a]\ntags = ["a"]\nprompts = ["a"]\n'
    path = tmp_path / "vocab.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_vocabulary(path)
