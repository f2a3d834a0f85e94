"""The store against SQLite and a real PostgreSQL server: the same tests, both databases."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pg_server import pg_server  # noqa: F401  (session fixture used by the "postgresql" param)
from pydantic import BaseModel

from agent.store import NewSession, Store, StoreError, database_url


class FakeMood(BaseModel):
    """Stands in for mood.Mood: the store must accept any pydantic model and give back its JSON."""

    anger: float
    trust: float
    turn: int = 0


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
        "initial_mood": FakeMood(anger=0.8, trust=0.2),
    }
    values.update(overrides)
    return store.create_session(NewSession(**values)).id


def test_session_round_trip(store):
    session_id = new_session(store)
    record = store.get_session(session_id)
    assert record.persona_id == "angry-parent"
    assert record.trainee_name == "Sam"
    assert record.initial_mood == {"anger": 0.8, "trust": 0.2, "turn": 0}
    assert record.started_at.tzinfo is not None
    assert not record.ended


def test_trainee_text_is_saved_before_the_model_answers(store):
    session_id = new_session(store)
    turn = store.begin_turn(session_id, "I'm sorry you had to wait.", mood_before=FakeMood(anger=0.8, trust=0.2))
    # A second Store on the same database sees the pending turn: it is committed, not buffered.
    other = Store(store.url)
    try:
        [seen] = other.turns(session_id)
    finally:
        other.close()
    assert seen.id == turn.id
    assert seen.status == "pending"
    assert seen.trainee_text == "I'm sorry you had to wait."
    assert seen.patient_reply is None
    assert seen.mood_before == {"anger": 0.8, "trust": 0.2, "turn": 0}


def test_complete_turn_then_grade_arrives_later(store):
    session_id = new_session(store)
    turn = store.begin_turn(session_id, "Sorry, Mr. Carter.")
    done = store.complete_turn(turn.id, patient_reply="Fine.", mood_after=FakeMood(anger=0.6, trust=0.3, turn=1))
    assert done.status == "complete"
    assert done.grade is None
    graded = store.set_grade(turn.id, {"verdicts": {"apologize": {"verdict": "demonstrated"}}, "tip": "Good."})
    assert graded.grade["verdicts"]["apologize"]["verdict"] == "demonstrated"
    assert store.get_turn(turn.id).mood_after == {"anger": 0.6, "trust": 0.3, "turn": 1}


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
    ended = store.end_session(first, outcome="resolved", reason="Patient calmed down.", scorecard={"score": 0.75})
    assert ended.ended and ended.outcome == "resolved" and ended.scorecard == {"score": 0.75}
    with pytest.raises(StoreError, match="ended"):
        store.begin_turn(first, "Hello?")
    assert [s.id for s in store.list_sessions()] == [second, first]
    assert [s.id for s in store.list_sessions(trainee_name="Ana")] == [first]
    assert [s.id for s in store.list_sessions(ended=False)] == [second]
    assert [s.id for s in store.list_sessions(persona_id="late-patient")] == [second]


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
        from agent.store import NewSession, Store
        store = Store("sqlite:///{db}")
        session = store.create_session(NewSession(persona_id="p", rubric_id="r"))
        store.begin_turn(session.id, "Please tell me what happened.")
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
    assert store.open_turn(session_id).id == turn.id
    store.close()
