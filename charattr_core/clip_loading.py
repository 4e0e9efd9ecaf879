"""Loading CLIP models through open_clip without ever hanging on the network.

Where the weights come from (`pretrained=`):
  - an open_clip tag (`"openai"`, `"laion2b_s34b_b79k"`, ...): looked up in the local Hugging
    Face cache first, with no network at all. Only when downloading is allowed
    (`allow_download=True`, or the environment variable `CHARATTR_ALLOW_DOWNLOAD=1`) does a cache
    miss go to the Hub, with bounded timeouts; otherwise it raises `ModelUnavailableError` at
    once, saying which file is missing and how to provide it. Downloading is off by default
    because a pipeline must not stall on a machine without network, and a silent multi-GB
    download is not something a batch job should decide on its own.
  - a local checkpoint file (.safetensors, .pt, .pth, .bin): loaded with
    `torch.load(weights_only=True)` or safetensors, never by unpickling arbitrary objects.
  - `None` or `"random"`: random weights from a fixed seed, so the same architecture always
    gives the same embeddings (tests, benchmarks).

Devices: `"auto"` picks cuda, then mps, then cpu. Precision on a GPU: `"auto"` is fp16 on CUDA;
bf16 on a GPU without bf16 falls back to fp16. On a CPU the runtime (PyTorch, ONNX Runtime,
OpenVINO) and precision are planned from the CPU's features and checked against fp32 once per
model (`clip_runtime.py`); fp16 requested on a CPU falls back to fp32 with a `RuntimeWarning` (so
one config works on the GPU box and on a laptop). Every path but PyTorch fp32 is part of the
model key (`ViT-B-32/openai@openvino-bf16`), so embeddings of two paths never mix in the cache.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import os
import pickle
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import open_clip
import torch
import xxhash

from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from .clip_model import ClipModel
from .clip_runtime import (
    AUTO_MIN_COSINE, FP32, InferencePath, PRECISIONS, build_image_encoder, check_images, cosine_to_reference,
    plan_cpu_path, read_verdict, resolve_inference_path, write_verdict,
)
from .cpu_features import read_cpu_features
from .errors import ConfigError, ModelUnavailableError

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).with_name("model_configs")
TINY_MODEL = "charattr-tiny"  # the project's test architecture (model_configs/charattr-tiny.json)
RANDOM_WEIGHTS = "random"
RANDOM_WEIGHTS_SEED = 0
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
ALLOW_DOWNLOAD_ENV = "CHARATTR_ALLOW_DOWNLOAD"
DOWNLOAD_TIMEOUT_S = 30.0  # metadata request timeout (reads time out after HF_HUB_DOWNLOAD_TIMEOUT): never a hang
_PREFERRED_MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", TINY_MODEL)

_register_lock = threading.Lock()
_registered = False


def register_model_configs() -> None:
    """Make the project's architectures (`model_configs/*.json`) known to open_clip; idempotent."""
    global _registered
    with _register_lock:
        if not _registered:
            open_clip.add_model_config(MODEL_CONFIG_DIR)
            _registered = True


# --------------------------------------------------------------------------------------------
# device and precision


def resolve_device(device: str = "auto") -> torch.device:
    """`"auto"` -> cuda, then mps, then cpu; an explicit device must exist on this machine."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"Unknown device {device!r}; choose auto, cpu, cuda (or cuda:N) or mps.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {device!r} was requested but no CUDA GPU is usable here; use device 'auto' or 'cpu'.")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("Device 'mps' was requested but Apple's MPS backend is not available here; use device 'auto' or 'cpu'.")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"Unknown device {device!r}; choose auto, cpu, cuda (or cuda:N) or mps.")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map `auto|fp32|fp16|bf16` to what this device runs well (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type == "cpu":
        warnings.warn("Precision fp16 is slow or unsupported on CPU; using fp32 instead.", RuntimeWarning, stacklevel=3)
        return "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ConfigError(f"Precision int8 runs on the CPU only; use fp16, bf16 or fp32 on {device.type}.")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn("This GPU does not support bf16; using fp16 instead.", RuntimeWarning, stacklevel=3)
        return "fp16"
    return precision


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------------------------
# where the weights come from


@dataclass(frozen=True)
class WeightsSource:
    """Resolved `pretrained=`: `path` is None for random weights; `tag_cfg` is open_clip's entry for a tag."""

    label: str  # the part of the model key after the architecture: "openai", "random", "file:<hash>"
    path: str | None = None
    tag_cfg: dict = field(default_factory=dict)
    from_cache: bool = False  # the file came from the download cache, not from the user


