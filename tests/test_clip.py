"""Tests for charattr_core.clip: loading (no network, ever), encoding, the stage, zero-shot scoring.

Everything runs on the project's tiny architecture `charattr-tiny` with seeded random weights.
"""

from __future__ import annotations

import io
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count, islice
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from charattr_core import clip_loading
from charattr_core.clip import (
    ClipModel, OomBackoffEncoder, clip_stage_version, decode_image, embed_images, load_clip,
    register_model_configs, resolve_precision, zero_shot, zero_shot_version,
)
from charattr_core.errors import ConfigError, ModelUnavailableError
from charattr_core.records import ImageRecord
from charattr_core.schema import iter_prompts, load_vocabulary

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
TINY = "charattr-tiny"
TINY_DIM = 64


# ---- helpers ---------------------------------------------------------------------------------


def image_bytes(seed: int, fmt: str = "PNG", size: tuple[int, int] = (96, 80)) -> bytes:
    """A noisy image that differs per seed (so embeddings differ too)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def records_for(blobs: dict[str, bytes]) -> list[ImageRecord]:
    return [ImageRecord(image_id=key, source_uri=f"mem://{key}", shard="s0") for key in blobs]


def loader(blobs: dict[str, bytes]):
    return lambda record: blobs[record.image_id]


@pytest.fixture(scope="module")
def tiny() -> ClipModel:
    return load_clip(TINY, None, device="cpu")


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary()


@pytest.fixture()
def blobs() -> dict[str, bytes]:
    return {f"img{i}": image_bytes(i, "PNG" if i % 2 else "JPEG") for i in range(7)}


# ---- loading ---------------------------------------------------------------------------------


def test_register_model_configs_is_idempotent():
    register_model_configs()
    register_model_configs()
    assert TINY in open_clip.list_models()
    assert open_clip.factory._MODEL_CONFIG_PATHS.count(clip_loading.MODEL_CONFIG_DIR) == 1


def test_random_weights_are_deterministic_and_leave_global_rng_alone(blobs):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    a = load_clip(TINY, None, device="cpu")
    b = load_clip(TINY, "random", device="cpu")
    assert torch.equal(before, torch.random.get_rng_state())
    images = [decode_image(data) for data in blobs.values()]
    ea, eb = a.encode_pil(images), b.encode_pil(images)
    np.testing.assert_array_equal(ea, eb)
    # The key names the weights and, for any path but PyTorch fp32, the runtime and precision.
    assert a.model_key == b.model_key == "charattr-tiny/random" + a.inference_path.key_suffix
    assert a.embed_dim == TINY_DIM and ea.shape == (len(images), TINY_DIM) and ea.dtype == np.float32
    assert np.isfinite(ea).all()
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(ea[0], ea[1])  # different images, different embeddings


@pytest.mark.timeout(10)
def test_tagged_weights_missing_offline_fail_fast_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(clip_loading.ALLOW_DOWNLOAD_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("load_clip tried to download although downloading is off")

    monkeypatch.setattr(clip_loading, "_hf_download", no_network)
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        load_clip("ViT-B-32", "openai", device="cpu", cache_dir=str(tmp_path))
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "ViT-B-32/openai" in message and str(tmp_path) in message
    assert "pretrained=" in message and "allow_download" in message
    assert "\n" not in message and message.endswith(".")


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    calls = []

    def offline(repo_id, filenames, cache_dir):
        calls.append((repo_id, filenames, cache_dir))
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(clip_loading, "_hf_download", offline)
    monkeypatch.setenv(clip_loading.ALLOW_DOWNLOAD_ENV, "1")  # the environment switch turns downloads on
    with pytest.raises(ModelUnavailableError, match=r"Could not download .*Network is unreachable.*pretrained=PATH"):
        load_clip("ViT-B-32", "laion2b_s34b_b79k", device="cpu", cache_dir=str(tmp_path))
    repo_id, filenames, cache_dir = calls[0]
    assert repo_id == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" and cache_dir == str(tmp_path)
    assert filenames[0].endswith(".safetensors")  # safetensors is preferred over a pickle-based .bin


def _save_hf_cache_entry(cache: Path, repo_id: str, filename: str, state: dict) -> None:
    """Lay out a file the way huggingface_hub caches it (refs/main -> snapshots/<rev>/file)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "snapshots" / revision).mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    save_file(state, str(repo_dir / "snapshots" / revision / filename))


