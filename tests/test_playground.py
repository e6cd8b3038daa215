"""The playground page (/ui) in real headless Chromium (Debian's, driven by Playwright) against a real
`bentoml serve` on the tiny profile: generate, transform, critique, errors next to their fields, cancel,
the API key, labels and a 400 px wide screen. Screenshots land in tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from tests.audio_files import audio_file
from tests.conftest import ROOT, Secured

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",  # this machine's network is closed: no calls home
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STEP_MS = 60_000  # no step of a test waits longer


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: `apt-get install chromium` (.ci/run does)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Browser, base: str) -> Page:
    page = browser.new_page(viewport={"width": 400, "height": 900})
    page.set_default_timeout(STEP_MS)
    page.goto(f"{base}/ui/")
    return page


def fetch_audio(page: Page, selector: str) -> np.ndarray:
    """The bytes behind an audio element's source (a blob: URL), decoded as the WAV they are."""
    data = page.evaluate(
        """async (selector) => {
            const source = document.querySelector(selector).src;
            return Array.from(new Uint8Array(await (await fetch(source)).arrayBuffer()));
        }""",
        selector,
    )
    samples, rate = soundfile.read(io.BytesIO(bytes(data)), dtype="float32")
    assert rate == 16_000
    return samples


def screenshot(page: Page, panel: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"playground-{panel}.png"
    page.locator(f"#{panel}").screenshot(path=path)
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert image.std() > 10, f"{path} looks blank"  # text, fields and buttons on a white panel


def test_generate_plays_a_wav_of_the_requested_length(browser: Browser, server: str) -> None:
    page = open_page(browser, server)
    page.fill("#g-prompt", "a door knock")
    page.fill("#g-duration", "2")
    page.fill("#g-waveforms", "2")
    page.click("#generate summary")  # the advanced knobs are folded away
    page.fill("#g-steps", "3")
    page.click("#generate button[type=submit]")
    page.wait_for_selector("#generate .results li:nth-child(2) audio")
    assert len(fetch_audio(page, "#generate .results audio")) == 2 * 16_000
    first = page.locator("#generate .results li").first
    seed = first.inner_text().split()[1]
    assert "CLAP score" in first.inner_text() and first.locator("a[download]").count() == 1
    first.get_by_role("button", name="Use this seed").click()
    assert page.input_value("#g-seed") == seed and page.input_value("#g-waveforms") == "1"
    screenshot(page, "generate")


def upload_and_submit(
    browser: Browser, base: str, folder: Path, panel: str, seconds: float, knobs: dict, submit: bool = True
) -> Page:
    """A fresh page; a WAV of `seconds` chosen in the panel's first file field, advanced knobs set, submitted."""
    clip = folder / "take.wav"
    clip.write_bytes(audio_file("wav", seconds))
    page = open_page(browser, base)
    page.set_input_files(f"#{panel} input[type=file]", str(clip))
    page.click(f"#{panel} summary")
    for selector, value in knobs.items():
        page.fill(selector, value)
    if submit:
        page.click(f"#{panel} button[type=submit]")
    return page


def test_transform_an_uploaded_file(browser: Browser, server: str, tmp_path: Path) -> None:
    page = upload_and_submit(browser, server, tmp_path, "transform", 3.0, {"#t-steps": "3"})
    page.wait_for_selector("#transform audio.after[src]")
    assert page.get_attribute("#transform audio.before", "src")  # the upload, to compare by ear
    assert len(fetch_audio(page, "#transform audio.after")) == 3 * 16_000
    screenshot(page, "transform")


def test_edit_inpaints_a_range_dragged_on_the_waveform_then_extends_the_clip(
    browser: Browser, server: str, tmp_path: Path
) -> None:
    page = upload_and_submit(browser, server, tmp_path, "edit", 4.0, {"#e-steps": "3"}, submit=False)
    waveform = page.locator("#edit canvas.waveform")
    waveform.wait_for()  # drawn once the upload is decoded
    box = waveform.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    assert (float(page.input_value("#e-start")), float(page.input_value("#e-end"))) == pytest.approx(
        (1.0, 2.0), abs=0.02
    )
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#edit audio.after[src]")
    assert len(fetch_audio(page, "#edit audio.after")) == 4 * 16_000
    assert page.inner_text("#edit .edited").startswith("Regenerated 1.0")
    screenshot(page, "edit")
    page.select_option("#e-mode", "extend")
    assert page.is_disabled("#e-start") and page.is_hidden("#e-start")
    page.fill("#e-seconds", "1.5")
    page.click("#edit button[type=submit]")
    page.locator("#edit .edited", has_text="Regenerated 4.00-5.50 s of 5.50 s.").wait_for()
    assert len(fetch_audio(page, "#edit audio.after")) == int(5.5 * 16_000)


def test_critique_an_uploaded_file_shows_text(browser: Browser, server: str, tmp_path: Path) -> None:
    page = upload_and_submit(browser, server, tmp_path, "critique", 4.0, {"#c-tokens": "16"})
    page.wait_for_selector("#critique .answer:not(:empty):not(.writing)")  # the answer, not its text so far
    assert "audio: 4.0 s" in page.inner_text("#critique .answer")
    screenshot(page, "critique")


def test_a_structured_critique_of_a_long_take_shows_scores_and_segments(
    browser: Browser, server: str, tmp_path: Path
) -> None:
    clip = tmp_path / "take.wav"
    clip.write_bytes(audio_file("wav", 10.0))
    page = open_page(browser, server)
    page.set_input_files("#critique input[type=file]", str(clip))
    page.click("#critique summary")
    page.select_option("#c-output", "json")
    page.select_option("#c-long", "segments")
    page.fill("#c-tokens", "640")
    page.click("#critique button[type=submit]")
    page.wait_for_selector("#critique .answer table")
    assert page.locator("#critique .answer table tr").count() == 7  # a header and six dimensions
    assert "/10" in page.inner_text("#critique .answer table")
    assert "heard in segments 0-4 s, 3-7 s, 6-10 s" in page.inner_text("#critique .answer")
    screenshot(page, "critique")


def test_ranking_by_listening_shows_the_critics_scores(browser: Browser, server: str) -> None:
    page = open_page(browser, server)
    page.fill("#g-prompt", "a door knock")
    page.fill("#g-duration", "1")
    page.fill("#g-waveforms", "2")
    page.click("#generate summary")
    page.fill("#g-steps", "2")
    page.select_option("#g-rank", "critic")
    page.click("#generate button[type=submit]")
    page.wait_for_selector("#generate .results li:nth-child(2) audio")
    scores = [
        int(text.split("critic ")[1].split("/")[0]) for text in page.locator("#generate .results li").all_inner_texts()
    ]
    assert scores == sorted(scores, reverse=True) and all(1 <= score <= 10 for score in scores)


def test_an_out_of_range_value_shows_the_servers_message_next_to_its_field(browser: Browser, server: str) -> None:
    page = open_page(browser, server)
    page.fill("#g-duration", "601")  # the form does not check: the server's message is the one shown
    page.click("#generate button[type=submit]")
    error = page.locator("#generate [data-field=duration] .error")
    error.wait_for()
    assert "600" in error.inner_text()
    assert page.get_attribute("#g-duration", "aria-invalid") == "true"
    assert page.inner_text("#generate .form-error") == ""


def test_long_work_shows_progress_and_can_be_cancelled(browser: Browser, server: str) -> None:
    page = open_page(browser, server)
    page.fill("#g-duration", "20")
    page.click("#generate summary")
    page.fill("#g-steps", "500")
    page.click("#generate button[type=submit]")
    job = page.locator("#generate .job")  # locators, not wait_for_function: the page's policy forbids eval
    job.filter(has_text="denoising").wait_for()
    assert page.evaluate("document.querySelector('#generate .job progress').value") > 0
    page.get_by_role("button", name="Cancel").click()
    job.filter(has_text="Cancelled").wait_for()


def test_every_control_is_labelled_and_the_page_fits_400_px(browser: Browser, server: str) -> None:
    page = open_page(browser, server)
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
              .filter((c) => c.labels.length === 0).map((c) => c.id || c.name)"""
    )
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.keyboard.press("Tab")  # the first stop is the first link, and Enter on a button submits its form
    assert page.evaluate("document.activeElement.tagName") == "A"


def test_both_pages_work_under_a_policy_that_allows_no_other_origin(browser: Browser, server: str) -> None:
    """The API docs page (`/`, ours, not BentoML's with its tag manager) and the playground each send a
    Content-Security-Policy, and Chromium reports no violation of it while they load, render and play audio."""
    page = browser.new_page(viewport={"width": 400, "height": 900})
    page.set_default_timeout(STEP_MS)
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Security Policy" in message.text else None)
    origins: set[str] = set()
    page.on("request", lambda request: origins.add(request.url.split("/")[2]))
    docs = page.goto(f"{server}/")
    page.locator(".opblock-summary-path", has_text="/generate/json").first.wait_for()  # Swagger UI rendered
    playground = page.goto(f"{server}/ui/")
    page.fill("#g-duration", "1")
    page.click("#generate summary")
    page.fill("#g-steps", "2")
    page.click("#generate button[type=submit]")
    page.wait_for_selector("#generate .results audio")
    assert len(fetch_audio(page, "#generate .results audio")) == 16_000
    assert violations == [] and origins == {server.split("/")[2]}
    for answer in (docs, playground):
        assert answer is not None
        policy = answer.headers.get("content-security-policy", "")
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, answer.url


def test_the_api_key_is_sent_from_session_storage_never_in_a_url(browser: Browser, secured: Secured) -> None:
    base = secured.served.url
    urls: list[str] = []
    page = open_page(browser, base)
    page.on("request", lambda request: urls.append(request.url))
    page.fill("#g-duration", "1")
    page.click("#generate button[type=submit]")
    page.locator("#generate .form-error").wait_for()
    assert "API key" in page.inner_text("#generate .form-error")  # 401: the server's message
    key = secured.keys["alpha"]
    page.fill("#api-key", key)
    page.click("#key-form button")
    assert page.evaluate("sessionStorage.getItem('audio-studio-api-key')") == key
    page.click("#generate summary")
    page.fill("#g-steps", "2")
    page.click("#generate button[type=submit]")
    page.wait_for_selector("#generate .results audio")
    assert urls and not [url for url in urls if key in url]
