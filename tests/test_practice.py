"""The app's controller on a deterministic fake model: write-through, coaching off the critical path,
retry, branches, resume, endings and the scorecard. The live tests kill a real small-model server.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fakes import PHRASING, TIP, FakeModel
from sqlalchemy import event
from stub_server import LINE, StubProcess

from agent import store as store_module
from agent import web
from agent.coach import rubric_coaching
from agent.llm import Backend, LLMSettings
from agent.models import ServedModel
from agent.practice import Practice
from agent.runtime import EmbeddedServer
from agent.store import Store, StoreError

PERSONA = "carter-wrong-day"
GOOD_1 = "I'm so sorry you've been waiting, Mr. Carter. I understand how frustrating that must be."
GOOD_2 = (
    "Let me see what I can do for you: I can check for a cancellation today, or book the first slot after "
    "you're back and give you a home exercise sheet. Would that help?"
)
BAD = "That's not my problem, you should have read the letter."
REPO = Path(__file__).resolve().parents[1]
KEY = "a-browser-key-" + "x" * 30  # a page's trainee key (web.browser_key)


@pytest.fixture(autouse=True)
def trainer_password(monkeypatch):
    """The trainer's test run is a trainer tool: it needs the password set (and the page unlocked)."""
    monkeypatch.setenv("TRAINER_PASSWORD", "s3cret")


@pytest.fixture
def store(tmp_path):
    db = Store(f"sqlite:///{tmp_path / 'practice.db'}")
    yield db
    db.close()


# A backend whose model writes the coaching (the embedded one shows a persona's curated coaching
# first: test_the_embedded_backend_shows_curated_coaching_without_asking_the_model). Nothing listens
# there: the fakes answer.
MODEL_COACHES = LLMSettings(backend=Backend.COMPATIBLE, base_url="http://127.0.0.1:9/v1", model="fake")


def practice_with(store: Store, fake: FakeModel, **options) -> Practice:
    options.setdefault("settings", MODEL_COACHES)
    return Practice(store, patient=fake, coach=fake, seed=7, **options)


def values_of(practice: Practice, update) -> dict:
    return dict(zip(web.PRACTICE_OUTPUTS, web.practice_view(practice, update), strict=True))


def test_a_turn_is_written_through_and_coached_after_the_answer(store):
    fake = FakeModel()
    practice = practice_with(store, fake)
    session_id = practice.start(PERSONA, "Sam").session.id
    seen = []
    for update in practice.turn(session_id, GOOD_1):
        stored = store.turns(session_id)[-1]
        seen.append((update.stage, stored.status))
        if update.stage == "graded":  # before the model is asked: pending, with verdicts and the new mood
            assert stored.grade.verdicts["apologize"].verdict == "demonstrated"
            assert stored.mood_after.anger < stored.mood_before.anger
            assert fake.patient_requests == []
    assert seen[0] == ("graded", "pending") and ("typing", "pending") in seen and seen[-1] == ("answered", "complete")
    assert update.coaching and update.last.grade.tip is None  # the tip comes after the answer
    stages = [u.stage for u in practice.coaching(session_id)]
    assert stages[-1] == "coached"
    [turn] = store.turns(session_id)
    assert turn.grade.tip == TIP and turn.grade.better_phrasing
    assert turn.mood_after == update.last.mood_after  # coaching never moves the mood


def test_the_embedded_backend_shows_curated_coaching_without_asking_the_model(store):
    """On the embedded model the persona's curated coaching for the step is shown (rated more
    helpful than the 1.5B model's), at once, and the model server stays free for the patient."""
    fake = FakeModel()
    practice = practice_with(store, fake, settings=LLMSettings(backend=Backend.EMBEDDED, model="small"))
    session_id = practice.start(PERSONA, "Sam").session.id
    list(practice.turn(session_id, BAD))
    practice.wait_for_coaching(session_id)
    [turn] = store.turns(session_id)
    assert fake.coach_requests == []  # the model was not asked for a tip
    assert turn.grade.tip_source == "curated" and turn.grade.phrasing_source == "curated"
    assert turn.grade.sources["tip"].startswith("curated tip from ")
    assert turn.grade.sources["better_phrasing"].startswith("curated phrasing from ")
    assert turn.grade.tip != TIP and turn.grade.better_phrasing != PHRASING
    assert turn.grade.coached and turn.grade.error is None


def test_curated_coaching_is_not_held_back_by_other_trainees_patients(store):
    """Under load the coach's worker waits while any patient answer is being written; a tip that
    needs no model is written at once instead (bench/load.py: 34 of 41 such tips were dropped)."""
    fake = FakeModel()
    practice = practice_with(store, fake, settings=LLMSettings(backend=Backend.EMBEDDED, model="small"))
    session_id = practice.start(PERSONA).session.id
    with practice.lane.patient():  # another trainee's patient is being written, and stays so
        *_, answered = practice.turn(session_id, BAD)
        [turn] = store.turns(session_id)
        assert turn.grade.coached and turn.grade.tip_source == "curated" and turn.grade.error is None
    # no coach warm-up either (most tips need no model): every prefill is the patient's prompt
    assert fake.prefills and not any("data to coach" in str(m[0].content) for m in fake.prefills)