def _unknown_model_error(model_name: str) -> ConfigError:
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return ConfigError(f"Model names with a schema ({model_name!r}) are not supported; use an open_clip "
                           "architecture name such as 'ViT-B-32' and pass the weights with pretrained=PATH.")
    known = open_clip.list_models()
    suggestions = difflib.get_close_matches(model_name, known, n=3, cutoff=0.5)
    for name in _PREFERRED_MODELS:
        if len(suggestions) < 4 and name not in suggestions:
            suggestions.append(name)
    return ConfigError(f"Unknown CLIP model {model_name!r}; valid names include {', '.join(suggestions)} "
                       "(open_clip.list_models() lists all).")


def _looks_like_path(pretrained: str) -> bool:
    return ("/" in pretrained or os.sep in pretrained or pretrained.startswith(("~", "."))
            or pretrained.lower().endswith(CHECKPOINT_SUFFIXES) or os.path.exists(pretrained))


def _file_digest(path: Path) -> str:
    """xxh3-128 of the checkpoint file (streamed), so the model key follows the weights, not the path.

    Remembered per (path, size, mtime): the key is asked for before the model is loaded (a cached
    re-run never loads it) and again by `load_clip`, and a checkpoint is hundreds of MB.
    """
    stat = path.stat()
    return _file_digest_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_digest_of(path: str, _size: int, _mtime_ns: int) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _hf_location(tag_cfg: dict) -> tuple[str, list[str]]:
    """open_clip's `hf_hub` entry ("org/repo/" or "org/repo/file") -> (repo id, files to try, safetensors first)."""
    repo_id, filename = os.path.split(tag_cfg["hf_hub"])
    if not filename or filename == HF_WEIGHTS_NAME:
        return repo_id, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    stem, suffix = os.path.splitext(filename)
    return repo_id, ([f"{stem}.safetensors"] if suffix in (".bin", ".pth") else []) + [filename]


def _hf_cache_dir(cache_dir: str | None) -> str:
    if cache_dir:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _find_in_hf_cache(repo_id: str, filenames: list[str], cache_dir: str | None) -> str | None:
    """Look the files up in the local Hugging Face cache; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _hf_download(repo_id: str, filenames: list[str], cache_dir: str | None) -> str:
    """Download the first of `filenames` that the repository has; raises the last error."""
    from huggingface_hub import hf_hub_download

    error: Exception | None = None
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename, cache_dir=cache_dir, etag_timeout=DOWNLOAD_TIMEOUT_S,
                                   library_name="open_clip", library_version=open_clip.__version__)
        except Exception as exc:  # noqa: BLE001 - a missing safetensors variant is normal; keep trying
            error = exc
    assert error is not None
    raise error


def _download_allowed(allow_download: bool | None) -> bool:
    if allow_download is not None:
        return allow_download
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def resolve_weights(model_name: str, pretrained: str | os.PathLike | None, *,
                    allow_download: bool | None = None, cache_dir: str | None = None) -> WeightsSource:
    """Decide where `model_name`'s weights come from, downloading only when allowed (see the module docstring)."""
    if pretrained is None or str(pretrained).strip().lower() in ("", RANDOM_WEIGHTS, "none"):
        return WeightsSource(label=RANDOM_WEIGHTS)
    pretrained = str(pretrained)
    if _looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if path.is_dir():
            raise ConfigError(f"Checkpoint path {path} is a directory; pass the weights file inside it "
                              f"({', '.join(CHECKPOINT_SUFFIXES)}).")
        if not path.is_file():
            raise ConfigError(f"Checkpoint file {path} does not exist; pass an existing .safetensors/.pt/.bin "
                              "file or an open_clip tag such as 'openai'.")
        return WeightsSource(label=f"file:{_file_digest(path)}", path=str(path))

    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    tag = pretrained.lower().replace("-", "_")  # open_clip's spelling of tags
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        hint = f"known tags are {', '.join(tags[:6])}" if tags else f"{model_name} has no published weights"
        raise ConfigError(f"Unknown pretrained weights {pretrained!r} for {model_name} ({hint}); pass a tag, a "
                          "checkpoint file path, or 'random'.")
    if tag_cfg.get("file"):
        return WeightsSource(label=tag, path=tag_cfg["file"], tag_cfg=tag_cfg, from_cache=True)

    repo_id, filenames = _hf_location(tag_cfg)
    cache = _hf_cache_dir(cache_dir)
    found = _find_in_hf_cache(repo_id, filenames, cache)
    if found:
        return WeightsSource(label=tag, path=found, tag_cfg=tag_cfg, from_cache=True)
    if not _download_allowed(allow_download):
        raise ModelUnavailableError(
            f"CLIP weights {model_name}/{tag} ({repo_id}) are not in the local cache {cache} and downloading is "
            f"off; pass a local checkpoint file with pretrained=PATH (--pretrained PATH), or run once online with "
            f"allow_download=True (or {ALLOW_DOWNLOAD_ENV}=1) to fill the cache.")
    log.info("Downloading CLIP weights %s/%s from the Hugging Face Hub (%s) into %s", model_name, tag, repo_id, cache)
    try:
        path = _hf_download(repo_id, filenames, cache)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        raise ModelUnavailableError(
            f"Could not download CLIP weights {model_name}/{tag} from the Hugging Face Hub ({repo_id}: "
            f"{describe_exception(exc)}); check the network, or pass a local checkpoint file with pretrained=PATH "
            "(--pretrained PATH).") from exc
    return WeightsSource(label=tag, path=path, tag_cfg=tag_cfg, from_cache=True)


