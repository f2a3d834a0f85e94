"""The session turn loop on the fake model: stage order, verdicts and mood decided once, the
append-only patient prompt, prefill, a dead server and retry, history trimming, coaching, resume.

No cassettes: what the prompts make a real model do is tested in tests/test_patient.py and
tests/test_simulate.py; everything here is logic above the model boundary (tests/fakes.py).
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agent import grader, learned
from agent import mood as mood_rules
from agent.models import ModelUnavailable
from agent.patient import MAX_TOKENS, PatientUnavailable, direction, substance
from agent.personas import Persona, load_persona
from agent.session import Answered, Graded, Session, SessionError, Spoken, ends_sentence
from agent.simulate import trainee_lines
from agent.tokens import count_messages
from tests.fakes import PHRASING, TIP, FakeModel

CARTER = load_persona("carter-wrong-day")
SORRY = "I'm so sorry, Mr. Carter. Waiting forty minutes only to hear it's the wrong day must be really frustrating."
ARGUE = "Calm down. That's not our fault, you should have read the letter."


def patient_prompt(request: list) -> str:
    """The transcript the patient model continues (the assistant prefill, the last message)."""
    assert isinstance(request[-1], AIMessage)
    return request[-1].content


def endless(persona: Persona) -> Persona:
    """The persona with thresholds that cannot end a long session (no resolving, leaving, or giving up)."""
    limits = persona.thresholds.model_copy(update={"max_turns": 100, "leave_after": 100, "min_turns": 100})
    return persona.model_copy(update={"thresholds": limits})


@pytest.fixture
def spies(monkeypatch):
    """Count the calls of the verdicts stage (grade_fast) and the mood stage (mood.update)."""
    calls: dict[str, list] = {"grade_fast": [], "update": []}
    real_grade, real_update = grader.grade_fast, mood_rules.update

    def grade_fast(rubric, reply, context=None, **options):
        calls["grade_fast"].append((reply, context))
        return real_grade(rubric, reply, context, **options)

    def update(*args, **options):
        calls["update"].append(args)
        return real_update(*args, **options)

    monkeypatch.setattr(grader, "grade_fast", grade_fast)
    monkeypatch.setattr(mood_rules, "update", update)
    return calls


# -- one turn -----------------------------------------------------------------------------------


def test_stages_come_in_order_verdicts_before_the_patient_is_asked():
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    events = []
    for event in session.stream_turn(SORRY):
        if isinstance(event, Graded):  # shown before the patient model is even asked
            assert model.patient_requests == [] and event.turn.patient is None
        events.append(event)
    assert isinstance(events[0], Graded) and isinstance(events[-1], Answered)
    assert len(events) > 2 and all(isinstance(e, Spoken) for e in events[1:-1])
    graded, answered = events[0], events[-1]
    assert graded.index == answered.index == 0
    assert graded.turn.verdicts["empathize"].verdict == "demonstrated"
    assert graded.turn.verdicts["use_name"].verdict == "demonstrated"
    assert graded.turn.mood_before == mood_rules.initial(CARTER)
    assert graded.turn.mood_after.anger < CARTER.anger and session.mood == graded.turn.mood_after
    spoken = "".join(e.text for e in events[1:-1]).strip()
    assert answered.turn.patient == spoken == "Line A. I still want answers."
    assert [m.role for m in session.transcript.messages] == ["patient", "trainee", "patient"]
    assert session.transcript.messages[-1].content == spoken
    assert session.transcript.messages[-1].direction == direction(CARTER, answered.turn.mood_after)
    # What was offered and is still wanted follows the answer, so a prefill reads it before the next reply.
    assert session.transcript.messages[-1].note == substance(CARTER, answered.turn.mood_after)
    assert len(model.patient_requests) == 1 and model.coach_requests == []  # no coaching in the turn


def test_verdicts_come_from_grade_fast_once_and_the_mood_is_updated_once(spies):
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    turn = session.turn(SORRY)
    assert len(spies["grade_fast"]) == 1 and len(spies["update"]) == 1
    # The checks, the classifier and the stance reader (when this machine has the encoder), as grade_fast gives them.
    component = learned.component_for(session.rubric)
    ready = component is not None and component.ready
    expected = ["checks", "learned", "stance_reader"] if ready else ["checks"]
    assert turn.grade.components == expected
    fresh = grader.grade_fast(session.rubric, SORRY, session.context(0))
    assert turn.grade.labels() == fresh.labels()
    assert turn.mood_after == mood_rules.update(turn.mood_before, fresh.verdicts, CARTER, SORRY)

    spies["grade_fast"].clear()
    spies["update"].clear()
    verdicts, mood_after = turn.grade.labels(), turn.mood_after.model_copy(deep=True)
    stages = list(session.coach(0, model))  # coaching changes neither the verdicts nor the mood
    assert stages and stages[-1].coached
    assert spies["grade_fast"] == [] and spies["update"] == []
    assert session.turns[0].grade.labels() == verdicts
    assert session.turns[0].mood_after == mood_after and session.mood == mood_after
    assert session.moods == [mood_rules.initial(CARTER), mood_after]


def test_coaching_stores_the_tip_and_phrasing_on_the_turn():
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    session.turn(ARGUE)
    session.turn(SORRY)
    stages = list(session.coach(0, model))
    first, last = stages[0], stages[-1]
    assert first.tip == TIP and first.better_phrasing is None and not first.coached
    assert last.tip == TIP and last.better_phrasing and last.coached
    assert last.better_phrasing == PHRASING or last.phrasing_source == "rubric"
    assert last.focus is not None and last.labels()[last.focus] in ("violated", "missed")
    assert session.turns[0].grade == last and session.turns[1].grade.tip is None
    # The tip coaches the reply against the patient line it answered (the opening), not the answer.
    asked = " ".join(str(m.content) for m in model.coach_requests[0])
    assert ARGUE in asked and CARTER.opening_line in asked
    assert session.context(0).history[-1].content == CARTER.opening_line


class DeadCoach(FakeModel):
    """A coach whose model is down: the trainee sees the curated or rubric tip for the focus step."""

    def stream_json(self, schema, messages, *, max_tokens):
        raise ModelUnavailable("the coach is down")
        yield ""  # a generator, like the real one


BOYD = load_persona("abusive-caller")
BOYD_LINES = [  # each shows some steps and misses "involve your manager" (issue 20: the same tip three times)
    "I'm sorry, Mr. Boyd. I can hear how angry you are about waiting two weeks.",
    "I'm trying to help you, Mr. Boyd, and I have to ask you not to talk to me that way.",
    "Can you tell me what you were told about the results, Mr. Boyd?",
]


def test_the_coach_moves_on_over_a_session_and_the_context_carries_its_earlier_foci():
    session = Session(endless(BOYD), FakeModel(), seed=7)
    tips, foci = [], []
    for index, line in enumerate(BOYD_LINES):
        session.turn(line)
        *_, done = session.coach(index, DeadCoach())
        tips.append(done.tip)
        foci.append(done.focus)
        assert done.focus is None or done.labels()[done.focus] != "demonstrated", (index, done.focus)
    assert len(set(tips)) == len(tips), tips  # never the same tip twice
    assert len([f for f in foci if f == "involve_manager"]) <= 1, foci
    # What each later turn's coach was told: the earlier foci, as coach() chose them.
    assert session.context(2).coached == [f for f in foci[:2] if f]
    assert session.context().coached == [f for f in foci if f]
    assert session.context(0).coached == []


def test_the_context_says_which_remedies_were_offered_so_far():
    session = Session(CARTER, FakeModel(), seed=7)
    session.turn(SORRY)
    turn = session.turns[0]
    turn.mood_after = turn.mood_after.model_copy(update={"met": ["same_day_slot"]})
    assert session.context().met == ["same_day_slot"] and session.context(0).met == []


def test_transferring_personas_reach_the_grader(spies):
    finance = load_persona("finance-wrong-department")
    assert finance.transferring
    session = Session(finance, FakeModel(), seed=7)
    assert session.context().transferring
    session.turn(f"I'm sorry, {finance.address_as}.")
    reply, context = spies["grade_fast"][-1]
    assert context.transferring and context.persona_name == finance.name
    assert session.turns[0].verdicts["explain_transfer"].verdict != "not_applicable"

    staying = finance.model_copy(update={"transferring": False})
    other = Session(staying, FakeModel(), seed=7)
    other.turn(reply)
    assert not spies["grade_fast"][-1][1].transferring
    assert other.turns[0].verdicts["explain_transfer"].verdict == "not_applicable"


def test_abusive_patient_context_follows_the_mood():
    boyd = load_persona("abusive-caller")
    session = Session(boyd, FakeModel())
    assert session.context().patient_abusive
    assert not Session(load_persona("carter-wrong-day"), FakeModel()).context().patient_abusive


# -- what the patient model reads -----------------------------------------------------------------


def test_the_patient_prompt_only_grows_at_its_end():
    """Each request repeats the previous one word for word: the server's prompt cache keeps it all."""
    model = FakeModel()
    session = Session(endless(CARTER), model, seed=7)
    for line in (ARGUE, "I DON'T KNOW what you want me to do.", SORRY, CARTER.script.good[3]):
        session.turn(line)
    requests = model.patient_requests
    assert len(requests) == 4
    directions = [turn.mood_after for turn in session.turns]
    assert len({mood_rules.describe(m, CARTER) for m in directions}) >= 3, "the mood words must change"
    for before, after in zip(requests, requests[1:], strict=False):
        assert before[:-1] == after[:-1]  # the instruction is the same every turn
        old, new = patient_prompt(before), patient_prompt(after)
        front = old[: old.rindex("\n") + 1]  # without the last line (the speaker tag)
        assert front.endswith("]\n"), "the direction is the last line before the speaker tag"
        assert new.startswith(front)
        assert new.startswith(old)  # the tag too: the new text starts with the patient's answer
    # Every patient line keeps the direction it was written under, in the order it was written.
    last = patient_prompt(requests[-1])
    for turn in session.turns:
        cue = f"[{CARTER.address_as} is {direction(CARTER, turn.mood_after)}.]\n"
        assert f"{cue}{CARTER.address_as}: {turn.patient}\n" in last or turn is session.turns[-1]
    assert last.endswith(f"[{CARTER.address_as} is {direction(CARTER, session.mood)}.]\n{CARTER.address_as}:")