def test_the_session_lives_in_memory_between_turns(store, monkeypatch):
    """No state is rebuilt from the database per turn or per token: the store is only written."""
    practice = practice_with(store, FakeModel())
    session_id = practice.start(PERSONA).session.id
    reads = []
    for name in ("turns", "get_session", "all_turns", "transcript"):
        original = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _o=original, _n=name, **k: reads.append(_n) or _o(*a, **k))
    for text in (GOOD_1, GOOD_2):
        updates = list(practice.turn(session_id, text))
        practice.wait_for_coaching(session_id)
    assert reads == []
    assert [t.trainee_text for t in updates[-1].turns] == [GOOD_1, GOOD_2]


def test_the_next_reply_goes_while_a_tip_is_still_on_its_way(store):
    fake = FakeModel(hold_coach=True)
    practice = practice_with(store, fake)
    session_id = practice.start(PERSONA).session.id
    *_, first = practice.turn(session_id, GOOD_1)
    assert fake.coach_started.wait(5)  # turn 1's tip is being written, its phrasing held back
    *_, second = practice.turn(session_id, GOOD_2)  # not blocked by it
    assert second.stage == "answered" and len(second.turns) == 2
    assert not store.turns(session_id)[0].grade.coached
    fake.coach_released.set()
    practice.wait_for_coaching(session_id)
    assert [t.grade.better_phrasing is not None for t in store.turns(session_id)] == [True, True]


def test_the_patient_stops_a_running_tip_which_is_finished_afterwards(store):
    fake = FakeModel(hold_coach=True)
    practice = practice_with(store, fake)
    session_id = practice.start(PERSONA).session.id
    list(practice.turn(session_id, GOOD_1))
    assert fake.coach_started.wait(5)
    job = practice.live(session_id).jobs[0]
    for update in practice.turn(session_id, GOOD_2):
        if update.stage == "typing" and not fake.coach_released.is_set():
            fake.coach_released.set()  # the held tip could go on now, but the patient is answering
            for _ in range(250):
                if job.preemptions:
                    break
                threading.Event().wait(0.02)
    assert job.preemptions == 1
    practice.wait_for_coaching(session_id)
    first_tip_requests = [r for r in fake.coach_requests if GOOD_1.split(",")[0] in r[-1].content]
    assert len(first_tip_requests) == 2  # stopped once for the patient, then written again
    assert store.turns(session_id)[0].grade.tip_source == "model"


def test_branches_and_the_scorecard(store):
    practice = practice_with(store, FakeModel())
    session_id = practice.start(PERSONA, "Sam").session.id
    *_, first = practice.turn(session_id, GOOD_1)
    *_, last = practice.turn(session_id, BAD)
    assert last.turns[-1].mood_after.anger > first.turns[-1].mood_after.anger
    assert last.turns[-1].grade.verdicts["argue_back"].verdict == "violated"
    practice.wait_for_coaching(session_id)

    practice.branch(session_id, 1)  # answer turn 2 differently; the argument stays in the database
    *_, last = practice.turn(session_id, GOOD_2)
    assert [t.trainee_text for t in last.turns] == [GOOD_1, GOOD_2]
    assert len(store.all_turns(session_id)) == 3

    card = practice.end(session_id).session.scorecard
    assert card.turns == 2 and card.outcome == "ended_by_trainee"
    rates = {row.step_id: row.rate for row in card.steps}
    assert rates["apologize"] == 0.5 and rates["argue_back"] == 1.0
    assert card.mood[0].anger == pytest.approx(0.8) and len(card.mood) == 3
    assert "let_vent" in card.session


def test_the_session_ends_by_itself_and_the_page_says_why(store, tmp_path):
    """A persona tuned to accept the first concrete offer: the session resolves after one turn."""
    practice = practice_with(store, FakeModel(), personas_dir=_resolving_personas(tmp_path))
    session_id = practice.start(PERSONA).session.id
    *_, last = practice.turn(session_id, GOOD_2)
    assert last.stage == "ended" and last.session.outcome == "resolved"
    assert "accepted what you offered" in last.session.end_reason
    assert store.get_session(session_id).ended and store.turns(session_id)[-1].status == "complete"
    values = values_of(practice, last)
    assert values["status"].startswith("**Session ended — resolved.**")
    assert values["scorecard_box"]["visible"] is True and values["send"]["interactive"] is False
    with pytest.raises(StoreError, match="has ended"):
        list(practice.turn(session_id, GOOD_1))


