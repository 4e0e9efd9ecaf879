"""The Batch tab's work: uploaded images (with sidecar .txt files), a zip of them, or a server-side
folder -> a results table, CSV and Parquet files, and the files that failed with their reasons.

Uploads are laid out as a folder and read by the same folder reader as `charattr batch`, so a
sidecar `a.png.txt` / `a.txt` tags its image here exactly as it does there; results and failures
are written by the CLI's writers.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from charattr_core.errors import ConfigError
from charattr_core.pipeline import RunSummary
from charattr_core.sources.base import is_image_name
from charattr_core.writers import FailureWriter, FusedResultWriter

from .service import AppService, Controls

MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_BYTES = 4 * 2**30  # uncompressed; a zip bomb is refused before anything is written
PROGRESS_EVERY = 8  # images per pipeline batch: the progress bar moves at least this often
KEEP_BATCHES = 8  # result folders kept for download; older ones are removed (Gradio has copied them)
BATCH_PREFIX = "charattr-app-batch-"

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class BatchResult:
    rows: list[dict]  # FusedAttributes.to_flat() per image
    failures: list[dict]  # {"file", "error"}
    csv_path: Path | None
    parquet_path: Path | None
    summary: RunSummary
    notes: list[str] = field(default_factory=list)

    def message(self) -> str:
        s = self.summary
        cached = s.stages["fused_attributes"].skipped
        line = (f"{len(self.rows)} images done ({cached} from the results cache), "
                f"{len(self.failures)} failed.")
        return " ".join([line, *self.notes])


def _unique(directory: Path, name: str) -> Path:
    path, n = directory / name, 1
    while path.exists():
        stem, suffix = Path(name).stem, Path(name).suffix
        path, n = directory / f"{stem}_{n}{suffix}", n + 1
    return path


def extract_zip(archive: Path, into: Path) -> list[dict]:
    """Regular files of a zip into `into`; members that cannot be written safely become failures."""
    failures = []
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise ConfigError(f"Zip {archive.name} holds {len(members)} files; the app takes at most "
                                  f"{MAX_ZIP_MEMBERS} (use `charattr batch` for more).")
            if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise ConfigError(f"Zip {archive.name} would unpack to more than {MAX_ZIP_BYTES // 2**30} GiB; "
                                  "use `charattr batch` on the unpacked folder instead.")
            for member in members:
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                where = f"{archive.name}/{member.filename}"
                if member.is_dir():
                    continue
                if stat.S_ISLNK(member.external_attr >> 16):
                    failures.append({"file": where, "error": "symbolic link in the zip: not followed"})
                    continue
                if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
                    failures.append({"file": where, "error": "path leaves the zip's folder: not extracted"})
                    continue
                target = into.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ConfigError(f"File {archive.name} is not a readable zip archive ({exc}).") from None
    return failures


def stage_uploads(files: Sequence[str], into: Path) -> list[dict]:
    """Lay uploaded files out as one folder (images beside their sidecars); zips are unpacked."""
    failures = []
    for upload in files:
        path = Path(upload)
        if path.suffix.lower() == ".zip":
            sub = _unique(into, path.stem)
            sub.mkdir()
            failures += extract_zip(path, sub)
        elif is_image_name(path.name) or path.suffix.lower() == ".txt":
            shutil.copyfile(path, _unique(into, path.name))
        else:
            failures.append({"file": path.name, "error": "not an image file name (png, jpg, jpeg, webp, gif, bmp), "
                                                         "a sidecar .txt or a .zip"})
    return failures


def count_images(folder: Path, limit: int) -> int:
    n = 0
    for path in folder.rglob("*"):
        if is_image_name(path.name) and not any(p.startswith(".") for p in path.relative_to(folder).parts):
            n += 1
            if n >= limit:
                break
    return n


def run_batch(service: AppService, controls: Controls, *, files: Sequence[str] = (), folder: str | None = None,
              limit: int = 1000, progress: Progress | None = None, work_dir: Path | None = None) -> BatchResult:
    """Every image of the uploads (or of the server-side folder) through the pipeline and its cache.

    The batch works in a folder of its own under `work_dir` (default: the service's): uploads are
    copied there and removed once read; the result files stay for download, for the last
    `KEEP_BATCHES` batches. A batch that fails leaves nothing behind.
    """
    if not files and not (folder and folder.strip()):
        raise ConfigError("Upload images (or a zip of images with sidecar .txt tags), or give a folder on the server.")
    root = work_dir if work_dir is not None else service.work_dir
    work = Path(tempfile.mkdtemp(prefix=BATCH_PREFIX, dir=root))
    try:
        result = _run_in(work, service, controls, files, folder, limit, progress)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    prune_batches(root, keep=KEEP_BATCHES)
    return result


def prune_batches(root: Path, keep: int) -> None:
    """Remove all but the `keep` newest finished batch folders under `root` (a batch still running
    has no `results/` yet, and is never touched)."""
    batches = sorted((p for p in Path(root).glob(BATCH_PREFIX + "*") if (p / "results").is_dir()),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in batches[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _run_in(work: Path, service: AppService, controls: Controls, files: Sequence[str], folder: str | None,
            limit: int, progress: Progress | None) -> BatchResult:
    failures: list[dict] = []
    if files:
        source = work / "inputs"
        source.mkdir()
        failures += stage_uploads(files, source)
        shown_root = source
    else:
        source = service.server_path(folder or "")
        shown_root = source if source.is_dir() else source.parent
    total = count_images(source, limit) if source.is_dir() else limit
    summary = RunSummary()
    rows: list[dict] = []
    done = 0
    with service.lock:
        pipe = service.pipeline(controls)
        if total == 0 and not failures:
            raise ConfigError("No image files (png, jpg, jpeg, webp, gif, bmp) were found in what was given.")
        if total:
            for record, fused in pipe.iter_results(source, limit=limit, summary=summary, batch_size=PROGRESS_EVERY):
                done += 1
                if fused is not None:
                    rows.append(fused.to_flat())
                else:
                    failures.append({"file": _shown(record.source_uri, shown_root), "error": record.error})
                if progress is not None:
                    progress(done, max(total, done))
        service._remember_clip(pipe)
        vocabulary = pipe.vocabulary
        notes = [f"CLIP not used: {pipe.clip_unavailable}"] if pipe.clip_unavailable else []
    for row in rows:
        row["source_uri"] = _shown(row["source_uri"], shown_root)
    out = work / "results"
    out.mkdir()
    csv_path, parquet_path = out / "charattr_results.csv", out / "charattr_results.parquet"
    for path in (csv_path, parquet_path):
        with FusedResultWriter(path, vocabulary) as writer:
            writer.write(rows)
    if failures:
        with FailureWriter(out / "charattr_failed.csv") as writer:
            writer.write([{"source_uri": f["file"], "image_id": None, "error": f["error"]} for f in failures])
    if files:
        shutil.rmtree(work / "inputs", ignore_errors=True)  # read and cached; only the results are served
    return BatchResult(rows, failures, csv_path, parquet_path, summary, notes)


def _shown(uri: str | None, root: Path) -> str:
    """A file's name relative to what the person gave (not the app's temporary folder)."""
    if not uri:
        return "?"
    try:
        return str(Path(uri).relative_to(root))
    except ValueError:
        return uri


def table(result: BatchResult, attribute_keys: Sequence[str]) -> tuple[list[str], list[list]]:
    """(headers, rows) for the results table: file, each attribute's values, overall confidence, strategy."""
    headers = ["file", *attribute_keys, "confidence", "strategy"]
    body = [[row["source_uri"], *(", ".join(row.get(k) or []) for k in attribute_keys), row["confidence"],
             row["strategy"]] for row in result.rows]
    return headers, body
