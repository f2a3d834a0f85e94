"""The session turn loop: event order, mood history, failure and retry, restore from storage."""

from __future__ import annotations

import pytest

from agent.llm import Backend, LLMSettings
from agent.patient import PatientUnavailable
from agent.personas import load_persona
from agent.session import Session, SessionError

CARTER = load_persona("carter-wrong-day")
# Nothing listens on the discard port: a real connection failure, as when the model server died.
DEAD = LLMSettings(backend=Backend.EMBEDDED, base_url="http://127.0.0.1:9/v1", model="default", timeout=5)


@pytest.mark.vcr
@pytest.mark.block_network
def test_turn_events_come_in_order_with_fast_verdicts_first(llm_settings):
    session = Session(CARTER, settings=llm_settings, seed=7, temperature=0)
    events = list(session.stream_turn("I'm so sorry, Mr. Carter. That must be really frustrating."))
    kinds = [e.kind for e in events]
    assert kinds[0] == "checked" and kinds[-1] == "answered"
    assert set(kinds[1:-1]) == {"delta"}
    checked = events[0]
    assert checked.verdicts["empathize"].verdict == "demonstrated"
    assert checked.verdicts["use_name"].verdict == "demonstrated"
    assert checked.mood.anger < CARTER.anger
    answered = events[-1]
    assert answered.text == "".join(e.text for e in events if e.kind == "delta").strip()
    assert [m.role for m in session.transcript.messages] == ["patient", "trainee", "patient"]
    assert session.transcript.messages[-1].content == answered.text


@pytest.mark.vcr
@pytest.mark.block_network
def test_mood_history_and_grades_accumulate(llm_settings):
    session = Session(CARTER, settings=llm_settings, seed=7, temperature=0)
    session.turn("Calm down. That's not our fault.")
    session.turn("I DON'T KNOW what you want me to do.")
    anger = [m.anger for m in session.moods]
    assert len(anger) == 3 and anger[0] == CARTER.anger and anger[1] > anger[0] - 0.01 and anger[2] >= 9
    assert [t.verdicts["lose_cool"].verdict for t in session.turns] == ["ok", "violated"]
    assert len(session.grades) == 2
    assert session.summary()["persona"] == "carter-wrong-day"


def test_dead_model_server_keeps_the_trainee_message_and_allows_retry():
    session = Session(CARTER, settings=DEAD, seed=7)
    with pytest.raises(PatientUnavailable, match="not answering.*try again"):
        list(session.stream_turn("I'm sorry, Mr. Carter."))
    assert session.pending
    assert session.transcript.messages[-1].role == "trainee"
    assert session.transcript.messages[-1].content == "I'm sorry, Mr. Carter."
    assert len(session.moods) == 2  # the mood for the kept message is computed once
    with pytest.raises(PatientUnavailable):
        list(session.retry())
    assert session.pending and len(session.moods) == 2
    # The trainee may also rephrase: the unanswered message is replaced, not stacked.
    with pytest.raises(PatientUnavailable):
        list(session.stream_turn("I'm so sorry, Mr. Carter."))
    assert [m.content for m in session.transcript.messages if m.role == "trainee"] == ["I'm so sorry, Mr. Carter."]
    assert len(session.turns) == 1


def test_retry_without_a_failed_turn_is_an_error():
    with pytest.raises(SessionError, match="no unanswered turn"):
        list(Session(CARTER, settings=DEAD).retry())


def test_empty_text_is_rejected():
    with pytest.raises(SessionError, match="say something"):
        list(Session(CARTER, settings=DEAD).stream_turn("   "))


class Stored:
    """The shape of agent.store.TurnRecord that restore() reads."""

    def __init__(self, trainee_text, patient_reply, mood_after=None, grade=None):
        self.trainee_text, self.patient_reply, self.mood_after, self.grade = (
            trainee_text,
            patient_reply,
            mood_after,
            grade,
        )


