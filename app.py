"""deescalate web app: layout and event wiring only.

Practice (chat with an upset patient, live mood, per-turn feedback, retry from a turn, scorecard),
Trainer (edit and test personas, view the rubric, calibration agreement) and History (past
sessions, progress per step). Handlers live in ``agent/web.py``, rendering in ``agent/ui.py``,
the session controller in ``agent/practice.py``.

Run with ``make run`` (or ``python app.py``): http://127.0.0.1:7860, or ``$GRADIO_SERVER_PORT``.
The model comes from the environment (``DEESCALATE_BACKEND`` / ``DEESCALATE_BASE_URL`` / ...,
see ``agent/llm.py``), the database from ``DATABASE_URL`` (default: SQLite in the data dir).
The API (``gradio_client``) is described in docs/api.md.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from agent import web
from agent.llm import LLMSettings
from agent.models import CoachModel, PatientModel
from agent.practice import Practice
from agent.store import Store

# Trainer tools that call the model share one queue: a laptop runs one model server.
MODEL_QUEUE = {"concurrency_id": "model", "concurrency_limit": 1}
# Turns run side by side: the controller gives the patient the model first (agent/coaching.py),
# and a trainee may send the next reply while the previous turn's tip is still being written.
# DEESCALATE_TURN_CONCURRENCY raises it for a server that answers many requests at once (vLLM, Ollama with
# OLLAMA_NUM_PARALLEL, llama.cpp with --parallel): docs/app.md, "Concurrency".
TURN_CONCURRENCY = int(os.environ.get("DEESCALATE_TURN_CONCURRENCY", "16"))
# Speech recognition has a lane of its own (one at a time: it uses both cores for about a second),
# so a trainee's recording never waits behind the model and the model never waits behind it. The
# patient's voice is made on its own worker thread (agent/voice.py), inside the turn's lane.
SPEECH_IN = {"concurrency_id": "speech", "concurrency_limit": 1, "show_progress": "minimal"}
SPEECH_OUT = {"concurrency_id": "opening-voice", "concurrency_limit": 4, "show_progress": "hidden"}
# Requests waiting beyond this are refused with "queue full" instead of piling up behind the model.
MAX_QUEUE = int(os.environ.get("DEESCALATE_MAX_QUEUE", max(64, 4 * TURN_CONCURRENCY)))
THEME = gr.themes.Soft()
CSS = "#feedback {min-height: 200px} .mood-meter {font-size: 0.9em}"


def build_app(
    settings: LLMSettings | None = None,
    *,
    store: Store | None = None,
    server: Any | None = None,
    personas_dir: Path | None = None,
    seed: int | None = None,
    patient: PatientModel | None = None,
    coach: CoachModel | None = None,
    turn_concurrency: int = TURN_CONCURRENCY,
    max_queue: int = MAX_QUEUE,
) -> gr.Blocks:
    """The whole app, its queue configured; tests pass replay settings or a fake model, a temporary
    store, a server they can kill, a seed, and small queue limits."""
    practice = Practice(store or Store.from_env(), settings or LLMSettings.from_env(), server=server,
                        personas_dir=personas_dir, seed=seed, patient=patient, coach=coach)  # fmt: skip
    bind = partial  # handlers take the controller first
    turn_queue = {"concurrency_id": "turns", "concurrency_limit": turn_concurrency, "trigger_mode": "multiple",
                  "show_progress": "hidden"}  # fmt: skip

    with gr.Blocks(title="deescalate") as demo:
        demo.practice = practice  # for tests and the API docs
        gr.Markdown("# deescalate\nPractise calming an upset patient. Feedback follows every reply.")
        model_line = gr.Markdown(elem_id="model-status")
        poll = gr.Timer(1.0)

        with gr.Tabs() as tabs:
            # ---------------------------------------------------------------- Practice
            with gr.Tab("Practice", id="practice"):
                session_id = gr.Textbox(visible=False, elem_id="session-id")
                # This browser's trainee key: the sessions it started are the ones it may see and continue.
                key = gr.BrowserState(None, storage_key="deescalate-trainee-key", secret=web.browser_secret())
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        persona = gr.Dropdown(label="Patient", choices=web.persona_choices(practice),
                                              elem_id="persona")  # fmt: skip
                        persona_card = gr.Markdown(elem_id="persona-card")
                        trainee = gr.Textbox(label="Your name (optional)", elem_id="trainee-name")
                        start = gr.Button("Start session", variant="primary", elem_id="start")
                        gr.Markdown("**Patient's mood**")
                        mood = gr.HTML(web.ui.mood_meter_html(None), elem_id="mood")
                        branch_choice = gr.Dropdown(label="Answer an earlier turn differently", choices=[],
                                                    elem_id="branch-choice")  # fmt: skip
                        branch = gr.Button("Retry from this turn", size="sm", elem_id="branch")
                        end = gr.Button("End session", variant="stop", elem_id="end")
                    with gr.Column(scale=2):
                        chat = gr.Chatbot(label="Conversation", height=420, elem_id="chat")
                        status = gr.Markdown(elem_id="status")
                        retry = gr.Button("Retry", visible=False, variant="primary", elem_id="retry")
                        with gr.Row():
                            message = gr.Textbox(placeholder="Your reply to the patient…", show_label=False,
                                                 max_length=2000, scale=5, elem_id="message")  # fmt: skip
                            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                        # Voice mode (README "Voice"): speak the reply, hear the patient answer.
                        voice_on = gr.Checkbox(label="Voice: speak your reply, hear the patient", value=False,
                                               elem_id="voice-on")  # fmt: skip
                        with gr.Group(visible=False) as voice_box:
                            voice_note = gr.Markdown(web.voice_note(), elem_id="voice-note")
                            with gr.Row():
                                mic = gr.Audio(sources=["microphone"], type="filepath", label="Your reply (record)",
                                               elem_id="voice-mic")  # fmt: skip
                                patient_audio = gr.Audio(label="The patient", streaming=True, autoplay=True,
                                                         interactive=False, elem_id="patient-audio")  # fmt: skip
                    with gr.Column(scale=1, min_width=280):
                        feedback = gr.Markdown(web.ui.feedback_markdown(None), elem_id="feedback")
                with gr.Column(visible=False, elem_id="scorecard-box") as scorecard_box:
                    scorecard = gr.Markdown(elem_id="scorecard")
                    with gr.Row():
                        mood_plot = gr.Plot(label="Mood over the session", elem_id="mood-plot")
                        steps_plot = gr.Plot(label="Steps", elem_id="steps-plot")
                    downloads = gr.File(label="Transcript and report", file_count="multiple", elem_id="downloads")

            # ---------------------------------------------------------------- Trainer
            with gr.Tab("Trainer", id="trainer"):
                # Fails closed: locked for every page until the trainer password unlocks it; with no
                # password set, the tools stay off and the notice says how to turn them on.
                unlocked = gr.State(False)
                with gr.Row() as lock_row:
                    password = gr.Textbox(label="Trainer password", type="password", elem_id="trainer-password")
                    unlock = gr.Button("Unlock", elem_id="unlock")
                lock_note = gr.Markdown(web.NO_PASSWORD if web.trainer_password() is None else "", elem_id="lock-note")
                with gr.Column(visible=False) as trainer_box:
                    with gr.Tab("Personas"):
                        edit_pick = gr.Dropdown(label="Persona", elem_id="trainer-persona")
                        editor = gr.Code(language="yaml", lines=24, label="Persona YAML", elem_id="editor")
                        validation = gr.Markdown(elem_id="validation")
                        wants_view = gr.HTML(elem_id="wants-table")
                        with gr.Row():
                            test_run = gr.Button("Test run (scripted good, bad, formula trainee)", elem_id="test-run")
                            new_name = gr.Textbox(label="Save as new persona named", elem_id="new-name")
                            save = gr.Button("Save as new", variant="primary", elem_id="save-persona")
                        save_note = gr.Markdown(elem_id="save-note")
                        test_plot = gr.Plot(label="Mood: scripted good vs bad trainee", elem_id="test-plot")
                        test_note = gr.Markdown(elem_id="test-note")
                    with gr.Tab("Rubric"):
                        rubric_steps = gr.Dataframe(headers=["id", "kind", "scope", "title", "sources"],
                                                    interactive=False, elem_id="rubric-steps")  # fmt: skip
                        rubric_yaml = gr.Code(language="yaml", interactive=False, label="rubrics/deescalation.yaml")
                    with gr.Tab("Calibration"):
                        calibration_file = gr.File(label="Calibration JSONL", file_types=[".jsonl"],
                                                   elem_id="calibration-file")  # fmt: skip
                        calibration_table = gr.Dataframe(label="Per-step agreement", interactive=False,
                                                         headers=["step", "n", "accuracy", "kappa"],
                                                         elem_id="calibration-table")  # fmt: skip
                        calibration_note = gr.Markdown()

            # ---------------------------------------------------------------- History
            with gr.Tab("History", id="history"):
                with gr.Row():
                    who = gr.Textbox(label="Trainee (empty: everybody)", elem_id="history-trainee")
                    refresh = gr.Button("Refresh", elem_id="history-refresh")
                sessions = gr.Dataframe(headers=web.ui.HISTORY_HEADERS, interactive=False, elem_id="history-table")
                progress = gr.Plot(label="Progress per step", elem_id="progress-plot")
                picked = gr.Textbox(label="Selected session", interactive=False, elem_id="history-picked")
                resume = gr.Button("Resume in Practice", elem_id="resume")
                detail = gr.Markdown(elem_id="history-detail")

        # ------------------------------------------------------------------------ wiring
        names = {
            "session_id": session_id, "chat": chat, "mood": mood, "feedback": feedback, "status": status,
            "retry": retry, "branch_choice": branch_choice, "message": message, "send": send,
            "scorecard_box": scorecard_box, "scorecard": scorecard, "mood_plot": mood_plot,
            "steps_plot": steps_plot, "downloads": downloads,
        }  # fmt: skip
        practice_out = [names[name] for name in web.PRACTICE_OUTPUTS]

        demo.load(lambda: practice.model.start_background(), api_visibility="private")
        poll.tick(bind(web.model_status, practice), outputs=[model_line, poll], api_visibility="private")
        persona.change(bind(web.persona_card, practice), persona, persona_card, api_visibility="private")
        start.click(bind(web.start, practice), [persona, trainee, key], practice_out, api_name="ui_start",
                    api_visibility="undocumented").then(
            bind(web.speak_opening, practice), [session_id, key, voice_on], patient_audio, api_visibility="private",
            **SPEECH_OUT,
        )  # fmt: skip
        gr.on([send.click, message.submit], bind(web.send_spoken, practice), [session_id, message, key, voice_on],
              [*practice_out, patient_audio], api_name="ui_send", api_visibility="undocumented",
              **turn_queue)  # fmt: skip
        # Each pause in typing hands the reply so far to the patient's slot (debounced on the server). `change`,
        # not `input`: Gradio's Textbox fires `input` on key presses only, so a pasted reply (or a transcript
        # put in the box) would reach the model only on Send.
        message.change(bind(web.typing, practice), [session_id, message, key], None, api_visibility="private",
                      trigger_mode="always_last", show_progress="hidden", concurrency_id="typing",
                      concurrency_limit=None)  # fmt: skip
        voice_on.change(web.voice_toggle, voice_on, voice_box, api_visibility="private")
        mic.stop_recording(bind(web.transcribe, practice), [session_id, mic, key], [message, voice_note],
                           api_visibility="private", **SPEECH_IN)  # fmt: skip
        retry.click(bind(web.retry_spoken, practice), [session_id, key, voice_on], [*practice_out, patient_audio],
                    api_name="ui_retry", api_visibility="undocumented", **turn_queue)  # fmt: skip
        branch.click(bind(web.branch, practice), [session_id, branch_choice, key], practice_out,
                     api_visibility="private")  # fmt: skip
        end.click(bind(web.end, practice), [session_id, key], practice_out, api_visibility="private")

        unlock.click(web.unlock, password, [unlocked, trainer_box, lock_note], api_visibility="private").then(
            lambda ok: gr.update(visible=not ok), unlocked, lock_row, api_visibility="private"
        ).then(
            bind(web.trainer_load, practice), [unlocked, edit_pick], [editor, validation], api_visibility="private"
        ).then(web.rubric_view, unlocked, [rubric_yaml, rubric_steps], api_visibility="private")
        demo.load(bind(web.trainer_personas, practice), outputs=edit_pick, api_visibility="private")
        edit_pick.change(bind(web.trainer_load, practice), [unlocked, edit_pick], [editor, validation],
                         api_visibility="private")  # fmt: skip
        editor.change(web.trainer_validate_view, [unlocked, editor], validation, api_visibility="private")
        editor.change(web.trainer_wants_view, [unlocked, editor], wants_view, api_visibility="private")
        save.click(bind(web.trainer_save, practice), [unlocked, editor, new_name], [save_note, edit_pick],
                   api_visibility="private")  # fmt: skip
        test_run.click(bind(web.trainer_test_run, practice), [unlocked, editor], [test_plot, test_note],
                       api_visibility="private", **MODEL_QUEUE)  # fmt: skip
        calibration_file.upload(web.calibration, [unlocked, calibration_file], [calibration_table, calibration_note],
                                api_visibility="private")  # fmt: skip

        show_history = {"fn": bind(web.history, practice), "inputs": [who, key, unlocked],
                        "outputs": [sessions, progress], "api_visibility": "private"}  # fmt: skip
        demo.load(web.browser_key, key, key, api_visibility="private").then(**show_history)
        refresh.click(**show_history)
        sessions.select(web.history_detail_handler(practice), [sessions, key, unlocked], [picked, detail],
                        api_visibility="private")  # fmt: skip
        resume.click(bind(web.resume, practice), [picked, key, unlocked], practice_out, api_visibility="private").then(
            lambda: gr.Tabs(selected="practice"), outputs=tabs, api_visibility="private"
        )

        # ------------------------------------------------------------------------ API
        api = web.api_endpoints(practice)
        gr.api(api["personas"], api_name="personas")
        gr.api(api["start_session"], api_name="start_session")
        turn_api = {"concurrency_id": "turns", "concurrency_limit": turn_concurrency}
        gr.api(api["practice_turn"], api_name="practice_turn", **turn_api)
        gr.api(api["retry_turn"], api_name="retry_turn", **turn_api)
        gr.api(api["prefill_reply"], api_name="prefill_reply", concurrency_id="typing", concurrency_limit=None)
        gr.api(api["turn_feedback"], api_name="turn_feedback")
        gr.api(api["end_session"], api_name="end_session")
    return demo.queue(max_size=max_queue)


def main() -> None:
    demo = build_app()
    demo.practice.model.start_background()  # warm the model before the first visitor arrives
    demo.launch(theme=THEME, css=CSS)


if __name__ == "__main__":
    main()
