"""Gradio event handlers: turn controller results (:mod:`agent.practice`) into component values.

``app.py`` lays the page out and wires events to these functions; the functions return values in
the order of the ``*_OUTPUTS`` names below, which ``app.py`` maps to its components. Rendering of
the pieces (mood bars, feedback, plots, exports) lives in :mod:`agent.ui`.
"""

from __future__ import annotations

import hmac
import os
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from agent import report, ui
from agent.personas import PersonaError
from agent.practice import Practice, TurnUpdate
from agent.simulate import SCRIPTED
from agent.store import StoreError

# The order of values every practice handler returns (app.py builds its output list from this).
PRACTICE_OUTPUTS = (
    "session_id", "chat", "mood", "feedback", "status", "retry", "branch_choice", "message", "send",
    "scorecard_box", "scorecard", "mood_plot", "steps_plot", "downloads",
)  # fmt: skip


def _step_titles() -> dict[str, str]:
    try:
        from agent.rubrics import load_rubric

        return {step.id: step.title for step in load_rubric().steps}
    except Exception:  # titles are cosmetic; ids still read fine
        return {}


def persona_choices(practice: Practice) -> list[tuple[str, str]]:
    return [(f"{p.name} — {p.difficulty} ({p.channel.replace('_', ' ')})", p.id) for p in practice.personas()]


def persona_card(practice: Practice, persona_id: str | None) -> str:
    if not persona_id:
        return ""
    try:
        persona = practice.persona(persona_id)
    except Exception as exc:
        return f"**Cannot load this patient:** {exc}"
    return (
        f"**{persona.name}**, {persona.age} · difficulty **{persona.difficulty}** · "
        f"{persona.channel.replace('_', ' ')}\n\n"
        f"{persona.situation}"
    )


def _export_files(practice: Practice, update: TurnUpdate) -> list[str]:
    """Transcript and report as Markdown and JSON files the page offers for download."""
    session = update.session
    folder = Path(tempfile.gettempdir()) / "deescalate-exports" / session.id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        patient_name = practice.persona(session.persona_id).address_as
    except Exception:
        patient_name = "Patient"
    files = {
        "transcript.md": ui.transcript_markdown(session, update.turns, patient_name),
        "transcript.json": ui.transcript_json(session, update.turns),
        "report.md": ui.report_markdown(session, update.turns, _step_titles(), patient_name),
        "report.json": session.scorecard.model_dump_json(indent=2) if session.scorecard else "{}",
    }
    paths = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def _branch_choices(update: TurnUpdate) -> list[tuple[str, int]]:
    return [
        (f"Turn {t.index + 1}: {t.trainee_text[:50]}{'…' if len(t.trainee_text) > 50 else ''}", t.index)
        for t in update.turns
    ]


def _feedback(update: TurnUpdate) -> str:
    """Every turn's feedback, newest first: answered turns, and the turn in progress once graded."""
    titles = _step_titles()
    shown = [
        turn for turn in update.turns
        if turn.status == "complete" or (turn is update.last and turn.status == "pending" and update.stage != "failed")
    ]  # fmt: skip
    parts = [
        ui.feedback_markdown(turn, step_titles=titles,
                             coaching=turn.status == "complete" and not (turn.grade and turn.grade.coached))
        for turn in reversed(shown)
    ]  # fmt: skip
    return "\n\n---\n\n".join(parts) or ui.feedback_markdown(None)


def _status(update: TurnUpdate) -> str:
    if update.session.ended:
        why = update.session.end_reason or ""
        return f"**Session ended — {(update.session.outcome or 'ended').replace('_', ' ')}.** {why}"
    if update.stage == "failed" or (update.last is not None and update.last.status == "failed"):
        return f"⚠ {update.error or (update.last.error if update.last else '') or 'The model failed.'}"
    if update.stage in ("graded", "typing"):
        return update.note or "The patient is answering…"
    return update.note or ""