def test_a_dead_model_server_keeps_the_words_and_offers_retry(store):
    fake = FakeModel()
    fake.fail_patient = 1
    practice = practice_with(store, fake)
    session_id = practice.start(PERSONA).session.id
    *_, last = practice.turn(session_id, GOOD_1)
    assert last.stage == "failed" and "Your words are saved" in last.error
    [turn] = store.turns(session_id)
    assert turn.trainee_text == GOOD_1 and turn.status == "failed" and turn.grade is not None
    with pytest.raises(StoreError, match="press Retry"):
        list(practice.turn(session_id, "Hello?"))
    values = values_of(practice, last)
    assert values["retry"]["visible"] is True
    assert values["chat"][-1] == {"role": "user", "content": GOOD_1}

    *_, retried = practice.retry(session_id)
    assert retried.stage == "answered" and store.turns(session_id)[0].status == "complete"
    assert retried.turns[0].mood_after == turn.mood_after  # the same verdicts and mood as before


def test_a_session_resumes_in_a_new_app_with_its_failed_turn(store):
    fake = FakeModel()
    fake.fail_patient = 1
    first_app = practice_with(store, fake)
    session_id = first_app.start(PERSONA, "Sam", owner=KEY).session.id
    list(first_app.turn(session_id, GOOD_1))
    restarted = practice_with(Store(store.url), FakeModel())
    values = dict(zip(web.PRACTICE_OUTPUTS, web.resume(restarted, session_id, KEY), strict=True))
    assert "press Retry" in values["status"] and values["retry"]["visible"] is True
    assert [m["content"] for m in values["chat"]] == [restarted.persona(PERSONA).opening_line, GOOD_1]
    *_, retried = restarted.retry(session_id)
    assert retried.turns[-1].patient_reply


def test_a_page_that_goes_away_mid_turn_leaves_a_retryable_turn(store):
    practice = practice_with(store, FakeModel())
    session_id = practice.start(PERSONA).session.id
    updates = practice.turn(session_id, GOOD_1)
    for update in updates:
        if update.stage == "typing":
            break
    updates.close()  # what Gradio does when the browser disconnects
    [turn] = store.turns(session_id)
    assert turn.status == "failed" and "press Retry" in turn.error
    *_, retried = practice.retry(session_id)
    assert retried.turns[-1].status == "complete"


def test_start_prefills_the_patient_prompt_and_warms_the_coach(store):
    fake = FakeModel()
    practice = practice_with(store, fake)
    session_id = practice.start(PERSONA).session.id
    for _ in range(100):
        if len(fake.prefills) >= 2:
            break
        threading.Event().wait(0.02)
    opening = practice.persona(PERSONA).opening_line
    assert any(opening in str(m[-1].content) and "Receptionist:" not in str(m[-1].content) for m in fake.prefills)
    *_, answered = practice.turn(session_id, GOOD_1)
    prefill = next(m for m in fake.prefills if "Mr. Carter:" in str(m[-1].content))
    assert str(fake.patient_requests[0][-1].content).startswith(str(prefill[-1].content))


def test_trainer_test_run_plays_the_three_scripts_through_the_pipeline(store):
    practice = practice_with(store, FakeModel())
    text = (REPO / "personas" / f"{PERSONA}.yaml").read_text(encoding="utf-8")
    results = list(web.trainer_test_run(practice, True, text))
    assert [note for _, note in results[:1]] == ["Playing the scripted good trainee…"]
    assert "_playing the scripted bad trainee…_" in results[1][1]
    assert "_playing the scripted formula trainee…_" in results[2][1]
    figure, note = results[-1]
    assert len(figure.axes[0].lines) == 6  # anger and trust for each script
    assert note.startswith("| | good trainee | bad trainee | formula trainee |")
    assert "**good trainee**" in note and "**bad trainee**" in note and "**formula trainee**" in note
    assert "playing" not in note and ("✓ The formula trainee" in note or "⚠" in note)


def test_trainer_test_run_says_why_it_failed(store):
    fake = FakeModel()
    fake.fail_patient = 1000
    practice = practice_with(store, fake)
    text = practice.persona(PERSONA).model_dump_json()  # JSON is YAML too
    *_, (figure, note) = web.trainer_test_run(practice, True, text)
    assert figure is None and note.startswith("✗ The test run failed")


def test_the_coach_phrasing_is_checked_before_it_is_shown(store):
    practice = practice_with(store, FakeModel())
    session_id = practice.start(PERSONA).session.id
    list(practice.turn(session_id, BAD))
    practice.wait_for_coaching(session_id)
    grade = store.turns(session_id)[0].grade
    assert grade.focus == "argue_back"
    assert grade.better_phrasing == PHRASING and grade.phrasing_source == "model"


