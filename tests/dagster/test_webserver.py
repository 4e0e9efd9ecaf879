"""The code location as users see it: `dagster definitions validate` on workspace.yaml, and a real
`dagster-webserver` answering GraphQL — graph present, one partition materialized through it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from charattr_core.settings import Settings

from dagster_testing import SHARD_KEYS

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "charattr"
REPOSITORY = "__repository__"
EXPECTED_DEPS = {
    "raw_images": set(), "tag_parses": {"raw_images"}, "clip_embeddings": {"raw_images"},
    "attribute_probes": {"raw_images", "tag_parses", "clip_embeddings"},
    "fusion_policy": {"raw_images", "tag_parses", "clip_embeddings", "attribute_probes"},
    "fused_attributes": {"raw_images", "tag_parses", "clip_embeddings", "attribute_probes", "fusion_policy"},
    "attribute_report": {"fused_attributes", "fusion_policy"},
}
# Without the daemon, runs must start at once instead of waiting in the queue.
INSTANCE_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def location_env(demo_source, tmp_path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    return {**os.environ, "DAGSTER_HOME": str(home), "CHARATTR_SOURCE": str(demo_source),
            "CHARATTR_DATA_DIR": str(tmp_path / "data"), "CHARATTR_MODEL": "charattr-tiny",
            "CHARATTR_PRETRAINED": "random", "CHARATTR_DEVICE": "cpu"}


def test_dagster_definitions_validate_passes_on_the_workspace(location_env):
    done = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO,
                          env=location_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


def _wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
ASSETS_QUERY = """{ assetNodes { assetKey { path } dependencyKeys { path } isPartitioned groupName opVersion
  description hasAssetChecks } }"""
ADD_PARTITION = """mutation($repo: RepositorySelector!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: "shards", partitionKey: $key) {
    __typename ... on PythonError { message } } }"""
LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""


def test_the_webserver_serves_the_graph_and_materializes_a_partition(location_env, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen([str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                               "-p", str(port)], cwd=REPO, env=location_env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # its own process group, so it can be stopped whole
    try:
        def location_loaded():
            try:
                entries = _graphql(url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
            except (urllib.error.URLError, ConnectionError):
                return None
            entry = next((e for e in entries if e["name"] == LOCATION), None)
            return entry if entry and entry["loadStatus"] == "LOADED" else None

        entry = _wait_until(location_loaded, 180, "the code location to load")
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry

        nodes = {"/".join(n["assetKey"]["path"]): n for n in _graphql(url, ASSETS_QUERY)["assetNodes"]}
        assert set(nodes) == set(EXPECTED_DEPS)
        for name, node in nodes.items():
            assert {"/".join(d["path"]) for d in node["dependencyKeys"]} == EXPECTED_DEPS[name], name
            assert node["groupName"] and node["opVersion"] and node["description"]
        assert nodes["raw_images"]["isPartitioned"] and not nodes["attribute_report"]["isPartitioned"]
        assert nodes["clip_embeddings"]["hasAssetChecks"]

        repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        added = _graphql(url, ADD_PARTITION, {"repo": repo, "key": SHARD_KEYS[0]})["addDynamicPartition"]
        assert added["__typename"] == "AddDynamicPartitionSuccess", added
        params = {"selector": {**repo, "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["raw_images"]}]},
                  "executionMetadata": {"tags": [{"key": "dagster/partition", "value": SHARD_KEYS[0]}]},
                  # One process for the run (the default forks one per step): keeps the test quick.
                  "runConfigData": {"execution": {"config": {"in_process": {}}}}}
        launched = _graphql(url, LAUNCH_RUN, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def finished():
            status = _graphql(url, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        status = _wait_until(finished, 240, "the run to finish")
        assert status == "SUCCESS", (tmp_path / "webserver.log").read_text()[-3000:]
        warehouse = Path(Settings.from_env(location_env).warehouse) / "raw_images"  # the source's own folder
        assert (warehouse / f"{SHARD_KEYS[0]}.parquet").is_file()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