def practice_view(practice: Practice, update: TurnUpdate, *, status: str | None = None) -> tuple[Any, ...]:
    """All practice-tab values for one snapshot, in ``PRACTICE_OUTPUTS`` order.

    A streamed piece of the patient's answer (stage ``typing``) updates the chat alone, and a tip
    (``tipped``/``coached``) the feedback panel alone: the rest of the page is left as it is, so
    each token costs one small update and a tip never overwrites a newer turn on the page.
    """
    if update.stage == "typing":
        return _only(chat=ui.chat_messages(update.session.opening, update.turns, streaming=update.streaming))
    if update.stage in ("tipped", "coached"):
        return _only(feedback=_feedback(update))
    ended = update.session.ended
    failed = update.stage == "failed" or (update.last is not None and update.last.status == "failed")
    chat = ui.chat_messages(update.session.opening, update.turns, streaming=update.streaming)
    if ended:
        titles = _step_titles()
        card = update.session.scorecard
        trajectory = [(p.turn, p.anger, p.trust) for p in card.mood] if card else []
        rates = {row.step_id: row.rate for row in card.steps if row.rate is not None} if card else {}
        scorecard = ui.scorecard_markdown(update.session, titles)
        mood_plot = ui.mood_figure({"mood": trajectory}, title="Mood over the session")
        steps_plot = ui.steps_figure(rates, titles)
        downloads = _export_files(practice, update)
    else:
        scorecard, mood_plot, steps_plot, downloads = "", None, None, None
    busy = update.stage == "graded"
    # Clear the reply box once, when the reply is taken; later updates must not wipe the next one being typed.
    message = gr.update(interactive=not ended)
    if update.stage in ("ready", "graded"):
        message = gr.update(value="", interactive=not ended)
    return (
        update.session.id,
        chat,
        ui.mood_meter_html(update.mood, update.mood_before),
        _feedback(update),
        _status(update) if status is None else status,
        gr.update(visible=failed and not ended),
        gr.update(choices=_branch_choices(update), value=None, interactive=not ended and not busy),
        message,
        gr.update(interactive=not ended and not busy and not failed),
        gr.update(visible=ended),
        scorecard,
        mood_plot,
        steps_plot,
        downloads,
    )


def _only(**values: Any) -> tuple[Any, ...]:
    """Leave every practice output as it is except ``values`` (by ``PRACTICE_OUTPUTS`` name)."""
    return tuple(values.get(name, gr.update()) for name in PRACTICE_OUTPUTS)


def _message_only(practice: Practice, session_id: str | None, message: str) -> tuple[Any, ...]:
    """Leave everything as it is and show ``message`` in the status line."""
    return _only(status=message)


def browser_secret() -> str:
    """The key the browsers' trainee keys are encrypted with: ``$DEESCALATE_SECRET``, else one made
    once and kept in the data folder, so a browser keeps its sessions across app restarts."""
    from agent.store import data_dir

    if os.environ.get("DEESCALATE_SECRET"):
        return os.environ["DEESCALATE_SECRET"]
    path = data_dir() / "browser-secret"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text(encoding="utf-8").strip()
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secret)
        return secret


def browser_key(key: str | None) -> str:
    """This browser's trainee key (kept in its local storage): its sessions are the ones it sees."""
    return key if key and len(key) >= 32 else secrets.token_urlsafe(32)


def start(practice: Practice, persona_id: str | None, trainee_name: str | None, key: str) -> tuple[Any, ...]:
    if not persona_id:
        return _message_only(practice, None, "Pick a patient first.")
    update = practice.start(persona_id, trainee_name, owner=key)
    return practice_view(practice, update, status="Session started. Read the patient's message and reply.")


def typing(practice: Practice, session_id: str | None, message: str, key: str) -> None:
    """The trainee is typing: the patient's slot reads the reply so far when the model is free, so
    Send reads only the last words. Nothing is shown, and nothing happens for another browser's
    session (the owner is checked here, on the server)."""
    if not session_id or not (message or "").strip():
        return
    try:
        practice.check_owner(session_id, key)
        practice.prefill_reply(session_id, message)
    except (StoreError, PersonaError):
        return


