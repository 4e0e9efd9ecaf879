"""Output files are checked before any work starts, and never overwrite an input of the run.

    outputs = check_outputs({"--out": out, "--failures": failures}, inputs=[source],
                            database_url=config.database_url)

Each check ends in one sentence (`OutputError`), before the source is read or a model loaded:
- the name ends in .parquet / .csv / .jsonl; it is not an existing folder; no part of the path
  below it is a regular file; the folder exists and is writable; the temporary name (see
  `temp_name`) fits the file system's name limit;
- it is not an input of the run: the source file or any file inside the source folder (except
  charattr's own earlier outputs), the SQLite database, or another output.

`OutputLock` makes a second run writing the same output at the same moment stop with one
sentence instead of the two renaming over each other.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from pathlib import Path
from typing import Iterable, Mapping

from .errors import ConfigError

try:  # POSIX; on Windows, concurrent writers are not detected
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

OUTPUT_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class OutputError(ConfigError):
    """An output file cannot be written where it was asked for; the message says why."""


def temp_name(path: Path) -> Path:
    """A unique hidden temporary name beside `path`: two runs never share one."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_output_path(path: str | Path, what: str = "Output file") -> Path:
    """`path` as an absolute path if a table can be written there; `OutputError` if not."""
    raw = Path(path).expanduser()
    if raw.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OutputError(f"{what} {path} must end in .parquet, .csv or .jsonl.")
    out = Path(os.path.abspath(raw))
    limit = _name_max(_existing_parent(out))
    if len(os.fsencode(temp_name(out).name)) > limit:
        raise OutputError(f"{what} name {out.name!r} is too long for the file system (its temporary name must fit "
                          f"in {limit} bytes); choose a shorter name.")
    if out.is_dir():
        raise OutputError(f"{what} {out} is an existing folder; name a file inside it, e.g. {out / ('results' + raw.suffix)}.")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{what} {out} lies below {parent}, which is a file, not a folder.")
            break
    folder = out.parent
    if not folder.is_dir():
        raise OutputError(f"Output folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"Output folder {folder} is not writable; choose another place for {out.name}.")
    return out


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return Path("/")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def sqlite_file(database_url: str | None) -> Path | None:
    """The file of a `sqlite:///` database URL (None for other databases and in-memory SQLite)."""
    if not database_url or not database_url.startswith("sqlite:///"):
        return None
    name = database_url.removeprefix("sqlite:///").split("?", 1)[0]
    if name in ("", ":memory:") or name.startswith("file:"):
        return None
    return Path(os.path.abspath(Path(name).expanduser()))


def check_outputs(outputs: Mapping[str, str | Path | None], *, inputs: Iterable[str | Path] = (),
                  database_url: str | None = None) -> dict[str, Path]:
    """Check every named output (option name -> path; None = not asked for) against the others
    and against the run's inputs; the checked absolute paths, by option name."""
    checked = {name: check_output_path(p, f"{name} file") for name, p in outputs.items() if p is not None}
    names = list(checked)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if checked[a] == checked[b] or _same_file(checked[a], checked[b]):
                raise OutputError(f"{a} and {b} name the same file {checked[a]}; give each its own file.")
    database = sqlite_file(database_url)
    for name, out in checked.items():
        if database is not None and (out == database or _same_file(out, database)):
            raise OutputError(f"{name} {out} is the results database ({database}); writing there would "
                              "destroy it, so choose another file.")
        for source in inputs:
            src = Path(os.path.abspath(Path(source).expanduser()))
            real_src = Path(os.path.realpath(src))
            if out == src or _same_file(out, src):
                raise OutputError(f"{name} {out} is the input {src} itself; writing there would replace the data, "
                                  "so choose another file.")
            inside = src.is_dir() and (out.is_relative_to(src) or Path(os.path.realpath(out)).is_relative_to(real_src))
            if inside and out.exists() and not _is_our_output(out):
                raise OutputError(f"{name} {out} is a file of the input {src}; writing there would replace it, "
                                  "so choose a file outside the source.")
    return checked


def _is_our_output(path: Path) -> bool:
    """Whether an existing file is a table charattr wrote (rewriting it is fine): by its columns."""
    from .sources.parquet import OUTPUT_MARKERS, is_charattr_output  # sources import pyarrow: lazily

    if path.suffix.lower() == ".parquet":
        return is_charattr_output(path)
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix.lower() == ".csv":
        names = frozenset(first.strip().split(","))
    else:
        try:
            row = json.loads(first)
        except ValueError:
            return False
        names = frozenset(row) if isinstance(row, dict) else frozenset()
    return any(marker <= names for marker in OUTPUT_MARKERS)


def describe_os_error(exc: OSError) -> str:
    """A short reason for a write failure ("the disk is full", "permission denied", ...)."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENAMETOOLONG:
        return "the file name is too long"
    return (exc.strerror or str(exc)).lower()


class OutputLock:
    """An exclusive lock on one output path for the life of a run (a hidden `.<name>.lock` file
    beside it, removed on release). A second run asking for it stops with `OutputError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(f".{path.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        if fcntl is None:
            return self
        for _attempt in range(3):
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise OutputError(f"Another charattr run is writing {self.path} right now; wait for it to end "
                                  "or choose another output file.") from None
            try:  # the holder before us may have removed the file we locked: then lock the new one
                same = os.fstat(fd).st_ino == os.stat(self._lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)
        raise OutputError(f"Could not lock {self.path} for writing; another run keeps replacing its lock file.")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)  # while still locked, so no one locks a file about to vanish
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *_exc) -> None:
        self.release()
