"""How the image tower runs: the runtime (PyTorch, ONNX Runtime, OpenVINO) and the precision.

On a CPU the CLIP stage is the whole wall-clock time, and the fastest path depends on the CPU:
bf16 is ~2x fp32 where the CPU has native bf16 (AVX-512 BF16, AMX) and ~10x slower where it does
not; int8 pays with VNNI. So `precision="auto"` plans a path from the detected features
(`cpu_features.py`) and the installed optional runtimes, then checks it ONCE per model and CPU on
a fixed batch against PyTorch fp32: it is kept only when every embedding's cosine to fp32 is at
least `AUTO_MIN_COSINE` (interchangeable for zero-shot and probes), else the stage falls back to
fp32 and says why. The verdict is stored beside the converted models, so the model key (which
names the path: cached embeddings of two paths never mix) is known without loading anything.

A forced path (`precision=fp32|bf16|int8`, `runtime=torch|onnxruntime|openvino`) is used as
asked (int8 changes embeddings more: it is opt-in), with its cosine measured and logged. A
runtime that is not installed falls back to PyTorch with one line. Converted models (ONNX, and
OpenVINO's reading of it) are built once per model key into the model cache and never downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .settings import PRECISIONS, RUNTIMES
from .cpu_features import CpuFeatures, read_cpu_features
from .errors import ConfigError

log = logging.getLogger(__name__)

AUTO_MIN_COSINE = 0.9999  # auto keeps a path only if every check embedding is this close to fp32
CHECK_BATCH = 8
MODEL_CACHE_ENV = "CHARATTR_MODEL_CACHE"

# What each runtime can run on a CPU (fp16 on a CPU is slow or missing everywhere).
_CPU_PRECISIONS = {"torch": ("fp32", "bf16", "int8"), "onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16")}
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_EXTRAS = {"onnxruntime": "charattr[onnx]", "openvino": "charattr[openvino]"}


@dataclass(frozen=True)
class InferencePath:
    """A runtime and a precision. PyTorch fp32 is the reference; every other path names itself in
    the model key (`ViT-B-32/openai@openvino-bf16`)."""

    runtime: str
    precision: str

    @property
    def is_reference(self) -> bool:
        return self.runtime == "torch" and self.precision == "fp32"

    @property
    def key_suffix(self) -> str:
        return "" if self.is_reference else f"@{self.runtime}-{self.precision}"

    def __str__(self) -> str:
        return f"{self.runtime} {self.precision}"


FP32 = InferencePath("torch", "fp32")


def runtime_installed(runtime: str) -> bool:
    """Whether an optional runtime's package can be imported (without importing it)."""
    return runtime == "torch" or importlib.util.find_spec(_MODULES[runtime]) is not None