def send(
    practice: Practice, session_id: str | None, message: str, key: str,
    observe: Callable[[TurnUpdate], None] | None = None,
) -> Iterator[tuple[Any, ...]]:  # fmt: skip
    """``observe`` sees each update of the turn before the page does (voice mode speaks the reply)."""
    if not session_id:
        yield _message_only(practice, None, "Start a session first.")
        return
    if not (message or "").strip():
        yield _message_only(practice, session_id, "Type a reply to the patient first.")
        return
    yield from _turn_views(practice, session_id, key, lambda: practice.turn(session_id, message), observe)


def retry(
    practice: Practice, session_id: str | None, key: str, observe: Callable[[TurnUpdate], None] | None = None
) -> Iterator[tuple[Any, ...]]:
    if not session_id:
        yield _message_only(practice, None, "Start a session first.")
        return
    yield from _turn_views(practice, session_id, key, lambda: practice.retry(session_id), observe)


def _turn_views(
    practice: Practice, session_id: str, key: str, updates: Callable[[], Iterator[TurnUpdate]],
    observe: Callable[[TurnUpdate], None] | None,
) -> Iterator[tuple[Any, ...]]:  # fmt: skip
    """One turn (Send or Retry) on the page, once the owner is checked: its views as it plays, then
    the tip, which follows into the feedback panel after Send is enabled again."""
    try:
        practice.check_owner(session_id, key)
        answered: TurnUpdate | None = None
        for update in updates():
            if observe is not None:
                observe(update)
            yield practice_view(practice, update)
            answered = update
        if answered is not None and answered.coaching:
            for update in practice.coaching(session_id, len(answered.turns) - 1):
                yield practice_view(practice, update)
    except StoreError as exc:
        yield _message_only(practice, session_id, f"⚠ {exc}")


def branch(practice: Practice, session_id: str | None, index: int | None, key: str) -> tuple[Any, ...]:
    if not session_id or index is None:
        return _message_only(practice, session_id, "Pick the turn to answer differently.")
    try:
        practice.check_owner(session_id, key)
        update = practice.branch(session_id, int(index))
    except StoreError as exc:
        return _message_only(practice, session_id, f"⚠ {exc}")
    return practice_view(practice, update, status=f"Answer turn {int(index) + 1} again: type a different reply.")


def end(practice: Practice, session_id: str | None, key: str) -> tuple[Any, ...]:
    if not session_id:
        return _message_only(practice, None, "No session to end.")
    try:
        practice.check_owner(session_id, key)
        update = practice.end(session_id, outcome="ended_by_trainee", reason="You ended the session.")
    except StoreError as exc:
        return _message_only(practice, session_id, f"⚠ {exc}")
    return practice_view(practice, update)


def _viewer(key: str, unlocked: bool) -> str | None:
    """Whose sessions a page may open: a trainer's (unlocked, password set) every one, else its own."""
    return None if unlocked and trainer_password() is not None else key


def resume(practice: Practice, session_id: str | None, key: str, unlocked: bool = False) -> tuple[Any, ...]:
    if not session_id:
        return _message_only(practice, None, "Pick a session in the table first.")
    try:
        practice.check_owner(session_id, _viewer(key, unlocked))
        update = practice.snapshot(session_id)
    except (StoreError, PersonaError) as exc:
        return _message_only(practice, None, f"⚠ {exc}")
    note: str | None = "Session resumed."
    if update.session.ended:
        note = None  # the view says how and why it ended
    elif update.last is not None and update.last.status != "complete":
        note = "Session resumed. The last reply never got an answer: press Retry."
        update = update.model_copy(update={"stage": "failed"})
    return practice_view(practice, update, status=note)


