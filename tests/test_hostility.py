"""The hostility heads (agent/hostility.py): what they add to the checks, what they never change, their file,
and that a hostile reply moves the patient's mood (issue 20, item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent import calibrate, checks, embed, hostility, learned, mood
from agent.checks import TurnContext
from agent.grader import grade_fast
from agent.personas import load_persona, load_personas
from agent.rubrics import load_rubric

RUBRIC = load_rubric()
GOLD = Path(__file__).resolve().parent / "data" / "gold" / "hostility"
CONTEXT = TurnContext(persona_name="Mr. Carter")
D = embed.DIMENSIONS
PERSONAS = [p.id for p in load_personas()]


class PileEncoder:
    """A stand-in encoder: a sentence about "the pile" points one way, anything else another; remembers its texts."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        rows = np.zeros((len(texts), D), dtype=np.float32)
        for i, text in enumerate(texts):
            rows[i, 0 if "pile" in text.lower() else 1] = 1.0
        return rows


def pile_model(threshold: float = 0.7) -> hostility.HostilityModel:
    """Heads that call a reply hostile when one of its sentences is like the act "brushes off" (axis 0)."""
    acts = [[1.0 if i == 0 else 0.0 for i in range(D)], [1.0 if i == 1 else 0.0 for i in range(D)]]
    head = hostility.Head(weights=[10.0, 0.0, -5.0], bias=-5.0, threshold=threshold, positives=4, negatives=4)
    return hostility.HostilityModel(rubric=RUBRIC.id, trained_on=["x.jsonl"], created="now", l2=1.0,
                                    acts=["brushes_off", "acknowledges"], act_vectors=acts,
                                    inputs=["act:brushes_off", "act:acknowledges", "check:apologize"],
                                    steps={"dismiss_feelings": head, "argue_back": head.model_copy()})  # fmt: skip


def component(encoder: PileEncoder) -> learned.Component:
    classifier = learned.LearnedModel(rubric=RUBRIC.id, trained_on=[], created="now")
    return learned.Component.model_construct(model=classifier, encoder=encoder, reason=None)  # a stand-in encoder


def weigh(reply: str, encoder: PileEncoder | None = None, *, abstained: bool = False):
    encoder = encoder or PileEncoder()
    reading = checks.read(reply, RUBRIC.step_ids, ["Carter"])
    verdicts = checks.judge(RUBRIC, reading, CONTEXT)
    texts = learned.reply_texts(reading.for_classifier)
    vectors = encoder.encode(texts[:1] if abstained else texts)
    encoder.seen.clear()
    probability = {} if abstained else {"empathize": 0.1}
    scores = learned.ReplyScores(probability=probability, sentence={}, abstained=abstained).with_vectors(vectors)
    return hostility.weigh(RUBRIC, reading, verdicts, scores, component(encoder), model=pile_model())


def test_a_head_turns_ok_into_a_violation_quoting_its_sentence():
    verdicts = weigh("Right then. It all goes on the pile.")
    found = verdicts["dismiss_feelings"]
    assert (found.verdict, found.evidence, found.source) == ("violated", "It all goes on the pile.", "learned")
    assert verdicts["argue_back"].verdict == "violated"


def test_below_its_threshold_a_head_changes_nothing():
    verdicts = weigh("Right then. Let me look into it.")
    assert verdicts["dismiss_feelings"].verdict == "ok" and verdicts["argue_back"].verdict == "ok"


def test_a_reply_that_shows_a_kind_step_is_left_to_the_checks_and_the_classifier():
    # the same brush-off beside an apology the checks quote: the heads stay silent
    assert weigh("I'm sorry. It goes on the pile.")["dismiss_feelings"].verdict == "ok"


def test_a_quoted_check_violation_stands():
    verdicts = weigh("That's not my problem. It goes on the pile.")
    assert verdicts["argue_back"].evidence == "That's not my problem"
    assert verdicts["argue_back"].source == "check"


def test_a_violation_found_by_a_head_makes_a_question_rhetorical():
    reply = "Which day were you given on the phone? It all goes on the pile."
    assert checks.run(RUBRIC, reply, CONTEXT)["ask_questions"].verdict == "demonstrated"
    assert weigh(reply)["ask_questions"].verdict == "missed"


def test_a_reply_the_classifier_abstained_on_is_left_to_the_checks():
    encoder = PileEncoder()
    verdicts = weigh("Thanks for waiting. It goes on the pile.", encoder, abstained=True)
    assert verdicts["dismiss_feelings"].verdict == "ok"
    assert encoder.seen == []


def test_an_ordinary_reply_is_not_embedded_again():
    encoder = PileEncoder()
    weigh("Thanks for waiting. It goes on the pile.", encoder)
    assert encoder.seen == []


def test_a_reply_too_short_to_score_is_left_to_the_checks():
    reading = checks.read("Pile.", RUBRIC.step_ids)
    verdicts = checks.judge(RUBRIC, reading, CONTEXT)
    scores = learned.ReplyScores(probability={}, sentence={})
    out = hostility.weigh(RUBRIC, reading, verdicts, scores, component(PileEncoder()), model=pile_model())
    assert out is verdicts


