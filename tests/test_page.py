"""The `serve` page in a real browser: Debian's Chromium driven by Playwright.

In CI (CI=true) these tests must run and fail when Chromium or Playwright is missing; elsewhere
they skip with a message saying what to install. Set MNIST_DIFFUSION_SCREENSHOT=path to save a
screenshot of the page after a generation (docs/images/demo.png is made that way).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from mnist_diffusion.classifier import embed, load_classifier
from mnist_diffusion.data import to_uint8
from mnist_diffusion.pipeline import Pipeline
from mnist_diffusion.serve import Demo, make_server

CHROMIUM = Path("/usr/lib/chromium/chromium")  # the binary itself, not the /usr/bin wrapper script
IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -r requirements.lock)"
    return None


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return Demo.load(None, tmp_path_factory.mktemp("no-data"))


@pytest.fixture(scope="module")
def page_url(demo: Demo) -> Iterator[str]:
    threads_before = torch.get_num_threads()
    server = make_server(demo, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    torch.set_num_threads(threads_before)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    reason = _missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox", "--disable-background-networking"])
        yield browser
        browser.close()


class PageRecord:
    """A page with every console error, page error and requested URL it produced."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1100, "height": 1400})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]")

    def canvas_pixels(self, selector: str) -> list[int]:
        """The 28x28 canvas's grey values (its red channel), row by row."""
        return self.page.evaluate(f"""() => {{
            const data = document.querySelector("{selector}").getContext("2d").getImageData(0, 0, 28, 28).data;
            return Array.from({{length: 784}}, (_, i) => data[4 * i]);
        }}""")

    def wait_for_status(self, selector: str, text: str) -> None:
        self.page.wait_for_function(f"document.querySelector('{selector}').textContent.includes('{text}')",
                                    timeout=120_000)


@pytest.fixture
def page(browser, page_url: str) -> Iterator[PageRecord]:
    record = PageRecord(browser, page_url)
    yield record
    record.page.close()


def read_digit(pixels: list[int]) -> int:
    _, probabilities = embed(load_classifier(), torch.tensor(pixels, dtype=torch.uint8).reshape(1, 28, 28))
    return int(probabilities.argmax(1))


def test_the_page_loads_cleanly_and_asks_only_its_own_server(page: PageRecord) -> None:
    assert page.errors == []
    assert page.requests and all(urlparse(url).hostname == "127.0.0.1" for url in page.requests), page.requests


def test_generate_shows_every_step_and_ends_on_the_librarys_digit(page: PageRecord) -> None:
    page.page.select_option("#digit", "3")
    page.page.fill("#seed", "5")
    page.page.fill("#steps", "10")
    page.page.click("#generate")
    page.wait_for_status("#generate-status", "done")
    assert page.page.locator("#filmstrip canvas").count() == 10
    shown = page.canvas_pixels("#generate-canvas")
    pipe = Pipeline.load(device="cpu")  # the page draws what the Python API and the command line draw
    expected = to_uint8(pipe.generate(1, torch.tensor([3]), pipe.settings(steps=10), torch.Generator().manual_seed(5)))
    assert shown == expected[0].flatten().tolist()
    assert read_digit(shown) == 3
    assert page.errors == []


def test_drawing_then_completing_keeps_the_strokes(page: PageRecord) -> None:
    """Draw the top bar and the start of a 7's stem with the mouse, erase a bit, complete as a 7."""
    box = page.page.locator("#pad").bounding_box()
    assert box is not None

    def stroke(points: list[tuple[float, float]]) -> None:  # points in 28x28 pixel units
        page.page.mouse.move(box["x"] + points[0][0] * box["width"] / 28, box["y"] + points[0][1] * box["height"] / 28)
        page.page.mouse.down()
        for x, y in points[1:]:
            page.page.mouse.move(box["x"] + x * box["width"] / 28, box["y"] + y * box["height"] / 28, steps=8)
        page.page.mouse.up()

    stroke([(7, 7), (21, 7), (17, 13)])
    page.page.check("input[name=tool][value=eraser]")
    stroke([(7.5, 7.5), (8.5, 7.5)])
    page.page.select_option("#region", "lower")
    page.page.select_option("#complete-digit", "7")
    drawn = page.canvas_pixels("#pad")
    assert sum(value > 0 for value in drawn[:392]) > 20  # ink in the upper half
    assert drawn[7 * 28 + 7] == 0  # erased
    page.page.click("#complete")
    page.wait_for_status("#complete-status", "done")
    completed = page.canvas_pixels("#complete-canvas")
    assert completed[:392] == drawn[:392]  # the known upper half, exactly as drawn
    assert completed[392:] != [0] * 392  # the lower half was drawn
    assert read_digit(completed) == 7