def model_cache_dir() -> Path:
    """Where converted models and check verdicts live: $CHARATTR_MODEL_CACHE, else ~/.cache/charattr/models."""
    configured = os.environ.get(MODEL_CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charattr" / "models"


def _model_dir(model_key: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_key)[:80]
    return model_cache_dir() / f"{slug}-{hashlib.sha256(model_key.encode()).hexdigest()[:10]}"


# --------------------------------------------------------------------------------------------
# planning


def _validate(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"Unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}.")
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")


def plan_cpu_path(runtime: str = "auto", precision: str = "auto", *, features: CpuFeatures | None = None,
                  installed: Callable[[str], bool] | None = None) -> tuple[InferencePath, str]:
    """The path to try on this CPU and why (before the check). Pure: no model is touched."""
    _validate(runtime, precision)
    features = features or read_cpu_features()
    installed = installed or runtime_installed
    notes: list[str] = []
    if runtime != "auto" and not installed(runtime):
        notes.append(f"{runtime} is not installed (pip install '{_EXTRAS[runtime]}'); using torch")
        runtime = "torch"
    if precision == "fp16":
        notes.append("fp16 is slow or unsupported on a CPU; using fp32")
        precision = "fp32"
    auto_precision = precision == "auto"
    if auto_precision:
        precision = "bf16" if features.native_bf16 and runtime in ("auto", "torch", "openvino") else "fp32"
        notes.append("the CPU has native bf16" if precision == "bf16" else "no native bf16 on this CPU")
    if runtime == "auto":
        # An explicit fp32 is the PyTorch reference (the cache of every earlier run); otherwise the
        # runtime that was fastest for the precision in benchmarks/bench_runtimes.py, if installed
        # (fp32: OpenVINO 1.10-1.14x eager, ONNX Runtime 1.03-1.04x, on the AVX-512 EPYC).
        preferred = {"bf16": ("openvino", "torch"), "int8": ("onnxruntime", "torch"),
                     "fp32": ("openvino", "onnxruntime", "torch") if auto_precision else ("torch",)}[precision]
        runtime = next(r for r in preferred if installed(r))
    if precision not in _CPU_PRECISIONS[runtime]:
        raise ConfigError(f"Runtime {runtime} cannot run precision {precision} on a CPU; choose one of: "
                          f"{', '.join(_CPU_PRECISIONS[runtime])}.")
    if precision == "bf16" and not features.native_bf16:
        warnings.warn("This CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 will be much slower than fp32.",
                      RuntimeWarning, stacklevel=2)
    return InferencePath(runtime, precision), "; ".join(notes)


def resolve_inference_path(base_key: str, device_type: str, runtime: str = "auto", precision: str = "auto",
                           *, features: CpuFeatures | None = None) -> InferencePath:
    """The path the model key names, known without loading: the plan, unless a stored check of
    this auto plan failed on this CPU. On a GPU: PyTorch in the device's precision."""
    _validate(runtime, precision)
    if device_type != "cpu":
        if runtime not in ("auto", "torch"):
            raise ConfigError(f"Runtime {runtime} runs on the CPU only; use runtime 'torch' (or auto) on {device_type}.")
        return InferencePath("torch", precision if precision in ("fp32", "fp16", "bf16") else
                             ("fp16" if device_type == "cuda" else "fp32"))
    features = features or read_cpu_features()
    path, _ = plan_cpu_path(runtime, precision, features=features)
    if precision == "auto":
        verdict = read_verdict(base_key, path, features)
        if verdict is not None and not verdict["passed"]:
            return InferencePath(path.runtime, "fp32") if runtime != "auto" else FP32
    return path


# --------------------------------------------------------------------------------------------
# the check against fp32


def check_images(image_size: tuple[int, int], count: int = CHECK_BATCH) -> torch.Tensor:
    """A fixed batch of smooth, picture-like (N, H, W, 3) uint8 images: the same on every machine."""
    rng = np.random.default_rng(20260101)
    h, w = image_size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(count):
        channels = []
        for _ in range(3):
            fx, fy, phase = rng.uniform(0.5, 6.0), rng.uniform(0.5, 6.0), rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (fx * xs / w + fy * ys / h) + phase)
            channels.append(127.5 + 100 * wave + rng.normal(0, 12, size=(h, w)))
        images.append(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(images))


def cosine_to_reference(candidate: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean, min) cosine between matching rows."""
    cos = F.cosine_similarity(torch.from_numpy(candidate).double(), torch.from_numpy(reference).double(), dim=-1)
    return float(cos.mean()), float(cos.min())


def _verdict_file(base_key: str, path: InferencePath, features: CpuFeatures) -> Path:
    cpu = hashlib.sha256(features.describe().encode()).hexdigest()[:8]
    return _model_dir(base_key) / f"check-{path.runtime}-{path.precision}-{cpu}.json"


def read_verdict(base_key: str, path: InferencePath, features: CpuFeatures | None = None) -> dict | None:
    try:
        verdict = json.loads(_verdict_file(base_key, path, features or read_cpu_features()).read_text())
        return verdict if isinstance(verdict.get("passed"), bool) else None
    except (OSError, ValueError, AttributeError):
        return None


def write_verdict(base_key: str, path: InferencePath, verdict: dict, features: CpuFeatures | None = None) -> None:
    target = _verdict_file(base_key, path, features or read_cpu_features())
    try:
        _atomic_write(target, json.dumps(verdict, indent=1).encode())
    except OSError as exc:  # a read-only cache only costs a re-check next time
        log.warning("Could not store the inference check in %s (%s)", target, exc)


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# image encoders: float32 normalised (N, 3, H, W) -> un-normalised features (N, D), on the CPU

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]


def _torch_encoder(model: torch.nn.Module, precision: str) -> ImageEncoder:
    if precision == "bf16":
        def encode_bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                return model.encode_image(x).float()
        return encode_bf16
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        # Dynamic int8 for the Linear layers (the MLPs, most of a ViT's FLOPs); the visual tower
        # is copied so that the text tower and the fp32 reference keep their weights.
        import copy

        visual = copy.deepcopy(model.visual)
        # A Linear whose parent reads its .weight/.bias directly (open_clip's ModifiedResNet
        # attention pool, MultiheadAttention's out_proj, a Linear subclass) cannot be swapped for a
        # quantized module; only plain, called Linears are.
        called = {name for name, module in visual.named_modules()
                  if type(module) is torch.nn.Linear and not _read_directly(visual, name)}
        if not called:
            raise ValueError("this image tower has no Linear layer that dynamic int8 can replace; "
                             "choose --runtime onnxruntime for int8 convolutions")
        visual = quantize_dynamic(visual, called, dtype=torch.qint8)
        return lambda x: visual(x).float()
    return lambda x: model.encode_image(x).float()


def _read_directly(root: torch.nn.Module, name: str) -> bool:
    """Whether the Linear at `name` belongs to a module that uses its tensors without calling it."""
    from open_clip.modified_resnet import AttentionPool2d

    parent = root.get_submodule(name.rpartition(".")[0]) if "." in name else root
    return isinstance(parent, AttentionPool2d)


def _export_onnx(model: torch.nn.Module, image_size: tuple[int, int], target: Path) -> Path:
    """The visual tower as ONNX with a dynamic batch (the dynamo exporter: the TorchScript one
    fails on the fused attention path under no_grad). Built once per model key."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from torch.export import Dim

    example = torch.zeros(2, 3, *image_size)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".visual.", suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.visual, (example,), tmp, dynamo=True, external_data=False,
                              dynamic_shapes=({0: Dim("batch", min=1, max=65536)},))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _onnxruntime_encoder(model: torch.nn.Module, image_size: tuple[int, int], model_dir: Path,
                         precision: str) -> ImageEncoder:
    import onnxruntime as ort

    onnx_path = _export_onnx(model, image_size, model_dir / "visual.onnx")
    if precision == "int8":
        quantized = model_dir / "visual-int8.onnx"
        if not quantized.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".visual-int8.", suffix=".onnx")
            os.close(fd)
            try:
                # QInt8 weights: QUInt8 runs several times slower on x86.
                quantize_dynamic(str(onnx_path), tmp, weight_type=QuantType.QInt8)
                os.replace(tmp, quantized)
            finally:
                Path(tmp).unlink(missing_ok=True)
        onnx_path = quantized
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def encode(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: x.contiguous().numpy()})[0]).float()
    return encode


