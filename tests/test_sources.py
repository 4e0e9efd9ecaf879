"""The readers: source detection, shards, streaming, Parquet and WebDataset corpora, load_bytes."""

from __future__ import annotations

import re

import errno
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from badinput import (Case, Corpus, add_member, cases_of, check, jpeg_bytes, png_bytes, write_parquet_corpus,
                      write_tar_corpus)
from charattr_core.errors import ConfigError
from charattr_core.sources import (ROOT_SHARD, FolderSource, ParquetSource, SourceReadError, WebDatasetSource,
                                   open_source, read_images, shard_key, shard_relpath)
from charattr_core.sources import folder as folder_module
from charattr_core.sources.hashing import content_hash

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
PARQUET_CASES = cases_of(write_parquet_corpus)
TAR_CASES = cases_of(write_tar_corpus)


def write_png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed))
    return path


def records_by_uri(source, shards=None) -> dict:
    return {r.source_uri: r for s in (shards or source.shards()) for r in read_images(source, s)}


# -- open_source ------------------------------------------------------------------------------


def test_open_source_picks_the_reader(tmp_path: Path) -> None:
    write_png(tmp_path / "imgs" / "a" / "1.png")
    hf = tmp_path / "hf"
    (hf / "data").mkdir(parents=True)
    (hf / "README.md").write_text("# dataset card")
    write_png(hf / "preview.png")  # at a shallower level than the Parquet files, but Parquet is the data
    pq.write_table(pa.table({"image": [png_bytes()]}), hf / "data" / "train-00000-of-00001.parquet")
    tars = tmp_path / "tars"
    tars.mkdir()
    with tarfile.open(tars / "000.tar", "w") as tar:
        add_member(tar, "k.png", png_bytes())

    assert isinstance(open_source(tmp_path / "imgs"), FolderSource)
    assert isinstance(open_source(hf / "data" / "train-00000-of-00001.parquet"), ParquetSource)
    assert isinstance(open_source(tars), WebDatasetSource)
    assert isinstance(open_source(tars / "000.tar"), WebDatasetSource)
    # breadth first: hf/ itself holds preview.png, so the folder reader wins at level 0 ...
    assert isinstance(open_source(hf), FolderSource)
    # ... unless told otherwise
    assert isinstance(open_source(hf, kind="parquet"), ParquetSource)
    (hf / "preview.png").unlink()
    assert open_source(hf).shards() == ["data/train-00000-of-00001.parquet"]


