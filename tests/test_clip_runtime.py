"""CPU inference paths (charattr_core/clip_runtime.py): planning from CPU features, the check against
fp32 with its fallback, the model key per path, and each runtime's embeddings against fp32.

Runs on the tiny random-weight model; ONNX Runtime / OpenVINO cases need the `onnx` / `openvino`
extras, which `make setup` installs.
"""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
import torch
from PIL import Image

from charattr_core import clip_runtime
from charattr_core.clip import OomBackoffEncoder, clip_model_key, decode_image, embed_images, load_clip
from charattr_core.clip_runtime import FP32, InferencePath, plan_cpu_path, read_verdict
from charattr_core.cpu_features import CpuFeatures, parse_cpuinfo
from charattr_core.errors import ConfigError
from charattr_core.records import ImageRecord

TINY = "charattr-tiny"
AVX2_ONLY = CpuFeatures("test AVX2 CPU", frozenset({"avx2", "fma"}))
NATIVE_BF16 = CpuFeatures("test AVX-512 CPU", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}))


def everything_installed(runtime: str) -> bool:
    return True


def only_torch(runtime: str) -> bool:
    return runtime == "torch"


def needs(runtime: str):
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(runtime)
    return pytest.mark.skipif(module is not None and importlib.util.find_spec(module) is None,
                              reason=f"{runtime} is not installed (pip install 'charattr[{'onnx' if runtime == 'onnxruntime' else runtime}]')")


