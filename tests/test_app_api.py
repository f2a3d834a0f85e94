"""gradio_client drives a whole practice session through the app's API (docs/api.md).

The app runs in this process so that its model traffic replays from the cassette; the client's
own traffic to the app is let through and never recorded (see ``tests/app_server.py``).
"""

from __future__ import annotations

import threading
import time

import pytest
from app_server import APOLOGY, PLAN, only_model_traffic, running_app
from fakes import FakeModel
from gradio_client import Client
from gradio_client.utils import Status

PERSONA = "carter-wrong-day"


@pytest.fixture(scope="module")
def vcr_config(vcr_config):
    return {**vcr_config, "before_record_request": only_model_traffic}


@pytest.mark.vcr
def test_gradio_client_plays_a_session_end_to_end(llm_settings, tmp_path):
    settings = llm_settings.model_copy(update={"timeout": 900.0})  # recording on a busy machine is slow
    with running_app(settings, tmp_path / "api.db", seed=11) as (url, _demo, store):
        client = Client(url, verbose=False)
        personas = client.predict(api_name="/personas")
        assert PERSONA in [p["id"] for p in personas]

        state = client.predict(PERSONA, "Sam", api_name="/start_session")
        session_id = state["session_id"]
        assert state["patient_reply"] == "I've been sitting here forty minutes. Why hasn't a doctor called me in yet?"
        start_anger = state["mood"]["anger"]

        state = client.predict(session_id, APOLOGY, api_name="/practice_turn")
        assert state["turn_status"] == "complete" and state["patient_reply"]
        assert state["mood"]["anger"] < start_anger
        assert state["grade"]["verdicts"]["empathize"]["verdict"] == "demonstrated"
        assert state["grade"]["tip"] and state["grade"]["better_phrasing"]

        state = client.predict(session_id, PLAN, api_name="/practice_turn")
        assert state["grade"]["verdicts"]["offer_solution"]["verdict"] == "demonstrated"

        if not state["ended"]:
            state = client.predict(session_id, api_name="/end_session")
        assert state["ended"] and state["outcome"]
        assert state["scorecard"]["turns"] == 2

        # Everything the client saw is in the database.
        turns = store.turns(session_id)
        assert [t.trainee_text for t in turns] == [APOLOGY, PLAN]
        assert all(t.status == "complete" and t.grade for t in turns)
        assert store.get_session(session_id).trainee_name == "Sam"


def test_practice_turn_on_an_unknown_session_is_a_clear_error(llm_settings, tmp_path):
    with running_app(llm_settings, tmp_path / "api.db") as (url, _demo, _store):
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="no session 'nope'"):
            client.predict("nope", "Hello", api_name="/practice_turn")
        with pytest.raises(Exception, match="not a persona id"):
            client.predict("../../etc/passwd", "", api_name="/start_session")


class _HeldPatient(FakeModel):
    """A patient that answers only when released: the turn holding the model stays in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.answering = threading.Semaphore(0)

    def stream(self, messages, **options):
        self.answering.release()
        self.released.wait(60)
        yield from super().stream(messages, **options)


def test_a_full_queue_refuses_the_next_turn_clearly_and_loses_none_it_took(llm_settings, tmp_path):
    """One turn at a time, one waiting: a third is refused at once with "Queue is full" (instead of
    piling up behind the model), and the two it took are answered and stored."""
    patient = _HeldPatient()
    with running_app(llm_settings, tmp_path / "queue.db", patient=patient, coach=FakeModel(),
                     turn_concurrency=1, max_queue=1) as (url, _demo, store):  # fmt: skip
        client = Client(url, verbose=False)
        ids = [client.predict(PERSONA, f"Trainee {n}", api_name="/start_session")["session_id"] for n in range(3)]
        first = client.submit(ids[0], APOLOGY, api_name="/practice_turn")
        assert patient.answering.acquire(timeout=30)  # the first turn holds the model
        second = client.submit(ids[1], APOLOGY, api_name="/practice_turn")
        deadline = time.monotonic() + 30
        while second.status().code != Status.IN_QUEUE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.status().code == Status.IN_QUEUE
        with pytest.raises(Exception, match="Queue is full"):
            client.predict(ids[2], APOLOGY, api_name="/practice_turn")
        patient.released.set()
        assert first.result(timeout=60)["turn_status"] == "complete"
        assert second.result(timeout=60)["turn_status"] == "complete"
        assert [len(store.turns(session_id)) for session_id in ids] == [1, 1, 0]
