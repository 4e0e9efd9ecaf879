"""The raw_images stage: every bad or odd input in the corpus gives its expected record."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from badinput import IS_ROOT, Case, Corpus, cases_of, check, encode, picture, png_bytes, truncated, write_folder_corpus
from charattr_core.records import SourceItem
from charattr_core.sources import DEFAULT_MAX_PIXELS, FolderSource, inspect_image, open_source, read_images
from charattr_core.sources import validate
from charattr_core.sources.hashing import content_hash

# Pillow warns (and only warns) about the 100 Mpx bomb before charattr refuses it, and about the
# deliberately broken EXIF; both are expected here.
pytestmark = [pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
              pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")]

FOLDER_CASES = cases_of(write_folder_corpus)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_folder_corpus(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def records(corpus: Corpus) -> list:
    source = open_source(corpus.root)
    return list(read_images(source, "corpus", max_pixels=DEFAULT_MAX_PIXELS))


def item(data: bytes | None, uri: str = "mem://x.png", **kw) -> SourceItem:
    return SourceItem(uri=uri, shard="s", data=data, **kw)


@pytest.mark.parametrize("case", FOLDER_CASES, ids=lambda c: c.name)
def test_corpus_case(case: Case, corpus: Corpus, records: list) -> None:
    if case.needs_non_root and IS_ROOT:
        pytest.skip("running as root: root can read files without read permission")
    by_uri = {r.source_uri: r for r in records}
    assert check(by_uri.get(corpus.uri(case)), case) == []


def test_whole_corpus_in_one_shard_completes_with_the_right_counts(corpus: Corpus, records: list) -> None:
    expected = Counter("ok" if (c.needs_non_root and IS_ROOT) else c.status for c in corpus.expected)
    assert Counter(r.status for r in records) == expected
    uris = [r.source_uri for r in records]
    assert len(uris) == len(set(uris))
    assert set(uris) == {corpus.uri(c) for c in corpus.expected}  # nothing extra, nothing absent
    assert all(r.shard == "corpus" for r in records)
    failed = [r for r in records if r.status == "failed"]
    assert all(r.error and "\n" not in r.error for r in failed)
    assert all(r.error is None for r in records if r.status == "ok")


def test_same_bytes_in_two_places_have_the_same_image_id(corpus: Corpus, records: list) -> None:
    by_uri = {r.source_uri: r for r in records}
    original = by_uri[f"{corpus.root}/corpus/valid.png"]
    alias = by_uri[f"{corpus.root}/corpus/alias.png"]  # a symlink to it
    assert original.image_id == alias.image_id == content_hash((corpus.root / "corpus/valid.png").read_bytes())
    assert original.source_uri != alias.source_uri
    assert by_uri[f"{corpus.root}/corpus/plain.jpg"].image_id != original.image_id


def test_failed_records_keep_what_was_learnt(records: list) -> None:
    """A tags problem does not hide the image: its id, size and format are still recorded."""
    clash = next(r for r in records if r.source_uri.endswith("/tags_clash.png"))
    assert clash.status == "failed" and clash.image_id and (clash.width, clash.height, clash.format) == (64, 48, "PNG")
    bomb = next(r for r in records if r.source_uri.endswith("/bomb.png"))
    assert (bomb.width, bomb.height) == (10_000, 10_000)


def test_unreadable_item_has_no_image_id_and_keeps_the_reader_reason() -> None:
    record = inspect_image(item(None, error="unreadable file: permission denied", tags="1girl"))
    assert (record.status, record.image_id, record.error, record.raw_tags) == (
        "failed", None, "unreadable file: permission denied", "1girl")


def test_tags_error_and_image_error_are_both_reported() -> None:
    record = inspect_image(item(truncated(png_bytes()), error="unreadable tags file: x.txt contains NUL bytes"))
    assert record.status == "failed"
    assert "unreadable tags file" in record.error and "truncated image file" in record.error


def test_unexpected_exception_becomes_a_failed_record(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_a, **_k):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(validate.Image, "open", explode)
    record = inspect_image(item(png_bytes()))
    assert record.status == "failed"
    assert "RuntimeError" in record.error and "decoder exploded" in record.error
    assert record.image_id == content_hash(png_bytes())


def test_max_pixels_is_per_call_and_leaves_pillow_global_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS
    data = png_bytes()  # 64 x 48 = 3,072 pixels
    assert inspect_image(item(data), max_pixels=3_072).ok
    small = inspect_image(item(data), max_pixels=3_071)
    assert small.status == "failed" and "decompression bomb" in small.error and "3,071" in small.error
    assert Image.MAX_IMAGE_PIXELS == before


def test_max_pixels_verdicts_do_not_leak_between_threads() -> None:
    data = png_bytes()
    verdicts: dict[int, list[bool]] = {1_000: [], 10_000: []}

    def work(limit: int) -> None:
        for _ in range(50):
            verdicts[limit].append(inspect_image(item(data), max_pixels=limit).ok)

    threads = [threading.Thread(target=work, args=(limit,)) for limit in verdicts for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts[1_000] == [False] * 100 and verdicts[10_000] == [True] * 100


def test_jpeg_is_decoded_at_reduced_scale_and_truncation_is_still_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafts.append(self.size)  # the size libjpeg will decode to
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    big = encode(picture(1600, 1200, seed=7), "JPEG", quality=85)
    whole = inspect_image(item(big))
    assert whole.ok and (whole.width, whole.height) == (1600, 1200)  # the real size, not the draft's
    assert drafts == [(200, 150)]
    for cut in (0.5, 0.95, 0.999):
        record = inspect_image(item(truncated(big, cut)))
        assert record.status == "failed" and "truncated image file" in record.error, cut
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("data, words", [
    (b'{"error": "rate limited"}', "looks like JSON"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "looks like PDF"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "looks like XML or SVG"),
    (b"PK\x03\x04" + bytes(40), "looks like a ZIP archive"),
    (b"  \n<html><body>Access denied</body></html>", "looks like HTML"),
], ids=["json", "pdf", "svg", "zip", "html-after-whitespace"])
def test_not_an_image_says_what_it_looks_like(data: bytes, words: str) -> None:
    record = inspect_image(item(data))
    assert record.status == "failed" and record.error.startswith("not an image") and words in record.error


def test_parallel_decoding_gives_the_same_records_in_the_same_order(corpus: Corpus, records: list) -> None:
    parallel = list(read_images(FolderSource(corpus.root), "corpus", workers=2))
    assert [r.to_dict() for r in parallel] == [r.to_dict() for r in records]