def _openvino_encoder(model: torch.nn.Module, image_size: tuple[int, int], model_dir: Path,
                      precision: str) -> ImageEncoder:
    import openvino as ov

    onnx_path = _export_onnx(model, image_size, model_dir / "visual.onnx")
    core = ov.Core()
    # OpenVINO's compiled blobs are cached beside the ONNX file: later processes skip compiling.
    core.set_property({"CACHE_DIR": str(model_dir / "openvino-cache")})
    # OpenVINO runs bf16 by default on CPUs that have it: say the precision explicitly. THROUGHPUT:
    # a batch is split over parallel streams (one per request); on the 2-core EPYC that gave a
    # steady ~46 ViT-B-32 images/s in bf16 against 38-45 for one LATENCY request (interleaved runs).
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "THROUGHPUT"}
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
    n_requests = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    # Infer requests are not thread-safe and ClipModel may be shared by threads: a set each. No
    # Python completion callback: OpenVINO's stream threads would then need the GIL, and releasing
    # the compiled model (a fallback after a failed check) deadlocked joining them.
    local = threading.local()

    def encode(x: torch.Tensor) -> torch.Tensor:
        requests = getattr(local, "requests", None)
        if requests is None:
            requests = local.requests = [compiled.create_infer_request() for _ in range(n_requests)]
        chunks = np.array_split(x.contiguous().numpy(), min(n_requests, len(x)))
        for request, chunk in zip(requests, chunks):
            request.start_async({0: chunk})
        outputs = []
        for request, _chunk in zip(requests, chunks):
            request.wait()
            outputs.append(np.array(request.get_output_tensor(0).data))  # a copy: the request is reused
        return torch.from_numpy(np.concatenate(outputs)).float()
    return encode


def build_image_encoder(model: torch.nn.Module, path: InferencePath, image_size: tuple[int, int],
                        base_key: str) -> ImageEncoder:
    """An encoder for `path` (converting and caching the model on first use)."""
    if path.runtime == "torch":
        return _torch_encoder(model, path.precision)
    model_dir = _model_dir(base_key)
    build = _onnxruntime_encoder if path.runtime == "onnxruntime" else _openvino_encoder
    try:
        return build(model, image_size, model_dir, path.precision)
    except Exception as exc:  # noqa: BLE001 - a damaged converted model is rebuilt once, not used forever
        if not _drop_converted(model_dir):
            raise
        log.warning("The converted models in %s could not be used (%s: %s); building them again",
                    model_dir, type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return build(model, image_size, model_dir, path.precision)


def _drop_converted(model_dir: Path) -> bool:
    """Remove the converted models of `model_dir` (a damaged file, a killed writer's leftovers are
    rebuilt from the weights); whether there was anything to remove."""
    import shutil

    found = [p for p in (model_dir / "visual.onnx", model_dir / "visual-int8.onnx", model_dir / "openvino-cache")
             if p.exists()]
    for p in found:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return bool(found)
