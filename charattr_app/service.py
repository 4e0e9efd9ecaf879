"""What the app does, without Gradio: pipelines for the controls a person sets, one image explained.

Every request runs through `create_pipeline`'s `Pipeline` and its results cache; pipelines are
kept per (strategy, policy, thresholds) and share one loaded CLIP model. Requests are served one
at a time (one lock): the app is a tool for one person, and the model is not re-entrant on CPU.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from charattr_core.config import PipelineConfig
from charattr_core.errors import ConfigError
from charattr_core.explain import Explanation, explain_image
from charattr_core.pipeline import Pipeline
from charattr_core.sources.folder import FolderSource

RESULT_COLUMNS = ("attribute", "value", "confidence", "strategy", "sources", "tags", "clip_top")
RESULT_HEADERS = ("Attribute", "Value", "Confidence", "Strategy", "Sources", "Tags (evidence)",
                  "CLIP top alternatives")


@dataclasses.dataclass(frozen=True)
class Controls:
    """The settings a person can change per request."""

    strategy: str
    policy: str | None
    accept: float
    low: float


class AppService:
    """The pipelines behind the app, built from one base `PipelineConfig`."""

    def __init__(self, config: PipelineConfig, files_root: str | Path | None = None) -> None:
        self.config = config
        self.files_root = Path(files_root or os.getcwd()).resolve()
        self.lock = threading.Lock()
        self._pipelines: dict[Controls, Pipeline] = {}
        self._clip = None  # the first pipeline's loaded model, handed to the others
        self._work_dir: Path | None = None

    @property
    def work_dir(self) -> Path:
        """This app's own temporary folder (batch uploads and result files), removed when the app exits."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="charattr-app-"))
            self._remove_work_dir = weakref.finalize(self, shutil.rmtree, self._work_dir, ignore_errors=True)
        return self._work_dir

    def default_controls(self) -> Controls:
        c = self.config
        return Controls(c.fusion_strategy, c.policy_path, c.confidence_threshold, c.low_confidence_threshold)

    def pipeline(self, controls: Controls | None = None) -> Pipeline:
        """The pipeline for these controls (built once); `ConfigError` for a bad combination."""
        controls = controls or self.default_controls()
        pipe = self._pipelines.get(controls)
        if pipe is None:
            policy = (controls.policy or "").strip() or None
            config = self.config.replace(fusion_strategy=controls.strategy, policy_path=policy,
                                         use_rl=policy is not None, confidence_threshold=float(controls.accept),
                                         low_confidence_threshold=float(controls.low))
            pipe = Pipeline(config, clip_model=self._clip)
            self._pipelines[controls] = pipe
        return pipe

    def _remember_clip(self, pipe: Pipeline) -> None:
        if self._clip is None and pipe._clip is not None:
            self._clip = pipe._clip

    def server_path(self, text: str) -> Path:
        """A path typed by the person, only inside the files root (the app may be exposed)."""
        path = Path(text.strip()).expanduser()
        path = (path if path.is_absolute() else self.files_root / path).resolve()
        if not path.is_relative_to(self.files_root):
            raise ConfigError(f"Path {text.strip()} is outside the folder this app may read ({self.files_root}); "
                              "start it with --files-root to allow another folder.")
        if not path.exists():
            raise ConfigError(f"Path {text.strip()} does not exist.")
        return path

    def sidecar_tags(self, text: str) -> str:
        """The tags of a server-side image, from its sidecar file, read as `charattr batch` reads them."""
        path = self.server_path(text)
        if not path.is_file():
            raise ConfigError(f"Path {text.strip()} is not an image file.")
        source = FolderSource(path.parent)
        stem = path.stem
        # The folder reader decides which sidecar belongs to the image (a.png.txt before a.txt,
        # ambiguity when a.txt would serve several images); give it just the files that matter.
        names = sorted(p.name for p in path.parent.iterdir()
                       if p.name == path.name or p.stem == stem or p.name == path.name + ".txt")
        for item in source._read_files(path.parent, names, "adhoc"):
            if item.uri == str(path):
                if item.error and item.tags is None and "tags" in item.error:
                    raise ConfigError(f"Tags of {path.name}: {item.error}.")
                return item.tags or ""
        return ""

    def explain(self, image: str | bytes | None, tags: str | None, controls: Controls,
                server_path: str | None = None, name: str | None = None) -> tuple[Explanation, float]:
        """One image with its evidence and the seconds it took; `ConfigError` for a bad image or setting."""
        if image is None and server_path and server_path.strip():
            path = self.server_path(server_path)
            image, name = path, str(path)
        if image is None:
            raise ConfigError("Upload or paste an image first (or give the path of one on the server).")
        with self.lock:
            pipe = self.pipeline(controls)
            started = time.perf_counter()
            result = explain_image(pipe, image, tags, name=name)
            seconds = time.perf_counter() - started
            self._remember_clip(pipe)
        return result, seconds

    def close(self) -> None:
        for pipe in self._pipelines.values():
            pipe.close()
        self._pipelines.clear()
        if self._work_dir is not None:
            self._remove_work_dir()
            self._work_dir = None


def result_rows(explained: Explanation) -> list[list[Any]]:
    """The attribute table as rows of the columns in `RESULT_HEADERS`."""
    return [[row[c] for c in RESULT_COLUMNS] for row in explained.rows()]


def summary_line(explained: Explanation, seconds: float) -> str:
    how = "answered from the results cache" if explained.from_cache else "computed"
    return (f"Overall confidence {explained.fused.confidence:.2f} · image id `{explained.fused.image_id}` · "
            f"{how} in {seconds * 1000:.0f} ms")