def test_prefill_sends_exactly_the_front_of_the_next_prompt():
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    assert session.prefill()  # at the start, while the trainee reads the opening line
    session.turn(SORRY)
    assert session.prefill()  # after an answer, while the trainee types
    session.turn(CARTER.script.good[1])
    assert len(model.prefills) == 2 and len(model.patient_requests) == 2
    for prefill, request, line in zip(model.prefills, model.patient_requests, (SORRY, CARTER.script.good[1]),
                                      strict=True):  # fmt: skip
        assert isinstance(prefill[0], HumanMessage) and prefill[0] == request[0]
        front, prompt = patient_prompt(prefill), patient_prompt(request)
        assert prompt.startswith(front)
        rest = prompt[len(front) :].splitlines()  # only the new line, the direction and the tag
        assert rest == [f"{CARTER.staff_label}: {line}", rest[1], f"{CARTER.address_as}:"]
        assert rest[1].startswith(f"[{CARTER.address_as} is ")


def test_the_reply_being_typed_is_read_up_to_its_last_whole_word():
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    assert not session.prefill_reply("I'm")  # no whole word yet: a half-typed one reads as other tokens
    assert session.prefill_reply("I'm so sorry,   Mr. Car")
    [typed] = model.prefills
    assert patient_prompt(typed).endswith(f"\n{CARTER.staff_label}: I'm so sorry, Mr.")
    session.turn(SORRY)
    prompt = patient_prompt(model.patient_requests[-1])
    assert typed[0] == model.patient_requests[-1][0] and prompt.startswith(patient_prompt(typed))
    rest = prompt[len(patient_prompt(typed)) :].splitlines()  # the last words, the direction, the tag
    assert rest[0] == SORRY.removeprefix("I'm so sorry, Mr.") and rest[2] == f"{CARTER.address_as}:"
    assert session.prefill_reply("Let me check ")  # the second turn's reply: on top of the first answer
    assert patient_prompt(model.prefills[-1]).startswith(prompt)