def _perturbed_state(model: ClipModel, seed: int) -> dict[str, torch.Tensor]:
    """Weights that differ from the seeded random init, so a loader that ignores them is caught."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + 0.05 * torch.randn(v.shape, generator=gen)).contiguous() if v.is_floating_point() else v.clone()
            for k, v in model.model.state_dict().items()}


def _model_with_state(state: dict[str, torch.Tensor]) -> ClipModel:
    # PyTorch fp32: other paths run a converted snapshot of the weights, blind to load_state_dict.
    model = load_clip(TINY, None, device="cpu", precision="fp32")
    model.model.load_state_dict(state)
    return model


def test_tagged_weights_are_found_in_the_local_cache_without_network(tiny, blobs, tmp_path, monkeypatch):
    tag_cfg = open_clip.pretrained._pcfg(hf_hub="charattr/tiny-test/", quick_gelu=True)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {"testtag": tag_cfg})
    monkeypatch.setattr(clip_loading, "_hf_download", lambda *a: pytest.fail("must not download"))
    state = _perturbed_state(tiny, seed=7)
    _save_hf_cache_entry(tmp_path, "charattr/tiny-test", "open_clip_model.safetensors", state)

    model = load_clip(TINY, "TestTag", device="cpu", cache_dir=str(tmp_path), allow_download=False)
    assert model.model_key == "charattr-tiny/testtag" + model.inference_path.key_suffix
    # The tag's training setup is applied: open_clip's QuickGELU for weights trained with it.
    assert isinstance(model.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    loaded = dict(model.model.state_dict())
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_damaged_cached_weights_say_how_to_recover(tmp_path, monkeypatch):
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {"testtag": open_clip.pretrained._pcfg(hf_hub="charattr/tiny-test/")})
    _save_hf_cache_entry(tmp_path, "charattr/tiny-test", "open_clip_model.safetensors", {"x": torch.zeros(1)})
    damaged = next(tmp_path.rglob("open_clip_model.safetensors"))
    damaged.write_bytes(b"\x00" * 16)  # a download cut short
    with pytest.raises(ModelUnavailableError, match="could not be read .*delete it and run once online"):
        load_clip(TINY, "testtag", device="cpu", cache_dir=str(tmp_path))


def test_hub_file_names_follow_open_clip():
    """Our offline lookup must try the same files, in the same order, as open_clip's downloader."""
    from open_clip.pretrained import _PRETRAINED, _get_safe_alternatives

    for tags in _PRETRAINED.values():
        for cfg in tags.values():
            repo_id, filenames = clip_loading._hf_location(cfg)
            expected_repo, filename = cfg["hf_hub"].rstrip("/"), None
            if not cfg["hf_hub"].endswith("/"):
                expected_repo, filename = cfg["hf_hub"].rsplit("/", 1)
            filename = filename or open_clip.pretrained.HF_WEIGHTS_NAME
            assert repo_id == expected_repo
            assert filenames == [*_get_safe_alternatives(filename), filename]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_round_trip(tiny, blobs, tmp_path, suffix):
    state = _perturbed_state(tiny, seed=3)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    images = [decode_image(data) for data in blobs.values()]
    expected = _model_with_state(state).encode_pil(images)

    model = load_clip(TINY, str(path), device="cpu", precision="fp32")  # exact: the reference path
    np.testing.assert_allclose(model.encode_pil(images), expected, atol=1e-6)
    assert not np.allclose(tiny.encode_pil(images), expected, atol=1e-3)  # the file's weights, not the init
    assert model.model_key.startswith("charattr-tiny/file:")
    # The key follows the bytes, not the path: a copy elsewhere is the same model.
    copy = tmp_path / "elsewhere" / path.name
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert load_clip(TINY, str(copy), device="cpu", precision="fp32").model_key == model.model_key


