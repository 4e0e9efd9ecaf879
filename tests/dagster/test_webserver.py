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

from dagster_testing import IMAGES_PER_SHARD, SHARD_KEYS

REPO = Path(__file__).resolve().parents[2]
# This interpreter's modules (a worktree venv layered over another has no dagster scripts of its own).
WEBSERVER = [sys.executable, "-m", "dagster_webserver"]
LOCATION = "charattr"
REPOSITORY = "__repository__"
EXPECTED_DEPS = {
    "raw_images": set(), "tag_parses": {"raw_images"}, "clip_embeddings": {"raw_images"},
    "attribute_probes": {"raw_images", "tag_parses", "clip_embeddings"},
    "fusion_policy": {"raw_images", "tag_parses", "clip_embeddings", "attribute_probes"},
    "fused_attributes": {"raw_images", "tag_parses", "clip_embeddings", "attribute_probes", "fusion_policy"},
    "attribute_report": {"fused_attributes", "fusion_policy"},
    "adapted_clip": {"raw_images", "tag_parses"},
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
    done = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO,
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
    server = subprocess.Popen([*WEBSERVER, "-w", "workspace.yaml", "-h", "127.0.0.1",
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


ASSET_EVENTS = """query($key: AssetKeyInput!, $partitions: [String!]) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { assetMaterializations(partitions: $partitions, limit: 1) { partition timestamp
    tags { key value } metadataEntries { label ... on IntMetadataEntry { intValue } ... on PathMetadataEntry { path }
      ... on TextMetadataEntry { text } } } } } }"""
USED_DATA = """query($key: AssetKeyInput!, $t: String!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { assetMaterializationUsedData(timestampMillis: $t) { assetKey { path } timestamp } } } }"""


def _launch_and_wait(url: str, job: str, partition: str) -> None:
    repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    params = {"selector": {**repo, "jobName": job},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
              "runConfigData": {"execution": {"config": {"in_process": {}}}}}
    launched = _graphql(url, LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished():
        status = _graphql(url, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    assert _wait_until(finished, 300, f"{job} [{partition}]") == "SUCCESS"


def _event(url: str, asset: str, partition: str) -> dict:
    node = _graphql(url, ASSET_EVENTS, {"key": {"path": [asset]}, "partitions": [partition]})["assetNodeOrError"]
    [event] = node["assetMaterializations"]
    return event


def test_a_partitions_page_shows_its_own_numbers_and_upstream_events(location_env, tmp_path):
    """What the UI shows for fused_attributes' shard_000 after shard_001 was ingested later: its
    own rows and path, and as "source data" shard_000's upstream events, not the latest ones."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen([*WEBSERVER, "-w", "workspace.yaml", "-h", "127.0.0.1",
                               "-p", str(port)], cwd=REPO, env=location_env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        def location_loaded():
            try:
                entries = _graphql(url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
            except (urllib.error.URLError, ConnectionError):
                return None
            return any(e["name"] == LOCATION and e["loadStatus"] == "LOADED" for e in entries)

        _wait_until(location_loaded, 180, "the code location to load")
        repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        for key in SHARD_KEYS:
            assert _graphql(url, ADD_PARTITION, {"repo": repo, "key": key})["addDynamicPartition"]["__typename"] \
                == "AddDynamicPartitionSuccess"
        own, other = SHARD_KEYS
        _launch_and_wait(url, "ingest_shards", own)
        _launch_and_wait(url, "ingest_shards", other)
        _launch_and_wait(url, "fuse_shards", own)

        fused = _event(url, "fused_attributes", own)
        assert fused["partition"] == own
        entries = {e["label"]: e for e in fused["metadataEntries"]}
        assert entries["rows"]["intValue"] == IMAGES_PER_SHARD
        assert entries["path"]["path"].endswith(f"{own}.parquet")
        used = _graphql(url, USED_DATA, {"key": {"path": ["fused_attributes"]}, "t": fused["timestamp"]})
        used_at = {"/".join(u["assetKey"]["path"]): str(u["timestamp"])
                   for u in used["assetNodeOrError"]["assetMaterializationUsedData"]}
        # "Source data": the root upstream's event, of the same shard.
        assert used_at["raw_images"] == _event(url, "raw_images", own)["timestamp"]
        assert used_at["raw_images"] != _event(url, "raw_images", other)["timestamp"]
        # Every upstream input's data version is the same shard's (shards' versions differ).
        fused_tags = {t["key"]: t["value"] for t in fused["tags"]}
        for dep in ("raw_images", "tag_parses", "clip_embeddings"):
            versions = {key: {t["key"]: t["value"] for t in _event(url, dep, key)["tags"]}["dagster/data_version"]
                        for key in (own, other)}
            assert versions[own] != versions[other], dep
            assert fused_tags[f"dagster/input_data_version/{dep}"] == versions[own], dep
        raw = {e["label"]: e for e in _event(url, "raw_images", own)["metadataEntries"]}
        data_version = {t["key"]: t["value"] for t in _event(url, "raw_images", own)["tags"]}["dagster/data_version"]
        assert data_version == raw["fingerprint"]["text"]  # the shard's content is its data version
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