def test_a_reply_that_ends_a_sentence_is_read_whole_with_its_direction_and_graded_once(monkeypatch):
    """The trainee paused after a full stop: the patient model reads the whole prompt Send would
    make, direction included, so Send reads nothing new; the grade made then is the turn's grade."""
    graded: list[str] = []
    grade_fast = grader.grade_fast
    monkeypatch.setattr(
        grader, "grade_fast", lambda rubric, text, *a, **k: graded.append(text) or grade_fast(rubric, text, *a, **k)
    )
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    session.turn(SORRY)
    offer = CARTER.script.good[3]
    assert session.prefill_reply(offer + "  ") and graded == [SORRY, offer]
    turn = session.turn(offer)
    assert graded == [SORRY, offer]  # Send reused the grade made while typing
    assert model.prefills[-1] == model.patient_requests[-1]  # and the model had read the whole prompt
    assert turn.mood_after.offer_meets is not None and "that offer" in patient_prompt(model.prefills[-1])
    # Typed on after the full stop: the turn grades what was sent, on top of what was read.
    assert session.prefill_reply("Let me check.")
    session.turn("Let me check. One moment")
    assert graded[-1] == "Let me check. One moment"
    assert model.prefills[-1] != model.patient_requests[-1]


def test_a_reply_graded_while_typed_is_not_reused_once_the_conversation_moved_on():
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    assert session.prefill_reply(SORRY)
    session.turn("Please wait a moment.")  # something else was sent
    again = session.turn(SORRY)  # the same words later: graded in the later context, not the kept one
    assert again.mood_before == session.turns[0].mood_after and again.grade.verdicts["apologize"].verdict