class NotAWeight:
    pass


def test_checkpoint_with_python_objects_is_refused(tiny, tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": tiny.model.state_dict(), "extra": NotAWeight()}, path)
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_clip(TINY, str(path), device="cpu")


def test_checkpoint_of_another_architecture_is_a_config_error(tiny, tmp_path):
    state = dict(tiny.model.state_dict())
    del state["visual.proj"]
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ConfigError, match="does not match architecture charattr-tiny"):
        load_clip(TINY, str(path), device="cpu")


@pytest.mark.parametrize("pretrained", ["missing/weights.safetensors", "weights.pt"])
def test_missing_checkpoint_path_is_one_sentence(tmp_path, pretrained):
    with pytest.raises(ConfigError) as info:
        load_clip(TINY, str(tmp_path / pretrained), device="cpu")
    message = str(info.value)
    assert "does not exist" in message and "\n" not in message and message.endswith(".")


def test_checkpoint_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_clip(TINY, str(tmp_path), device="cpu")


def test_unknown_model_and_tag_are_config_errors():
    with pytest.raises(ConfigError, match=r"Unknown CLIP model 'ViT-B-33'.*ViT-B-32"):
        load_clip("ViT-B-33", None, device="cpu")
    with pytest.raises(ConfigError, match="not supported"):  # would otherwise fetch a config online
        load_clip("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None, device="cpu")
    with pytest.raises(ConfigError, match=r"Unknown pretrained weights 'no_such_tag' for ViT-B-32 \(known tags are openai"):
        load_clip("ViT-B-32", "no_such_tag", device="cpu")


def test_device_and_precision_choices():
    with pytest.warns(RuntimeWarning, match="fp16"):
        assert resolve_precision("fp16", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ConfigError, match="Unknown precision"):
        resolve_precision("int4", torch.device("cpu"))
    with pytest.raises(ConfigError, match="int8 runs on the CPU only"):
        resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(ConfigError, match="Unknown device"):
        load_clip(TINY, None, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            load_clip(TINY, None, device="cuda")
        assert load_clip(TINY, None, device="auto").device.type in ("cpu", "mps")


def test_bf16_on_cpu_still_gives_unit_float32_embeddings(blobs):
    model = load_clip(TINY, None, device="cpu", precision="bf16")
    assert model.inference_path.precision == "bf16" and model.model_key.endswith("-bf16")
    emb = model.encode_pil([decode_image(b) for b in blobs.values()])
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_stage_version():
    assert clip_stage_version("ViT-B-32/openai") == "clip-1+ViT-B-32/openai"


def test_concurrent_encoding_matches_serial(tiny, blobs):
    images = [decode_image(data) for data in blobs.values()]
    serial = [tiny.encode_pil([im]) for im in images]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda im: tiny.encode_pil([im]), images))
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(a, b, atol=1e-6)


# ---- decoding --------------------------------------------------------------------------------


def test_transparent_pixels_become_white():
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(buf, format="PNG")
    image = decode_image(buf.getvalue())
    assert image.mode == "RGB" and image.getpixel((3, 3)) == (255, 255, 255)


def test_large_jpeg_is_decoded_at_reduced_scale_but_not_below_the_minimum():
    image = decode_image(image_bytes(1, "JPEG", size=(1600, 1200)), min_size=(128, 128))
    assert 128 <= min(image.size) < 1200


# ---- the clip_embeddings stage ---------------------------------------------------------------