def test_interpolation_frames_arrive_on_the_slider(page: PageRecord) -> None:
    page.page.click("#interpolate")
    page.wait_for_status("#interpolate-status", "frame 8 of 8")
    assert page.page.get_attribute("#slider", "max") == "7"
    page.page.fill("#slider", "0")
    page.page.dispatch_event("#slider", "input")
    page.wait_for_status("#interpolate-status", "frame 1 of 8")


def test_an_error_shows_in_its_panel_and_the_panel_recovers(page: PageRecord) -> None:
    assert page.page.get_attribute("#steps", "max") == "100"  # the limit is on the input: min(100, T)
    page.page.fill("#steps", "5000")
    page.page.click("#generate")
    page.page.wait_for_selector("#generate-error:not([hidden])")
    assert "steps must be a whole number from 1 to 100, got 5000" in page.page.text_content("#generate-error")
    assert page.page.is_hidden("#error") and page.page.is_enabled("#generate")
    assert "Not done" in page.page.text_content("#generate-status")
    error_box = page.page.locator("#generate-error").bounding_box()
    assert error_box is not None and error_box["y"] < page.page.locator("#generate-canvas").bounding_box()["y"]
    page.page.fill("#steps", "4")
    page.page.click("#generate")
    page.wait_for_status("#generate-status", "done")
    assert page.page.is_hidden("#generate-error")


def test_a_fast_stroke_of_four_events_inks_a_continuous_line(page: PageRecord) -> None:
    box = page.page.locator("#pad").bounding_box()
    assert box is not None
    cell = box["width"] / 28
    page.page.mouse.move(box["x"] + 2.5 * cell, box["y"] + 3.5 * cell)
    page.page.mouse.down()
    for column in (10.5, 18.5, 26.5):  # four events, eight cells apart
        page.page.mouse.move(box["x"] + column * cell, box["y"] + 3.5 * cell)
    page.page.mouse.up()
    row = page.canvas_pixels("#pad")[3 * 28:4 * 28]
    assert all(value == 255 for value in row[2:27]), row  # no gap from the first cell to the last
    page.page.click("#clear")
    assert max(page.canvas_pixels("#pad")) == 0 and max(page.canvas_pixels("#complete-canvas")) == 0
    page.page.mouse.click(box["x"] + 14.5 * cell, box["y"] + 5.5 * cell)  # a tap inks a dot (upper, unshaded half)
    assert sum(value == 255 for value in page.canvas_pixels("#pad")) == 4


def test_completing_again_draws_a_new_completion_with_its_own_seed(page: PageRecord) -> None:
    page.page.click("#test-digit")
    page.wait_for_status("#complete-status", "Complete it")
    page.page.fill("#seed", "123")  # the Generate panel's seed does not steer completions
    page.page.click("#complete")
    page.wait_for_status("#complete-status", "done")
    first, status = page.canvas_pixels("#complete-canvas"), page.page.text_content("#complete-status")
    assert "seed 0" in status
    page.page.click("#complete-again")
    page.page.wait_for_function("!document.querySelector('#complete-status').textContent.includes('seed 0')"
                                " && document.querySelector('#complete-status').textContent.includes('done')",
                                timeout=120_000)
    assert page.canvas_pixels("#complete-canvas") != first
    assert page.page.input_value("#complete-seed") != "0"


def test_a_phone_wide_page_does_not_scroll_sideways(browser, page_url: str) -> None:
    record = PageRecord(browser, page_url)
    try:
        for width in (320, 375):
            record.page.set_viewport_size({"width": width, "height": 800})
            overflow = record.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{overflow} px of sideways scroll at {width} px"
    finally:
        record.page.close()


def test_every_control_has_a_name_and_every_status_is_announced(page: PageRecord) -> None:
    unnamed = page.page.evaluate("""() => Array.from(document.querySelectorAll("input, select, button"))
        .filter((control) => {
            const labels = control.labels ? Array.from(control.labels) : [];
            const name = control.getAttribute("aria-label") || labels.map((l) => l.textContent.trim()).join(" ")
                || (control.tagName === "BUTTON" ? control.textContent.trim() : "");
            const shared = labels.some((l) => l.querySelectorAll("input, select").length > 1);
            return !name || shared;
        }).map((control) => control.id || control.outerHTML.slice(0, 60))""")
    assert unnamed == []
    assert page.page.evaluate("""() => Array.from(document.querySelectorAll(".status"))
        .every((status) => status.getAttribute("aria-live") === "polite")""")
    assert page.page.evaluate("""() => Array.from(document.querySelectorAll("canvas.large"))
        .every((canvas) => canvas.getAttribute("role") === "img" && canvas.getAttribute("aria-label"))""")