def test_no_reply_prefill_for_chat_models_while_a_turn_waits_or_after_the_end():
    chat = FakeModel(prompt_style="chat")
    assert not Session(CARTER, chat).prefill_reply("I am so sorry") and chat.prefills == []
    model = FakeModel()
    model.fail_patient = 1  # the answer fails: the turn waits for a retry
    session = Session(CARTER, model, seed=7)
    with pytest.raises(PatientUnavailable):
        session.turn(SORRY)
    assert session.pending and not session.prefill_reply("I am so sorry") and model.prefills == []
    for line in CARTER.script.good:
        if session.ending is None:
            session.turn(line)
    assert not session.prefill_reply("I am so sorry") and model.prefills == []


def test_no_prefill_for_chat_models_or_after_the_end():
    chat = FakeModel(prompt_style="chat")
    assert not Session(CARTER, chat).prefill() and chat.prefills == []
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    for line in trainee_lines(CARTER, "bad") * 2:  # he walks out on these
        if session.ending is None:
            session.turn(line)
    assert session.ending is not None
    assert not session.prefill() and model.prefills == []


def test_a_40_turn_session_stays_inside_a_small_context():
    persona = endless(CARTER)
    model = FakeModel(context_tokens=1300)  # the stage directions name offers and open needs: ~50 tokens a line
    session = Session(persona, model, seed=7, use_learned=False)
    lines = [CARTER.script.good[1], CARTER.script.good[2], SORRY, "I see. Let me look into the appointment for you."]
    trims = []
    for index in range(40):
        events = list(session.stream_turn(lines[index % len(lines)]))
        assert isinstance(events[-1], Answered), f"turn {index}"
        trims.append(events[-1].trimmed)
    assert session.ending is None and len(session.turns) == 40 and len(model.patient_requests) == 40
    for index, request in enumerate(model.patient_requests):
        assert count_messages(request) + MAX_TOKENS <= model.context_tokens, f"request {index} overflows"
        assert f"{CARTER.address_as}: {CARTER.opening_line}\n" in patient_prompt(request)
    assert session.trimmed > 0 and trims[-1] == session.trimmed and trims == sorted(trims)
    memory = session.memory()
    assert memory.messages[0].content == CARTER.opening_line
    assert memory.messages[1:] == session.transcript.messages[1 + 2 * session.trimmed :]
    assert len(session.transcript.messages) == 81  # the whole conversation is kept, only the prompt is trimmed
    # Trims are rare: between two trims the prompt grows at its end as usual.
    grew = sum(
        patient_prompt(after).startswith(patient_prompt(before))
        for before, after in zip(model.patient_requests, model.patient_requests[1:], strict=False)
    )
    assert grew >= 30


