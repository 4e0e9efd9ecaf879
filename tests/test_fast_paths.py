"""The throughput work must not change results: the uint8 pixel path, the shortened text context,
the in-place checkpoint reader, lazy CLIP loading on cached re-runs, and the cache runner's
garbage-collector pause. Speed itself is measured in benchmarks/, never asserted here."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from charattr_core import clip_loading
from charattr_core.clip import ClipModel, clip_model_key, decode_image, embed_images, load_clip
from charattr_core.clip_model import split_preprocess
from charattr_core.errors import ConfigError, ModelUnavailableError
from charattr_core.pipeline import RunSummary, create_pipeline
from charattr_core.records import ImageRecord
from charattr_core.stages import Codec, gc_paused, run_cached

TINY = "charattr-tiny"


def png(seed: int, size: tuple[int, int] = (90, 70), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny() -> ClipModel:
    return load_clip(TINY, None, device="cpu", precision="fp32")  # the reference path: exact comparisons


# ---- images: uint8 pixels normalised per batch == open_clip's per-image preprocess -------------


def test_pixel_path_gives_bit_identical_model_inputs_and_embeddings(tiny):
    images = [decode_image(png(i, mode="RGBA" if i == 2 else "RGB")) for i in range(5)]
    floats = torch.stack([tiny.preprocess(im) for im in images])
    pixels = torch.from_numpy(np.stack([tiny.prepare_pixels(im) for im in images]))
    assert pixels.dtype == torch.uint8 and pixels.shape == (5, *tiny.image_size, 3)
    assert torch.equal(tiny._normalize_pixels(pixels), floats)
    np.testing.assert_array_equal(tiny.encode_tensor(pixels), tiny.encode_tensor(floats))


def test_stage_falls_back_to_preprocess_for_a_transform_it_cannot_split(tiny):
    def custom(image: Image.Image) -> torch.Tensor:  # not Compose([..., ToTensor, Normalize])
        return tiny.preprocess(image)

    assert split_preprocess(custom) is None
    odd = ClipModel(tiny.model, custom, tiny.tokenizer, model_name=TINY, model_key=tiny.model_key,
                    embed_dim=tiny.embed_dim, device=tiny.device, dtype=tiny.dtype)
    assert not odd.accepts_pixels
    with pytest.raises(ValueError, match="cannot be split"):
        odd.prepare_pixels(Image.new("RGB", (8, 8)))
    blobs = {f"i{k}": png(k) for k in range(4)}
    records = [ImageRecord(image_id=k, source_uri=k, shard="s") for k in blobs]
    fast = list(embed_images(records, tiny, lambda r: blobs[r.image_id], batch_size=3, num_workers=1))
    slow = list(embed_images(records, odd, lambda r: blobs[r.image_id], batch_size=3, num_workers=1))
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a.embedding, b.embedding)


def test_encode_tensor_rejects_batches_of_the_wrong_shape(tiny):
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        tiny.encode_tensor(torch.zeros(2, 64, 64, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny.encode_tensor(torch.zeros(2, 64, 64, 3))


# ---- text: the context is cut after the last end-of-text token ----------------------------------


def test_short_text_context_matches_the_full_forward_pass():
    model = load_clip(TINY, None, device="cpu")
    prompts = ["a drawing of a character with long blonde hair", "red eyes", "x"]
    short = model.encode_texts(prompts)
    assert model._short_text is True  # the plain causal CLIP text tower qualifies
    with torch.inference_mode():
        full = model.model.encode_text(model.tokenizer(prompts))
    full = torch.nn.functional.normalize(full, dim=-1).numpy()
    np.testing.assert_allclose(short, full, atol=1e-5)


def test_short_text_is_refused_when_the_mask_is_not_causal():
    model = load_clip(TINY, None, device="cpu")
    model.model.attn_mask = torch.zeros_like(model.model.attn_mask)  # bidirectional: padding would matter
    model.encode_texts(["blue hair"])
    assert model._short_text is False


# ---- checkpoints: read in place, one tensor at a time -------------------------------------------


@pytest.fixture(scope="module")
def changed_weights(tiny) -> dict[str, torch.Tensor]:
    return {k: (v * 2 + 1).contiguous() for k, v in tiny.model.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_safetensors_are_read_into_the_model_exactly(tmp_path, changed_weights, dtype):
    path = tmp_path / f"w-{dtype}.safetensors"
    save_file({k: v.to(dtype) for k, v in changed_weights.items()}, str(path))
    loaded = load_clip(TINY, str(path), device="cpu").model.state_dict()
    assert set(loaded) == set(changed_weights)
    for key, value in changed_weights.items():
        assert torch.equal(loaded[key], value.to(dtype).to(loaded[key].dtype)), key


def test_safetensors_with_other_names_go_to_open_clips_loader(tmp_path, changed_weights):
    path = tmp_path / "extra.safetensors"
    save_file({**changed_weights, "unexpected.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ConfigError, match="does not match architecture"):
        load_clip(TINY, str(path), device="cpu")


def test_truncated_safetensors_are_a_clear_error(tmp_path, changed_weights):
    path = tmp_path / "cut.safetensors"
    save_file(changed_weights, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ConfigError, match="could not be read.*truncated"):
        load_clip(TINY, str(path), device="cpu")


def test_model_key_is_known_without_loading_and_matches_load_clip(tmp_path, changed_weights):
    path = tmp_path / "w.safetensors"
    save_file(changed_weights, str(path))
    key = clip_model_key(TINY, str(path))
    assert key.startswith(f"{TINY}/file:") and key == load_clip(TINY, str(path), device="cpu").model_key
    assert clip_model_key(TINY, None, precision="fp32") == f"{TINY}/random"
    with pytest.raises(ConfigError, match="Unknown CLIP model"):
        clip_model_key("ViT-B-33", None)


# ---- the pipeline: cached re-runs never load the model --------------------------------------------


def test_fully_cached_rerun_does_not_load_clip(demo_source, tiny_config):
    with create_pipeline(tiny_config) as pipe:
        first = [f.to_flat() for _r, f in pipe.iter_results(demo_source, limit=8)]
    summary = RunSummary()
    with create_pipeline(tiny_config) as pipe:
        again = [f.to_flat() for _r, f in pipe.iter_results(demo_source, limit=8, summary=summary)]
        assert pipe._clip is None  # the versions came from the model key alone
    assert summary.stages["fused_attributes"].skipped == len(first) and again == first


def test_weights_that_fail_to_load_are_never_cached_as_clip_results(demo_source, tiny_config, monkeypatch):
    def unavailable(*_args, **_kwargs):
        raise ModelUnavailableError("CLIP weights are damaged; delete them and run once online.")

    monkeypatch.setattr("charattr_core.clip.load_clip", unavailable)
    with create_pipeline(tiny_config) as pipe:
        assert "clip_embeddings" in pipe.versions()  # the key is known from the configuration alone
        fused = [f for _r, f in pipe.iter_results(demo_source, limit=4)]
        assert "clip_embeddings" not in pipe.versions()
    assert all(f is not None and "clip_embeddings" not in f.versions for f in fused)
    assert all(any("clip unavailable" in n for n in f.notes) for f in fused)


# ---- the cache runner ------------------------------------------------------------------------------


class DictStore:
    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def get_many(self, _stage, _version, ids):
        from types import SimpleNamespace
        return {i: SimpleNamespace(payload=self.rows[i], blob=None) for i in ids if i in self.rows}

    def put_many(self, _stage, _version, rows):
        for image_id, payload, _blob in rows:
            self.rows[image_id] = payload


def test_all_cached_batch_never_calls_the_stage():
    codec = Codec(encode=lambda v: ({"v": v}, None), decode=lambda _i, p, _b: p["v"])
    store = DictStore()
    calls = []

    def compute(items):
        calls.append(list(items))
        return [x * 10 for x in items]

    assert run_cached([1, 2], str, compute, codec, store, "s", "v")[0] == [10, 20]
    results, counts = run_cached([2, 1, 2], str, compute, codec, store, "s", "v")
    assert results == [20, 10, 20] and counts.skipped == 3 and calls == [[1, 2]]


def test_gc_pause_nests_and_restores_the_collector_state():
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_digest_of_a_checkpoint_is_computed_once_per_file_version(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    clip_loading._file_digest_of.cache_clear()
    first = clip_loading._file_digest(path)
    assert clip_loading._file_digest(path) == first and clip_loading._file_digest_of.cache_info().hits == 1
    path.write_bytes(b"b" * 1001)
    assert clip_loading._file_digest(path) != first  # new size and mtime: read again
