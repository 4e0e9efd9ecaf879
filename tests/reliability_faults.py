"""Test-only fault injection for subprocesses: SIGKILL at a chosen point, or a write barrier.

Nothing here is imported by charattr itself. `fault_env(tmp_path, spec)` returns environment
variables that make every Python process started with them (the `charattr` command, a Dagster
run and each of its step processes) import a `sitecustomize` module that patches charattr at
start-up according to `spec`
(several specs are joined with ";"):

    kill:encode:N              SIGKILL before the N-th CLIP batch (ClipModel.encode_tensor)
    kill:write:TABLE:N         SIGKILL inside the N-th write transaction to TABLE ("stage_results"
                               or "fused_attributes"), after its first chunk of rows was sent
                               and before the commit (chunks are made 2 rows long)
    kill:rename:TEXT:N         SIGKILL just before the N-th rename of a temporary file ("*.tmp")
                               onto a path that contains TEXT (the temp file is complete)
    batch:N                    the in-process pipeline (`charattr batch`) works in batches of N
                               images (one cache transaction per stage each) instead of 256
    barrier:DIR:N              the first results-store write of each stage in each process waits
                               until N processes wait there (files in DIR/<stage>), so that they
                               all write at the same moment (at most 120 s)

Counts are per process. A kill leaves no chance to clean up: exactly what a power cut, the OOM
killer or `kill -9` does.
"""

from __future__ import annotations

import os
from pathlib import Path

FAULT_ENV = "CHARATTR_TEST_FAULT"

_SITECUSTOMIZE = '''\
import os
if os.environ.get("CHARATTR_TEST_FAULT"):
    import charattr_test_fault_hook
    charattr_test_fault_hook.install(os.environ["CHARATTR_TEST_FAULT"])
'''

_HOOK = '''\
"""Installed by tests/reliability_faults.py; see its docstring."""
import os
import signal
import time
import uuid


def _die():
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


def _counter(limit):
    seen = {"n": 0}

    def hit():
        seen["n"] += 1
        return seen["n"] == limit
    return hit


def install(specs):
    for spec in specs.split(";"):
        _install(spec)


def _install(spec):
    kind, _, rest = spec.partition(":")
    if kind == "batch":
        _pipeline_batch(int(rest))
    elif kind == "kill":
        what, _, rest = rest.partition(":")
        if what == "encode":
            _kill_on_encode(int(rest))
        elif what == "write":
            table, _, n = rest.rpartition(":")
            _kill_in_write(table, int(n))
        elif what == "rename":
            text, _, n = rest.rpartition(":")
            _kill_before_rename(text, int(n))
        else:
            raise ValueError(spec)
    elif kind == "barrier":
        folder, _, n = rest.rpartition(":")
        _barrier(folder, int(n))
    else:
        raise ValueError(spec)


def _pipeline_batch(n):
    from charattr_core import pipeline
    original = pipeline.Pipeline.iter_results

    def iter_results(self, *args, **kwargs):
        kwargs["batch_size"] = n
        return original(self, *args, **kwargs)
    pipeline.Pipeline.iter_results = iter_results


def _kill_on_encode(n):
    from charattr_core import clip_model
    hit, original = _counter(n), clip_model.ClipModel.encode_tensor

    def encode_tensor(self, batch):
        if hit():
            _die()
        return original(self, batch)
    clip_model.ClipModel.encode_tensor = encode_tensor


def _kill_in_write(table, n):
    from charattr_core import store
    store.WRITE_CHUNK = 2
    hit, original = _counter(n), store.ResultStore._execute_chunks

    def execute_chunks(conn, statement, params):
        if statement.table.name == table and len(params) > 2 and hit():
            conn.execute(statement, params[:2])  # sent, not committed
            _die()
        return original(conn, statement, params)
    store.ResultStore._execute_chunks = staticmethod(execute_chunks)


def _kill_before_rename(text, n):
    hit, original = _counter(n), os.replace

    def replace(src, dst, *args, **kwargs):
        if str(src).endswith(".tmp") and text in str(dst) and hit():
            _die()
        return original(src, dst, *args, **kwargs)
    os.replace = replace


def _barrier(folder, n):
    from charattr_core import store
    waited = set()

    def wait(stage):
        # One rendezvous per stage: the first write of that stage in each process waits there.
        if stage in waited:
            return
        waited.add(stage)
        room = os.path.join(folder, stage)
        os.makedirs(room, exist_ok=True)
        open(os.path.join(room, uuid.uuid4().hex), "w").close()
        deadline = time.monotonic() + 120
        while len(os.listdir(room)) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    original_many, original_fused = store.ResultStore.put_many, store.ResultStore.put_fused

    def put_many(self, stage, *args, **kwargs):
        wait(stage)
        return original_many(self, stage, *args, **kwargs)

    def put_fused(self, *args, **kwargs):
        wait("fused")
        return original_fused(self, *args, **kwargs)
    store.ResultStore.put_many, store.ResultStore.put_fused = put_many, put_fused
'''


def fault_env(tmp_path: Path, spec: str) -> dict[str, str]:
    """Environment variables (to add to os.environ) that install `spec` in every Python process."""
    hook_dir = tmp_path / "fault_hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
    (hook_dir / "charattr_test_fault_hook.py").write_text(_HOOK, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, FAULT_ENV: spec}