@pytest.mark.live
def test_a_40_turn_session_on_a_real_server_with_a_small_context(tmp_path):
    """The same on llama.cpp with 1,024 tokens a slot: a prompt that outgrew it would fail with
    HTTP 400 (the server refuses it), so every one of the 40 turns answering is the proof."""
    import os

    from agent.llm import Backend, LLMSettings
    from agent.models import PATIENT_SLOT, ServedModel
    from agent.runtime import EmbeddedServer, ServerOptions

    model_name = os.environ.get("DEESCALATE_LIVE_MODEL", "small")
    options = ServerOptions(n_ctx=1024)
    with EmbeddedServer(model=model_name, options=options, log_path=tmp_path / "server.log") as server:
        settings = LLMSettings(backend=Backend.EMBEDDED, base_url=server.openai_base_url, model=model_name)
        patient = ServedModel(settings, slot=PATIENT_SLOT, context_tokens=options.n_ctx)
        session = Session(endless(CARTER), patient, seed=7, temperature=0.0, use_learned=False)
        lines = [
            CARTER.script.good[1],
            CARTER.script.good[2],
            SORRY,
            "I see. Let me look into the appointment for you.",
        ]
        for index in range(40):
            events = list(session.stream_turn(lines[index % len(lines)]))
            assert isinstance(events[-1], Answered), f"turn {index}"
    assert len(session.turns) == 40 and all(turn.patient for turn in session.turns)
    assert session.trimmed > 0  # without trimming, a 1,024-token slot overflows long before turn 40


# -- a dead model server --------------------------------------------------------------------------


def test_a_dead_server_keeps_the_trainees_words_and_verdicts_and_retry_answers(spies):
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    model.fail_patient = 2
    events = session.stream_turn(SORRY)
    graded = next(events)
    assert isinstance(graded, Graded)
    with pytest.raises(PatientUnavailable, match="not answering.*try again"):
        list(events)
    assert session.pending and session.ending is None
    assert session.transcript.messages[-1].role == "trainee" and session.transcript.messages[-1].content == SORRY
    kept = session.turns[-1]
    assert kept.patient is None and kept.grade == graded.turn.grade and len(session.moods) == 2
    with pytest.raises(PatientUnavailable):
        list(session.retry())
    assert session.pending and len(session.turns) == 1
    events = list(session.retry())
    assert isinstance(events[-1], Answered) and not session.pending
    assert events[-1].turn.patient == "Line C. I still want answers."
    assert session.turns[0].grade == graded.turn.grade and session.moods[1] == graded.turn.mood_after
    assert len(spies["grade_fast"]) == 1 and len(spies["update"]) == 1  # nothing decided twice
    assert [m.role for m in session.transcript.messages] == ["patient", "trainee", "patient"]
    with pytest.raises(SessionError, match="no unanswered turn"):
        list(session.retry())


def test_rephrasing_a_pending_turn_replaces_it():
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    model.fail_patient = 1
    with pytest.raises(PatientUnavailable):
        list(session.stream_turn(ARGUE))
    session.turn(SORRY)
    assert [m.content for m in session.transcript.messages if m.role == "trainee"] == [SORRY]
    assert len(session.turns) == 1 and session.turns[0].trainee == SORRY and not session.pending
    assert session.turns[0].mood_before == mood_rules.initial(CARTER)
    assert session.turns[0].verdicts["argue_back"].verdict == "ok"


