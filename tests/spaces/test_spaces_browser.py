"""End-to-end: the Spaces served by gradio on loopback, driven in headless Debian Chromium through Playwright
(the system browser; Playwright never downloads one). Each test uploads an input, checks the output on the page
against the Space's own computation, saves a screenshot (under $HUBTOOLS_SCREENSHOTS, else a temporary folder), and fails if the page or
the app tries to reach anything but loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

from hubtools import spaces

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots go to a temporary folder, so a test run leaves the checkout untouched; set
# HUBTOOLS_SCREENSHOTS=benchmarks/results/spaces to refresh the committed ones.
SCREENSHOTS = Path(os.environ.get("HUBTOOLS_SCREENSHOTS") or tempfile.mkdtemp(prefix="hubtools-screens-"))
SCREENSHOTS.mkdir(parents=True, exist_ok=True)
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(demo) -> Iterator[str]:
    spaces.launch(demo, host="127.0.0.1", port=_free_port(), block=False)
    try:
        yield demo.local_url
    finally:
        demo.close()


@contextmanager
def page_at(browser, url: str):
    """A page that aborts and records every request to a host other than the Space's loopback server."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    blocked: list[str] = []

    def gate(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    try:
        yield page
    finally:
        page.close()
    assert blocked == [], f"the page tried to reach the network: {blocked}"


def test_retizero_space_in_chromium(browser, retizero_repo, no_outbound, tmp_path):
    app = spaces.load_app("retizero")
    demo = app.build_demo(retizero_repo)
    space = app.RetinalSpace.load(retizero_repo)
    photo = tmp_path / "fundus.png"
    app.example_image().save(photo)
    expected = space.classify(app.example_image(), app.DEFAULT_LABELS, "A fundus photograph of {}")
    with served(demo) as url, page_at(browser, url) as page:
        page.wait_for_selector("input[type=file]", state="attached")
        page.locator("input[type=file]").first.set_input_files(str(photo))
        page.get_by_text("Candidate labels").wait_for()
        page.locator("img[src*='fundus']").first.wait_for()  # the upload is shown before we run
        page.get_by_role("button", name="Run").click()
        page.get_by_text(f"{app.EXAMPLE_NAME} (similarity 1.000)").first.wait_for()  # retrieval found itself
        body = page.inner_text("body")
        for name, p in expected.items():  # every label with its probability in percent, as computed here
            assert name in body and f"{round(100 * p)}%" in body
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "retizero.png"), full_page=True)


def test_merge_explorer_in_chromium(browser, merge_repo, no_outbound, tmp_path):
    app = spaces.load_app("merge")
    view = app.GlueView.from_repo(merge_repo)
    uploaded = dict(view.report, zoo="uploaded-zoo")
    upload = tmp_path / "glue_report.json"
    upload.write_text(json.dumps(uploaded))
    with served(app.build_demo(merge_repo)) as url, page_at(browser, url) as page:
        page.get_by_text(f"{merge_repo}: zoo").wait_for()
        families = view.report["clustering"]["families"]
        # Gradio renders components one after another: wait for the last family line, not just the header
        page.get_by_text(f"family {len(families) - 1}: ").first.wait_for()
        body = page.inner_text("body")
        for i, family in enumerate(families):
            assert f"family {i}: {', '.join(family)}" in body
        # the first recipe is shown and downloads as the YAML stored in the repo, byte for byte
        first = next(iter(view.recipes))
        with page.expect_download() as download:
            page.locator(f"a[download='{app.recipe_filename(first)}']").click()
        assert Path(download.value.path()).read_text(encoding="utf-8") == view.recipes[first]
        assert "merge_method: linear" in page.inner_text("body")
        # another run's report, uploaded: the page switches to it
        page.locator("input[type=file]").first.set_input_files(str(upload))
        page.get_by_text("glue_report.json: zoo uploaded-zoo").wait_for()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "merge.png"), full_page=True)


def test_longtail_space_in_chromium(browser, longtail_repo, no_outbound):
    app = spaces.load_app("longtail")
    space = app.LongTailSpace.load(longtail_repo)
    example = space.example_files(1)[0]
    from PIL import Image

    expected = space.predict(Image.open(example))
    with served(app.build_demo(longtail_repo)) as url, page_at(browser, url) as page:
        page.get_by_text("Per-class accuracy").first.wait_for()
        page.locator("input[type=file]").first.set_input_files(example)
        page.get_by_role("button", name="Predict").click()
        best, p = next(iter(expected.items()))
        page.get_by_text(f"{round(100 * p)}%").first.wait_for()
        body = page.inner_text("body")
        for name, p in expected.items():  # the top-5 classes with their probabilities, as computed here
            assert name in body and f"{round(100 * p)}%" in body
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "longtail.png"), full_page=True)


def test_lora_generator_space_in_chromium(browser, lora_generator_repo, no_outbound, tmp_path):
    import zipfile

    app = spaces.load_app("lora-generator")
    description = "Decide whether a quotation is about sports (first class) or about love (second class)."
    with served(app.build_demo(lora_generator_repo)) as url, page_at(browser, url) as page:
        page.get_by_label("Task description").fill(description)
        page.get_by_role("button", name="Generate adapter").click()
        link = page.locator("a[download='adapter-seed0.zip']")
        link.wait_for()
        with page.expect_download() as download:
            link.click()
        with zipfile.ZipFile(download.value.path()) as z:
            assert sorted(z.namelist()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
            assert description in z.read("README.md").decode()  # the card names the condition it was made for
        assert "nearest_training_task" in page.inner_text("body")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "lora-generator.png"), full_page=True)


def test_semiseg_space_in_chromium(browser, semiseg_repo, no_outbound, tmp_path):
    app = spaces.load_app("semiseg")
    space = app.SegmentationSpace.load(semiseg_repo)
    photo = tmp_path / "nuclei.png"
    app.example_image().save(photo)
    _, summary = space.figure(app.example_image())
    with served(app.build_demo(semiseg_repo)) as url, page_at(browser, url) as page:
        page.wait_for_selector("input[type=file]", state="attached")
        page.locator("input[type=file]").first.set_input_files(str(photo))
        page.locator("img[src*='nuclei']").first.wait_for()
        page.get_by_role("button", name="Segment").click()
        page.get_by_text(summary.split(";")[0]).first.wait_for()  # the foreground share computed here
        page.locator("img[src*='confidence']").first.wait_for()  # and the image | mask | confidence PNG
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "semiseg.png"), full_page=True)


def test_speed_space_in_chromium(browser, speed_repo, no_outbound):
    app = spaces.load_app("speed")
    space = app.SpeedSpace.load(speed_repo)
    _, stats = space.explore(tau=650, k=7.0, lam=0.6, dual=True, weight_mode="paper")
    _, before = space.explore(**space.defaults())  # what the page shows first (k = 3, as trained)
    share = str(stats["share_t_ge_tau"]["analytic"])
    assert share != str(before["share_t_ge_tau"]["analytic"])
    with served(app.build_demo(speed_repo)) as url, page_at(browser, url) as page:
        page.get_by_text("expected_weight").first.wait_for()  # statistics of the trained settings, on load
        k = page.get_by_label("k (weight of t < tau)").first
        k.fill("7")
        k.press("Enter")
        page.get_by_text(share).first.wait_for()  # the share of t >= tau, recomputed for k = 7
        page.locator("img[src*='speed_tau650_k7_']").first.wait_for()  # and the plot redrawn
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "speed.png"), full_page=True)
