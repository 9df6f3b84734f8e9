"""The audit's HTML report: one self-contained file, verdict first, and it renders in a real browser.

The browser test opens the page in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium), takes a screenshot, and checks that every image loaded and that the console
shows no error. It is skipped, with the reason, where Chromium is not installed.
"""

from __future__ import annotations

import base64
import re
import shutil

import numpy as np
import pytest
import torch

from blindspot.data import DataConfig
from blindspot.experiments.audit_runs import run_audit
from blindspot.models import create_model
from blindspot.models.checkpoint import save_checkpoint
from blindspot.results import file_sha256

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The audit of a small blindspot checkpoint (it carries its 32 px preparation) on three template slices."""
    root = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    model = create_model("bench-ae", size=32, d=4, hidden=16)
    model.preparation = {"size": 32, "geometry": "pad", "normalize": None, "equalize": False}
    checkpoint = save_checkpoint(root / "model.pt", model, step=1, config={}, metrics={})
    path = run_audit(root / "audit", checkpoint, DataConfig(slices=(60, 64, 68)), n_intensities=6, n_sigmas=3, sigma_max=2.0,
                     threads=1, note="A reduced grid for the test.")
    return path, checkpoint


def test_the_report_is_one_self_contained_file_with_the_verdict_first(report):
    path, checkpoint = report
    page = path.read_text()
    assert path.name == "report.html" and page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page) and "url(" not in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 6
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    order = [page.index(h) for h in ("<h2>Verdict</h2>", "<h2>Intensity profiles</h2>", "<h2>Each scoring function</h2>",
                                     "<h2>Worst cases</h2>", "<h2>Healthy intensity histogram", "<h2>Provenance</h2>")]
    assert order == sorted(order)
    verdict = page[order[0] : order[1]]
    for phrase in ("Blind band", "Matched blur", "Best scoring function", "mean AP"):
        assert phrase in verdict or phrase.lower() in verdict.lower()
    assert "A reduced grid for the test." in page
    assert file_sha256(checkpoint) in page and "checkpoint" in page and "numpy" in page
    for name in ("l1", "positive", "negative", "ssim", "rarity", "image", "zscore"):
        assert f"<h3><code>{name}</code></h3>" in page


def _browser():
    """(chromium, chromedriver) paths, or the reason the browser test cannot run."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[dev]')"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None, ("Chromium is not installed (apt-get install chromium chromium-driver): the HTML report is not "
                      "checked in a browser")
    return (chromium, driver), ""


def test_the_report_renders_in_headless_chromium_with_every_image_and_no_console_error(report, tmp_path):
    found, reason = _browser()
    if found is None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1280,4000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(report[0].resolve().as_uri())
        state = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        title = browser.title
        log = browser.get_log("browser")
        shot = tmp_path / "report.png"
        assert browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    page = report[0].read_text()
    assert len(state) == page.count("<img ") > 0
    assert all(done and width > 0 and height > 0 for done, width, height in state), state
    assert [entry for entry in log if entry["level"] in ("SEVERE", "ERROR")] == []
    assert title.startswith("blindspot audit: ")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.frombuffer(shot.read_bytes(), np.uint8)
    assert pixels.size > 10_000  # a real page, not a blank
