"""The store against SQLite and a real PostgreSQL server: the same tests, both databases."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pg_server import pg_server  # noqa: F401  (session fixture used by the "postgresql" param)
from sqlalchemy import JSON, column, table, update

from agent.checks import StepVerdict
from agent.grades import TurnGrade
from agent.mood import Effect, Mood
from agent.report import MoodPoint, Scorecard, StepCoverage
from agent.store import NewSession, Store, StoreError, database_url

START = Mood(anger=8.0, trust=2.0)
# A mood as the update rule leaves it: credits, effects and the previous anger must survive the JSON.
AFTER = Mood(
    anger=6.5, trust=3.0, turn=1, credits={"empathize": 1.0}, previous_anger=8.0,
    effects=[Effect(source="step:empathize", anger=-1.5, trust=1.0)],
)  # fmt: skip
VERDICTS = TurnGrade(
    verdicts={
        "empathize": StepVerdict(step_id="empathize", verdict="demonstrated", evidence="sorry you had to wait"),
        "argue_back": StepVerdict(step_id="argue_back", verdict="ok"),
        "reassure": StepVerdict(step_id="reassure", verdict="missed", source="learned", confidence=0.31),
    },
    components=["checks", "classifier"],
    verdicts_ms=4.2,
)
COACHED = VERDICTS.model_copy(
    update={"tip": "Say what happens next.", "better_phrasing": "I'm sorry, I'll find out now.", "focus": "reassure",
            "tip_source": "model", "phrasing_source": "model", "tip_ms": 900.0, "advice_ms": 1800.0}
)  # fmt: skip
CARD = Scorecard(
    rubric="deescalation",
    turns=1,
    outcome="resolved",
    reason="Patient calmed down.",
    mood=[MoodPoint(turn=0, anger=0.8, trust=0.2), MoodPoint(turn=1, anger=0.65, trust=0.3)],
    score=0.75,
    steps=[StepCoverage(step_id="empathize", title="Acknowledge", kind="do", demonstrated=1, rate=1.0)],
    session={"agreed_resolution": StepVerdict(step_id="agreed_resolution", verdict="demonstrated")},
    strengths=["Acknowledge (1 of 1 turns)"],
    debrief="Take a minute before your next patient.",
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        db = Store(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        server = request.getfixturevalue("pg_server")
        db = Store(server.new_database())
    yield db
    db.close()


def new_session(store: Store, **overrides) -> str:
    values = {
        "persona_id": "angry-parent",
        "rubric_id": "deescalation",
        "trainee_name": "Sam",
        "backend": "embedded",
        "model": "qwen",
        "opening": "I've been waiting for an hour!",
        "initial_mood": START,
    }
    values.update(overrides)
    return store.create_session(NewSession(**values)).id


def reopened(store: Store) -> Store:
    """A second Store on the same database: what it sees was committed, and read back from JSON."""
    return Store(store.url)


def test_session_round_trip(store):
    session_id = new_session(store)
    record = store.get_session(session_id)
    assert record.persona_id == "angry-parent"
    assert record.trainee_name == "Sam"
    assert isinstance(record.initial_mood, Mood)
    assert record.initial_mood == START
    assert record.scorecard is None
    assert record.started_at.tzinfo is not None
    assert not record.ended


def test_trainee_text_is_saved_before_the_model_answers(store):
    session_id = new_session(store)
    turn = store.begin_turn(session_id, "I'm sorry you had to wait.", mood_before=START)
    other = reopened(store)
    try:
        [seen] = other.turns(session_id)
    finally:
        other.close()
    assert seen.id == turn.id
    assert seen.status == "pending"
    assert seen.trainee_text == "I'm sorry you had to wait."
    assert seen.patient_reply is None
    assert seen.mood_before == START
    assert seen.mood_after is None and seen.grade is None


def test_begin_turn_saves_the_verdicts_and_the_mood_they_moved_to(store):
    """Verdicts and the new mood are known before the patient is asked: a pending turn carries them."""
    session_id = new_session(store)
    turn = store.begin_turn(
        session_id, "I'm sorry you had to wait.", mood_before=START, mood_after=AFTER, grade=VERDICTS
    )
    assert turn.status == "pending"
    other = reopened(store)
    try:
        [seen] = other.turns(session_id)
    finally:
        other.close()
    assert seen.status == "pending" and seen.patient_reply is None
    assert isinstance(seen.grade, TurnGrade) and isinstance(seen.mood_after, Mood)
    assert seen.grade == VERDICTS
    assert seen.grade.verdicts["reassure"].source == "learned"
    assert seen.grade.labels() == {"empathize": "demonstrated", "argue_back": "ok", "reassure": "missed"}
    assert not seen.grade.coached
    assert seen.mood_before == START
    assert seen.mood_after == AFTER
    assert seen.mood_after.effects == [Effect(source="step:empathize", anger=-1.5, trust=1.0)]

    # The patient's answer completes the turn without wiping what begin_turn saved.
    done = store.complete_turn(turn.id, patient_reply="Fine.")
    assert done.status == "complete"
    assert done.grade == VERDICTS and done.mood_after == AFTER


def test_a_failed_turn_keeps_its_verdicts_and_mood_for_the_retry(store):
    session_id = new_session(store)
    turn = store.begin_turn(session_id, "Let me check.", mood_before=START, mood_after=AFTER, grade=VERDICTS)
    store.fail_turn(turn.id, "model server died")
    retried = store.retry_turn(turn.id)
    assert retried.status == "pending"
    assert retried.grade == VERDICTS and retried.mood_after == AFTER and retried.mood_before == START


def test_coaching_arrives_after_the_answer_and_is_added_in_place(store):
    session_id = new_session(store)
    turn = store.begin_turn(session_id, "Sorry, Mr. Carter.", mood_before=START, mood_after=AFTER, grade=VERDICTS)
    done = store.complete_turn(turn.id, patient_reply="Fine.")
    assert done.status == "complete"
    assert done.grade.tip is None and not done.grade.coached
    coached = store.set_grade(turn.id, COACHED)
    assert isinstance(coached.grade, TurnGrade)
    assert coached.grade == COACHED
    other = reopened(store)
    try:
        seen = other.get_turn(turn.id)
    finally:
        other.close()
    assert seen.grade.coached
    assert seen.grade.tip == "Say what happens next."
    assert seen.grade.verdicts == VERDICTS.verdicts  # coaching never changes the verdicts
    assert seen.mood_after == AFTER
    assert seen.patient_reply == "Fine." and seen.status == "complete"


def test_complete_turn_may_set_the_mood_and_grade(store):
    session_id = new_session(store)
    turn = store.begin_turn(session_id, "Sorry.")
    done = store.complete_turn(turn.id, patient_reply="Fine.", mood_after=AFTER, grade=VERDICTS)
    assert done.mood_after == AFTER and done.grade == VERDICTS
    assert store.get_turn(turn.id).mood_after == AFTER


def test_failed_turn_keeps_text_blocks_new_turns_and_can_be_retried(store):
    session_id = new_session(store)
    first = store.begin_turn(session_id, "Hello.")
    store.complete_turn(first.id, patient_reply="What?")
    second = store.begin_turn(session_id, "Let me check that for you.")
    failed = store.fail_turn(second.id, "model server died")
    assert failed.status == "failed" and failed.error == "model server died"
    assert store.open_turn(session_id).id == second.id
    with pytest.raises(StoreError, match="retry it first"):
        store.begin_turn(session_id, "Anything else?")
    retried = store.retry_turn(second.id)
    assert retried.status == "pending" and retried.error is None
    assert retried.trainee_text == "Let me check that for you."
    store.complete_turn(second.id, patient_reply="OK.")
    assert store.open_turn(session_id) is None
    assert [t.trainee_text for t in store.turns(session_id)] == ["Hello.", "Let me check that for you."]
    with pytest.raises(StoreError, match="complete"):
        store.retry_turn(second.id)


def test_transcript_rebuilds_the_conversation_for_a_resume(store):
    session_id = new_session(store)
    first = store.begin_turn(session_id, "I'm sorry.")
    store.complete_turn(first.id, patient_reply="You should be.")
    store.begin_turn(session_id, "How can I help?")  # the app died here: still pending
    transcript = store.transcript(session_id)
    assert [(m.role, m.content) for m in transcript.messages] == [
        ("patient", "I've been waiting for an hour!"),
        ("trainee", "I'm sorry."),
        ("patient", "You should be."),
        ("trainee", "How can I help?"),
    ]


def test_retry_from_an_earlier_turn_starts_a_branch_and_keeps_the_old_one(store):
    session_id = new_session(store)
    texts = ["One.", "Two.", "Three."]
    ids = []
    for text in texts:
        turn = store.begin_turn(session_id, text)
        store.complete_turn(turn.id, patient_reply=f"re {text}")
        ids.append(turn.id)

    branch = store.branch_from(session_id, 1)
    assert branch == 1
    assert store.get_session(session_id).active_branch == 1
    # Before answering, the active path is the shared prefix.
    assert [t.trainee_text for t in store.turns(session_id)] == ["One."]

    new = store.begin_turn(session_id, "Two, better.")
    assert new.index == 1 and new.branch == 1 and new.parent_id == ids[0]
    store.complete_turn(new.id, patient_reply="Thanks.")
    after = store.begin_turn(session_id, "Four.")
    assert after.index == 2 and after.parent_id == new.id

    assert [t.trainee_text for t in store.turns(session_id)] == ["One.", "Two, better.", "Four."]
    assert [t.trainee_text for t in store.turns(session_id, branch=0)] == texts
    assert len(store.all_turns(session_id)) == 5

    # Branch again from the very first turn: the path starts from the opening line.
    assert store.branch_from(session_id, 0) == 2
    assert store.turns(session_id) == []
    first = store.begin_turn(session_id, "Zero.")
    assert first.index == 0 and first.parent_id is None


def test_branch_from_a_turn_that_does_not_exist_is_an_error(store):
    session_id = new_session(store)
    with pytest.raises(StoreError, match="no trainee turn 0"):
        store.branch_from(session_id, 0)


def test_end_session_with_scorecard_and_list(store):
    first = new_session(store, trainee_name="Ana")
    second = new_session(store, trainee_name="Ben", persona_id="late-patient")
    ended = store.end_session(first, outcome="resolved", reason="Patient calmed down.", scorecard=CARD)
    assert ended.ended and ended.outcome == "resolved"
    assert isinstance(ended.scorecard, Scorecard) and ended.scorecard == CARD
    other = reopened(store)
    try:
        seen = other.get_session(first).scorecard
    finally:
        other.close()
    assert seen == CARD
    assert seen.outcome == "resolved" and seen.mood[1] == MoodPoint(turn=1, anger=0.65, trust=0.3)
    assert seen.session["agreed_resolution"].verdict == "demonstrated"
    with pytest.raises(StoreError, match="ended"):
        store.begin_turn(first, "Hello?")
    assert [s.id for s in store.list_sessions()] == [second, first]
    assert [s.id for s in store.list_sessions(trainee_name="Ana")] == [first]
    assert [s.id for s in store.list_sessions(ended=False)] == [second]
    assert [s.id for s in store.list_sessions(persona_id="late-patient")] == [second]


def test_set_scorecard_replaces_the_card(store):
    session_id = new_session(store)
    store.end_session(session_id, outcome="walked_out", reason="Anger stayed high.")
    assert store.get_session(session_id).scorecard is None
    card = CARD.model_copy(update={"outcome": "walked_out", "score": 0.25})
    assert store.set_scorecard(session_id, card).scorecard == card
    assert store.get_session(session_id).scorecard.score == 0.25


# What ``Practice.scorecard`` saved before the redesign: a plain dict with another shape.
OLD_SCORECARD = {
    "score": 0.5,
    "steps": {"empathize": 0.5},
    "session_steps": {"error": "RuntimeError: no model"},
    "turns": 2,
    "outcome": "walked_out",
    "reason": "Anger stayed at 10.",
    "mood": [[0, 0.8, 0.2], [1, 0.9, 0.1]],
}


def test_an_old_shaped_scorecard_in_the_database_reads_back_as_none(store):
    """A session saved before the redesign still lists, opens and resumes; only its old card is dropped."""
    old = new_session(store, trainee_name="Ana")
    turn = store.begin_turn(old, "Calm down.")
    store.complete_turn(turn.id, patient_reply="Don't tell me to calm down!")
    store.end_session(old, outcome="walked_out", reason="Anger stayed at 10.")
    current = new_session(store, trainee_name="Ben")
    store.end_session(current, outcome="resolved", scorecard=CARD)
    # Written straight into the table, the way an older version of the app left it.
    sessions = table("sessions", column("id"), column("scorecard", JSON))
    with store.engine.begin() as connection:
        connection.execute(update(sessions).where(sessions.c.id == old).values(scorecard=OLD_SCORECARD))

    record = store.get_session(old)
    assert record.scorecard is None
    assert record.outcome == "walked_out" and record.end_reason == "Anger stayed at 10."
    assert record.initial_mood == START and record.ended
    assert [t.patient_reply for t in store.turns(old)] == ["Don't tell me to calm down!"]
    listed = {s.id: s for s in store.list_sessions()}
    assert listed[old].scorecard is None
    assert listed[current].scorecard == CARD  # a card in the current shape is untouched


def test_unknown_ids_are_clear_errors(store):
    with pytest.raises(StoreError, match="no session 'nope'"):
        store.get_session("nope")
    with pytest.raises(StoreError, match="no turn 999"):
        store.get_turn(999)


def test_delete_session_removes_its_turns_on_every_branch(store):
    session_id = new_session(store)
    turn = store.begin_turn(session_id, "A.")
    store.complete_turn(turn.id, patient_reply="B.")
    store.branch_from(session_id, 0)
    store.begin_turn(session_id, "C.")
    store.delete_session(session_id)
    with pytest.raises(StoreError):
        store.get_session(session_id)
    assert store.list_sessions() == []


# -- SQLite specifics ---------------------------------------------------------------------------


def test_default_location_follows_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DEESCALATE_DATA_DIR", str(tmp_path / "data"))
    assert database_url() == f"sqlite:///{tmp_path / 'data' / 'deescalate.db'}"
    monkeypatch.delenv("DEESCALATE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert database_url() == f"sqlite:///{tmp_path / 'xdg' / 'deescalate' / 'deescalate.db'}"
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/deescalate")
    assert database_url() == "postgresql+psycopg://u:p@db/deescalate"


def test_sqlite_file_uses_wal(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'nested' / 'x.db'}")
    new_session(store)
    store.close()
    with sqlite3.connect(tmp_path / "nested" / "x.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_killed_process_loses_nothing_it_committed(tmp_path):
    """The app process dies (SIGKILL) right after saving the trainee's text: the text is on disk."""
    db = tmp_path / "crash.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from agent.checks import StepVerdict
        from agent.grades import TurnGrade
        from agent.mood import Mood
        from agent.store import NewSession, Store
        store = Store("sqlite:///{db}")
        session = store.create_session(NewSession(persona_id="p", rubric_id="r"))
        grade = TurnGrade(verdicts={{"empathize": StepVerdict(step_id="empathize", verdict="missed")}})
        store.begin_turn(session.id, "Please tell me what happened.", mood_after=Mood(anger=9, trust=1), grade=grade)
        print(session.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    repo = Path(__file__).parents[1]
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo)
    assert result.returncode == -9, result.stderr
    session_id = result.stdout.strip()
    store = Store(f"sqlite:///{db}")
    [turn] = store.turns(session_id)
    assert turn.trainee_text == "Please tell me what happened."
    assert turn.grade.verdicts["empathize"].verdict == "missed"
    assert turn.mood_after == Mood(anger=9, trust=1)
    assert store.open_turn(session_id).id == turn.id
    store.close()