@pytest.mark.live
def test_a_model_server_that_died_is_restarted_before_the_patient_is_asked(tmp_path, store):
    """The server dies after the reply was graded: the patient's request finds it dead, the
    supervisor starts a new one, and the trainee gets the answer without pressing anything."""
    server = EmbeddedServer(model="small", log_path=tmp_path / "server.log")
    server.ensure()
    try:
        practice = Practice(store, LLMSettings(backend=Backend.EMBEDDED, model="small"), server=server, seed=3)
        session_id = practice.start(PERSONA, owner=KEY).session.id
        first_pid = server.process.pid
        outputs = []
        for number, values in enumerate(web.send(practice, session_id, GOOD_1, KEY)):
            outputs.append(dict(zip(web.PRACTICE_OUTPUTS, values, strict=True)))
            if number == 0:  # graded: the patient's request is next
                server.kill()
                assert practice.model.state().state == "down"  # the page's model line says so meanwhile
        assert server.alive() and server.process.pid != first_pid
        assert practice.model.state().state == "ready"
        [turn] = store.turns(session_id)
        assert turn.status == "complete" and turn.patient_reply
        answered = [v for v in outputs if isinstance(v["chat"], list)][-1]
        assert answered["chat"][-1]["role"] == "assistant" and answered["retry"]["visible"] is False
    finally:
        server.stop()


@pytest.mark.live
def test_trainer_test_run_plays_the_three_scripts_on_a_real_server(tmp_path, store):
    with EmbeddedServer(model="small", log_path=tmp_path / "server.log") as server:
        practice = Practice(store, LLMSettings(backend=Backend.EMBEDDED, model="small"), server=server)
        text = (REPO / "personas" / f"{PERSONA}.yaml").read_text(encoding="utf-8")
        results = list(web.trainer_test_run(practice, True, text))
    figure, note = results[-1]
    assert len(figure.axes[0].lines) == 6  # anger and trust for each script
    assert "**good trainee**: resolved" in note and "**bad trainee**: walked out" in note
    assert "**formula trainee**" in note


# -- faults (issue 11, item 5): each leaves the transcript intact, says what happened, and Retry or
# Send continues the session. (A page that goes away mid-turn: test_a_page_that_goes_away_mid_turn...)


class _KillsServerMidAnswer:
    """The real patient model, whose server is killed once the answer has started to stream."""

    def __init__(self, model: ServedModel, server: EmbeddedServer) -> None:
        self.model, self.server, self.kills = model, server, 0
        self.prompt_style, self.context_tokens = model.prompt_style, model.context_tokens

    def stream(self, messages, **options):
        for number, chunk in enumerate(self.model.stream(messages, **options)):
            yield chunk
            if number == 1 and self.kills == 0:
                self.kills += 1
                self.server.kill()

    def prefill(self, messages) -> bool:
        return False


@pytest.mark.live
def test_a_model_server_killed_mid_answer_keeps_the_words_and_retry_restarts_it(tmp_path, store):
    server = EmbeddedServer(model="small", log_path=tmp_path / "server.log")
    server.ensure()
    try:
        settings = LLMSettings(backend=Backend.EMBEDDED, model="small")
        practice = Practice(store, settings, server=server, seed=3)
        served = ServedModel(settings, resolve=practice.model.settings, slot=0)
        practice.patient = killer = _KillsServerMidAnswer(served, server)  # sessions started from now on
        session_id = practice.start(PERSONA, owner=KEY).session.id
        updates = list(practice.turn(session_id, GOOD_1))
        assert killer.kills == 1  # killed after the answer's first chunks had arrived
        assert updates[-1].stage == "failed" and "model server stopped answering" in updates[-1].error
        [turn] = store.turns(session_id)
        assert turn.trainee_text == GOOD_1 and turn.status == "failed" and turn.patient_reply is None
        first_pid = server.process.pid if server.process else None
        *_, retried = practice.retry(session_id)
        assert retried.stage == "answered" and server.alive() and server.process.pid != first_pid
        [turn] = store.turns(session_id)
        assert turn.status == "complete" and turn.patient_reply and turn.trainee_text == GOOD_1
    finally:
        server.stop()


def test_a_hung_model_server_times_out_and_retry_restarts_it(store):
    """The server answers /health but never a completion: the request's timeout fires, the turn
    fails saying so, and Retry restarts the server (a process check sees nothing wrong) and answers."""
    server = StubProcess(hang_first=True)
    try:
        practice = Practice(store, LLMSettings(backend=Backend.EMBEDDED, model="small", timeout=1.0), server=server)
        session_id = practice.start(PERSONA, owner=KEY).session.id
        *_, failed = practice.turn(session_id, GOOD_1)
        assert failed.stage == "failed" and "took too long" in failed.error and "press Retry" in failed.error
        [turn] = store.turns(session_id)
        assert turn.status == "failed" and turn.trainee_text == GOOD_1 and turn.grade is not None
        *_, retried = practice.retry(session_id)
        assert retried.stage == "answered" and server.starts == 2
        [turn] = store.turns(session_id)
        assert turn.status == "complete" and turn.patient_reply == LINE
        *_, after = practice.turn(session_id, GOOD_2)  # and the session goes on
        assert after.stage in ("answered", "ended") and len(store.turns(session_id)) == 2
    finally:
        server.stop()


