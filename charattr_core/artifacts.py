"""Learned artefacts on disk: a safetensors file of arrays beside a JSON file of everything else.

Probes and fusion policies are stored this way (never pickle: loading runs no code). A path is
either a folder (`dir/<stem>.safetensors` + `dir/<stem>.json`) or one of the two files.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from .errors import ConfigError


def artifact_paths(path: str | Path, stem: str) -> tuple[Path, Path]:
    """`dir/` -> dir/stem.{safetensors,json}; `x.json` or `x.safetensors` -> x.{safetensors,json}."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p / stem
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def save_artifact(path: str | Path, stem: str, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write both files (the JSON last: it names the artefact's format) and return the JSON path."""
    tensor_path, meta_path = artifact_paths(path, stem)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(tensors), str(tensor_path))
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return meta_path


def load_artifact(path: str | Path, stem: str, file_format: str, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a saved artefact whose JSON says `format: file_format`; a one-sentence
    `ConfigError` naming `what` when it is missing, unreadable or of another kind."""
    tensor_path, meta_path = artifact_paths(path, stem)
    if not meta_path.is_file() or not tensor_path.is_file():
        raise ConfigError(f"No {what} at {path} (expected {meta_path.name} and {tensor_path.name}).")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path))
    except (OSError, ValueError, SafetensorError) as exc:  # a truncated file is a SafetensorError
        raise ConfigError(f"The {what} at {path} cannot be read ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != file_format:
        raise ConfigError(f"{meta_path} is not a charattr {what} file.")
    return meta, tensors


@contextlib.contextmanager
def malformed_artifact(path: str | Path, what: str):
    """Inside: a missing field or an array of the wrong shape in a loaded artefact (a partial or
    edited file) becomes one `ConfigError` sentence instead of a KeyError or ValueError traceback."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"The {what} at {path} is incomplete or malformed ({type(exc).__name__}: {exc}); "
                          "train it again.") from None