@pytest.mark.parametrize("setup, words", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "holds no readable images"),
    (lambda p: (p / "notes.txt").write_text("x") and p, "holds no readable images"),
    (lambda p: write_png(p / "one.png"), "is a file"),
], ids=["missing", "empty-folder", "only-text-files", "single-image-file"])
def test_open_source_errors_are_one_sentence(tmp_path: Path, setup, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_source(setup(tmp_path))
    message = str(err.value)
    assert words in message and message.endswith(".") and "\n" not in message


def test_open_source_rejects_an_unknown_kind(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="Unknown source kind"):
        open_source(tmp_path, kind="zip")


def test_same_bytes_have_the_same_image_id_in_every_reader(tmp_path: Path) -> None:
    data = png_bytes(7)
    write_png(tmp_path / "folder" / "s" / "a.png", seed=7)
    (tmp_path / "folder" / "t").mkdir()
    (tmp_path / "folder" / "t" / "renamed copy.png").write_bytes(data)
    pq.write_table(pa.table({"image": [png_bytes(8), data]}), tmp_path / "rows.parquet")
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        add_member(tar, "x/y.png", data)
    ids = set()
    for path in (tmp_path / "folder", tmp_path / "rows.parquet", tmp_path / "s.tar"):
        ids |= {r.image_id for r in records_by_uri(open_source(path)).values() if r.image_id != content_hash(png_bytes(8))}
    assert ids == {content_hash(data)}


def test_an_unreadable_root_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_png(tmp_path / "s" / "a.png")
    source = open_source(tmp_path)

    def deny(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(folder_module.os, "scandir", deny)
    with pytest.raises(ConfigError, match="Cannot read the source folder .*: permission denied"):
        source.shards()


# -- folder shards ----------------------------------------------------------------------------


def test_folder_shards_are_sorted_stable_and_skip_what_is_not_a_shard(tmp_path: Path) -> None:
    write_png(tmp_path / "loose.png")
    write_png(tmp_path / "b_set" / "x.png")
    write_png(tmp_path / "a_set" / "deep" / "er" / "x.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "x.txt").write_text("1girl")
    write_png(tmp_path / ".hidden" / "x.png")
    (tmp_path / "link_set").symlink_to(tmp_path / "b_set", target_is_directory=True)

    source = open_source(tmp_path)
    assert source.shards() == [ROOT_SHARD, "a_set", "b_set"]
    assert source.shards() == open_source(tmp_path).shards()

    write_png(tmp_path / "0_new" / "y.png")  # a new shard appears; the old keys stay as they were
    assert source.shards() == [ROOT_SHARD, "0_new", "a_set", "b_set"]


def test_root_shard_holds_only_the_loose_files(tmp_path: Path) -> None:
    write_png(tmp_path / "loose.png")
    write_png(tmp_path / "sub" / "inner.png")
    source = open_source(tmp_path)
    assert [Path(i.uri).name for i in source.read(ROOT_SHARD)] == ["loose.png"]
    assert [Path(i.uri).name for i in source.read("sub")] == ["inner.png"]


def test_awkward_folder_names_become_valid_partition_keys(tmp_path: Path) -> None:
    names = ["a,b", "[x]", "p|q", "wait...what", "100%", "space name", "ünïcode"]
    for i, name in enumerate(names):
        write_png(tmp_path / name / "img.png", seed=i)
    source = open_source(tmp_path)
    keys = source.shards()
    assert len(keys) == len(names)
    for key in keys:
        assert not any(bad in key for bad in (",", "[", "]", "|", "...")), key
        assert shard_key(shard_relpath(key)) == key
        (item,) = list(source.read(key))
        assert item.error is None and Path(item.uri).parent.name == shard_relpath(key)
    assert sorted(shard_relpath(k) for k in keys) == sorted(names)


@pytest.mark.parametrize("shard", ["nope", "../outside", "a/b", ".hidden", "", "/etc"])
def test_reading_an_unknown_shard_is_a_config_error(tmp_path: Path, shard: str) -> None:
    write_png(tmp_path / "a" / "b" / "x.png")
    write_png(tmp_path / ".hidden" / "x.png")
    with pytest.raises(ConfigError, match="is not a sub-folder"):
        list(open_source(tmp_path).read(shard))


def test_permission_denied_becomes_an_item_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated, so that it also runs as root (the corpus' real chmod-000 case is skipped then)."""
    write_png(tmp_path / "s" / "locked.png")
    write_png(tmp_path / "s" / "open.png", seed=1)
    real_open = os.open

    def deny(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(folder_module.os, "open", deny)
    items = {Path(i.uri).name: i for i in open_source(tmp_path).read("s")}
    assert items["locked.png"].data is None and items["locked.png"].error == "unreadable file: permission denied"
    assert items["open.png"].error is None and items["open.png"].data == png_bytes(1)


# -- streaming --------------------------------------------------------------------------------


def test_folder_shard_is_read_lazily(tmp_path: Path) -> None:
    for i in range(20):
        write_png(tmp_path / "s" / f"{i:02d}.png", seed=i)
    items = open_source(tmp_path).read("s")
    first = next(items)
    assert first.error is None
    for i in range(1, 20):  # files removed after the first item: a reader that read ahead would not notice
        (tmp_path / "s" / f"{i:02d}.png").unlink()
    rest = list(items)
    assert len(rest) == 19 and all(i.data is None and "it no longer exists" in i.error for i in rest)


def test_parquet_shard_streams_by_row_group(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"image": [png_bytes(i % 5) for i in range(200)]}), path, row_group_size=10)
    items = open_source(path).read("big.parquet")
    assert next(items).error is None
    os.truncate(path, path.stat().st_size // 3)  # the later row groups are gone before they are read
    rest = list(items)
    assert len(rest) == 199  # every row still gets an item ...
    assert rest[0].error is None  # ... the rest of the first batch was already in memory,
    assert sum(i.error is not None and "unreadable parquet row group" in i.error for i in rest) >= 100


def test_tar_shard_streams(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(200):
            add_member(tar, f"{i:03d}.png", png_bytes(i % 5))
    items = open_source(path).read("big.tar")
    assert next(items).error is None
    os.truncate(path, path.stat().st_size // 2)
    rest = list(items)
    assert 50 < len(rest) < 199 and "unreadable tar file" in rest[-1].error


# -- Parquet and WebDataset corpora -----------------------------------------------------------


@pytest.fixture(scope="module")
def parquet_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_parquet_corpus(tmp_path_factory.mktemp("pq"))


@pytest.fixture(scope="module")
def tar_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_tar_corpus(tmp_path_factory.mktemp("tar"))


@pytest.fixture(scope="module")
def parquet_records(parquet_corpus: Corpus) -> dict:
    return records_by_uri(open_source(parquet_corpus.root))


@pytest.fixture(scope="module")
def tar_records(tar_corpus: Corpus) -> dict:
    return records_by_uri(open_source(tar_corpus.root))


@pytest.mark.parametrize("case", PARQUET_CASES, ids=lambda c: c.name)
def test_parquet_case(case: Case, parquet_corpus: Corpus, parquet_records: dict) -> None:
    assert check(parquet_records.get(parquet_corpus.uri(case)), case) == []


@pytest.mark.parametrize("case", TAR_CASES, ids=lambda c: c.name)
def test_tar_case(case: Case, tar_corpus: Corpus, tar_records: dict) -> None:
    assert check(tar_records.get(tar_corpus.uri(case)), case) == []


@pytest.mark.parametrize("name", ["parquet", "tar"])
def test_corpus_gives_one_record_per_expected_item(name: str, parquet_corpus, tar_corpus, parquet_records,
                                                   tar_records) -> None:
    corpus, records = (parquet_corpus, parquet_records) if name == "parquet" else (tar_corpus, tar_records)
    assert set(records) == {corpus.uri(c) for c in corpus.expected}


def test_parquet_columns_can_be_named(tmp_path: Path) -> None:
    path = tmp_path / "custom.parquet"
    pq.write_table(pa.table({"pic": [png_bytes()], "labels": ["1girl"], "tags": ["wrong column"]}), path)
    (item,) = open_source(path, image_column="pic", tags_column="labels").read("custom.parquet")
    assert item.error is None and item.data == png_bytes() and item.tags == "1girl"
    (item,) = open_source(path, image_column="photo").read("custom.parquet")
    assert item.data is None and "no column 'photo'" in item.error


def test_parquet_without_an_image_column_is_one_failed_item(tmp_path: Path) -> None:
    # One metadata file among the data files must not stop the run: it becomes one failed item.
    path = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"id": [1], "caption": ["x"]}), path)
    (item,) = open_source(path).read("meta.parquet")
    assert item.data is None and item.uri == str(path)
    assert re.search("no image column .* columns: id, caption", item.error)


def test_not_a_parquet_file_becomes_a_failed_item(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    (item,) = open_source(tmp_path).read("broken.parquet")
    assert item.data is None and item.error.startswith("unreadable parquet file")


# -- load_bytes -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_load_bytes_returns_the_bytes_behind_every_record(tmp_path: Path, parquet_corpus, tar_corpus) -> None:
    from badinput import write_folder_corpus

    folder_corpus = write_folder_corpus(tmp_path)
    for corpus in (folder_corpus, parquet_corpus, tar_corpus):
        source = open_source(corpus.root)
        checked = 0
        for record in records_by_uri(source).values():
            if record.image_id is not None:
                assert content_hash(source.load_bytes(record.source_uri)) == record.image_id, record.source_uri
                checked += 1
        assert checked >= 5


def test_load_bytes_reads_parquet_rows_across_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"image": [png_bytes(i) for i in range(7)]}), path, row_group_size=3)
    source = open_source(path)
    for row in (6, 0, 4, 3, 5):  # out of order: the row-group cache must not serve the wrong rows
        assert source.load_bytes(f"{path}#row={row}") == png_bytes(row)
    with pytest.raises(SourceReadError, match="only 7 rows"):
        source.load_bytes(f"{path}#row=7")


def test_load_bytes_refuses_what_is_not_in_the_source(tmp_path: Path) -> None:
    write_png(tmp_path / "src" / "s" / "a.png")
    outside = write_png(tmp_path / "outside.png")
    folder = open_source(tmp_path / "src")
    for uri in (str(outside), f"{tmp_path}/src/s/../../outside.png", "s/a.png", "/etc/passwd"):
        with pytest.raises(SourceReadError):
            folder.load_bytes(uri)
    (tmp_path / "src" / "s" / "link.png").symlink_to(outside)
    with pytest.raises(SourceReadError, match="outside the source folder"):
        folder.load_bytes(f"{tmp_path}/src/s/link.png")

    pq.write_table(pa.table({"image": [png_bytes()]}), tmp_path / "other.parquet")
    parquet_dir = tmp_path / "pq"
    parquet_dir.mkdir()
    pq.write_table(pa.table({"image": [png_bytes()]}), parquet_dir / "ok.parquet")
    parquet = open_source(parquet_dir)
    for uri in (f"{tmp_path}/other.parquet#row=0", f"{parquet_dir}/ok.parquet", f"{parquet_dir}/ok.parquet#row=x"):
        with pytest.raises(SourceReadError):
            parquet.load_bytes(uri)

    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        add_member(tar, "a.jpg", jpeg_bytes())
    tars = open_source(tmp_path / "t.tar")
    assert tars.load_bytes(f"{tmp_path}/t.tar#a.jpg") == jpeg_bytes()
    with pytest.raises(SourceReadError, match="no file member 'b.jpg'"):
        tars.load_bytes(f"{tmp_path}/t.tar#b.jpg")


def test_tar_members_are_never_extracted_to_disk(tar_corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_a, **_k):
        raise AssertionError("a tar member was extracted to disk")

    for method in ("extract", "extractall", "makefile"):
        monkeypatch.setattr(tarfile.TarFile, method, forbidden)
    source = open_source(tar_corpus.root)
    record = records_by_uri(source)[f"{tar_corpus.root}/good.tar#../../escape.jpg"]
    assert record.ok and record.raw_tags == "traversal"
    assert content_hash(source.load_bytes(record.source_uri)) == record.image_id


# -- real data --------------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_IMAGES.is_dir(), reason="../shared/data is absent")
def test_real_images_are_all_valid_with_the_sizes_the_manifest_gives() -> None:
    source = open_source(SHARED_IMAGES)
    assert source.kind == "folder"
    assert source.shards() == sorted({p.parent.relative_to(SHARED_IMAGES).parts[0]
                                      for p in SHARED_IMAGES.rglob("*") if p.suffix.lower() in (".png", ".jpg")})
    records = records_by_uri(source)
    manifest = [json.loads(line) for line in (SHARED_IMAGES / "manifest.jsonl").read_text().splitlines() if line]
    assert len(records) == len(manifest) and all(r.ok for r in records.values())
    for entry in manifest:
        record = records[str(SHARED_IMAGES.resolve() / entry["file"])]  # uris are of the resolved folder
        if entry.get("width"):
            assert (record.width, record.height) == (entry["width"], entry["height"]), entry["file"]


# -- issue 10: Hugging Face snapshots, symlinked shards ---------------------------------------


def test_a_hugging_face_snapshot_folder_reads_its_symlinked_parquet_files(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "datasets--user--chars"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abcd"
    (snapshot / "data").mkdir(parents=True)
    pq.write_table(pa.table({"image": [png_bytes(7)], "tags": ["1girl"]}), repo / "blobs" / "9f8e7d")
    (snapshot / "data" / "train-00000.parquet").symlink_to("../../../blobs/9f8e7d")  # as huggingface_hub does
    source = open_source(snapshot)
    assert source.kind == "parquet" and source.shards() == ["data/train-00000.parquet"]
    (item,) = source.read("data/train-00000.parquet")
    assert item.error is None and item.data == png_bytes(7) and source.load_bytes(item.uri) == png_bytes(7)


def test_symlinked_shards_pointing_elsewhere_are_skipped_and_said(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pq.write_table(pa.table({"image": [png_bytes(8)]}), elsewhere / "x.parquet")
    root = tmp_path / "src"
    root.mkdir()
    (root / "x.parquet").symlink_to(elsewhere / "x.parquet")
    with pytest.raises(ConfigError, match=r"1 \.parquet symlink\(s\) point outside it and were skipped"):
        open_source(root)