# -- voice ---------------------------------------------------------------------------------------
# Voice mode (README "Voice"): the trainee speaks, the transcript lands in the reply box to edit,
# Send grades it like typed text, and the patient's reply is spoken sentence by sentence while it
# streams. The speech models load on first use, on the speech lane, never on the model lane.


def voice_note() -> str:
    from agent import speech, voice

    if speech.available() and voice.available():
        return "Record your reply, check the transcript in the reply box, then press Send."
    return f"Voice practice is not installed: {voice.INSTALL_HINT}."


def voice_toggle(on: bool) -> Any:
    """Show the voice box; turning voice on loads both speech models in the background."""
    from agent import speech, voice

    if on and speech.available() and voice.available():
        speech.warm()
        voice.warm()
    return gr.update(visible=bool(on))


def _persona_of(practice: Practice, session_id: str, key: str) -> Any:
    practice.check_owner(session_id, key)
    return practice.persona(practice.store.get_session(session_id).persona_id)


def transcribe(practice: Practice, session_id: str | None, audio: str | None, key: str) -> tuple[Any, str]:
    """The recorded reply as text in the reply box (to edit before sending), and a note."""
    from agent import speech

    if not audio:
        return gr.update(), ""
    words: list[str] = []
    if session_id:
        try:
            words = speech.hot_words(_persona_of(practice, session_id, key))
        except (StoreError, PersonaError):
            words = []
    try:
        heard = speech.recogniser().transcribe(audio, words)
    except speech.SpeechError as exc:
        return gr.update(), f"⚠ {exc}"
    except speech.SpeechUnavailable as exc:
        return gr.update(), f"⚠ {exc}"
    if not heard.text:
        return gr.update(), "⚠ No words were heard: speak closer to the microphone and record again."
    return heard.text[:2000], f"Heard in {heard.took_s:.1f} s. Edit the text if a word is wrong, then press Send."


def send_spoken(
    practice: Practice, session_id: str | None, message: str, key: str, voice_on: bool
) -> Iterator[tuple[Any, ...]]:
    """``send``, plus the patient's voice as the last output when voice mode is on."""
    yield from _spoken(practice, session_id, key, voice_on,
                       lambda observe: send(practice, session_id, message, key, observe=observe))  # fmt: skip


def retry_spoken(practice: Practice, session_id: str | None, key: str, voice_on: bool) -> Iterator[tuple[Any, ...]]:
    """``retry``, plus the patient's voice as the last output when voice mode is on."""
    yield from _spoken(practice, session_id, key, voice_on,
                       lambda observe: retry(practice, session_id, key, observe=observe))  # fmt: skip


def _spoken(
    practice: Practice, session_id: str | None, key: str, voice_on: bool,
    turn: Callable[[Callable[[TurnUpdate], None] | None], Iterator[tuple[Any, ...]]],
) -> Iterator[tuple[Any, ...]]:  # fmt: skip
    from agent import voice

    speaker = None
    if voice_on and session_id and voice.available():
        try:
            speaker = voice.Speaker(voice.persona_style(_persona_of(practice, session_id, key)))
        except (StoreError, PersonaError):
            speaker = None
    if speaker is None:
        for view in turn(None):
            yield (*view, gr.update())
        return
    for view, audio in voice.interleave(turn(speaker.follow), speaker):
        yield (*(view if view is not None else _only()), gr.update() if audio is None else audio)
    if speaker.error:
        yield (*_only(status=f"⚠ The patient's voice failed: {speaker.error}"), gr.update())


def speak_opening(practice: Practice, session_id: str | None, key: str, voice_on: bool) -> Iterator[Any]:
    """The patient's opening line, spoken, when a session starts in voice mode."""
    from agent import voice

    if not (voice_on and session_id and voice.available()):
        return
    try:
        persona = _persona_of(practice, session_id, key)
        opening = practice.store.get_session(session_id).opening
    except (StoreError, PersonaError):
        return
    speaker = voice.Speaker(voice.persona_style(persona))
    speaker.hear(opening, final=True)
    for _view, audio in voice.interleave(iter(()), speaker):
        if audio is not None:
            yield audio