def test_stage_yields_float16_unit_embeddings_equal_to_direct_encoding(tiny, blobs):
    rows = list(embed_images(records_for(blobs), tiny, loader(blobs), batch_size=3, num_workers=2))
    assert [r.image_id for r in rows] == list(blobs)
    matrix = np.stack([r.embedding for r in rows])
    assert matrix.dtype == np.float16 and matrix.shape == (len(blobs), TINY_DIM)
    assert all(r.error is None and r.model_key == tiny.model_key for r in rows)
    np.testing.assert_allclose(np.linalg.norm(matrix.astype(np.float32), axis=1), 1.0, atol=2e-3)
    # Small images are decoded at full size, so the stage agrees with encode_pil up to float16.
    direct = tiny.encode_pil([decode_image(data) for data in blobs.values()])
    np.testing.assert_allclose(matrix.astype(np.float32), direct, atol=2e-3)


def test_failed_records_are_skipped(tiny, blobs):
    records = records_for(blobs)
    records[2].status, records[2].error = "failed", "truncated"
    records.append(ImageRecord(image_id=None, source_uri="mem://none", shard="s0", status="failed", error="unreadable"))
    touched = []

    def load(record):
        touched.append(record.image_id)
        return blobs[record.image_id]

    rows = list(embed_images(records, tiny, load, batch_size=4, num_workers=2))
    assert [r.image_id for r in rows] == [r.image_id for r in records if r.ok]
    assert records[2].image_id not in touched


def test_bad_images_become_error_rows_and_the_rest_succeed_in_order(tiny, blobs):
    blobs = dict(blobs)
    blobs["garbage"] = b"this is not an image"
    blobs["truncated"] = image_bytes(99, "PNG")[:200]
    order = ["img0", "garbage", "img1", "img2", "truncated", "unreadable", "img3"]
    records = [ImageRecord(image_id=k, source_uri=f"mem://{k}", shard="s0") for k in order]

    def load(record):
        if record.image_id == "unreadable":
            raise FileNotFoundError("no such file: mem://unreadable")
        return blobs[record.image_id]

    rows = list(embed_images(records, tiny, load, batch_size=4, num_workers=2))
    assert [r.image_id for r in rows] == order
    errors = {r.image_id: r.error for r in rows if r.embedding is None}
    assert set(errors) == {"garbage", "truncated", "unreadable"}
    assert errors["garbage"].startswith("Could not decode the image") and "UnidentifiedImageError" in errors["garbage"]
    assert errors["truncated"].startswith("Could not decode the image")
    assert errors["unreadable"].startswith("Could not read the image bytes of mem://unreadable")
    assert "FileNotFoundError" in errors["unreadable"]
    good = [r for r in rows if r.embedding is not None]
    assert len(good) == 4 and all(r.error is None and r.embedding.shape == (TINY_DIM,) for r in good)


def test_order_is_preserved_when_workers_finish_out_of_order(tiny):
    blobs = {f"img{i}": image_bytes(i) for i in range(12)}
    jitter = random.Random(0)
    delays = {k: jitter.uniform(0, 0.02) for k in blobs}

    def slow_load(record):
        time.sleep(delays[record.image_id])  # later images often finish first
        return blobs[record.image_id]

    serial = list(embed_images(records_for(blobs), tiny, loader(blobs), batch_size=5, num_workers=0))
    parallel = list(embed_images(records_for(blobs), tiny, slow_load, batch_size=5, num_workers=4))
    assert [r.image_id for r in parallel] == list(blobs)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.embedding, b.embedding)


def test_stage_streams_with_bounded_prefetch(tiny):
    """An endless input works, and reading never runs more than the prefetch window ahead."""
    data = image_bytes(5)
    reads = count()
    lock = threading.Lock()
    read_so_far = 0

    def load(record):
        nonlocal read_so_far
        with lock:
            read_so_far = next(reads) + 1
        return data

    endless = (ImageRecord(image_id=f"id{i}", source_uri=f"mem://{i}", shard="s0") for i in count())
    batch_size, prefetch = 4, 2
    stage = embed_images(endless, tiny, load, batch_size=batch_size, num_workers=2, prefetch_batches=prefetch)
    for received, row in enumerate(islice(stage, 10), start=1):
        assert row.embedding is not None
        assert read_so_far <= received + (prefetch + 1) * batch_size
    stage.close()