def test_a_drawing_saves_as_a_png_that_complete_accepts(page: PageRecord, tmp_path: Path, tiny_checkpoint: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import run_cli

    box = page.page.locator("#pad").bounding_box()
    assert box is not None
    page.page.mouse.move(box["x"] + 60, box["y"] + 40)
    page.page.mouse.down()
    page.page.mouse.move(box["x"] + 160, box["y"] + 90, steps=4)
    page.page.mouse.up()
    with page.page.expect_download() as download:
        page.page.click("#save-drawing")
    saved = tmp_path / "drawing.png"
    download.value.save_as(saved)
    code, _, err = run_cli(capsys, "complete", "--images", str(saved), "--mask", "lower", "--num", "2",
                           "--method", "replace", "--steps", "3", "--checkpoint", str(tiny_checkpoint),
                           "--out", str(tmp_path / "c.png"))
    assert code == 0, err
    import numpy as np
    from PIL import Image

    with Image.open(saved) as picture:
        pixels = np.asarray(picture.convert("L"))
    assert pixels.shape == (28, 28) and pixels.max() == 255
    assert pixels[:14].flatten().tolist() == page.canvas_pixels("#pad")[:392]  # the unshaded half, as drawn


def test_two_pages_generating_at_once_both_finish(browser, page_url: str) -> None:
    pages = [PageRecord(browser, page_url) for _ in range(2)]
    try:
        for seed, record in enumerate(pages):
            record.page.fill("#seed", str(seed))
            record.page.click("#generate")
        for record in pages:
            record.wait_for_status("#generate-status", "done")
            assert record.errors == []
    finally:
        for record in pages:
            record.page.close()


def test_a_tour_of_all_three_panels(page: PageRecord, tmp_path: Path) -> None:
    """Generate, complete a (model-drawn, as no MNIST is here) test digit, interpolate: each panel ends
    with a result; the screenshot of this state is docs/images/demo.png."""
    page.page.select_option("#digit", "5")
    page.page.click("#generate")
    page.wait_for_status("#generate-status", "done")
    page.page.click("#test-digit")
    page.wait_for_status("#complete-status", "Complete it")
    page.page.click("#complete")
    page.wait_for_status("#complete-status", "done")
    page.page.check("input[name=mode][value=digits]")
    page.page.click("#interpolate")
    page.wait_for_status("#interpolate-status", "frame 8 of 8")
    page.page.fill("#slider", "4")
    page.page.dispatch_event("#slider", "input")
    for selector in ("#generate-canvas", "#complete-canvas", "#interpolate-canvas"):
        assert max(page.canvas_pixels(selector)) > 200, selector
    assert page.errors == []
    page.page.screenshot(path=os.environ.get("MNIST_DIFFUSION_SCREENSHOT") or str(tmp_path / "demo.png"),
                         full_page=True)


def test_the_page_names_a_models_own_classes(browser, tmp_path: Path) -> None:
    """A model trained on a folder of classes (`train --data FOLDER`) is served with its class names."""
    from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
    from mnist_diffusion.config import DiffusionConfig, preset
    from mnist_diffusion.unet import UNet

    config = preset("tiny", num_classes=3, class_names=("bar", "cross", "ring"), dark_ink=True)
    path = save_checkpoint(Checkpoint(config, DiffusionConfig(num_timesteps=20), UNet(config).state_dict()),
                           tmp_path / "shapes.safetensors")
    server = make_server(Demo.load(str(path), tmp_path), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        record = PageRecord(browser, f"http://127.0.0.1:{server.server_address[1]}/")
        for select in ("#digit", "#complete-digit", "#interpolate-digit", "#digit-a", "#digit-b"):
            shown = record.page.eval_on_selector(select, "s => Array.from(s.options).map(o => o.text)")
            assert shown[-3:] == ["bar", "cross", "ring"], (select, shown)
        assert record.errors == []
        record.page.close()
    finally:
        server.shutdown()
        server.server_close()