def test_concurrent_turns_wait_for_the_one_patient_slot_in_the_app_not_in_the_server(store):
    """The embedded server answers the patient on one slot: six trainees at once queue in the app,
    where no request timeout runs; queued in the server, the later ones timed out (bench/load.py)."""
    server = StubProcess(serial=True, delay=0.3)
    try:
        practice = Practice(store, LLMSettings(backend=Backend.EMBEDDED, model="small", timeout=1.2), server=server)
        ids = [practice.start(PERSONA, owner=KEY).session.id for _ in range(6)]
        results: dict[str, list] = {}

        def play(session_id: str) -> None:
            results[session_id] = list(practice.turn(session_id, f"{GOOD_1} ({session_id[:6]})"))

        threads = [threading.Thread(target=play, args=(session_id,)) for session_id in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert [results[i][-1].stage for i in ids] == ["answered"] * 6, [results[i][-1].error for i in ids]
        for session_id in ids:
            [turn] = store.turns(session_id)
            assert turn.status == "complete" and turn.trainee_text.endswith(f"({session_id[:6]})")
    finally:
        server.stop()


def test_a_turn_sent_while_the_model_server_starts_waits_for_it(store):
    """llama-server's process exists a while before it listens: a turn then was refused at once."""
    server = StubProcess(listen_after=10.0)
    try:
        practice = Practice(store, LLMSettings(backend=Backend.EMBEDDED, model="small"), server=server)
        practice.model.start_background()
        for _ in range(3000):  # until the server's process exists (it listens 10 s later)
            if server.process is not None:
                break
            threading.Event().wait(0.02)
        session_id = practice.start(PERSONA, owner=KEY).session.id
        *_, answered = practice.turn(session_id, GOOD_1)
        assert answered.stage == "answered", answered.error
        assert server.starts == 1
    finally:
        server.stop()


class _GarbledCoach(FakeModel):
    """A coach that writes something other than the JSON it was asked for."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    def stream_json(self, schema, messages, *, max_tokens):
        self.coach_requests.append(list(messages))
        yield self.answer[: len(self.answer) // 2]
        yield self.answer


@pytest.mark.parametrize("answer", ["Sure! Be kinder to him next time.", '{"tip": "Name the fee', '{"tip": 3}'])
def test_malformed_coach_json_falls_back_to_the_rubrics_advice_and_keeps_the_verdicts(store, answer):
    coach = _GarbledCoach(answer)
    practice = Practice(store, MODEL_COACHES, patient=FakeModel(), coach=coach, seed=7)
    session_id = practice.start(PERSONA).session.id
    updates = list(practice.turn(session_id, BAD))
    before = updates[0].last.grade
    practice.wait_for_coaching(session_id)
    [turn] = store.turns(session_id)
    assert coach.coach_requests, "the coach was asked"
    session = practice.live(session_id).session  # the fallback: the persona's curated coaching
    fallback = rubric_coaching(session.rubric, before, "", session.persona)
    assert turn.grade.tip == fallback.tip and turn.grade.tip_source == "curated"
    assert turn.grade.better_phrasing == fallback.better_phrasing and turn.grade.phrasing_source == "curated"
    assert turn.grade.error  # what happened is kept with the grade
    assert turn.grade.verdicts == before.verdicts and turn.mood_after == updates[0].last.mood_after
    assert turn.status == "complete" and turn.patient_reply
    *_, after = practice.turn(session_id, GOOD_1)  # the session goes on
    assert after.stage == "answered"


class _DatabaseFault:
    """Makes the store's SQLite file refuse writes for real: another connection holds the write
    lock (``locked``), or SQLite's page limit stops it growing, which raises the very error a full
    disk does, "database or disk is full" (``full``: a simulated disk, not a full one)."""

    def __init__(self, store: Store, kind: str) -> None:
        self.store, self.kind = store, kind
        self._holder: sqlite3.Connection | None = None

    def _limit(self, connection, _record) -> None:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count={pages}")

    def on(self) -> None:
        if self.kind == "locked":
            self._holder = sqlite3.connect(self.store.engine.url.database, isolation_level=None)
            self._holder.execute("BEGIN IMMEDIATE")
        else:
            self._fill()
            event.listen(self.store.engine, "connect", self._limit)
            self.store.engine.dispose()  # pooled connections are made again, with the limit

    def _fill(self) -> None:
        """Use up the free room in the file's last pages too, so that the next write needs a new
        page whatever the size of what the session saved before (a small write could fit)."""
        filler = sqlite3.connect(self.store.engine.url.database, isolation_level=None)
        filler.execute("CREATE TABLE IF NOT EXISTS test_filler (b BLOB)")
        pages = filler.execute("PRAGMA page_count").fetchone()[0]
        filler.execute(f"PRAGMA max_page_count={pages}")
        for size in (4096, 1024, 256, 64, 16, 4, 1):
            try:
                while True:
                    filler.execute("INSERT INTO test_filler VALUES (?)", (b"x" * size,))
            except sqlite3.OperationalError:
                continue
        filler.close()

    def off(self) -> None:
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None
        elif event.contains(self.store.engine, "connect", self._limit):
            event.remove(self.store.engine, "connect", self._limit)
            self.store.engine.dispose()


class _FaultWhileAnswering(FakeModel):
    """Turns a database fault on while the patient's answer streams (between the two writes)."""

    def __init__(self) -> None:
        # The second answer is long: saving it needs new pages, which a full disk cannot give.
        super().__init__(lines=["Fine. What now?", "I have been waiting here " + "and waiting " * 400 + "for nothing."])
        self.fault: _DatabaseFault | None = None

    def stream(self, messages, **options):
        for number, piece in enumerate(super().stream(messages, **options)):
            if number == 1 and self.fault is not None:
                self.fault.on()
                self.fault = None
            yield piece


@pytest.mark.parametrize("when", ["saving the reply", "saving the answer"])
@pytest.mark.parametrize("kind", ["locked", "full"])
def test_a_locked_or_full_database_loses_nothing_and_send_or_retry_continues(tmp_path, monkeypatch, kind, when):
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 200)  # a locked write gives up sooner
    store = Store(f"sqlite:///{tmp_path / 'fault.db'}")
    fake = _FaultWhileAnswering()
    practice = Practice(store, patient=fake, coach=FakeModel(), seed=7)
    session_id = practice.start(PERSONA).session.id
    list(practice.turn(session_id, GOOD_1))
    practice.wait_for_coaching(session_id)
    fault = _DatabaseFault(store, kind)
    said = "locked by another program" if kind == "locked" else "disk is full"
    if when == "saving the reply":
        fault.on()
        with pytest.raises(StoreError, match=f"{said}; your reply was not saved .* send it again"):
            list(practice.turn(session_id, GOOD_2))
        fault.off()
        assert [t.trainee_text for t in store.turns(session_id)] == [GOOD_1]
        *_, update = practice.turn(session_id, GOOD_2)  # Send again
    else:
        fake.fault = fault
        *_, failed = practice.turn(session_id, GOOD_2)
        assert failed.stage == "failed" and said in failed.error and "press Retry" in failed.error
        assert failed.last.status == "failed" and failed.last.patient_reply is None
        fault.off()
        [first, second] = store.turns(session_id)
        assert first.status == "complete" and second.trainee_text == GOOD_2 and second.status != "complete"
        with pytest.raises(StoreError, match="press Retry"):
            list(practice.turn(session_id, "Hello?"))
        *_, update = practice.retry(session_id)
    assert update.stage in ("answered", "ended"), update.error
    turns = store.turns(session_id)
    assert [t.trainee_text for t in turns] == [GOOD_1, GOOD_2] and all(t.status == "complete" for t in turns)
    assert [t.patient_reply for t in turns] == [t.patient_reply for t in update.turns]
    store.close()