# -- model status ------------------------------------------------------------------------------


def model_status(practice: Practice) -> tuple[str, Any]:
    """Status line and whether the page should keep polling."""
    state = practice.model.state()
    icon = {"ready": "✓", "remote": "✓", "preparing": "…", "starting": "…", "idle": "…", "down": "⚠",
            "error": "⚠"}[state.state]  # fmt: skip
    keep_polling = state.state in ("idle", "preparing", "starting", "down")
    return f"{icon} {state.message}", gr.Timer(active=keep_polling)


# -- history -------------------------------------------------------------------------------------


def history(practice: Practice, trainee: str | None, key: str, unlocked: bool = False) -> tuple[list[list[Any]], Any]:
    """This browser's sessions (a trainer's page: everybody's), optionally one trainee's.

    Each row also counts the turns judged by the rubric's phrases alone, so a trainer comparing
    scores knows which ones rest on less of the grader than usual.
    """
    name = (trainee or "").strip() or None
    sessions = practice.store.list_sessions(trainee_name=name, owner=_viewer(key, unlocked))
    paths = {s.id: practice.store.turns(s.id) for s in sessions}
    counts = {session_id: len(turns) for session_id, turns in paths.items()}
    # Counted from the stored grades, not the scorecard: it holds for sessions still in progress
    # and for cards saved before the scorecard counted it.
    checks_only = {session_id: report.checks_only_turns(t.grade for t in turns) for session_id, turns in paths.items()}
    series: dict[str, list[tuple[int, float]]] = {}
    finished = [s for s in sorted(sessions, key=lambda s: s.started_at) if s.ended and s.scorecard]
    for number, session in enumerate(finished, start=1):
        assert session.scorecard is not None
        for row in session.scorecard.steps:
            if row.rate is not None:
                series.setdefault(row.step_id, []).append((number, row.rate))
    return ui.history_rows(sessions, counts, checks_only), ui.progress_figure(series)


def history_detail_handler(practice: Practice) -> Callable[..., tuple[str, str]]:
    """Selecting a row shows that session's scorecard and transcript.

    A closure, not a ``partial``: Gradio finds the ``gr.SelectData`` parameter by type hints.
    """

    def history_detail(rows: Any, key: str, unlocked: bool, event: gr.SelectData) -> tuple[str, str]:
        try:
            row = event.row_value if event.row_value is not None else rows.iloc[event.index[0]].tolist()
            session_id = str(row[-1])
            practice.check_owner(session_id, _viewer(key, unlocked))
            session = practice.store.get_session(session_id)
        except Exception:
            return "", ""
        turns = practice.store.turns(session_id)
        text = ui.scorecard_markdown(session, _step_titles()) if session.ended else "_Session not finished._"
        return session_id, text + "\n\n" + ui.transcript_markdown(session, turns)

    return history_detail


# -- trainer -------------------------------------------------------------------------------------


def trainer_password() -> str | None:
    return os.environ.get("TRAINER_PASSWORD") or None


NO_PASSWORD = (
    "**Trainer tools are off:** no trainer password is set. Start the app with one, e.g. "
    "`TRAINER_PASSWORD='choose-one' make run`, then unlock here."
)
# Unlocking: at most this many wrong passwords in WINDOW seconds, then wait for the window to pass.
MAX_FAILURES = 5
WINDOW = 300.0
_failures: deque[float] = deque()
_failures_lock = threading.Lock()