def images(n: int = 6) -> list[Image.Image]:
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(90, 70, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(decode_image(buf.getvalue()))
    return out


@pytest.fixture(scope="module")
def reference():
    return load_clip(TINY, None, device="cpu", precision="fp32", runtime="torch")


# ---- CPU features ---------------------------------------------------------------------------


def test_cpu_flags_are_read_from_cpuinfo():
    text = ("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16\n\n"
            "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu\n")
    features = parse_cpuinfo(text)
    assert features.model == "AMD EPYC"
    assert features.native_bf16 and features.int8_dot_product and features.avx2
    assert features.describe() == "AMD EPYC (avx2, fma, avx512f, avx512_vnni, avx512_bf16)"
    plain = parse_cpuinfo("model name : Old\nflags : sse sse2 avx\n")
    assert not plain.native_bf16 and not plain.avx2 and plain.describe() == "Old (no AVX2)"


def test_a_onednn_isa_cap_plans_as_on_the_capped_cpu():
    from charattr_core.cpu_features import limit_features

    epyc = parse_cpuinfo("model name : AMD EPYC\nflags : avx2 fma avx512f avx512_vnni avx512_bf16\n")
    capped = limit_features(epyc, "avx2")
    assert capped.flags == {"avx2", "fma"} and not capped.native_bf16 and not capped.int8_dot_product
    assert capped.describe() == "AMD EPYC, ONEDNN_MAX_CPU_ISA=AVX2 (avx2, fma)"
    assert plan_cpu_path(features=capped, installed=everything_installed)[0].precision == "fp32"
    vnni = limit_features(epyc, "AVX512_CORE_VNNI")
    assert vnni.int8_dot_product and not vnni.native_bf16
    assert limit_features(epyc, None) == epyc and limit_features(epyc, "ALL") == epyc


def test_the_machine_features_obey_the_cap_in_the_environment(monkeypatch):
    from charattr_core.cpu_features import read_cpu_features

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    read_cpu_features.cache_clear()
    try:
        capped = read_cpu_features()
        assert capped.flags <= {"avx2", "fma"} and "ONEDNN_MAX_CPU_ISA=AVX2" in capped.describe()
    finally:
        read_cpu_features.cache_clear()  # later tests read the real CPU again


# ---- planning -------------------------------------------------------------------------------


def test_auto_plans_bf16_only_where_the_cpu_has_native_bf16():
    path, why = plan_cpu_path(features=NATIVE_BF16, installed=everything_installed)
    assert path == InferencePath("openvino", "bf16") and "native bf16" in why
    assert plan_cpu_path(features=NATIVE_BF16, installed=only_torch)[0] == InferencePath("torch", "bf16")
    path, why = plan_cpu_path(features=AVX2_ONLY, installed=everything_installed)
    assert path == InferencePath("openvino", "fp32") and "no native bf16" in why
    assert plan_cpu_path(features=AVX2_ONLY, installed=lambda r: r != "openvino")[0] == \
        InferencePath("onnxruntime", "fp32")
    assert plan_cpu_path(features=AVX2_ONLY, installed=only_torch)[0] == FP32


def test_forced_paths_are_used_as_asked():
    assert plan_cpu_path("auto", "fp32", features=NATIVE_BF16, installed=everything_installed)[0] == FP32
    assert plan_cpu_path("auto", "int8", features=AVX2_ONLY, installed=everything_installed)[0] == \
        InferencePath("onnxruntime", "int8")
    assert plan_cpu_path("torch", "int8", features=AVX2_ONLY, installed=everything_installed)[0] == \
        InferencePath("torch", "int8")
    assert plan_cpu_path("openvino", "auto", features=AVX2_ONLY, installed=everything_installed)[0] == \
        InferencePath("openvino", "fp32")
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert plan_cpu_path("torch", "bf16", features=AVX2_ONLY)[0] == InferencePath("torch", "bf16")
    with pytest.raises(ConfigError, match="cannot run precision int8"):
        plan_cpu_path("openvino", "int8", features=NATIVE_BF16, installed=everything_installed)
    with pytest.raises(ConfigError, match="Unknown runtime 'tensorrt'"):
        plan_cpu_path("tensorrt", "auto")


def test_a_missing_runtime_falls_back_to_torch_with_one_line():
    path, why = plan_cpu_path("openvino", "fp32", features=AVX2_ONLY, installed=only_torch)
    assert path == FP32
    assert why == "openvino is not installed (pip install 'charattr[openvino]'); using torch"


def test_gpu_paths_stay_on_torch():
    assert clip_runtime.resolve_inference_path("m/w", "cuda", "auto", "fp16") == InferencePath("torch", "fp16")
    with pytest.raises(ConfigError, match="runs on the CPU only"):
        clip_runtime.resolve_inference_path("m/w", "cuda", "openvino", "auto")


# ---- the model key follows the path --------------------------------------------------------


def test_the_model_key_differs_by_path_and_is_known_before_loading(reference):
    assert reference.model_key == f"{TINY}/random"
    keys = {reference.model_key}
    for runtime, precision in [("torch", "bf16"), ("torch", "int8")]:
        model = load_clip(TINY, None, device="cpu", precision=precision, runtime=runtime)
        assert model.model_key == f"{TINY}/random@{runtime}-{precision}"
        assert clip_model_key(TINY, None, device="cpu", precision=precision, runtime=runtime) == model.model_key
        keys.add(model.model_key)
    assert len(keys) == 3
    auto = load_clip(TINY, None, device="cpu")
    assert clip_model_key(TINY, None) == auto.model_key  # the key the Dagster code version uses


def test_stage_rows_carry_the_path_in_their_model_key():
    model = load_clip(TINY, None, device="cpu", precision="bf16", runtime="torch")
    blobs = {}
    for i, image in enumerate(images(3)):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        blobs[f"i{i}"] = buf.getvalue()
    records = [ImageRecord(image_id=k, source_uri=k, shard="s") for k in blobs]
    rows = list(embed_images(records, model, lambda r: blobs[r.image_id], batch_size=2, num_workers=1))
    assert {r.model_key for r in rows} == {f"{TINY}/random@torch-bf16"}
    assert all(r.error is None for r in rows)


# ---- the check against fp32 -----------------------------------------------------------------


def test_auto_falls_back_to_fp32_when_the_check_fails(monkeypatch, tmp_path):
    monkeypatch.setenv(clip_runtime.MODEL_CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(clip_runtime, "read_cpu_features", lambda: NATIVE_BF16)
    monkeypatch.setattr(clip_runtime, "runtime_installed", only_torch)
    # Simulate a model whose bf16 embeddings drift from fp32 (trained weights' outliers can).
    import charattr_core.clip_loading as loading
    monkeypatch.setattr(loading, "cosine_to_reference", lambda a, b: (0.9990, 0.9981))
    monkeypatch.setattr(loading, "read_cpu_features", lambda: NATIVE_BF16)

    model = load_clip(TINY, None, device="cpu")
    assert model.inference_path == FP32 and model.model_key == f"{TINY}/random"
    assert "torch bf16 failed the check against fp32" in model.inference_note
    assert "0.998100 min < 0.9999" in model.inference_note and model.inference_note.endswith("using torch fp32")
    verdict = read_verdict(f"{TINY}/random", InferencePath("torch", "bf16"), NATIVE_BF16)
    assert verdict is not None and verdict["passed"] is False and verdict["cosine_min"] == 0.9981
    # The stored verdict: the key is known without loading again, and names the path in use.
    monkeypatch.setattr(loading, "load_clip", lambda *a, **k: pytest.fail("the verdict should be reused"))
    assert clip_model_key(TINY, None) == f"{TINY}/random"


def test_auto_keeps_a_path_that_passes_the_check(monkeypatch, tmp_path):
    monkeypatch.setenv(clip_runtime.MODEL_CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(clip_runtime, "read_cpu_features", lambda: NATIVE_BF16)
    monkeypatch.setattr(clip_runtime, "runtime_installed", only_torch)
    model = load_clip(TINY, None, device="cpu")
    assert model.inference_path == InferencePath("torch", "bf16")
    verdict = read_verdict(f"{TINY}/random", InferencePath("torch", "bf16"), NATIVE_BF16)
    assert verdict["passed"] is True and verdict["cosine_min"] >= clip_runtime.AUTO_MIN_COSINE


# ---- every runtime agrees with fp32 on the tiny model -----------------------------------------


@pytest.mark.parametrize("runtime,precision,min_cosine", [
    ("torch", "bf16", 0.9999),
    ("torch", "int8", 0.999),
    pytest.param("onnxruntime", "fp32", 0.99999, marks=needs("onnxruntime")),
    pytest.param("onnxruntime", "int8", 0.999, marks=needs("onnxruntime")),
    pytest.param("openvino", "fp32", 0.99999, marks=needs("openvino")),
    pytest.param("openvino", "bf16", 0.9999, marks=needs("openvino")),
])
def test_each_runtime_agrees_with_fp32(reference, runtime, precision, min_cosine):
    model = load_clip(TINY, None, device="cpu", precision=precision, runtime=runtime)
    assert model.inference_path == InferencePath(runtime, precision)
    pictures = images()
    candidate, expected = model.encode_pil(pictures), reference.encode_pil(pictures)
    mean, worst = clip_runtime.cosine_to_reference(candidate, expected)
    assert worst >= min_cosine, (mean, worst)
    np.testing.assert_allclose(np.linalg.norm(candidate, axis=1), 1.0, atol=1e-5)
    # Different images stay different (a runtime that returned one row for all would pass cosine).
    assert not np.allclose(candidate[0], candidate[1], atol=1e-3)


@needs("onnxruntime")
def test_converted_models_are_built_once_per_model_key(monkeypatch, tmp_path):
    monkeypatch.setenv(clip_runtime.MODEL_CACHE_ENV, str(tmp_path))
    load_clip(TINY, None, device="cpu", precision="fp32", runtime="onnxruntime")
    assert len(list(tmp_path.glob("*/visual.onnx"))) == 1
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported twice"))
    again = load_clip(TINY, None, device="cpu", precision="fp32", runtime="onnxruntime")
    assert again.inference_path == InferencePath("onnxruntime", "fp32")


@needs("onnxruntime")
def test_a_damaged_converted_model_is_built_again(monkeypatch, tmp_path):
    monkeypatch.setenv(clip_runtime.MODEL_CACHE_ENV, str(tmp_path))
    load_clip(TINY, None, device="cpu", precision="fp32", runtime="onnxruntime")
    (exported,) = tmp_path.glob("*/visual.onnx")
    exported.write_bytes(b"not an onnx file")  # a disk error, or a copy cut short
    again = load_clip(TINY, None, device="cpu", precision="fp32", runtime="onnxruntime")
    assert again.inference_path == InferencePath("onnxruntime", "fp32")  # not a silent fall back to torch
    assert exported.read_bytes() != b"not an onnx file"


def test_a_runtime_that_fails_to_build_falls_back_and_says_why(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded\nwith a second line")

    import charattr_core.clip_loading as loading
    monkeypatch.setattr(loading, "build_image_encoder", broken)
    model = load_clip(TINY, None, device="cpu", precision="bf16", runtime="torch")
    assert model.inference_path == FP32 and model.model_key == f"{TINY}/random"
    assert model.inference_note == "could not build the torch bf16 path (RuntimeError: converter exploded); using torch fp32"


def test_a_path_that_fails_on_the_check_batch_falls_back_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv(clip_runtime.MODEL_CACHE_ENV, str(tmp_path))

    def builds_but_cannot_run(*args, **kwargs):
        def encode(x):
            raise TypeError("expected Tensor, got method")
        return encode

    import charattr_core.clip_loading as loading
    monkeypatch.setattr(loading, "build_image_encoder", builds_but_cannot_run)
    model = load_clip(TINY, None, device="cpu", precision="int8", runtime="torch")
    assert model.inference_path == FP32 and model.model_key == f"{TINY}/random"
    assert model.inference_note == ("the torch int8 path failed on the check batch (TypeError: expected Tensor, "
                                    "got method); using torch fp32")
    assert model.encode_pil(images()[:2]).shape[0] == 2  # the fp32 reference still embeds


def test_torch_int8_on_a_resnet_tower_falls_back_instead_of_crashing(monkeypatch, tmp_path):
    """charattr-small's ModifiedResNet reads its attention pool's Linear weights directly, so dynamic
    int8 cannot replace them (it crashed the check batch before); ONNX Runtime int8 is the way."""
    monkeypatch.setenv(clip_runtime.MODEL_CACHE_ENV, str(tmp_path))
    model = load_clip("charattr-small", None, device="cpu", precision="int8", runtime="torch")
    assert model.inference_path == FP32 and model.model_key == "charattr-small/random"
    assert "no Linear layer that dynamic int8 can replace" in model.inference_note
    tiny = load_clip(TINY, None, device="cpu", precision="int8", runtime="torch")  # a ViT still quantizes
    assert tiny.inference_path == InferencePath("torch", "int8")


def test_out_of_memory_backoff_recognises_every_runtime():
    calls = []

    def encode(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for 4 MB")
        return np.zeros((len(batch), 4), np.float32)

    encoder = OomBackoffEncoder(encode, chunk_size=8)
    assert encoder(torch.zeros(8, 3, 4, 4)).shape == (8, 4)
    assert encoder.chunk_size == 2 and calls[:3] == [8, 4, 2]
    with pytest.raises(RuntimeError, match="std::bad_alloc"):
        OomBackoffEncoder(lambda b: (_ for _ in ()).throw(RuntimeError("std::bad_alloc")), 1)(torch.zeros(1, 3, 4, 4))
