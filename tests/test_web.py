"""Trainer tab handlers: validation messages, saving a new persona safely, the password gate."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import gradio as gr
import pytest
from fakes import FakeModel

from agent import web
from agent.checks import StepVerdict
from agent.grades import TurnGrade
from agent.practice import Practice
from agent.store import NewSession, Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def trainer_password(monkeypatch):
    """A password is set, as a trainer must (the tools fail closed without one); no failures yet."""
    monkeypatch.setenv("TRAINER_PASSWORD", "s3cret")
    monkeypatch.setattr(web, "_failures", web.deque())


@pytest.fixture
def practice(tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    shutil.copy(REPO / "personas" / "carter-wrong-day.yaml", folder)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    fake = FakeModel(lines=["That's it, I'm leaving!"])
    yield Practice(store, patient=fake, coach=fake, personas_dir=folder)
    store.close()


def carter_yaml() -> str:
    return (REPO / "personas" / "carter-wrong-day.yaml").read_text(encoding="utf-8")


def test_valid_yaml_gets_a_tick():
    assert web.trainer_validate(carter_yaml(), "carter-wrong-day.yaml") == "✓ Valid persona."


def test_problems_name_file_line_and_field():
    broken = carter_yaml().replace("anger: 8\n", "anger: 12\n").replace("{step: empathize,", "{step: juggle,")
    text = web.trainer_validate(broken, "carter-wrong-day.yaml")
    assert text.startswith("✗")
    assert "carter-wrong-day.yaml:" in text
    assert "anger" in text and "less than or equal to 10" in text
    assert "triggers.calm[0].step" in text and "juggle" in text


def test_bad_yaml_syntax_is_reported_not_raised():
    assert "not valid YAML" in web.trainer_validate("id: [unclosed\n", "x.yaml")


def test_save_as_new_persona_sanitises_the_name_and_rewrites_the_id(practice):
    note, choices = web.trainer_save(practice, True, carter_yaml(), "../../Carter Copy")
    assert note == "✓ Saved as `carter-copy.yaml`."
    saved = practice.personas_dir / "carter-copy.yaml"
    assert saved.is_file()
    assert "id: carter-copy\n" in saved.read_text()
    assert practice.persona("carter-copy").name == "John Carter"
    assert "carter-copy" in choices["choices"]
    assert not (practice.personas_dir.parent.parent / "Carter Copy.yaml").exists()


def test_save_refuses_to_overwrite_and_to_save_invalid_yaml(practice):
    note, _ = web.trainer_save(practice, True, carter_yaml(), "carter-wrong-day")
    assert "already exists" in note
    note, _ = web.trainer_save(practice, True, carter_yaml().replace("anger: 8\n", "anger: 99\n"), "new-one")
    assert note.startswith("✗") and "anger" in note
    assert not (practice.personas_dir / "new-one.yaml").exists()


def test_trainer_password_gate(monkeypatch, practice):
    assert web.unlock("wrong")[0] is False
    assert web.unlock("s3cret")[0] is True
    with pytest.raises(gr.Error, match="trainer password"):
        web.trainer_save(practice, False, carter_yaml(), "sneaky")
    assert not (practice.personas_dir / "sneaky.yaml").exists()
    assert web.trainer_validate_view(False, "rubric: /dev/zero") == ""  # nothing parsed for a locked page
    assert web.rubric_view(False) == ("", [])  # the grader's patterns are for trainers only
    with pytest.raises(gr.Error):
        web.calibration(False, str(REPO / "tests" / "data" / "gold" / "dev.jsonl"))


def test_trainer_tools_fail_closed_without_a_password(monkeypatch, practice):
    monkeypatch.delenv("TRAINER_PASSWORD")
    ok, _box, note = web.unlock("")
    assert ok is False and "TRAINER_PASSWORD" in note
    with pytest.raises(gr.Error, match="TRAINER_PASSWORD"):
        web.trainer_save(practice, True, carter_yaml(), "sneaky")  # even a page that claims to be unlocked
    assert web.trainer_load(practice, True, "carter-wrong-day") == ("", "")
    assert web.rubric_view(True) == ("", [])


def test_unlocking_is_rate_limited(practice):
    for _ in range(web.MAX_FAILURES):
        assert web.unlock("guess")[2] == "Wrong password."
    ok, _box, note = web.unlock("s3cret")  # even the right one waits now
    assert ok is False and "Too many wrong passwords" in note


def test_save_replaces_any_spelling_of_the_id(practice):
    text = carter_yaml().replace("id: carter-wrong-day", "id : carter-wrong-day")
    note, _ = web.trainer_save(practice, True, text, "Spaced Id")
    assert note == "✓ Saved as `spaced-id.yaml`."
    assert practice.persona("spaced-id").id == "spaced-id"
    assert {p.id for p in practice.personas()} == {"carter-wrong-day", "spaced-id"}  # the app still starts


def test_oversized_input_gets_a_clear_message(practice, tmp_path):
    from agent.store import StoreError

    session_id = practice.start("carter-wrong-day").session.id
    with pytest.raises(StoreError, match="too long"):
        list(practice.turn(session_id, "why " * 1000))
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"x" * (web.MAX_UPLOAD_BYTES + 1))
    rows, note = web.calibration(True, str(big))
    assert rows is None and "too large" in note
    note, _ = web.trainer_save(practice, True, "x" * (web.MAX_YAML_CHARS + 1), "big")
    assert "too long" in note


def test_rubric_view_lists_steps_with_sources(practice):
    text, rows = web.rubric_view(True)
    assert "steps:" in text
    ids = [row[0] for row in rows]
    assert "empathize" in ids and "argue_back" in ids
    assert all(row[4] for row in rows)


def test_an_ended_session_shows_why_its_scorecard_plots_and_downloads(practice, tmp_path):
    key = web.browser_key(None)
    session_id = practice.start("carter-wrong-day", owner=key).session.id
    list(practice.turn(session_id, "Calm down, it's your own fault."))
    practice.end(session_id, outcome="walked_out", reason="Mr. Carter walked out.")
    reopened = Practice(Store(practice.store.url), personas_dir=practice.personas_dir)  # resumed from the store
    values = dict(zip(web.PRACTICE_OUTPUTS, web.resume(reopened, session_id, key), strict=True))
    assert "Session ended — walked out" in values["status"] and "Mr. Carter walked out." in values["status"]
    assert values["scorecard_box"]["visible"] is True
    assert "| Do not argue back or blame | avoided 0 / 1 | 0% |" in values["scorecard"]
    assert len(values["mood_plot"].axes[0].lines) == 2
    names = sorted(Path(p).name for p in values["downloads"])
    assert names == ["report.json", "report.md", "transcript.json", "transcript.md"]
    transcript = next(Path(p) for p in values["downloads"] if p.endswith("transcript.md")).read_text()
    assert "That's it, I'm leaving!" in transcript
    assert values["send"]["interactive"] is False


def test_calibration_upload_shows_per_step_agreement(tmp_path):
    rows, note = web.calibration(True, str(REPO / "tests" / "data" / "gold" / "dev.jsonl"))
    steps = {row[0]: row for row in rows}
    assert "empathize" in steps
    step, n, accuracy, _kappa = steps["empathize"]
    assert n > 0 and 0.0 <= accuracy <= 1.0
    assert "replies" in note and "macro accuracy" in note


def test_calibration_upload_with_a_bad_line_names_it(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x1", "reply": "hi", "labels": {"empathize": "sometimes"}}\n')
    rows, note = web.calibration(True, str(bad))
    assert rows is None and note.startswith("✗") and "bad.jsonl" in note


def test_history_lists_sessions_and_plots_progress_per_step(practice):
    mine, theirs = web.browser_key(None), web.browser_key(None)
    for trainee, reply, key in (("Ana", "Hello.", mine), ("Ana", "I understand how frustrating that must be.", mine),
                                ("Ben", "Hi.", theirs)):  # fmt: skip
        session_id = practice.start("carter-wrong-day", trainee, owner=key).session.id
        list(practice.turn(session_id, reply))
        practice.end(session_id, outcome="walked_out", reason="test")
    practice.start("carter-wrong-day", "Ana", owner=mine)

    rows, figure = web.history(practice, "Ana", mine)
    assert [row[1] for row in rows] == ["Ana", "Ana", "Ana"]
    assert [row[4] for row in rows] == ["in progress", "walked_out", "walked_out"]
    empathy = next(line for line in figure.axes[0].lines if line.get_label() == "empathize")
    assert list(empathy.get_xdata()) == [1, 2] and list(empathy.get_ydata()) == [0.0, 1.0]
    assert len(web.history(practice, "", mine)[0]) == 3  # this browser's sessions only
    assert [row[1] for row in web.history(practice, "", theirs)[0]] == ["Ben"]
    assert len(web.history(practice, "", theirs, unlocked=True)[0]) == 4  # a trainer sees everybody's


def test_a_trainer_sees_per_session_how_many_turns_the_phrases_alone_judged(practice):
    """Counted from the stored grades: in-progress sessions and cards saved before the count show it too."""
    trainee = web.browser_key(None)
    missed = {"empathize": StepVerdict(step_id="empathize", verdict="missed")}
    sessions = {}
    for name, abstained in (("Ana", (True, False, True)), ("Ben", (False, False))):
        session_id = practice.store.create_session(
            NewSession(persona_id="carter-wrong-day", rubric_id="deescalation", trainee_name=name, owner=trainee)
        ).id
        for flag in abstained:
            grade = TurnGrade(verdicts=missed, learned_abstained=flag)
            turn = practice.store.begin_turn(session_id, "Per the policy outlined in section four.", grade=grade)
            practice.store.complete_turn(turn.id, patient_reply="What?")
        sessions[name] = session_id

    rows, _ = web.history(practice, "", web.browser_key(None), unlocked=True)
    column = web.ui.HISTORY_HEADERS.index(web.ui.CHECKS_ONLY_HEADER)
    counted = {row[-1]: (row[3], row[column]) for row in rows}
    assert counted == {sessions["Ana"]: (3, 2), sessions["Ben"]: (2, 0)}


def test_a_trainee_cannot_see_or_continue_another_browsers_session(practice):
    mine, theirs = web.browser_key(None), web.browser_key(None)
    session_id = practice.start("carter-wrong-day", "Ana", owner=mine).session.id
    for values in (
        web.resume(practice, session_id, theirs),
        *web.send(practice, session_id, "Hello?", theirs),
        *web.retry(practice, session_id, theirs),
        web.end(practice, session_id, theirs),
        web.branch(practice, session_id, 0, theirs),
    ):
        status = dict(zip(web.PRACTICE_OUTPUTS, values, strict=True))["status"]
        assert status == f"⚠ no session '{session_id}'"  # as if it did not exist
    assert practice.store.turns(session_id) == [] and not practice.store.get_session(session_id).ended
    assert web.resume(practice, session_id, theirs, unlocked=True)[0] == session_id  # a trainer may open it
    api = web.api_endpoints(practice)
    with pytest.raises(gr.Error, match="no session"):
        api["practice_turn"](session_id, "Hello?")  # the API acts on sessions it started only


# -- wants in the editor (issue 20) -----------------------------------------------------------------


def test_the_wants_table_is_drawn_from_the_edited_yaml():
    table = web.trainer_wants_view(True, carter_yaml())
    assert "same_day_slot" in table and "keep_tomorrow" in table
    edited = carter_yaml().replace("id: home_exercises", "id: exercise_leaflet")
    redrawn = web.trainer_wants_view(True, edited)
    assert "exercise_leaflet" in redrawn and "home_exercises" not in redrawn
    # Another field broken: the wants still show; the wants themselves broken: a pointer to the problems.
    assert "same_day_slot" in web.trainer_wants_view(True, carter_yaml().replace("anger: 8\n", "anger: 12\n"))
    duplicate = carter_yaml().replace("id: call_back_confirm", "id: same_day_slot")
    assert "problems" in web.trainer_wants_view(True, duplicate) and "<tr" not in web.trainer_wants_view(
        True, duplicate
    )
    assert "no wants" in web.trainer_wants_view(True, "id: x\n")
    assert "does not parse" in web.trainer_wants_view(True, "id: [unclosed\n")
    assert web.trainer_wants_view(False, carter_yaml()) == ""  # a locked page gets nothing


def test_the_wants_table_escapes_what_the_trainer_typed():
    hostile = carter_yaml().replace("says: keep tomorrow's appointment as booked", "says: <script>alert(1)</script>")
    table = web.trainer_wants_view(True, hostile)
    assert "<script>" not in table and "&lt;script&gt;alert(1)&lt;/script&gt;" in table


def test_wants_problems_show_inline_with_their_field_path():
    duplicate = carter_yaml().replace("id: call_back_confirm", "id: same_day_slot")
    text = web.trainer_validate(duplicate, "carter-wrong-day.yaml")
    assert text.startswith("✗") and "wants.partly[1].id: 'same_day_slot' is used twice" in text
    blank_cue = carter_yaml().replace("cues: [call you back, call you before, ring you]", 'cues: [call you back, " "]')
    assert "wants.partly[1].cues: [1] is empty" in web.trainer_validate(blank_cue, "carter-wrong-day.yaml")
    no_wants = re.sub(r"\nwants:\n(?:  .*\n)+", "\n", carter_yaml())
    assert "wants: missing; thresholds.need_met needs it" in web.trainer_validate(no_wants, "carter-wrong-day.yaml")


def test_a_valid_persona_shows_what_the_lint_finds():
    vague = carter_yaml().replace(
        "says: a call back at a stated time to confirm what the clinic can do", "says: sort it out"
    )
    text = web.trainer_validate(vague[: vague.index("script:")], "persona.yaml")
    assert text.startswith("✓ Valid persona.")
    assert "Fix these before a test run" in text and "script.good: missing" in text
    assert "Worth a look" in text and "wants.partly[1].says: vague ('sort it out')" in text


def test_a_backtick_in_a_problem_cannot_end_its_code_span():
    sneaky = carter_yaml().replace("{step: empathize,", "{step: '`<img src=x onerror=alert(1)>`',")
    text = web.trainer_validate(sneaky, "carter-wrong-day.yaml")
    line = next(line for line in text.splitlines() if "triggers.calm[0].step" in line)
    assert "`<img src=x onerror=alert(1)>`" in line
    fence = re.match(r"- (`+)", line)[1]
    inner = line[2 + len(fence) : -len(fence)]
    assert len(fence) == 2 and line.endswith(fence) and inner.startswith("carter-wrong-day.yaml:")
    assert all(len(run) < len(fence) for run in re.findall(r"`+", inner))  # nothing inside can close the span


def test_typing_reads_only_the_callers_own_session(practice):
    mine, theirs = web.browser_key(None), web.browser_key(None)
    practice.prefills.debounce = 0.0
    session_id = practice.start("carter-wrong-day", "Ana", owner=mine).session.id
    for _ in range(500):  # the start's own read of the persona's prompt goes through the same queue
        if practice.prefills.ran and not practice.prefills.pending():
            break
        threading.Event().wait(0.02)
    started = practice.prefills.ran
    web.typing(practice, session_id, "I am so sorry about ", theirs)  # another browser: nothing is read
    assert not practice.prefills.pending() and practice.prefills.ran == started
    with pytest.raises(gr.Error, match="no session"):
        web.api_endpoints(practice)["prefill_reply"](session_id, "I am so sorry about ")  # a browser's session
    assert not practice.prefills.pending()
    web.typing(practice, session_id, "I am so sorry about ", mine)
    for _ in range(500):
        if practice.prefills.ran > started:
            break
        threading.Event().wait(0.02)
    assert practice.prefills.ran == started + 1