def test_retry_without_a_failed_turn_is_an_error():
    with pytest.raises(SessionError, match="no unanswered turn"):
        list(Session(CARTER, FakeModel()).retry())


def test_empty_text_is_rejected():
    with pytest.raises(SessionError, match="say something"):
        list(Session(CARTER, FakeModel()).stream_turn("   "))


def test_an_ended_session_takes_no_more_turns():
    model = FakeModel()
    session = Session(CARTER, model, seed=7)
    for line in CARTER.script.good:
        if session.ending is not None:
            break
        session.turn(line)
    assert session.ending is not None and session.ending.kind == "resolved"
    assert "offer_solution" in session.ending.reason and "meets the need: same_day_slot" in session.ending.reason
    assert session.summary()["outcome"] == "resolved"
    # The last answer was written under the ending's own stage direction, not a mood.
    ending = direction(CARTER, session.mood, "resolved")
    assert patient_prompt(model.patient_requests[-1]).endswith(f"\n[{ending}.]\n{CARTER.address_as}:")
    assert session.transcript.messages[-1].direction == ending
    assert session.transcript.messages[-1].note is None  # nothing follows the last line
    with pytest.raises(SessionError, match="has ended"):
        list(session.stream_turn("Anything else?"))


# -- resume -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("context_tokens", [8192, 900])
def test_resume_with_add_played_reproduces_the_transcript_and_memory(context_tokens):
    persona = endless(CARTER)
    lines = [ARGUE, SORRY, CARTER.script.good[1], CARTER.script.good[2], "I see, let me look into it for you."] * 2
    answers = ["I'm leaving town tomorrow.", "Fine. What now?", "Just get me a doctor."]
    played = Session(persona, FakeModel(lines=answers, context_tokens=context_tokens), seed=7, use_learned=False)
    for line in lines:
        played.turn(line)
    resumed = Session(persona, FakeModel(lines=answers, context_tokens=context_tokens), seed=7, use_learned=False)
    for turn in played.turns:
        resumed.add_played(turn.model_copy(deep=True))
    assert resumed.transcript == played.transcript
    assert resumed.memory() == played.memory() and resumed.trimmed == played.trimmed
    assert resumed.moods == played.moods and resumed.mood == played.mood and resumed.ending == played.ending
    assert resumed.summary() == played.summary()
    if context_tokens == 900:
        assert played.trimmed > 0
    # The next turn sends the resumed patient the very prompt the live session would have sent.
    played.turn("So, what would work best for you?")
    resumed.turn("So, what would work best for you?")
    assert resumed.patient.patient_requests[-1] == played.patient.patient_requests[-1]


def test_resume_leaves_an_unanswered_turn_for_retry():
    played = Session(CARTER, FakeModel(), seed=7)
    played.turn(SORRY)
    played.patient.fail_patient = 1
    with pytest.raises(PatientUnavailable):
        list(played.stream_turn(CARTER.script.good[1]))
    resumed = Session(CARTER, FakeModel(lines=["Go on."]), seed=7)
    for turn in played.turns:
        resumed.add_played(turn.model_copy(deep=True))
    assert resumed.pending and resumed.moods == played.moods
    with pytest.raises(SessionError, match="retry it"):
        resumed.add_played(played.turns[0])
    events = list(resumed.retry())
    assert events[-1].turn.patient == "Go on." and not resumed.pending
    assert resumed.summary()["patient"] == [CARTER.opening_line, played.turns[0].patient, "Go on."]


@pytest.mark.parametrize(
    ("typed", "finished"),
    [("I'm so sorry.", True), ("Can I help?", True), ("Wait!", True), ("I'm so sorry, Mr.", False),
     ("Dr.", False), ("I'm so sorry", False), ("", False), ("Let me check. ", True)],
)  # fmt: skip
def test_a_reply_may_be_finished_when_it_ends_a_sentence_but_not_on_a_title(typed, finished):
    assert ends_sentence(typed) is finished