def test_restore_recomputes_the_mood_and_the_ending():
    good = CARTER.script.good
    records = [Stored(line, "Hm.") for line in good[:4]]
    session = Session.restore(CARTER, records)
    assert len(session.turns) == 4 and len(session.transcript.messages) == 9
    assert session.moods[-1].anger <= CARTER.thresholds.resolve_anger
    assert session.ending is not None and session.ending.kind == "resolved"
    assert "offer_solution" in session.ending.reason
    with pytest.raises(SessionError, match="has ended"):
        list(session.stream_turn("Anything else?"))


def test_restore_prefers_the_stored_mood_and_skips_unanswered_turns():
    stored = {"anger": 4.0, "trust": 6.0, "turn": 1}
    session = Session.restore(CARTER, [Stored("Hello.", "What?", mood_after=stored), Stored("Sorry.", None)])
    assert len(session.turns) == 1 and session.mood.anger == 4.0 and session.mood.trust == 6.0


@pytest.mark.vcr
@pytest.mark.block_network
def test_the_tip_arrives_before_the_better_phrasing(llm_settings):
    session = Session(CARTER, settings=llm_settings.model_copy(update={"timeout": 900}), seed=7, temperature=0,
                      grade_with_llm=True)  # fmt: skip
    events = list(session.stream_turn("That's not my fault. You should have read the letter."))
    kinds = [e.kind for e in events if e.kind != "delta"]
    assert kinds == ["checked", "answered", "tipped", "graded"]
    tipped, graded = events[-2].grade, events[-1].grade
    assert tipped.tip and tipped.better_phrasing is None
    assert graded.tip == tipped.tip and graded.better_phrasing
    assert graded.labels()["argue_back"] == "violated" and graded.focus == "argue_back"
    assert session.turns[-1].grade is graded


def test_the_tip_coaches_the_reply_against_the_line_it_answered():
    """Graded after the patient answered, the reply is still judged against the line before it."""
    session = Session(CARTER, settings=DEAD)
    session.transcript.add("trainee", "Sorry, Mr. Carter.")
    session.transcript.add("patient", "Sorry doesn't get me seen today.")
    assert session.context(before_last_reply=True).last_patient() == CARTER.opening_line
    assert session.context().last_patient() == "Sorry doesn't get me seen today."


def test_abusive_patient_context_follows_the_mood():
    boyd = load_persona("abusive-caller")
    session = Session(boyd, settings=DEAD)
    assert session.context().patient_abusive
    calm = session.mood.model_copy(update={"anger": 3.0})
    assert not session.context(calm).patient_abusive


@pytest.mark.live
def test_live_server_killed_mid_turn_then_retry(live_server, live_settings):
    session = Session(CARTER, settings=live_settings, seed=7)
    events = session.stream_turn("I'm so sorry, Mr. Carter.")
    assert next(events).kind == "checked"
    live_server.kill()
    with pytest.raises(PatientUnavailable):
        list(events)
    assert session.pending
    live_server.ensure()  # the app restarts the server on a new port
    settings = LLMSettings(backend=Backend.EMBEDDED, base_url=live_server.openai_base_url, model=live_settings.model)
    kinds = [e.kind for e in session.retry(settings)]
    assert kinds[-1] == "answered" and not session.pending
    assert session.transcript.messages[-1].role == "patient"


def test_practice_cli_survives_a_dead_model_server(monkeypatch, capsys):
    from agent.cli import main

    monkeypatch.setenv("DEESCALATE_BACKEND", "embedded")
    monkeypatch.setenv("DEESCALATE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DEESCALATE_MODEL", "default")
    typed = iter(["I'm sorry, Mr. Carter.", "/retry", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    assert main(["practice", "carter-wrong-day", "--no-feedback"]) == 0
    out = capsys.readouterr().out
    assert "Mr. Carter: " + CARTER.opening_line in out
    assert out.count("the patient could not answer") == 2 and "(/retry to try again)" in out
    assert "outcome: ongoing" in out
