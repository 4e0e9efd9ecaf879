"""Helpers for the browser tests: Debian's headless Chromium through its own chromedriver, and the
`charattr app` server started on a free loopback port. Nothing is downloaded (no Selenium Manager)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1300")


def chromium_paths() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return browser, shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def chrome(browser: str, driver: str) -> Iterator[object]:
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look for a browser or driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="charattr-chrome-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def app_server(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
               timeout_s: float = 180) -> Iterator[str]:
    """`charattr app ARGS` on a free port; yields its URL once it answers, stops it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "charattr_core.cli", "app", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"charattr app exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"charattr app did not answer in {timeout_s} s") from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def table_cells(driver, elem_id: str) -> list[list[str]]:
    """The body cells of a Gradio Dataframe (or a Markdown table), row by row, as the page shows them."""
    return driver.execute_script("""
        const root = document.getElementById(arguments[0]);
        const grid = [...root.querySelectorAll('[role=gridcell][data-row]')];
        if (grid.length) {
            const rows = {};
            for (const cell of grid) {
                (rows[cell.dataset.row] ??= [])[Number(cell.dataset.col)] = cell.innerText.trim();
            }
            return Object.keys(rows).sort((a, b) => a - b).map(k => rows[k]);
        }
        return [...root.querySelectorAll('tbody tr')].map(
            tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()));
    """, elem_id)
