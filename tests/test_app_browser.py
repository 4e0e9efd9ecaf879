"""The web app in a real browser: Debian's headless Chromium driven by Selenium, against
`charattr app` started with the tiny random-weight model, and once more with CLIP weights missing.

What is asserted is what a person sees: the values and confidences (the same as the Python API
gives for the same image and tags), the tags behind them, CLIP's alternatives, the "tags only"
notice, the cache answering the second time, the batch table, downloads that open, and a bad
file's one-line reason (the CLI's words). Screenshots of each tab go to $CHARATTR_APP_SCREENSHOTS
when it is set (`CHARATTR_APP_SCREENSHOTS=docs pytest tests/test_app_browser.py` refreshes the
README's).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from browser import app_server, chrome, chromium_paths, table_cells

pytest.importorskip("gradio", reason="the web app is the optional extra charattr[app] (make setup installs it)")
pytest.importorskip("selenium", reason="the browser tests need selenium (the dev extra)")
BROWSER, DRIVER = chromium_paths()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None or DRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"),
]
WAIT_S = 240  # generous: the machine running the suite may be busy
TINY = ["--model", "charattr-tiny", "--pretrained", "random", "--device", "cpu"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    from charattr_core.synthetic import write_demo_dataset

    out = tmp_path_factory.mktemp("app-sample") / "sample"
    write_demo_dataset(out, n_images=8, n_shards=1, seed=3, size=96)
    return out


@pytest.fixture(scope="module")
def tagged_image(sample) -> tuple[Path, str]:
    """An image of the sample with a sidecar naming one character (its tags say the gender)."""
    for image in sorted(sample.rglob("*.png")):
        sidecar = image.with_suffix(".txt")
        if sidecar.is_file() and ("1girl" in sidecar.read_text() or "1boy" in sidecar.read_text()):
            return image, sidecar.read_text().strip()
    raise AssertionError("the sample has no tagged image")


@pytest.fixture(scope="module")
def browser():
    with chrome(BROWSER, DRIVER) as session:
        yield session


@pytest.fixture(scope="module")
def tiny_app(sample, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny-app")
    with app_server([*TINY, "--database-url", f"sqlite:///{tmp / 'cache.db'}", "--files-root", str(sample)],
                    tmp / "app.log") as url:
        yield url


@pytest.fixture(scope="module")
def noclip_app(sample, tmp_path_factory):
    """The default model (ViT-B-32/openai) with an empty weights cache and no downloads: CLIP is missing."""
    tmp = tmp_path_factory.mktemp("noclip-app")
    empty = tmp / "hf-cache"
    empty.mkdir()
    env = {"HF_HOME": str(empty), "HF_HUB_CACHE": str(empty), "HF_HUB_OFFLINE": "1", "CHARATTR_ALLOW_DOWNLOAD": "0"}
    # Small limits, to see what a person sees for a large upload and for a picture with too many pixels.
    with app_server(["--model", "ViT-B-32", "--pretrained", "openai", "--database-url",
                     f"sqlite:///{tmp / 'cache.db'}", "--files-root", str(sample), "--max-upload-mb", "0.1",
                     "--max-image-pixels", "40000"], tmp / "app.log", env=env) as url:
        yield url


def _wait_text(driver, elem_id: str, needle: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: needle in d.find_element(By.ID, elem_id).text)
    return driver.find_element(By.ID, elem_id).text


def _open(driver, url: str, tab: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.ID, "single-run"))
    if tab:
        button = next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == tab)
        button.click()


def _upload(driver, elem_id: str, *paths: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys("\n".join(str(p) for p in paths))


def _screenshot(driver, name: str) -> None:
    where = os.environ.get("CHARATTR_APP_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / f"app-{name}.png"))


def _type(driver, css: str, text: str, enter: bool = False) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, css)
    box.clear()
    box.send_keys(text + (Keys.ENTER if enter else ""))


def test_single_image_shows_each_attribute_with_confidence_and_evidence(browser, tiny_app, tagged_image, tmp_path):
    from charattr_core.explain import explain_image
    from charattr_core.pipeline import create_pipeline

    image, tags = tagged_image
    _open(browser, tiny_app)
    _upload(browser, "single-image", image)
    _type(browser, "#single-tags textarea", tags)
    browser.find_element("id", "single-run").click()
    summary = _wait_text(browser, "single-summary", "Overall confidence")
    assert "computed" in summary
    signals = browser.find_element("id", "single-signals").text
    assert "CLIP charattr-tiny/random" in signals and "tags only" not in signals

    # What the page shows is what the Python API answers for the same bytes and tags.
    with create_pipeline(model_name="charattr-tiny", pretrained=None, device="cpu",
                         database_url=f"sqlite:///{tmp_path / 'api.db'}") as pipe:
        expected = explain_image(pipe, image, tags).rows()
    shown = table_cells(browser, "single-result")
    assert [row[0] for row in shown] == [row["attribute"] for row in expected]
    for cells, row in zip(shown, expected):
        assert cells[1] == row["value"], cells
        assert float(cells[2]) == pytest.approx(row["confidence"], abs=1e-3), cells
        assert 0.0 <= float(cells[2]) <= 1.0
        assert cells[5] == row["tags"] and cells[6] == row["clip_top"], cells
    gender = next(cells for cells in shown if cells[0] == "Gender")
    assert ("1girl" in tags and "1girl" in gender[5]) or ("1boy" in tags and "1boy" in gender[5])
    assert all(len(cells[6].split(", ")) == 3 for cells in shown)  # CLIP's top three per attribute
    _screenshot(browser, "single")

    # The same image again is answered from the results cache.
    browser.find_element("id", "single-run").click()
    assert "answered from the results cache" in _wait_text(browser, "single-summary", "from the results cache")


def test_server_side_path_prefills_the_tags_from_its_sidecar(browser, tiny_app, sample, tagged_image):
    image, tags = tagged_image
    _open(browser, tiny_app)
    _type(browser, "#single-path input, #single-path textarea", str(image.relative_to(sample)), enter=True)
    from selenium.webdriver.support.ui import WebDriverWait

    box = browser.find_element("css selector", "#single-tags textarea")
    WebDriverWait(browser, WAIT_S).until(lambda _d: box.get_attribute("value") == tags)
    _type(browser, "#single-path input, #single-path textarea", "../outside.png", enter=True)
    assert "outside the folder this app may read" in _wait_text(browser, "single-signals", "outside the folder")


def test_a_bad_file_gets_the_same_one_line_reason_as_the_cli(browser, tiny_app, tmp_path):
    bad = tmp_path / "page.png"
    bad.write_bytes(b"<!DOCTYPE html><html><body>not a picture</body></html>")
    cli = subprocess.run([sys.executable, "-m", "charattr_core.cli", "extract", str(bad), "--no-clip",
                          "--database-url", f"sqlite:///{tmp_path / 'cli.db'}"], capture_output=True, text=True)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    reason = cli.stderr.split("cannot be processed:", 1)[1].strip()

    _open(browser, tiny_app)
    _upload(browser, "single-image", bad)
    browser.find_element("id", "single-run").click()
    shown = _wait_text(browser, "single-signals", "Error")
    assert f"Image page.png cannot be processed: {reason}" in shown
    assert "Traceback" not in browser.page_source


def test_batch_of_a_zip_gives_a_table_downloads_and_failed_files(browser, tiny_app, sample, tmp_path):
    import pyarrow.parquet as pq

    images = sorted(sample.rglob("*.png"))[:4]
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for image in images:
            zf.write(image, f"set/{image.name}")
            if image.with_suffix(".txt").is_file():
                zf.write(image.with_suffix(".txt"), f"set/{image.stem}.txt")
        zf.writestr("set/broken.png", b"\x89PNG\r\n\x1a\n truncated")
        zf.writestr("../escape.png", b"whatever")
    _open(browser, tiny_app, "Batch")
    _upload(browser, "batch-files", archive)
    browser.find_element("id", "batch-run").click()
    status = _wait_text(browser, "batch-status", "images done")
    assert status.startswith("4 images done") and "2 failed" in status
    rows = table_cells(browser, "batch-table")
    assert sorted(r[0] for r in rows) == sorted(f"upload/set/{i.name}" for i in images)
    failed = {r[0]: r[1] for r in table_cells(browser, "batch-failed")}
    assert failed["upload/set/broken.png"].startswith("truncated image file")
    assert failed["upload.zip/../escape.png"] == "path leaves the zip's folder: not extracted"
    assert not (tmp_path / "escape.png").exists()

    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "#batch-downloads a[href]")]
    by_suffix = {Path(link.split("?")[0]).suffix: link for link in links}
    with urllib.request.urlopen(by_suffix[".csv"], timeout=30) as response:
        table = list(csv.DictReader(io.StringIO(response.read().decode("utf-8"))))
    assert len(table) == 4 and {"gender", "gender_confidence", "strategy"} <= set(table[0])
    with urllib.request.urlopen(by_suffix[".parquet"], timeout=30) as response:
        parquet = pq.read_table(io.BytesIO(response.read()))
    assert parquet.num_rows == 4 and sorted(parquet.column("image_id").to_pylist()) == sorted(r["image_id"] for r in table)
    _screenshot(browser, "batch")


def test_benchmark_and_about_tabs(browser, tiny_app):
    _open(browser, tiny_app, "Benchmark")
    slider = browser.find_element("css selector", "#bench-images input[type=number]")
    slider.clear()
    slider.send_keys("8")
    browser.find_element("id", "bench-run").click()
    shown = _wait_text(browser, "bench-result", "Cache speed-up")
    assert "charattr-tiny/random" in shown and "cores" in shown
    first, second = table_cells(browser, "bench-result")  # run, images, seconds, images/s, computed, from cache
    assert first[1] == second[1] == "8" and first[4] == "8" and second[5] == "8"
    assert browser.find_elements("css selector", "#bench-plot img, #bench-plot canvas, #bench-plot svg")
    _screenshot(browser, "benchmark")

    _open(browser, tiny_app, "About")
    about = _wait_text(browser, "about", "fused_attributes")
    assert "charattr-tiny/random" in about and "charattr run" in about and "attribute_report" in about
    _screenshot(browser, "about")


def test_without_clip_weights_the_page_says_tags_only(browser, noclip_app, tagged_image):
    image, tags = tagged_image
    _open(browser, noclip_app)
    _upload(browser, "single-image", image)
    _type(browser, "#single-tags textarea", tags)
    browser.find_element("id", "single-run").click()
    signals = _wait_text(browser, "single-signals", "Signals")
    assert signals.startswith("CLIP weights not found: tags only.")
    shown = table_cells(browser, "single-result")
    assert all(cells[6] == "-" for cells in shown)  # no CLIP alternatives
    gender = next(cells for cells in shown if cells[0] == "Gender")
    assert gender[1] in ("female", "male") and float(gender[2]) > 0
    _screenshot(browser, "tags-only")


def test_large_uploads_and_too_many_pixels_get_one_line_reasons(browser, noclip_app, tmp_path):
    import numpy as np
    from PIL import Image

    noise = tmp_path / "noise.png"  # ~270 KB, over the app's 0.1 MB upload limit
    Image.fromarray((np.random.default_rng(0).random((300, 300, 3)) * 255).astype("uint8")).save(noise)
    _open(browser, noclip_app)
    _upload(browser, "single-image", noise)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(lambda d: "exceed the maximum allowed size" in d.find_element("tag name", "body").text)
    toast = browser.find_element("tag name", "body").text
    assert 'noise.png' in toast and "Traceback" not in browser.page_source

    wide = tmp_path / "wide.png"  # 250 x 250 = 62,500 pixels, over --max-image-pixels 40000
    Image.new("RGB", (250, 250), "white").save(wide)
    cli = subprocess.run([sys.executable, "-m", "charattr_core.cli", "extract", str(wide), "--no-clip",
                          "--max-image-pixels", "40000", "--database-url", f"sqlite:///{tmp_path / 'cli.db'}"],
                         capture_output=True, text=True)
    reason = cli.stderr.split("cannot be processed:", 1)[1].strip()
    assert reason.startswith("decompression bomb")
    _open(browser, noclip_app)
    _upload(browser, "single-image", wide)
    browser.find_element("id", "single-run").click()
    assert f"Image wide.png cannot be processed: {reason}" in _wait_text(browser, "single-signals", "Error")
