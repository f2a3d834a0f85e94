"""Voice mode in a real headless Chromium: a WAV file is the microphone, the page shows what it
heard, the patient's answer is spoken, and the feedback quotes the transcript the grader saw.

Chromium plays ``tests/data/voice/apology.wav`` as its microphone (``--use-file-for-fake-audio-capture``)
and grants the permission itself (``--use-fake-ui-for-media-stream``). The recogniser is the real
Whisper tiny.en; the patient is the fake model (tests/fakes.py), so no cassette is needed: what the
model says is not what this test is about.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from app_server import REPO, running_app, screenshot_dir
from conftest import REPLAY_BASE_URL, skip_or_fail_in_ci
from fakes import FakeModel

from agent.llm import Backend, LLMSettings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
MICROPHONE = REPO / "tests" / "data" / "voice" / "apology.wav"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={MICROPHONE}", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
SHOTS = screenshot_dir()
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        skip_or_fail_in_ci("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("faster_whisper", reason="voice practice needs the voice extra (make test installs it)")
    if not shutil.which("ffmpeg"):
        skip_or_fail_in_ci("FFmpeg is not installed (apt-get install ffmpeg): Gradio streams the voice with it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def test_a_trainee_speaks_and_hears_the_patient(browser, tmp_path):
    fake = FakeModel(lines=["I have waited forty minutes. Do you know how that feels? Fix it today."])
    settings = LLMSettings(backend=Backend.EMBEDDED, base_url=REPLAY_BASE_URL)  # never called: the fake answers
    with running_app(settings, tmp_path / "voice.db", seed=5, patient=fake, coach=fake) as (url, _demo, store):
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.locator("#persona input").click()
        page.get_by_role("option").filter(has_text="John Carter").first.click()
        page.click("#voice-on input")
        page.wait_for_selector("#voice-mic", state="visible")
        page.click("#start")
        page.wait_for_function("() => document.querySelector('#chat')?.innerText.includes('forty minutes')")

        page.locator("#voice-mic").get_by_role("button", name="Record").click()
        page.wait_for_timeout(7_000)  # the fixture is 7 s (the last 0.5 s silence): speak all of it
        page.locator("#voice-mic").get_by_role("button", name="Stop").click()
        page.wait_for_function(
            "() => document.querySelector('#message textarea')?.value.includes('frustrating')", timeout=WAIT_MS
        )
        heard = page.input_value("#message textarea")
        assert "sorry" in heard.lower() and "Carter" in heard
        assert "Heard in" in page.inner_text("#voice-note")
        page.click("#send")
        page.wait_for_function("() => document.querySelector('#chat')?.innerText.includes('Fix it today')")
        # The patient's answer is playable audio of a few seconds ("Fix it today." and all).
        page.wait_for_function("() => document.querySelector('#patient-audio audio')?.duration > 1", timeout=WAIT_MS)
        page.wait_for_function("() => document.querySelector('#feedback')?.innerText.includes('Turn 1')")
        feedback = page.inner_text("#feedback")
        assert heard.split()[0] in feedback and "Carter" in feedback  # the transcript the grader saw
        [session] = store.list_sessions()
        assert store.turns(session.id)[0].trainee_text == heard
        page.screenshot(path=str(SHOTS / "voice.png"), full_page=True)