def describe_exception(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a one-sentence error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _check_hf_text_tower(model_name: str, model_cfg: dict, allow_download: bool | None, cache_dir: str | None) -> None:
    """Architectures with a Hugging Face text tower fetch its config at build time; keep that offline too."""
    text_cfg = model_cfg.get("text_cfg", {})
    hf_name = text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name")
    if not hf_name or _download_allowed(allow_download):
        return
    if _find_in_hf_cache(hf_name, ["config.json", "tokenizer_config.json"], _hf_cache_dir(cache_dir)) is None:
        raise ModelUnavailableError(
            f"Architecture {model_name} needs the Hugging Face model {hf_name}, which is not in the local cache "
            f"{_hf_cache_dir(cache_dir)}; run once online with allow_download=True (or {ALLOW_DOWNLOAD_ENV}=1) to "
            "fill the cache, or choose a model such as ViT-B-32.")


# --------------------------------------------------------------------------------------------
# building the model


class _DropRandomInitWarning(logging.Filter):
    # open_clip logs "initialized randomly" on the root logger before we load a checkpoint
    # ourselves; that line would mislead whoever reads the log.
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _seeded_and_quiet(seed: int) -> Iterator[None]:
    """Random init from `seed` without touching the caller's global RNG state."""
    root, quiet = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(quiet)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        root.removeFilter(quiet)


def _load_checkpoint(model: torch.nn.Module, source: WeightsSource, model_name: str) -> None:
    """Load `source.path` into `model` (weights_only); a bad file becomes one clear sentence."""
    where = f"Checkpoint {source.path}"
    if source.from_cache:  # not the user's file: a damaged download, so say how to get a fresh one
        error_cls, unreadable_fix = ModelUnavailableError, "; delete it and run once online to download it again"
    else:
        error_cls, unreadable_fix = ConfigError, ""
    try:
        if not _read_safetensors_in_place(model, source.path):
            open_clip.load_checkpoint(model, source.path, strict=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise error_cls(f"{where} holds Python objects besides tensors and charattr only loads plain weights "
                        "(weights_only=True); re-save it as a state_dict or as safetensors.") from exc
    except RuntimeError as exc:
        if "state_dict" in str(exc):
            raise error_cls(f"{where} does not match architecture {model_name} ({describe_exception(exc)}); pass the "
                            "model_name the checkpoint was trained with.") from exc
        raise error_cls(f"{where} could not be read ({describe_exception(exc)}){unreadable_fix}.") from exc
    except Exception as exc:  # noqa: BLE001 - truncated files, foreign formats, ...
        raise error_cls(f"{where} could not be read ({describe_exception(exc)}){unreadable_fix}.") from exc


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                       "I64": torch.int64, "I32": torch.int32}
_MAX_SAFETENSORS_HEADER = 100 << 20


def _read_safetensors_in_place(model: torch.nn.Module, path: str) -> bool:
    """Read a `.safetensors` checkpoint straight into `model`'s tensors, one at a time.

    open_clip's loader first materialises the whole state dict and then copies it, so loading
    ViT-B-32 briefly held the weights twice (peak RSS 2.0 GB instead of 1.5 GB). Here each tensor
    is read from the file into the parameter's own memory (through a one-tensor buffer when the
    dtype or device differ). Only for files whose tensors match the model's state dict exactly
    (names, shapes); returns False for anything else, which open_clip's loader then handles
    (it also converts foreign layouts). Raises OSError/ValueError for a damaged file.
    """
    if not str(path).endswith(".safetensors"):
        return False
    targets = model.state_dict(keep_vars=True)
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= _MAX_SAFETENSORS_HEADER:
            return False
        try:
            header = json.loads(f.read(size))
        except ValueError:
            return False
        header.pop("__metadata__", None)
        if set(header) != set(targets) or any(
                _SAFETENSORS_DTYPES.get(entry.get("dtype")) is None
                or tuple(entry.get("shape", ())) != tuple(targets[name].shape) for name, entry in header.items()):
            return False
        base = 8 + size
        with torch.no_grad():
            for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
                start, end = entry["data_offsets"]
                target = targets[name].detach()
                dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                direct = target.device.type == "cpu" and target.dtype == dtype and target.is_contiguous()
                buffer = target if direct else torch.empty(target.shape, dtype=dtype)
                raw = buffer.reshape(-1).view(torch.uint8).numpy() if buffer.numel() else None
                if raw is not None:
                    if raw.nbytes != end - start:
                        raise ValueError(f"tensor {name} has {end - start} bytes in the file, {raw.nbytes} expected")
                    f.seek(base + start)
                    if f.readinto(raw) != raw.nbytes:
                        raise ValueError(f"the file ends inside tensor {name} (truncated)")
                if not direct:
                    target.copy_(buffer)
    return True


def _adapted(pretrained: str | os.PathLike | None):
    """`pretrained` as a `charattr train-clip` output folder (its JSON names the architecture and
    the key follows its data and settings), or None for a tag, a file or random weights."""
    from .clip_training import resolve_adapted_model

    return resolve_adapted_model(pretrained)


def clip_model_key(model_name: str, pretrained: str | os.PathLike | None, *, device: str = "auto",
                   precision: str = "auto", runtime: str = "auto", allow_download: bool | None = None,
                   cache_dir: str | None = None) -> str:
    """The `model_key` that `load_clip(model_name, pretrained, device, precision, runtime)` would
    give, found without loading (or importing more than open_clip's registry): what the stage
    versions need to look up cached results. Raises what `load_clip` raises for an unknown model,
    tag or file, or missing weights."""
    register_model_configs()
    adapted = _adapted(pretrained)
    if adapted is not None:  # a `charattr train-clip` folder names its own architecture
        model_name, pretrained = adapted.model_name, str(adapted.checkpoint)
    if model_name.startswith(("hf-hub:", "local-dir:")) or open_clip.get_model_config(model_name) is None:
        raise _unknown_model_error(model_name)
    source = resolve_weights(model_name, pretrained, allow_download=allow_download, cache_dir=cache_dir)
    base_key = adapted.model_key if adapted is not None else f"{model_name}/{source.label}"
    device_type = resolve_device(device).type
    if device_type != "cpu":
        precision = resolve_precision(precision, torch.device(device_type))
    path = resolve_inference_path(base_key, device_type, runtime, precision)
    if device_type == "cpu" and precision == "auto" and not path.is_reference and read_verdict(base_key, path) is None:
        # The auto plan is only known to hold after its check against fp32, once per model and
        # CPU (then stored): load and check now, so the key never names a path that is not used.
        return load_clip(model_name, pretrained, device, precision, runtime=runtime, allow_download=allow_download,
                         cache_dir=cache_dir).model_key
    return base_key + path.key_suffix


def load_clip(model_name: str = "ViT-B-32", pretrained: str | os.PathLike | None = "openai", device: str = "auto",
              precision: str = "auto", *, runtime: str = "auto", allow_download: bool | None = None,
              cache_dir: str | None = None) -> ClipModel:
    """Load an open_clip model for inference.

    Args:
        model_name: an open_clip architecture (`open_clip.list_models()`), or `charattr-tiny`.
        pretrained: an open_clip tag, a local checkpoint file, or None/"random" for seeded random weights.
        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N" or "mps".
        precision: "auto", "fp32", "fp16", "bf16" or "int8" (CPU); see the module docstring.
        runtime: on a CPU, "auto", "torch", "onnxruntime" or "openvino" (see `clip_runtime.py`).
        allow_download: fetch missing tagged weights from the Hugging Face Hub; None reads
            `CHARATTR_ALLOW_DOWNLOAD` from the environment (off unless set).
        cache_dir: the Hugging Face cache to look in (default: huggingface_hub's).

    Raises:
        ConfigError: unknown model, unknown tag, bad device/precision, missing or unfit checkpoint file.
        ModelUnavailableError: the tagged weights are not available without a download (says how to fix it).
    """
    register_model_configs()
    adapted = _adapted(pretrained)
    if adapted is not None:  # a `charattr train-clip` folder names its own architecture
        model_name, pretrained = adapted.model_name, str(adapted.checkpoint)
    # A schema name ('hf-hub:...') would make open_clip fetch its config from the network.
    has_schema = model_name.startswith(("hf-hub:", "local-dir:"))
    model_cfg = None if has_schema else open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise _unknown_model_error(model_name)
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        planned, plan_note = plan_cpu_path(runtime, precision)
        precision_name = "fp32"  # the reference weights; other CPU paths are built from them
    else:
        precision_name = resolve_precision(precision, torch_device)
        planned = resolve_inference_path("", torch_device.type, runtime, precision_name)
        plan_note = ""
    source = resolve_weights(model_name, pretrained, allow_download=allow_download, cache_dir=cache_dir)
    _check_hf_text_tower(model_name, model_cfg, allow_download, cache_dir)

    tag_cfg = source.tag_cfg
    with _seeded_and_quiet(RANDOM_WEIGHTS_SEED):
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None, precision=precision_name, device=torch_device,
            # A tag's weights were trained with its own activation and preprocessing (OpenAI's
            # ViT-B-32 uses QuickGELU); apply them, as open_clip does when it downloads a tag.
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            image_mean=tag_cfg.get("mean"), image_std=tag_cfg.get("std"),
            image_interpolation=tag_cfg.get("interpolation"), image_resize_mode=tag_cfg.get("resize_mode"),
            pretrained_image=False, pretrained_text=False, cache_dir=cache_dir)
    if source.path is not None:
        _load_checkpoint(model, source, model_name)
    tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    base_key = adapted.model_key if adapted is not None else f"{model_name}/{source.label}"
    reference = ClipModel(model, preprocess, tokenizer, model_name=model_name, model_key=base_key + planned.key_suffix,
                          embed_dim=int(model_cfg["embed_dim"]), device=torch_device, dtype=_DTYPES[precision_name],
                          inference_path=planned)
    if torch_device.type != "cpu" or planned.is_reference:
        reference.inference_note = plan_note
        return reference
    return _with_cpu_path(reference, base_key, planned, plan_note, auto=precision == "auto")


