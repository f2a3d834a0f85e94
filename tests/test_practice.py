"""The app's controller: turns saved before the model answers, retry, branches, resume, scorecard.

Model traffic is real: replayed from cassettes (recorded against the embedded default model), a
dead port for the failure path, and a live small-model server killed mid-turn.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import web
from agent.llm import Backend, LLMSettings
from agent.practice import Practice
from agent.runtime import EmbeddedServer
from agent.store import Store, StoreError

PERSONA = "carter-wrong-day"
GOOD_1 = "I'm so sorry you've been waiting, Mr. Carter. I understand how frustrating that must be."
GOOD_2 = (
    "Let me see what I can do for you: I can check for a cancellation today, or book the first slot after "
    "you're back and give you a home exercise sheet. Would that help?"
)
REPO = Path(__file__).resolve().parents[1]
DEAD = LLMSettings(backend=Backend.EMBEDDED, base_url="http://127.0.0.1:9/v1")


def patient_and_tip(settings: LLMSettings) -> LLMSettings:
    """Recording runs on a busy 2-core machine: the tip's long prompt can take minutes there."""
    return settings.model_copy(update={"timeout": 900.0})


@pytest.fixture
def store(tmp_path):
    db = Store(f"sqlite:///{tmp_path / 'practice.db'}")
    yield db
    db.close()


@pytest.mark.vcr
def test_a_session_streams_grades_branches_and_ends_with_a_scorecard(llm_settings, store):
    practice = Practice(store, patient_and_tip(llm_settings), seed=7)
    session_id = practice.start(PERSONA, "Sam").session.id

    stages = [update.stage for update in practice.turn(session_id, GOOD_1)]
    assert stages[0] == "saved" and "typing" in stages
    assert stages.index("typing") < stages.index("answered") < stages.index("tipped") < stages.index("graded")
    [first] = store.turns(session_id)
    assert first.status == "complete" and first.patient_reply
    assert first.mood_after["anger"] < first.mood_before["anger"]  # empathy and an apology calm him
    assert first.grade["verdicts"]["apologize"]["verdict"] == "demonstrated"
    assert first.grade["tip"] and first.grade["better_phrasing"]

    *_, last = practice.turn(session_id, "That's not my problem, you should have read the letter.")
    assert last.turns[-1].mood_after["anger"] > first.mood_after["anger"]
    assert last.turns[-1].grade["verdicts"]["argue_back"]["verdict"] == "violated"

    # Retry from turn 2: a new branch continues after turn 1; the bad answer stays in the database.
    practice.branch(session_id, 1)
    *_, last = practice.turn(session_id, GOOD_2)
    assert [t.trainee_text for t in last.turns] == [GOOD_1, GOOD_2]
    assert len(store.all_turns(session_id)) == 3

    ended = practice.end(session_id)
    card = ended.session.scorecard
    assert ended.session.ended and card["turns"] == 2
    assert card["steps"]["apologize"] == 0.5  # apologised in turn 1, not in turn 2
    assert card["steps"]["argue_back"] == 1.0  # the argument was on the abandoned branch
    assert card["mood"][0][1] == pytest.approx(0.8)  # anger 8/10 at the start
    assert "let_vent" in card["session_steps"]


@pytest.mark.vcr
def test_the_session_ends_by_itself_and_the_page_says_why(llm_settings, store, tmp_path):
    """A persona tuned to accept the first concrete offer: the session resolves after one turn."""
    folder = tmp_path / "personas"
    folder.mkdir()
    text = (REPO / "personas" / f"{PERSONA}.yaml").read_text(encoding="utf-8")
    text = text.replace("  resolve_anger: 3\n", "  resolve_anger: 9\n  min_turns: 1\n").replace(
        "  resolve_trust: 6\n", "  resolve_trust: 3\n"
    )
    (folder / f"{PERSONA}.yaml").write_text(text, encoding="utf-8")
    practice = Practice(store, patient_and_tip(llm_settings), personas_dir=folder, seed=5)
    session_id = practice.start(PERSONA).session.id
    *_, last = practice.turn(session_id, GOOD_2)
    assert last.stage == "ended"
    assert last.session.outcome == "resolved" and last.session.ended
    assert "accepted what you offered" in last.session.end_reason
    assert last.turns[-1].patient_reply and last.turns[-1].grade["tip"]
    values = dict(zip(web.PRACTICE_OUTPUTS, web.practice_view(practice, last), strict=True))
    assert values["status"].startswith("**Session ended — resolved.**")
    assert values["scorecard_box"]["visible"] is True and values["send"]["interactive"] is False


