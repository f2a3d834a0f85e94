"""A real headless Chromium plays a session on the page: pick a patient, reply twice, end, scorecard.

Uses Debian's ``chromium`` through Playwright's Python API (no browser download); model traffic
replays from the cassette. Screenshots of the three tabs go to a temporary folder, or to
docs/screenshots/ with ``DEESCALATE_SCREENSHOTS=docs/screenshots`` (app_server.screenshot_dir).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from app_server import APOLOGY, PLAN, only_model_traffic, running_app, screenshot_dir
from conftest import REPLAY_BASE_URL, skip_or_fail_in_ci
from fakes import TIP, FakeModel

from agent.llm import Backend, LLMSettings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SHOTS = screenshot_dir()


@pytest.fixture(scope="module")
def vcr_config(vcr_config):
    return {**vcr_config, "before_record_request": only_model_traffic}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        skip_or_fail_in_ci("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def mood_values(page) -> tuple[int, int]:
    anger = page.get_attribute("#mood .mood-anger", "data-value")
    trust = page.get_attribute("#mood .mood-trust", "data-value")
    return int(anger), int(trust)


# Replay answers in milliseconds, so a minute means a request missing from the cassette (fail fast);
# recording on a busy 2-core machine takes minutes per turn.
REPLAY_WAIT_MS = 60_000
RECORD_WAIT_MS = 900_000


def send(page, text: str, number: int, wait_ms: int) -> None:
    """Send trainee reply ``number`` (1-based); wait for the patient's answer and that turn's tip."""
    page.fill("#message textarea", text)
    page.click("#send")
    page.wait_for_function(
        "n => document.querySelectorAll('#chat [data-testid=\"bot\"]').length > n", arg=number, timeout=wait_ms
    )
    # Newest feedback comes first: the part above the previous turn's heading belongs to this turn.
    page.wait_for_function(
        """n => {
            const head = (document.querySelector('#feedback')?.innerText ?? '').split('Turn ' + (n - 1))[0];
            return head.includes('Turn ' + n) && head.includes('Tip:');
        }""",
        arg=number,
        timeout=wait_ms,
    )


def start_carter(browser, url: str):
    """A new page on the app, Mr. Carter picked and started, his opening line shown."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator("#persona input").click()
    page.get_by_role("option").filter(has_text="John Carter").first.click()
    page.click("#start")
    page.wait_for_function("() => document.querySelector('#chat')?.innerText.includes('forty minutes')")
    return page