def _with_cpu_path(reference: ClipModel, base_key: str, planned: InferencePath, plan_note: str, *,
                   auto: bool) -> ClipModel:
    """`reference` (PyTorch fp32) switched to the planned CPU path, after the once-per-model check
    against fp32; an auto plan that fails the check, or a runtime that fails to build, falls back."""
    fallback = FP32 if planned.runtime == "torch" or auto else InferencePath(planned.runtime, "fp32")
    try:
        encoder = build_image_encoder(reference.model, planned, reference.image_size, base_key)
    except Exception as exc:  # noqa: BLE001 - a converter's failure must not stop the stage
        note = f"could not build the {planned} path ({describe_exception(exc)}); using torch fp32"
        log.warning("CLIP inference: %s", note)
        return reference.with_image_encoder(None, FP32, base_key, note)
    verdict = read_verdict(base_key, planned)
    if verdict is None:
        from PIL import Image

        images = [Image.fromarray(a) for a in check_images(reference.image_size).numpy()]
        expected = reference.encode_pil(images)
        try:
            candidate = reference.with_image_encoder(encoder, planned, base_key, "").encode_pil(images)
        except Exception as exc:  # noqa: BLE001 - a path that cannot run its check batch is not used
            note = f"the {planned} path failed on the check batch ({describe_exception(exc)}); using torch fp32"
            log.warning("CLIP inference: %s", note)
            return reference.with_image_encoder(None, FP32, base_key, note)
        mean, worst = cosine_to_reference(candidate, expected)
        verdict = {"passed": worst >= AUTO_MIN_COSINE, "cosine_mean": mean, "cosine_min": worst,
                   "threshold": AUTO_MIN_COSINE, "cpu": read_cpu_features().describe()}
        write_verdict(base_key, planned, verdict)
    measured = f"cosine to fp32 {verdict['cosine_mean']:.6f} mean / {verdict['cosine_min']:.6f} min"
    if not verdict["passed"] and auto:
        note = f"{planned} failed the check against fp32 ({measured} < {AUTO_MIN_COSINE}); using {fallback}"
        log.warning("CLIP inference: %s", note)
        encoder = None if fallback.is_reference else build_image_encoder(
            reference.model, fallback, reference.image_size, base_key)
        return reference.with_image_encoder(encoder, fallback, base_key, note)
    note = "; ".join(part for part in (plan_note, f"{planned}: {measured}") if part)
    log.info("CLIP inference: %s", note)
    return reference.with_image_encoder(encoder, planned, base_key, note)
