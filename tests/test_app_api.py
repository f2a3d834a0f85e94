"""gradio_client drives a whole practice session through the app's API (docs/api.md).

The app runs in this process so that its model traffic replays from the cassette; the client's
own traffic to the app is let through and never recorded (see ``tests/app_server.py``).
"""

from __future__ import annotations

import pytest
from app_server import APOLOGY, PLAN, only_model_traffic, running_app
from gradio_client import Client

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