class FakeOom:
    """Wraps an encoder and runs out of memory on chunks larger than `limit`."""

    def __init__(self, encode, limit: int) -> None:
        self.encode, self.limit, self.sizes = encode, limit, []

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        self.sizes.append(len(batch))
        if len(batch) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(batch)} GiB")
        return self.encode(batch)


def test_out_of_memory_halves_the_batch_and_keeps_results(tiny, blobs, monkeypatch):
    expected = list(embed_images(records_for(blobs), tiny, loader(blobs), batch_size=4, num_workers=0))
    fake = FakeOom(tiny.encode_tensor, limit=1)
    monkeypatch.setattr(tiny, "encode_tensor", fake)
    rows = list(embed_images(records_for(blobs), tiny, loader(blobs), batch_size=4, num_workers=1))
    # batch 1: 4 fails, 2 fails, then 1s; batch 2 (3 images) starts at the learned size 1.
    assert fake.sizes == [4, 2, 1, 1, 1, 1, 1, 1, 1]
    assert [r.image_id for r in rows] == [r.image_id for r in expected]
    for a, b in zip(rows, expected):
        np.testing.assert_allclose(a.embedding.astype(np.float32), b.embedding.astype(np.float32), atol=2e-3)


def test_out_of_memory_on_one_image_and_other_errors_propagate():
    batch = torch.zeros(4, 3, 8, 8)
    never_fits = FakeOom(lambda b: np.zeros((len(b), 2), np.float32), limit=0)
    with pytest.raises(torch.OutOfMemoryError):
        OomBackoffEncoder(never_fits, 4)(batch)
    assert never_fits.sizes == [4, 2, 1]

    def broken(b):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        OomBackoffEncoder(broken, 4)(batch)


def test_bad_stage_settings_are_config_errors(tiny):
    with pytest.raises(ConfigError):
        list(embed_images([], tiny, lambda r: b"", batch_size=0))


# ---- text embeddings and zero-shot -----------------------------------------------------------


def test_text_embeddings_are_prompt_ensembles_and_cached(vocab, monkeypatch):
    model = load_clip(TINY, None, device="cpu")
    calls = []
    original = model.encode_texts
    monkeypatch.setattr(model, "encode_texts", lambda texts: calls.append(len(texts)) or original(texts))
    text = model.text_embeddings(vocab)
    assert set(text) == set(vocab.keys)
    for attribute in vocab.attributes:
        matrix = text[attribute.key]
        assert matrix.shape == (len(attribute.values), TINY_DIM) and matrix.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
        assert not matrix.flags.writeable
    # One value by hand: mean of its normalised prompt embeddings, re-normalised.
    hair = vocab.attribute("hair_color")
    prompts = iter_prompts(hair, hair.value("blonde"), vocab.prompt_templates)
    assert len(prompts) > 1
    mean = original(prompts).mean(axis=0)
    np.testing.assert_allclose(text["hair_color"][hair.index("blonde")], mean / np.linalg.norm(mean), atol=1e-5)

    assert model.text_embeddings(vocab) is text
    assert len(calls) == 1  # the second call came from the cache


def test_zero_shot_on_real_embeddings_is_well_formed(tiny, vocab, blobs):
    embeddings = np.stack([r.embedding for r in embed_images(records_for(blobs), tiny, loader(blobs), num_workers=0)])
    results = zero_shot(embeddings, vocab, tiny.text_embeddings(vocab))
    assert len(results) == len(blobs)
    for per_image in results:
        assert set(per_image) == set(vocab.keys)
        for key, estimate in per_image.items():
            attribute = vocab.attribute(key)
            assert estimate.attribute == key and estimate.evidence == ("clip:zero-shot",)
            assert set(estimate.scores) == set(attribute.value_names)
            assert set(estimate.values) <= set(attribute.value_names) and estimate.values
            scores = np.array(list(estimate.scores.values()))
            assert ((scores >= 0) & (scores <= 1)).all() and 0 <= estimate.confidence <= 1
            if attribute.multi:
                assert estimate.confidence == pytest.approx(scores.max())
                assert estimate.values[0] == max(estimate.scores, key=estimate.scores.get)
            else:
                assert scores.sum() == pytest.approx(1.0, abs=1e-5)
                assert estimate.confidence == pytest.approx(scores.max())
                assert estimate.scores[estimate.value] == pytest.approx(estimate.confidence)