def unlock(password: str | None) -> tuple[bool, Any, str]:
    """Unlock the trainer tools for this page. Fails closed: no password set, nothing unlocks."""
    expected = trainer_password()
    if expected is None:
        return False, gr.update(visible=False), NO_PASSWORD
    now = time.monotonic()
    with _failures_lock:
        while _failures and now - _failures[0] > WINDOW:
            _failures.popleft()
        if len(_failures) >= MAX_FAILURES:
            wait = WINDOW - (now - _failures[0])
            return False, gr.update(visible=False), f"Too many wrong passwords; try again in {wait:.0f} s."
        if hmac.compare_digest((password or "").encode(), expected.encode()):
            return True, gr.update(visible=True), ""
        _failures.append(now)
    return False, gr.update(visible=False), "Wrong password."


def _require(unlocked: bool) -> None:
    """Every trainer handler checks this on the server: a password is set and this page unlocked it."""
    if trainer_password() is None:
        raise gr.Error("The trainer tools are off: start the app with TRAINER_PASSWORD set.")
    if not unlocked:
        raise gr.Error("The trainer tools need the trainer password.")


def trainer_personas(practice: Practice) -> Any:
    from agent.personas import persona_files

    ids = [path.stem for path in persona_files(practice.personas_dir)]
    return gr.update(choices=ids, value=ids[0] if ids else None)


def trainer_load(practice: Practice, unlocked: bool, persona_id: str | None) -> tuple[str, str]:
    from agent.personas import persona_path

    # Fires on page load too: while locked, load nothing rather than greet every trainee with an error.
    if not persona_id or trainer_password() is None or not unlocked:
        return "", ""
    path = persona_path(persona_id, practice.personas_dir)  # ids only, never paths (PersonaError)
    text = path.read_text(encoding="utf-8")
    return text, trainer_validate(text, path.name)


def _problems(text: str, file_name: str) -> list[str]:
    from agent.personas import PersonaError, parse_persona

    try:
        parse_persona(text, file_name)
    except PersonaError as exc:
        return exc.problems
    return []


def trainer_validate_view(unlocked: bool, text: str) -> str:
    """The editor's inline validation, for an unlocked trainer only (it parses what the page sends)."""
    if trainer_password() is None or not unlocked:
        return ""
    if len(text or "") > MAX_YAML_CHARS:
        return f"✗ The persona is too long ({len(text):,} characters; the limit is {MAX_YAML_CHARS:,})."
    return trainer_validate(text, "persona.yaml")


def _listed(problems: list[str]) -> str:
    return "\n".join(f"- {ui.code_span(problem)}" for problem in problems)


def trainer_validate(text: str, file_name: str | None = None) -> str:
    """Inline validation: every problem with its file, line and field (wants problems too, with
    their path, e.g. ``wants.partly[0].id``), or a green tick; then what the lint finds in a valid
    persona (a missing own good script stops the test run; warnings are advice)."""
    from agent.personas import lint_text

    name = file_name or "persona.yaml"
    problems = _problems(text or "", name)
    if problems:
        return "✗ **Fix these before saving:**\n\n" + _listed(problems)
    errors, warnings = lint_text(text or "", name)
    lines = ["✓ Valid persona."]
    if errors:
        lines += ["", "✗ **Fix these before a test run:**", "", _listed(errors)]
    if warnings:
        lines += ["", "**Worth a look:**", "", _listed(warnings)]
    return "\n".join(lines)


def trainer_wants_view(unlocked: bool, text: str) -> str:
    """The wants of the persona being edited, as a table, redrawn from the editor's YAML on every
    change (for an unlocked trainer only). Drawn from the ``wants`` section alone, so it still shows
    while another field is broken; when the section itself is invalid, the validation above lists why."""
    if trainer_password() is None or not unlocked:
        return ""
    if len(text or "") > MAX_YAML_CHARS:
        return ui.wants_table_html(None, note="The persona is too long to show its wants.")
    import yaml
    from pydantic import ValidationError

    from agent.personas import Wants

    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError:
        return ui.wants_table_html(None, note="The YAML does not parse; see the problems above.")
    section = data.get("wants") if isinstance(data, dict) else None
    if section is None:
        return ui.wants_table_html(None)
    try:
        return ui.wants_table_html(Wants.model_validate(section))
    except ValidationError:
        return ui.wants_table_html(None, note="The wants have problems (listed above); fix them to see the table.")