def _resolving_personas(tmp_path: Path) -> Path:
    """Mr. Carter tuned to accept the first concrete offer: the session resolves after one turn."""
    folder = tmp_path / "personas"
    folder.mkdir()
    text = (REPO / "personas" / f"{PERSONA}.yaml").read_text(encoding="utf-8")
    text = text.replace("  resolve_anger: 3\n", "  resolve_anger: 9\n  min_turns: 1\n").replace(
        "  resolve_trust: 6\n", "  resolve_trust: 3\n"
    )
    (folder / f"{PERSONA}.yaml").write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("then", ["End session", "Send"])
def test_a_database_that_refuses_the_ending_keeps_the_answer_and_the_end_is_stored_later(tmp_path, monkeypatch, then):
    """The patient's answer is saved, then the database is locked before the session's end is:
    the page says so, and End session (or the next Send) stores the patient's outcome afterwards."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 200)
    store = Store(f"sqlite:///{tmp_path / 'fault.db'}")
    folder = _resolving_personas(tmp_path)
    practice = Practice(store, patient=FakeModel(), coach=FakeModel(), seed=7, personas_dir=folder)
    session_id = practice.start(PERSONA).session.id
    fault = _DatabaseFault(store, "locked")
    complete_turn = store.complete_turn

    def complete_then_lock(*args, **kwargs):
        record = complete_turn(*args, **kwargs)
        fault.on()
        return record

    monkeypatch.setattr(store, "complete_turn", complete_then_lock)
    *_, last = practice.turn(session_id, GOOD_2)
    assert last.stage == "answered" and not last.session.ended
    assert "scorecard could not be" in last.note and "locked by another program" in last.note
    assert "Press End session" in values_of(practice, last)["status"]
    fault.off()
    [turn] = store.turns(session_id)
    assert turn.status == "complete" and turn.patient_reply == last.last.patient_reply
    assert not store.get_session(session_id).ended
    if then == "End session":
        ended = practice.end(session_id, outcome="ended_by_trainee", reason="You ended the session.")
    else:
        *_, ended = practice.turn(session_id, GOOD_1)
        assert "your reply was not sent" in ended.note
        assert len(store.turns(session_id)) == 1
    assert ended.stage == "ended" and ended.session.outcome == "resolved"
    record = store.get_session(session_id)
    assert record.ended and record.outcome == "resolved" and record.scorecard is not None
    store.close()


def test_an_app_killed_mid_turn_leaves_a_pending_turn_that_retry_completes(tmp_path):
    """SIGKILL between the two writes (the reply saved pending, the answer never saved)."""
    db = tmp_path / "killed.db"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, "tests")
        from fakes import FakeModel
        from agent.practice import Practice
        from agent.store import Store

        class DiesMidAnswer(FakeModel):
            def stream(self, messages, **options):
                yield "I "
                os.kill(os.getpid(), signal.SIGKILL)

        practice = Practice(Store("sqlite:///{db}"), patient=DiesMidAnswer(), coach=FakeModel(), seed=7)
        session_id = practice.start({PERSONA!r}, owner={KEY!r}).session.id
        print(session_id, flush=True)
        for update in practice.turn(session_id, {GOOD_1!r}):
            pass
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == -9, result.stderr
    session_id = result.stdout.strip()
    store = Store(f"sqlite:///{db}")
    [turn] = store.turns(session_id)
    assert turn.trainee_text == GOOD_1 and turn.status == "pending" and turn.grade is not None
    restarted = practice_with(store, FakeModel())
    values = dict(zip(web.PRACTICE_OUTPUTS, web.resume(restarted, session_id, KEY), strict=True))
    assert "press Retry" in values["status"] and values["retry"]["visible"] is True
    *_, retried = restarted.retry(session_id)
    assert retried.stage == "answered"
    [turn] = store.turns(session_id)
    assert turn.status == "complete" and turn.patient_reply and turn.trainee_text == GOOD_1
    store.close()


# -- stuck sessions and memory (issue 11, findings 8 and 5)


class _HeldAnswer(FakeModel):
    """A patient whose answer stops after its first word until released."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def stream(self, messages, **options):
        for number, piece in enumerate(super().stream(messages, **options)):
            if number == 1:
                self.started.set()
                assert self.release.wait(30)
            yield piece