def test_long_names_are_kept_alike_by_every_database(store):
    """PostgreSQL refused what SQLite took (String(200)); every text column is unbounded now."""
    long_name = "Dr. " + " ".join(["Anna-Maria"] * 40)
    session_id = new_session(store, trainee_name=long_name, model="m" * 300)
    assert store.get_session(session_id).trainee_name == long_name


def test_a_place_in_the_conversation_takes_one_turn_only(store):
    """Two workers racing to write the same turn: the database keeps one, the other gets a clear error."""
    from sqlalchemy import insert

    from agent.store import _TurnRow

    session_id = new_session(store)
    first = store.begin_turn(session_id, "Sorry.")
    with pytest.raises(Exception, match="UNIQUE|unique|duplicate"), store.engine.begin() as connection:
        connection.execute(insert(_TurnRow).values(session_id=session_id, index=first.index, branch=first.branch,
                                                   trainee_text="Me too.", status="pending"))  # fmt: skip
    assert [t.trainee_text for t in store.turns(session_id)] == ["Sorry."]


def test_the_turns_left_to_the_checks_survive_the_database_and_old_rows_read_as_judged_as_usual(store):
    """History counts them from the stored grades, and the card keeps its count; rows from before say 0/False."""
    session_id = new_session(store)
    alone = VERDICTS.model_copy(update={"learned_abstained": True, "components": ["checks"]})
    turn = store.begin_turn(session_id, "Per the policy outlined in section four...", grade=alone)
    store.complete_turn(turn.id, patient_reply="What?")
    store.end_session(session_id, outcome="walked_out", scorecard=CARD.model_copy(update={"checks_only_turns": 1}))
    other = reopened(store)
    try:
        [seen] = other.turns(session_id)
        card = other.get_session(session_id).scorecard
    finally:
        other.close()
    assert seen.grade.learned_abstained is True and seen.grade == alone
    assert card.checks_only_turns == 1

    # Written straight into the tables, the way a version before the abstention left them.
    old_grade = VERDICTS.model_dump(mode="json")
    del old_grade["learned_abstained"]
    old_card = CARD.model_dump(mode="json")
    del old_card["checks_only_turns"]
    turns = table("turns", column("id"), column("grade", JSON))
    sessions = table("sessions", column("id"), column("scorecard", JSON))
    with store.engine.begin() as connection:
        connection.execute(update(turns).where(turns.c.id == turn.id).values(grade=old_grade))
        connection.execute(update(sessions).where(sessions.c.id == session_id).values(scorecard=old_card))
    assert store.get_turn(turn.id).grade.learned_abstained is False
    assert store.get_session(session_id).scorecard == CARD