def test_a_dead_model_server_keeps_the_words_and_offers_retry(store):
    practice = Practice(store, DEAD)
    session_id = practice.start(PERSONA).session.id
    *_, last = practice.turn(session_id, GOOD_1)
    assert last.stage == "failed"
    assert "Your words are saved" in last.error
    [turn] = store.turns(session_id)
    assert turn.trainee_text == GOOD_1 and turn.status == "failed"
    with pytest.raises(StoreError, match="retry it first"):
        list(practice.turn(session_id, "Hello?"))
    # The page: the Retry button shows, the trainee's words stay in the chat.
    values = dict(zip(web.PRACTICE_OUTPUTS, web.practice_view(practice, last), strict=True))
    assert values["retry"]["visible"] is True
    assert values["chat"][-1] == {"role": "user", "content": GOOD_1}


def test_a_session_resumes_in_a_new_app_with_its_failed_turn(store, tmp_path):
    first_app = Practice(store, DEAD)
    session_id = first_app.start(PERSONA, "Sam").session.id
    list(first_app.turn(session_id, GOOD_1))
    restarted = Practice(Store(store.url), DEAD)
    values = dict(zip(web.PRACTICE_OUTPUTS, web.resume(restarted, session_id), strict=True))
    assert "press Retry" in values["status"]
    assert values["retry"]["visible"] is True
    assert [m["content"] for m in values["chat"]] == [restarted.persona(PERSONA).opening_line, GOOD_1]


def test_trainer_test_run_says_why_it_failed(store):
    practice = Practice(store, DEAD)
    text = practice.persona(PERSONA).model_dump_json()  # JSON is YAML too
    *_, (figure, note) = web.trainer_test_run(practice, True, text)
    assert figure is None and note.startswith("✗ The test run failed")


@pytest.mark.live
def test_model_server_killed_mid_turn_then_retry_restarts_it(tmp_path, store):
    """The server dies after the turn began: the page says so, keeps the words, Retry restarts it."""
    server = EmbeddedServer(model="small", log_path=tmp_path / "server.log")
    server.ensure()
    try:
        practice = Practice(store, LLMSettings(backend=Backend.EMBEDDED, model="small"), server=server, seed=3)
        session_id = practice.start(PERSONA).session.id
        outputs = []
        for number, values in enumerate(web.send(practice, session_id, GOOD_1)):
            outputs.append(dict(zip(web.PRACTICE_OUTPUTS, values, strict=True)))
            if number == 1:  # saved, checked: the patient's request is next
                server.kill()
        final = outputs[-1]
        assert "stopped answering" in final["status"]
        assert practice.model.state().state == "down"  # the page's model line says so too
        assert final["retry"]["visible"] is True
        [turn] = store.turns(session_id)
        assert turn.trainee_text == GOOD_1 and turn.status == "failed"

        *_, values = web.retry(practice, session_id)
        retried = dict(zip(web.PRACTICE_OUTPUTS, values, strict=True))
        assert server.alive() and practice.model.state().state == "ready"
        assert retried["retry"]["visible"] is False
        [turn] = store.turns(session_id)
        assert turn.status == "complete" and turn.patient_reply
        assert retried["chat"][-1] == {"role": "assistant", "content": turn.patient_reply}
    finally:
        server.stop()


@pytest.mark.live
def test_trainer_test_run_plays_both_scripts_on_a_real_server(tmp_path, store):
    with EmbeddedServer(model="small", log_path=tmp_path / "server.log") as server:
        practice = Practice(store, LLMSettings(backend=Backend.EMBEDDED, model="small"), server=server)
        text = (REPO / "personas" / f"{PERSONA}.yaml").read_text(encoding="utf-8")
        results = list(web.trainer_test_run(practice, True, text))
    figure, note = results[-1]
    assert len(figure.axes[0].lines) == 4  # anger and trust for each script
    assert "**good trainee**: resolved" in note and "**bad trainee**: walked out" in note