def test_ending_a_session_waits_for_the_turn_in_progress_which_it_then_scores(store):
    fake = _HeldAnswer()
    practice = practice_with(store, fake)
    session_id = practice.start(PERSONA).session.id
    played = threading.Thread(target=lambda: list(practice.turn(session_id, GOOD_1)))
    played.start()
    assert fake.started.wait(30)
    ended: list = []
    ending = threading.Thread(target=lambda: ended.append(practice.end(session_id)))
    ending.start()
    ending.join(0.5)
    assert not ended and not store.get_session(session_id).ended  # End waits for the answer
    fake.release.set()
    played.join(30)
    ending.join(30)
    [turn] = store.turns(session_id)
    assert turn.status == "complete" and ended[0].session.scorecard.turns == 1


def test_an_ended_session_cannot_be_retried(store):
    fake = FakeModel()
    fake.fail_patient = 1
    practice = practice_with(store, fake)
    session_id = practice.start(PERSONA).session.id
    *_, failed = practice.turn(session_id, GOOD_1)
    assert failed.stage == "failed"
    practice.end(session_id)
    with pytest.raises(StoreError, match="has ended"):
        list(practice.retry(session_id))
    assert store.turns(session_id)[0].status == "failed"


def test_idle_sessions_beyond_the_limit_leave_memory_and_resume_from_the_store(store, monkeypatch):
    monkeypatch.setattr("agent.practice.MAX_LIVE", 3)
    practice = practice_with(store, FakeModel())
    ids = [practice.start(PERSONA).session.id for _ in range(5)]
    assert list(practice._live) == ids[-3:]  # memory stays bounded however many sessions start
    *_, answered = practice.turn(ids[0], GOOD_1)  # an evicted session resumes from the store
    assert answered.stage == "answered" and store.turns(ids[0])[0].status == "complete"


def typed_prefills(fake: FakeModel) -> list[str]:
    """The transcripts of the prefills that carried a reply being typed."""
    transcripts = [str(m[-1].content) for m in fake.prefills]
    return [text for text in transcripts if text.splitlines()[-1].startswith("Receptionist:")]


def wait_for(condition, seconds: float = 10.0) -> bool:
    event = threading.Event()
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        event.wait(0.02)
    return condition()


def test_the_reply_being_typed_is_read_into_the_patients_slot_and_send_reads_the_rest(store):
    fake = FakeModel()
    practice = practice_with(store, fake, settings=LLMSettings())  # curated coaching: no coach warm-up
    practice.prefills.debounce = 0.0
    session_id = practice.start(PERSONA, read=True).session.id
    assert practice.prefill_reply(session_id, "I'm so sorry you've")
    assert practice.prefill_reply(session_id, "I'm so sorry you've been waiting, Mr.")  # replaces the older one
    # The newest words are read (the older offer may have been read first, the newer replaces it after).
    expected = "Receptionist: I'm so sorry you've been waiting,"
    assert wait_for(lambda: bool(typed_prefills(fake)) and typed_prefills(fake)[-1].endswith(expected))
    typed = typed_prefills(fake)
    *_, answered = practice.turn(session_id, GOOD_1)
    assert answered.stage == "answered"
    assert str(fake.patient_requests[-1][-1].content).startswith(typed[-1])
    assert not practice.prefill_reply(session_id, "   ")  # nothing typed


