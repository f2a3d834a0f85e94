"""Curated coaching per persona (personas/phrasings/): complete, fit to say, and loaded safely."""

import pytest

from agent import coach
from agent.checks import TurnContext
from agent.personas import PersonaError, load_personas
from agent.phrasings import Curated, load_phrasebook, parse_phrasebook
from agent.rubrics import load_rubric
from agent.transcript import Message

PERSONAS = load_personas()
RUBRIC = load_rubric()


def context_for(persona) -> TurnContext:
    """The first turn's context, with every condition the persona can bring about switched on, so
    each situational step (set a boundary, explain the transfer, move it private) applies."""
    return TurnContext(
        persona_name=persona.name,
        channel=persona.channel,
        patient_abusive=persona.abusive,
        transferring=persona.transferring,
        history=[Message(role="patient", content=persona.opening_line)],
    )


def focus_steps(persona) -> set[str]:
    """The per-turn steps the coach can focus on for this persona."""
    conditions = {"always", "has_name", "trainee_uncertain", "patient_demands_manager_or_rude"}
    conditions |= {"patient_abusive"} if persona.abusive else set()
    conditions |= {"transferring"} if persona.transferring else set()
    conditions |= {"public_channel"} if persona.channel == "public_post" else set()
    return {s.id for s in RUBRIC.steps if s.scope == "turn" and s.graded and conditions.intersection(s.applies_when)}


def test_every_persona_has_curated_coaching_for_every_step_the_coach_can_focus_on():
    for persona in PERSONAS:
        book = load_phrasebook(persona.id)
        assert book is not None, f"{persona.id}: no personas/phrasings/{persona.id}.yaml"
        missing = focus_steps(persona) - book.steps()
        assert not missing, f"{persona.id}: no curated coaching for {sorted(missing)}"
        assert book.steps() <= set(RUBRIC.step_ids), f"{persona.id}: unknown steps"


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.id)
def test_each_curated_phrasing_passes_the_checks_and_invents_nothing(persona):
    """The same checks that grade the trainee pass each line for each step it is written for, and
    it names no number, time or person the persona's file does not (``known``)."""
    book = load_phrasebook(persona.id)
    context = context_for(persona)
    known = coach.persona_known(persona)
    for entry in book.coaching:
        for step_id in entry.steps:
            step = RUBRIC.step(step_id)
            assert coach.phrasing_fixes(RUBRIC, step, entry.say, context, known=known), (step_id, entry.say)
            assert coach.tip_problem(entry.tip, step) is None, (step_id, entry.tip)


def test_the_guard_rejects_a_tip_to_the_patient_and_a_refusal():
    """The tips and phrasing seen from the embedded model in live sessions (issue 13)."""
    step = RUBRIC.step("argue_back")
    for tip in (
        "Rephrase the complaint to make it more polite and direct",
        "If you're unsure about the appointment, ask the receptionist to confirm the date",
        "The receptionist should apologise first.",
        "Try saying: I understand you're upset, but I can't help with that. Let's talk about something else.",
        "Great reply.",  # names no step
        "Stay calm and don't get upset.",  # about the trainee's temper, not the blame it should fix
    ):
        assert coach.tip_problem(tip, step) is not None, tip
    assert coach.tip_problem("You blamed him for the date; describe the mix-up neutrally instead.", step) is None
    empathize = RUBRIC.step("empathize")
    assert coach.tip_problem("Acknowledge his frustration before you explain the schedule.", empathize) is None
    assert coach.tip_problem("Acknowledge his frustration before you explain the schedule.", None) is None
    refusal = "I understand you're upset, but I can't help with that. Let's talk about something else."
    assert coach.refuses(refusal)
    context = context_for(PERSONAS[0])
    assert not coach.phrasing_fixes(RUBRIC, RUBRIC.step("empathize"), refusal, context)


def test_a_phrasing_may_repeat_facts_but_not_invent_them():
    persona = next(p for p in PERSONAS if p.id == "carter-wrong-day")
    context = context_for(persona)
    known = coach.persona_known(persona)
    step = RUBRIC.step("offer_solution")
    invented = "What I can do is book you with Dr. Patel at 2:15 today, Mr. Carter."
    assert coach.invented_facts(invented, known) == ["2:15", "Dr. Patel"]
    assert not coach.phrasing_fixes(RUBRIC, step, invented, context, known=known)
    assert coach.phrasing_fixes(RUBRIC, step, invented, context)  # without the persona nothing to compare with
    asked = Message(role="patient", content="Can I see Dr. Patel? I heard she is free at 2:15.")
    said = context.model_copy(update={"history": [*context.history, asked]})
    assert coach.phrasing_fixes(RUBRIC, step, invented, said, known=known)  # said in the conversation: fine
    fact = "What I can do is check for a cancellation today, Mr. Carter, since you are away for two weeks."
    assert coach.phrasing_fixes(RUBRIC, step, fact, context, known=known)  # in the persona's facts


def test_a_persona_without_a_file_has_no_curated_coaching(tmp_path):
    assert load_phrasebook("carter-wrong-day", tmp_path) is None


def test_a_file_for_another_persona_or_an_unknown_seed_is_refused(tmp_path):
    entry = "coaching:\n  - steps: [empathize]\n    tip: You can name the feeling.\n    say: I see how hard this is.\n"
    (tmp_path / "carter-wrong-day.yaml").write_text(
        f"persona: back-pain-wait\n{entry}    seed: 004_54c74b88a13cd7e8.txt\n", encoding="utf-8"
    )
    with pytest.raises(PersonaError, match="not 'carter-wrong-day'"):
        load_phrasebook("carter-wrong-day", tmp_path)
    with pytest.raises(PersonaError, match="seed"):
        parse_phrasebook(f"persona: x\n{entry}    seed: my-notes.txt\n")
    with pytest.raises(PersonaError):
        load_phrasebook("../carter-wrong-day", tmp_path)  # ids only, never a path


def test_the_page_label_names_the_seed():
    entry = Curated(steps=["empathize"], tip="t", say="s", seed="004_54c74b88a13cd7e8.txt")
    assert entry.source == "curated phrasing from 004_54c74b88a13cd7e8.txt"