@pytest.mark.vcr
def test_a_trainee_practises_in_the_browser(browser, llm_settings, recording, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINER_PASSWORD", "s3cret")
    wait_ms = RECORD_WAIT_MS if recording else REPLAY_WAIT_MS
    settings = llm_settings.model_copy(update={"timeout": 900.0})  # recording on a busy machine is slow
    with running_app(settings, tmp_path / "browser.db", seed=11) as (url, _demo, store):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.locator("#persona input").click()
        page.get_by_role("option").filter(has_text="John Carter").first.click()
        page.wait_for_function("() => document.querySelector('#persona-card')?.innerText.includes('medium')")
        page.fill("#trainee-name textarea", "Sam")
        page.click("#start")
        page.wait_for_function("() => document.querySelector('#chat')?.innerText.includes('forty minutes')")
        start = mood_values(page)
        assert start == (80, 30)

        send(page, APOLOGY, 1, wait_ms)
        after_first = mood_values(page)
        assert after_first[0] < start[0]  # anger went down
        feedback = page.inner_text("#feedback")
        assert "Turn 1" in feedback and "demonstrated" in feedback and '"' in feedback  # quoted evidence

        send(page, PLAN, 2, wait_ms)
        assert mood_values(page) != after_first
        assert "Turn 2" in page.inner_text("#feedback")
        bot_lines = page.locator('#chat [data-testid="bot"]').all_inner_texts()
        assert len(bot_lines) >= 3 and all(line.strip() for line in bot_lines)

        if page.locator("#scorecard-box").is_hidden():  # not ended by itself yet: end it
            page.click("#end")
        page.wait_for_function("() => document.querySelector('#scorecard')?.innerText.includes('Scorecard')")
        assert "Session ended" in page.inner_text("#status")
        page.wait_for_selector("#downloads a", timeout=30_000)
        page.screenshot(path=str(SHOTS / "practice.png"), full_page=True)

        [session] = store.list_sessions()
        assert session.ended and session.trainee_name == "Sam"
        assert [t.trainee_text for t in store.turns(session.id)] == [APOLOGY, PLAN]

        page.get_by_role("tab", name="History").click()
        page.click("#history-refresh")
        page.wait_for_function("() => document.querySelector('#history-table')?.innerText.includes('carter-wrong-day')")
        page.screenshot(path=str(SHOTS / "history.png"), full_page=True)

        page.get_by_role("tab", name="Trainer").click()
        page.fill("#trainer-password input", "s3cret")
        page.click("#unlock")
        page.locator("#trainer-persona input").click()
        page.get_by_role("option", name="carter-wrong-day").click()
        page.wait_for_function("() => document.querySelector('#validation')?.innerText.includes('Valid persona')")
        # The persona's wants, drawn from the editor's YAML as a table (issue 20).
        page.wait_for_function("() => document.querySelector('#wants-table td code')?.innerText === 'same_day_slot'")
        page.wait_for_function("() => document.querySelector('#editor .cm-content')?.innerText.includes('carter')")
        page.wait_for_function("() => !document.querySelector('#editor .progress-text, #editor .eta-bar')")
        page.screenshot(path=str(SHOTS / "trainer.png"), full_page=True)


def test_the_next_reply_goes_while_the_tip_is_on_its_way(browser, tmp_path):
    """Send is enabled as soon as the patient has answered; the tip follows into the panel later.

    A fake model behind the page (tests/fakes.py) holds the coach's better phrasing back until
    the trainee has sent the next reply.
    """
    fake = FakeModel(hold_coach=True)
    # A backend whose model writes the tips (the embedded one shows the persona's curated coaching
    # at once, test_practice); never called: the fake answers.
    settings = LLMSettings(backend=Backend.COMPATIBLE, base_url=REPLAY_BASE_URL, model="fake")
    with running_app(settings, tmp_path / "fake.db", seed=3, patient=fake, coach=fake) as (url, _demo, store):
        page = start_carter(browser, url)

        page.fill("#message textarea", APOLOGY)
        page.click("#send")
        page.wait_for_function("() => document.querySelector('#chat')?.innerText.includes('Line A.')")
        page.wait_for_function("() => document.querySelector('#feedback')?.innerText.includes('" + TIP + "')")
        feedback = page.inner_text("#feedback")
        assert "Better phrasing on the way" in feedback  # the tip is shown, its phrasing still held back
        assert page.locator("#send").is_enabled()

        page.fill("#message textarea", PLAN)
        page.click("#send")
        page.wait_for_function("() => document.querySelector('#chat')?.innerText.includes('Line B.')")
        assert store.turns(store.list_sessions()[0].id)[0].grade.better_phrasing is None  # still on its way
        fake.coach_released.set()
        page.wait_for_function(
            "() => (document.querySelector('#feedback')?.innerText ?? '').split('Try saying').length === 3"
        )  # both turns now show their better phrasing
        assert "on the way" not in page.inner_text("#feedback")


def test_a_pasted_reply_is_read_before_send(browser, tmp_path):
    """A reply pasted into the box (one input event, no key presses) goes to the patient's slot before
    Send, as a typed one does: Gradio's Textbox fires ``input`` on key presses only, so the page listens
    to ``change`` (with ``input`` this test finds no prefill of the pasted words)."""
    fake = FakeModel()
    settings = LLMSettings(backend=Backend.COMPATIBLE, base_url=REPLAY_BASE_URL, model="fake")
    with running_app(settings, tmp_path / "paste.db", seed=3, patient=fake, coach=fake) as (url, _demo, _store):
        page = start_carter(browser, url)

        page.locator("#message textarea").focus()
        page.keyboard.insert_text(APOLOGY)  # what a paste does: the whole text in one input event

        def read_pasted() -> bool:
            return any(APOLOGY in str(messages[-1].content) for messages in fake.prefills if messages)

        deadline = time.monotonic() + 15
        while not read_pasted() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert read_pasted(), [str(m[-1].content)[-80:] for m in fake.prefills if m]
        page.close()