MAX_YAML_CHARS = 50_000
MAX_UPLOAD_BYTES = 5_000_000


def trainer_save(practice: Practice, unlocked: bool, text: str, new_name: str) -> tuple[str, Any]:
    """Save the edited YAML as a *new* persona file; never overwrite, never leave the folder."""
    _require(unlocked)
    from agent.personas import personas_dir, with_id

    try:
        persona_id = ui.safe_persona_id(new_name or "")
    except ValueError as exc:
        return f"✗ {exc}", gr.update()
    if not persona_id[0].isalpha():
        persona_id = f"p-{persona_id}"
    if len(text or "") > MAX_YAML_CHARS:
        return f"✗ The persona is too long ({len(text):,} characters; the limit is {MAX_YAML_CHARS:,}).", gr.update()
    try:
        text = with_id(text or "", persona_id, f"{persona_id}.yaml")
    except PersonaError as exc:
        return "✗ **Fix these before saving:**\n\n" + _listed(exc.problems), gr.update()
    folder = Path(practice.personas_dir or personas_dir()).resolve()
    path = (folder / f"{persona_id}.yaml").resolve()
    if path.parent != folder:  # belt and braces: safe_persona_id already allows no separators
        return "✗ That name would leave the personas folder.", gr.update()
    problems = _problems(text, path.name)
    if problems:
        return trainer_validate(text, path.name), gr.update()
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        return f"✗ A persona called `{persona_id}` already exists; pick another name.", gr.update()
    return f"✓ Saved as `{path.name}`.", trainer_personas(practice)


def rubric_view(unlocked: bool) -> tuple[str, list[list[str]]]:
    """The rubric with every grader pattern: for unlocked trainers only (trainees would learn the
    phrases the checks look for)."""
    if trainer_password() is None or not unlocked:
        return "", []
    from agent.rubrics import load_rubric, rubric_path

    rubric = load_rubric()
    rows = [[s.id, s.kind, s.scope, s.title, ", ".join(s.sources)] for s in rubric.steps]
    return rubric_path("deescalation").read_text(encoding="utf-8"), rows


def trainer_test_run(practice: Practice, unlocked: bool, text: str) -> Iterator[tuple[Any, str]]:
    """Play the persona's scripted good, bad and formula trainee; plot the mood trajectories and
    show the three side by side (:func:`agent.ui.test_run_markdown`)."""
    _require(unlocked)
    from agent.personas import PersonaError, parse_persona

    try:
        persona = parse_persona(text or "", "persona.yaml")
    except PersonaError:
        yield None, trainer_validate(text, "persona.yaml")
        return
    yield None, f"Playing the scripted {SCRIPTED[0]} trainee…"
    try:
        for runs in practice.test_run(persona):
            figure = ui.mood_figure({name: run.trajectory for name, run in runs.items()}, title=persona.name)
            playing = next((name for name in SCRIPTED if name not in runs), None)
            yield figure, ui.test_run_markdown(runs, playing)
    except Exception as exc:
        yield None, f"✗ The test run failed: {exc}"


def calibration(unlocked: bool, file: Any) -> tuple[Any, str]:
    """Per-step agreement of the grader with the labels in an uploaded calibration JSONL."""
    _require(unlocked)
    if file is None:
        return None, ""
    from agent import calibrate

    path = Path(file if isinstance(file, str) else file.name)
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        return None, f"✗ The file is too large ({path.stat().st_size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,})."
    try:
        rows, note = calibrate.agreement_table(path)
    except Exception as exc:
        return None, f"✗ {exc}"
    return rows, note


# -- API (gradio_client) ---------------------------------------------------------------------------