def _basis_text_embeddings(vocab, dim: int = 16) -> dict[str, np.ndarray]:
    """Value j of every attribute = unit vector e_j: similarities are easy to reason about."""
    return {a.key: np.eye(len(a.values), dim, dtype=np.float32) for a in vocab.attributes}


def test_zero_shot_multi_valued_rule(vocab):
    text = _basis_text_embeddings(vocab)
    hair = vocab.attribute("hair_color")
    assert hair.multi
    black, pink = hair.index("black"), hair.index("pink")
    two_colours = np.zeros(16, np.float32)
    two_colours[[black, pink]] = 1 / np.sqrt(2)
    one_colour = np.zeros(16, np.float32)
    one_colour[pink] = 1.0
    results = zero_shot(np.stack([two_colours, one_colour]), vocab, text)

    both = results[0]["hair_color"]
    assert set(both.values) == {"black", "pink"}
    assert both.scores["black"] == pytest.approx(both.scores["pink"]) == pytest.approx(both.confidence)
    assert both.confidence > 0.9  # the two colours hold nearly all the mass
    single = results[1]["hair_color"]
    assert single.values == ("pink",) and single.confidence > 0.9
    assert single.scores["black"] < 0.01
    # Single-valued attributes never answer more than one value, even on a tie.
    gender = results[0]["gender"]
    assert len(gender.values) == 1 and sum(gender.scores.values()) == pytest.approx(1.0)


def test_zero_shot_multi_values_are_capped_and_floored(vocab):
    text = _basis_text_embeddings(vocab)
    spread = np.zeros(16, np.float32)
    spread[:5] = 1 / np.sqrt(5)  # five equally good hair colours
    estimate = zero_shot(spread[None], vocab, text, multi_max_values=3)[0]["hair_color"]
    assert len(estimate.values) == 3
    weak = np.zeros(16, np.float32)  # nothing fits: a near-uniform distribution over 12 colours
    estimate = zero_shot(weak[None], vocab, text)[0]["hair_color"]
    assert len(estimate.values) == 1  # only the top value; the rest are below the floor


def test_zero_shot_input_checks(vocab):
    text = _basis_text_embeddings(vocab)
    assert zero_shot(np.zeros((0, 16), np.float32), vocab, text) == []
    with pytest.raises(ValueError, match="no entry for attribute"):
        zero_shot(np.zeros((1, 16), np.float32), vocab, {k: v for k, v in text.items() if k != "age"})
    with pytest.raises(ValueError, match="expected"):
        zero_shot(np.zeros((1, 8), np.float32), vocab, text)
    assert zero_shot_version("ViT-B-32/openai", vocab) == f"zeroshot-1+ViT-B-32/openai+vocab-{vocab.fingerprint}"


# ---- real images -----------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_IMAGES.is_dir(), reason="../shared/data is absent")
def test_real_images_are_embedded(tiny):
    paths = sorted(p for p in SHARED_IMAGES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))[:12]
    assert paths
    records = [ImageRecord(image_id=str(i), source_uri=str(p), shard="real") for i, p in enumerate(paths)]
    rows = list(embed_images(records, tiny, lambda r: Path(r.source_uri).read_bytes(), batch_size=4, num_workers=2))
    assert [r.image_id for r in rows] == [r.image_id for r in records]
    assert all(r.error is None and r.embedding is not None and np.isfinite(r.embedding).all() for r in rows)
