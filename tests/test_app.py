"""The web app's work without a browser: one image explained through the cache, sidecars, the files
root, zip uploads that try to escape, a batch with a failed file, the benchmark, the command."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from charattr_app.batch import extract_zip, run_batch
from charattr_app.service import AppService
from charattr_core.config import PipelineConfig
from charattr_core.errors import ConfigError
from charattr_core.explain import explain_image
from charattr_core.pipeline import create_pipeline


@pytest.fixture
def service(tiny_config, demo_source):
    svc = AppService(PipelineConfig.from_mapping(tiny_config), files_root=demo_source)
    yield svc
    svc.close()


def _tagged(demo_source: Path) -> tuple[Path, str]:
    for image in sorted(demo_source.rglob("*.png")):
        if image.with_suffix(".txt").is_file() and "1girl" in image.with_suffix(".txt").read_text():
            return image, image.with_suffix(".txt").read_text()
    raise AssertionError("no image tagged 1girl in the demo source")


def test_explain_image_matches_extract_and_answers_from_the_cache_the_second_time(tiny_config, demo_source):
    image, tags = _tagged(demo_source)
    with create_pipeline(tiny_config) as pipe:
        first = explain_image(pipe, image, tags)
        second = explain_image(pipe, image, tags)
        direct = pipe.extract_from_image(image, tags=tags)
    assert not first.from_cache and second.from_cache
    assert first.fused.to_flat() == second.fused.to_flat() == direct.to_flat()
    rows = {r["attribute"]: r for r in first.rows()}
    assert "1girl" in rows["Gender"]["tags"] and rows["Gender"]["value"] == "female"
    clip_gender = first.sources["clip"]["gender"].scores
    best = max(clip_gender, key=clip_gender.get)
    assert rows["Gender"]["clip_top"].startswith(f"{best} {clip_gender[best]:.2f}")
    assert first.signals_line().startswith("Signals: tags (") and "CLIP charattr-tiny/random" in first.signals_line()


def test_without_clip_the_explanation_says_tags_only(tiny_config, demo_source):
    image, tags = _tagged(demo_source)
    with create_pipeline(tiny_config, use_clip=False) as pipe:
        explained = explain_image(pipe, image, tags)
    assert explained.tags_only and "clip" not in explained.sources
    assert explained.signals_line().startswith("CLIP turned off: tags only.")
    assert all(r["clip_top"] == "-" for r in explained.rows())


def test_a_bad_image_is_one_sentence_with_the_validation_reason(tiny_config, tmp_path):
    bad = tmp_path / "page.png"
    bad.write_bytes(b"<html>not an image</html>")
    with create_pipeline(tiny_config) as pipe, pytest.raises(ConfigError, match=r"^Image page.png cannot be processed: "):
        explain_image(pipe, bad, None, name="page.png")


def test_server_paths_stay_inside_the_files_root(service, demo_source):
    image, tags = _tagged(demo_source)
    assert service.sidecar_tags(str(image.relative_to(demo_source))) == tags.strip()
    with pytest.raises(ConfigError, match="outside the folder this app may read"):
        service.server_path("../../etc/passwd")
    with pytest.raises(ConfigError, match="does not exist"):
        service.server_path("nope.png")


def test_sidecar_named_after_the_full_file_name_wins(tmp_path, tiny_config):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("1boy")
    (tmp_path / "a.png.txt").write_text("1girl, red_eyes")
    svc = AppService(PipelineConfig.from_mapping(tiny_config), files_root=tmp_path)
    assert svc.sidecar_tags("a.png") == "1girl, red_eyes"
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    (tmp_path / "b.txt").write_text("1boy")
    with pytest.raises(ConfigError, match="ambiguous tags file"):
        svc.sidecar_tags("b.png")


def test_zip_members_that_escape_or_link_are_failures_and_nothing_lands_outside(tmp_path):
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.txt", "1girl")
        zf.writestr("../evil.txt", "x")
        zf.writestr("/abs.txt", "x")
        link = zipfile.ZipInfo("ok/link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    into = tmp_path / "into"
    into.mkdir()
    failures = {f["file"]: f["error"] for f in extract_zip(archive, into)}
    assert (into / "ok" / "a.txt").read_text() == "1girl"
    assert failures == {"up.zip/../evil.txt": "path leaves the zip's folder: not extracted",
                        "up.zip//abs.txt": "path leaves the zip's folder: not extracted",
                        "up.zip/ok/link.png": "symbolic link in the zip: not followed"}
    assert not (tmp_path / "evil.txt").exists() and not (into / "ok" / "link.png").exists()
    (tmp_path / "junk.zip").write_bytes(b"PK not really")
    with pytest.raises(ConfigError, match="is not a readable zip archive"):
        extract_zip(tmp_path / "junk.zip", into)


def test_batch_of_uploads_writes_csv_and_parquet_and_lists_failed_files(service, demo_source, tmp_path):
    import pyarrow.parquet as pq

    images = sorted(demo_source.rglob("*.png"))[:3]
    uploads = [str(p) for p in images] + [str(p.with_suffix(".txt")) for p in images if p.with_suffix(".txt").is_file()]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    notes = tmp_path / "notes.pdf"
    notes.write_bytes(b"%PDF")
    seen = []
    result = run_batch(service, service.default_controls(), files=[*uploads, str(bad), str(notes)],
                       progress=lambda done, total: seen.append((done, total)), work_dir=tmp_path)
    assert sorted(r["source_uri"] for r in result.rows) == sorted(p.name for p in images)
    assert {f["file"] for f in result.failures} == {"broken.jpg", "notes.pdf"}
    assert seen[-1] == (4, 4)
    with open(result.csv_path, newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert pq.read_table(result.parquet_path).num_rows == 3
    again = run_batch(service, service.default_controls(), files=uploads, work_dir=tmp_path)
    assert again.summary.stages["fused_attributes"].skipped == 3  # the cache answers the same images


def test_batch_needs_something_to_read(service):
    with pytest.raises(ConfigError, match="Upload images"):
        run_batch(service, service.default_controls())
    assert service._work_dir is None or not any(service._work_dir.iterdir())  # nothing made for nothing


def test_batches_leave_nothing_behind_but_their_latest_results(service, demo_source, tmp_path, monkeypatch):
    from charattr_app import batch

    image = sorted(demo_source.rglob("*.png"))[0]
    (tmp_path / "notes.txt").write_text("a sidecar without its image")
    with pytest.raises(ConfigError, match="No image files"):
        run_batch(service, service.default_controls(), files=[str(tmp_path / "notes.txt")], work_dir=tmp_path)
    assert not list(tmp_path.glob(batch.BATCH_PREFIX + "*"))  # a failed batch removes its folder
    monkeypatch.setattr(batch, "KEEP_BATCHES", 2)
    running = tmp_path / (batch.BATCH_PREFIX + "running")  # another batch, still reading its uploads
    (running / "inputs").mkdir(parents=True)
    os.utime(running, (0, 0))
    results = [run_batch(service, service.default_controls(), files=[str(image)], work_dir=tmp_path)
               for _ in range(3)]
    assert (running / "inputs").is_dir()  # pruning never touches a batch that has not finished
    kept = sorted(p for p in tmp_path.glob(batch.BATCH_PREFIX + "*") if p != running)
    assert len(kept) == 2 and not results[0].csv_path.exists() and results[-1].csv_path.is_file()
    assert not any((k / "inputs").exists() for k in kept)  # uploads are removed once read
    # Without a work_dir, batches go to the service's own folder, removed with the service.
    default = run_batch(service, service.default_controls(), files=[str(image)])
    own = service.work_dir
    assert default.csv_path.is_relative_to(own) and own.name.startswith("charattr-app-")
    service.close()
    assert not own.exists()


def test_benchmark_measures_a_first_and_a_cached_run(tiny_config, tmp_path):
    from charattr_app.bench import run_benchmark

    result = run_benchmark(PipelineConfig.from_mapping(tiny_config), images=4, size=64, work_dir=tmp_path)
    first, second = result.runs
    assert (first.images, first.computed, first.from_cache) == (4, 4, 0)
    assert (second.images, second.computed, second.from_cache) == (4, 0, 4)
    from charattr_core.clip import clip_model_key

    assert result.model == clip_model_key("charattr-tiny", None) and "cores" in result.machine
    assert "Cache speed-up" in result.markdown()


def test_the_app_command_is_registered_and_loopback_by_default():
    out = subprocess.run([sys.executable, "-m", "charattr_core.cli", "app", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--host" in out.stdout and "127.0.0.1" in out.stdout
    from charattr_app.cli import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and not _is_loopback("0.0.0.0")


def test_batch_of_a_server_side_folder(service, demo_source, tmp_path):
    shard = sorted(p for p in demo_source.iterdir() if p.is_dir())[0]
    result = run_batch(service, service.default_controls(), folder=shard.name, work_dir=tmp_path)
    assert sorted(r["source_uri"] for r in result.rows) == sorted(p.name for p in shard.rglob("*.png"))
    with pytest.raises(ConfigError, match="outside the folder this app may read"):
        run_batch(service, service.default_controls(), folder="..", work_dir=tmp_path)


def test_bad_controls_are_one_sentence(service):
    from charattr_app.service import Controls

    with pytest.raises(ConfigError, match="thresholds must satisfy"):
        service.pipeline(Controls("confidence_weighted", None, 0.2, 0.6))
    with pytest.raises(ConfigError, match="No fusion policy at /nowhere/policy"):
        service.pipeline(Controls("confidence_weighted", "/nowhere/policy", 0.8, 0.3))


def test_without_gradio_the_command_says_how_to_install_it():
    code = ("import sys; sys.modules['gradio'] = None\n"
            "from charattr_core.cli import main\n"
            "sys.exit(main(['app', '--no-clip']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "pip install 'charattr[app]'" in out.stderr