def test_a_reply_prefill_never_runs_beside_a_patient_answer_or_a_tip(store):
    fake = FakeModel(hold_coach=True)
    practice = practice_with(store, fake)
    practice.prefills.debounce = 0.0
    session_id = practice.start(PERSONA, read=True).session.id
    with practice.lane.patient(), practice.lane.spare() as free:
        assert not free  # a patient answer holds the model: a prefill would queue in front of others
    list(practice.turn(session_id, GOOD_1))
    assert fake.coach_started.wait(10)  # the tip is being written (held)
    with practice.lane.spare() as free:
        assert not free
    practice.prefill_reply(session_id, "Let me check the schedule ")
    assert practice.prefills.pending() and typed_prefills(fake) == []  # it waits for the tip
    fake.coach_released.set()
    practice.wait_for_coaching(session_id)
    # (``ran`` may count the answer's front read already: wait for the typed words themselves.)
    assert wait_for(lambda: bool(typed_prefills(fake)))
    assert typed_prefills(fake)[-1].endswith("Receptionist: Let me check the schedule")


def test_a_steady_typist_who_never_pauses_is_still_read_while_typing(store):
    fake = FakeModel()
    practice = practice_with(store, fake, settings=LLMSettings())
    practice.prefills.debounce, practice.prefills.every = 60.0, 0.0  # no pause long enough, ever
    session_id = practice.start(PERSONA, read=True).session.id
    assert practice.prefill_reply(session_id, "I'm so sorry you've been ")
    assert wait_for(lambda: practice.prefills.ran >= 1)
    assert typed_prefills(fake)[-1].endswith("Receptionist: I'm so sorry you've been")


def test_a_reply_that_ends_a_sentence_is_read_whole_at_once_and_send_reads_nothing_new(store):
    fake = FakeModel()
    practice = practice_with(store, fake, settings=LLMSettings())
    practice.prefills.debounce = practice.prefills.every = 60.0  # no pause would ever be long enough
    session_id = practice.start(PERSONA, read=True).session.id
    assert practice.prefill_reply(session_id, "I'm so sorry you've been waiting")
    time.sleep(0.3)
    assert typed_prefills(fake) == []  # mid-sentence: it waits for a pause
    assert practice.prefill_reply(session_id, GOOD_1)  # the full stop: read at once, direction and all
    assert wait_for(lambda: practice.prefills.ran >= 1)
    list(practice.turn(session_id, GOOD_1))
    assert fake.prefills[-1] == fake.patient_requests[-1]


def test_after_an_answer_the_patient_reads_its_note_before_the_next_reply(store):
    fake = FakeModel()
    practice = practice_with(store, fake, settings=LLMSettings())
    practice.prefills.debounce = 0.0
    session_id = practice.start(PERSONA, read=True).session.id
    list(practice.turn(session_id, GOOD_1))
    note = practice.live(session_id).session.transcript.messages[-1].note
    assert note and wait_for(lambda: str(fake.prefills[-1][-1].content).endswith(f"[{note}.]\n"))
    front = str(fake.prefills[-1][-1].content)
    list(practice.turn(session_id, "Let me check the schedule for you"))
    assert str(fake.patient_requests[-1][-1].content).startswith(front)


def test_sent_replies_are_not_read_again_and_ended_sessions_read_nothing(store):
    fake = FakeModel()
    practice = practice_with(store, fake, settings=LLMSettings())
    practice.prefills.debounce = practice.prefills.every = 60.0  # the trainee is still typing at Send
    session_id = practice.start(PERSONA, read=True).session.id
    assert practice.prefill_reply(session_id, "I'm so sorry you've been waiting")
    list(practice.turn(session_id, GOOD_1))
    practice.prefills.debounce = 0.0  # whatever is still queued runs now
    assert wait_for(lambda: not practice.prefills.pending())
    assert typed_prefills(fake) == []  # Send read the whole reply: the half is forgotten (the answer's front ran)
    practice.end(session_id)
    assert not practice.prefill_reply(session_id, "Goodbye then ")


def test_the_api_reads_the_personas_prompt_before_start_session_returns(store):
    fake = FakeModel()
    practice = practice_with(store, fake, settings=LLMSettings())
    threads = []
    original = fake.prefill

    def prefill(messages):
        threads.append(threading.current_thread())
        return original(messages)

    fake.prefill = prefill
    state = web.api_endpoints(practice)["start_session"](PERSONA)
    opening = practice.persona(PERSONA).opening_line
    assert threads == [threading.current_thread()]  # read in the call, not in a thread left running
    assert opening in str(fake.prefills[0][-1].content) and state["patient_reply"] == opening