def test_text_to_the_grader_does_not_shield_a_brush_off_in_the_same_sentence():
    # The whole sentence is meta for the do-steps (the classifier never reads it) ...
    reply = "As the evaluator will note, your complaint goes on the pile."
    reading = checks.read(reply, RUBRIC.step_ids)
    assert "pile" not in reading.for_classifier and "pile" in reading.for_donts
    # ... but the heads read it without the grader's words.
    encoder = PileEncoder()
    verdicts = checks.judge(RUBRIC, reading, CONTEXT)
    scores = learned.ReplyScores(probability={}, sentence={})
    out = hostility.weigh(RUBRIC, reading, verdicts, scores, component(encoder), model=pile_model())
    assert out["dismiss_feelings"].verdict == "violated"
    assert encoder.seen and "evaluator" not in " ".join(encoder.seen)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rubric": "other"}, "trained for rubric 'other'"),
        ({"encoder_sha256": "0" * 64}, "trained with another encoder"),
        ({"steps": {"hug": {"weights": [0.0] * 3, "bias": 0, "positives": 1, "negatives": 1}}},
         "steps.hug: rubric 'deescalation' has no such step"),
        ({"steps": {"argue_back": {"weights": [0.0] * 5, "bias": 0, "positives": 1, "negatives": 1}}},
         "steps.argue_back.weights: 5 values"),
    ],
)  # fmt: skip
def test_a_bad_head_file_is_named_with_its_field(tmp_path, change, message):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({**pile_model().model_dump(), **change}), encoding="utf-8")
    with pytest.raises(hostility.HostilityError, match=message):
        hostility.load(path, RUBRIC)


# -- no heads are shipped (README, "Hostility heads"): the grader is the checks and the classifier -------


def test_no_head_file_ships_and_one_beside_a_rubric_is_picked_up(tmp_path):
    assert not hostility.model_path(RUBRIC).exists()
    assert hostility.model_for(RUBRIC) is None
    rubric = RUBRIC.model_copy()
    rubric.source = tmp_path / "deescalation.yaml"
    hostility.model_path(rubric).write_text(pile_model().model_dump_json(), encoding="utf-8")
    assert hostility.model_for(rubric) is not None


def test_the_shipped_acts_name_only_the_heads_steps():
    acts = hostility.load_acts(hostility.acts_path(RUBRIC))
    assert {s for act in acts.acts for s in act.steps} <= set(hostility.STEPS)


KIND = [
    "I'm so sorry, that was our mistake. Let me put it right now.",
    "I can see how upsetting this is. I can't move the list, but I can ask the doctor for you.",
]


@pytest.mark.parametrize("reply", KIND)
def test_kind_replies_stay_ok(reply):
    verdicts = grade_fast(RUBRIC, reply, CONTEXT).verdicts
    assert [s for s in hostility.STEPS if verdicts[s].verdict != "ok"] == []


# -- the mood moves on hostility (mood.update with every persona) -----------------------------------


def held_out_hostile() -> list[calibrate.Example]:
    examples = calibrate.load_examples(GOLD / "heldout.jsonl", RUBRIC)
    return [e for e in examples if any(e.labels[s] == "violated" for s in hostility.STEPS)]


@pytest.mark.parametrize("persona_id", PERSONAS)
def test_every_persona_escalates_on_each_hostility_step(persona_id):
    persona = load_persona(persona_id)
    steps = {t.step for t in persona.triggers.escalate if t.step and (t.when or ["violated"]) == ["violated"]}
    assert set(hostility.STEPS) <= steps
    for step in hostility.STEPS:
        start = mood.initial(persona)
        after = mood.update(start, {step: "violated"}, persona)
        assert after.anger > start.anger, step


@pytest.fixture(scope="module")
def graded_held_out() -> list[tuple[calibrate.Example, dict[str, str]]]:
    """Each held-out hostile reply with the grader's verdicts, its hostility steps set to the gold labels."""
    graded = []
    for example in held_out_hostile():
        verdicts = grade_fast(RUBRIC, example.reply, example.turn_context()).labels()
        graded.append((example, {**verdicts, **{s: example.labels[s] for s in hostility.STEPS}}))
    return graded


@pytest.mark.parametrize("persona_id", PERSONAS)
def test_each_held_out_hostile_reply_angers_every_persona(persona_id, graded_held_out):
    """Played as the first turn, every held-out hostile reply raises the persona's anger, even where the
    same reply also earns a calming step (the name, a question): the escalation outweighs it."""
    persona = load_persona(persona_id)
    start = mood.initial(persona)
    for example, verdicts in graded_held_out:
        after = mood.update(start, verdicts, persona, example.reply)
        assert after.anger > start.anger, example.reply


# -- python -m agent learn-hostility --------------------------------------------------------------------


def test_learn_hostility_writes_heads_the_loader_accepts(tmp_path, capsys):
    from agent.cli import main

    out = tmp_path / "deescalation.hostility.json"
    train = str(GOLD / "train.jsonl")
    code = main(["learn-hostility", train, "--threshold", "dismiss_feelings=0.8", "--weight", f"{train}=3",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    model = hostility.load(out, RUBRIC)
    assert model.trained_on == ["train.jsonl"]
    assert list(model.steps) == ["dismiss_feelings"] and model.steps["dismiss_feelings"].threshold == 0.8
    assert model.steps["dismiss_feelings"].positives == 22  # the training half's dismissals
    assert "wrote" in capsys.readouterr().out


def test_learn_hostility_needs_a_threshold_per_head(capsys):
    from agent.cli import main

    assert main(["learn-hostility", str(GOLD / "train.jsonl")]) == 2
    assert "--threshold STEP=P" in capsys.readouterr().err