def _api_state(update: TurnUpdate) -> dict[str, Any]:
    """The JSON an API call returns (documented in docs/api.md)."""
    last = update.last
    session = update.session
    return {
        "session_id": session.id,
        "stage": update.stage,
        "patient_reply": last.patient_reply if last else session.opening,
        "mood": update.mood.model_dump(mode="json") if update.mood else None,
        "grade": last.grade.model_dump(mode="json") if last and last.grade else None,
        "turn_status": last.status if last else None,
        "error": update.error or (last.error if last else None),
        "note": update.note,
        "ended": session.ended,
        "outcome": session.outcome,
        "end_reason": session.end_reason,
        "scorecard": session.scorecard.model_dump(mode="json") if session.scorecard else None,
    }


# Sessions started through the API belong to the API: its calls may act on those only (their id is
# the capability), never on a session a browser started.
API_OWNER = "api"


def api_endpoints(practice: Practice) -> dict[str, Callable[..., Any]]:
    """Typed functions for ``gr.api`` (Gradio reads their signatures); documented in docs/api.md."""

    def personas() -> list[dict[str, Any]]:
        """The patients to practise with: id, name, difficulty, channel, situation."""
        return [
            {"id": p.id, "name": p.name, "difficulty": p.difficulty, "channel": p.channel, "situation": p.situation}
            for p in practice.personas()
        ]

    def start_session(persona_id: str, trainee_name: str = "") -> dict[str, Any]:
        """Start a session; returns its id and the patient's opening line (as patient_reply)."""
        from agent.personas import PersonaError

        try:
            return _api_state(practice.start(persona_id, trainee_name or None, owner=API_OWNER, read=True))
        except PersonaError as exc:
            raise gr.Error(str(exc)) from exc

    def finish(updates: Iterator[TurnUpdate], session_id: str, with_tip: bool) -> dict[str, Any]:
        try:
            practice.check_owner(session_id, API_OWNER)
            *_, final = updates
            if with_tip and final.coaching:
                practice.wait_for_coaching(session_id)
                final = practice.snapshot(session_id, final.stage)
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc
        return _api_state(final)

    def practice_turn(session_id: str, message: str, with_tip: bool = True) -> dict[str, Any]:
        """One trainee reply: the patient's answer, the new mood, the grade, and whether the session ended.

        ``with_tip`` (default): return once the tip and better phrasing are written too; otherwise
        right after the patient's answer (``grade`` has the verdicts; ``turn_feedback`` the tip later).
        """
        return finish(practice.turn(session_id, message), session_id, with_tip)

    def prefill_reply(session_id: str, partial_reply: str) -> dict[str, Any]:
        """The reply being typed so far (call it as the trainee types; calls are debounced): the
        patient model reads its whole words while it is free, so ``practice_turn`` only reads the
        rest. Returns ``{"queued": bool}`` at once; it changes nothing in the session."""
        try:
            practice.check_owner(session_id, API_OWNER)
            return {"queued": practice.prefill_reply(session_id, partial_reply)}
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc

    def retry_turn(session_id: str, with_tip: bool = True) -> dict[str, Any]:
        """Retry the last turn after a model failure (same words)."""
        return finish(practice.retry(session_id), session_id, with_tip)

    def turn_feedback(session_id: str) -> dict[str, Any]:
        """The session now, after waiting for the tips still being written."""
        try:
            practice.check_owner(session_id, API_OWNER)
            practice.wait_for_coaching(session_id)
            return _api_state(practice.snapshot(session_id))
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc

    def end_session(session_id: str) -> dict[str, Any]:
        """End the session now; returns the scorecard."""
        try:
            practice.check_owner(session_id, API_OWNER)
            return _api_state(practice.end(session_id, outcome="ended_by_trainee", reason="Ended through the API."))
        except StoreError as exc:
            raise gr.Error(str(exc)) from exc

    return {
        "personas": personas,
        "start_session": start_session,
        "practice_turn": practice_turn,
        "prefill_reply": prefill_reply,
        "retry_turn": retry_turn,
        "turn_feedback": turn_feedback,
        "end_session": end_session,
    }
