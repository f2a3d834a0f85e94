"""Calibration: kappa arithmetic, file validation, the CLI, and the held-out gold split."""

import argparse
import json
from pathlib import Path

import pytest

from agent import calibrate
from agent.calibrate import CalibrationError, cohen_kappa, load_examples
from agent.checks import StepVerdict
from agent.commands import calibrate as command
from agent.grades import TurnGrade
from agent.rubrics import load_rubric

GOLD = Path(__file__).parent / "data" / "gold"
RUBRIC = load_rubric()


def test_kappa_matches_a_hand_computed_value():
    # observed 0.75; expected 0.5*0.25 + 0.5*0.75 = 0.5; kappa = (0.75 - 0.5) / 0.5
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx(0.5)
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == pytest.approx(1.0)
    # always answering the majority class earns no kappa
    assert cohen_kappa(["a", "a", "a", "b"], ["a", "a", "a", "a"]) == pytest.approx(0.0)


def test_kappa_is_undefined_for_a_single_gold_class():
    assert cohen_kappa(["ok", "ok"], ["ok", "violated"]) is None
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def _write(tmp_path: Path, rows: list[dict | str]) -> Path:
    path = tmp_path / "cal.jsonl"
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ROWS = [
    {"id": "a", "reply": "I'm so sorry, Mr. Carter.", "context": {"persona_name": "Mr. Carter"},
     "labels": {"apologize": "demonstrated", "argue_back": "ok"}},
    {"id": "b", "reply": "You should have read the card.", "labels": {"apologize": "missed", "argue_back": "violated"}},
    {"id": "c", "reply": "Sorry you feel that way.", "labels": {"apologize": "missed"}},
    {"id": "d", "reply": "It was clearly written.", "labels": {"argue_back": "ok"}},
]  # fmt: skip


def test_only_labelled_steps_are_scored_with_confusion_and_mistakes(tmp_path):
    report = calibrate.calibrate(_write(tmp_path, ROWS), RUBRIC)
    assert report.examples == 4
    assert set(report.steps) == {"apologize", "argue_back"}
    apologize = report.steps["apologize"]
    assert (apologize.n, apologize.accuracy, apologize.kappa) == (3, 1.0, 1.0)
    argue = report.steps["argue_back"]
    # "It was clearly written." is blame by the rubric's patterns but labelled ok here: one mistake
    assert argue.n == 3 and argue.accuracy == pytest.approx(2 / 3)
    assert argue.confusion == {"ok": {"ok": 1, "violated": 1}, "violated": {"violated": 1}}
    assert [(m.id, m.step, m.gold, m.predicted) for m in report.mistakes] == [("d", "argue_back", "ok", "violated")]
    assert report.macro_accuracy == pytest.approx((1.0 + 2 / 3) / 2)


def test_hostile_at_all_is_scored_over_the_dont_steps_each_line_labels(tmp_path):
    """A violation found on another don't-step than the one labelled still counts as finding hostility; a line
    that labels no don't-step is left out; a don't-step the line does not label is not read."""
    rows = [
        {"id": "a", "reply": "I'm so sorry, Mr. Carter.", "labels": {"argue_back": "ok", "dismiss_feelings": "ok"}},
        # labelled argue_back only, the grader may find dismiss_feelings: still hostile found
        {"id": "b", "reply": "Read the card.", "labels": {"argue_back": "violated", "dismiss_feelings": "ok"}},
        {"id": "c", "reply": "Sorry you feel that way.", "labels": {"apologize": "missed"}},  # no don't-step
        # dismiss_feelings violated by the label, the grader finds nothing: a miss
        {"id": "d", "reply": "Let me check that for you.", "labels": {"dismiss_feelings": "violated"}},
    ]  # fmt: skip
    scripted = {"a": {}, "b": {"dismiss_feelings": "violated"}, "c": {"argue_back": "violated"}, "d": {}}

    def grader(rubric, example):
        verdicts = {sid: StepVerdict(step_id=sid, verdict="ok") for sid in ("argue_back", "dismiss_feelings")}
        for sid, verdict in scripted[example.id].items():
            verdicts[sid] = StepVerdict(step_id=sid, verdict=verdict)
        return TurnGrade(verdicts=verdicts)

    report = calibrate.calibrate(_write(tmp_path, rows), RUBRIC, grader=grader)
    hostile = report.any_dont
    assert hostile is not None and hostile.n == 3
    assert hostile.confusion == {"ok": {"ok": 1}, "violated": {"violated": 1, "ok": 1}}
    assert "any don't-step (hostile at all): 3 labelled" in calibrate.format_report(report)
    assert "violations found 1 of 2, ok lines flagged 0 of 1" in calibrate.format_report(report)
    table, _ = calibrate.agreement_table(_write(tmp_path, ROWS))
    assert table[-1][0] == "any don't-step"
    assert calibrate.calibrate(_write(tmp_path, [ROWS[2]]), RUBRIC).any_dont is None


def test_a_one_class_step_reports_accuracy_and_null_kappa(tmp_path):
    rows = [{"id": "x", "reply": "Thanks.", "labels": {"lose_cool": "ok"}},
            {"id": "y", "reply": "Hello.", "labels": {"lose_cool": "ok", "apologize": "missed"}},
            {"id": "z", "reply": "I'm sorry.", "labels": {"apologize": "demonstrated"}}]  # fmt: skip
    report = calibrate.calibrate(_write(tmp_path, rows), RUBRIC)
    assert report.steps["lose_cool"].kappa is None and report.steps["lose_cool"].accuracy == 1.0
    assert report.macro_kappa == report.steps["apologize"].kappa == 1.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "cal.jsonl:2: not valid JSON"),
        (json.dumps({"id": "q", "labels": {"apologize": "missed"}}), "cal.jsonl:2: reply: Field required"),
        (json.dumps({"id": "q", "reply": "x", "labels": {"hug": "missed"}}), "cal.jsonl:2: labels.hug: rubric"),
        (json.dumps({"id": "q", "reply": "x", "labels": {"argue_back": "missed"}}),
         "cal.jsonl:2: labels.argue_back: 'missed' is not one of violated, ok"),
        (json.dumps({"id": "q", "reply": "x", "labels": {"apologize": "great"}}), "cal.jsonl:2: labels.apologize"),
        (json.dumps({"id": "q", "rubric": "triage", "reply": "x", "labels": {"apologize": "missed"}}),
         "cal.jsonl:2: rubric: 'triage', but grading with 'deescalation'"),
    ],
)  # fmt: skip
def test_a_bad_line_names_file_line_and_field(tmp_path, line, message):
    path = _write(tmp_path, [ROWS[0], line])
    with pytest.raises(CalibrationError, match=message.replace(".", r"\.")):
        load_examples(path, RUBRIC)


def test_an_empty_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CalibrationError, match="cannot read"):
        load_examples(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(CalibrationError, match="no examples"):
        load_examples(tmp_path / "empty.jsonl")


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["calibrate", *argv])
    return args.handler(args)


def test_cli_json_has_the_documented_shape(tmp_path, capsys):
    assert _cli(str(_write(tmp_path, ROWS)), "--json") == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert set(data) >= {"macro_kappa", "macro_accuracy", "steps"}
    assert set(data["steps"]["apologize"]) == {"accuracy", "kappa", "n", "confusion"}
    assert "mistakes" not in data


def test_cli_text_shows_the_table_and_confusion(tmp_path, capsys):
    assert _cli(str(_write(tmp_path, ROWS)), "--mistakes") == 0
    out = capsys.readouterr().out
    assert "macro accuracy" in out and "confusion (rows gold, columns predicted)" in out
    assert "d argue_back: gold ok, got violated" in out


def test_the_gold_files_are_valid_and_cover_every_turn_step_in_both_polarities():
    splits = ("train", "dev", "test", *(f"test{i}" for i in range(2, 12)))
    rows = [e for split in splits for e in load_examples(GOLD / f"{split}.jsonl", RUBRIC)]
    assert len(rows) >= 1540
    assert len({e.id for e in rows}) == len(rows)
    for step in RUBRIC.turn_steps():
        seen = {e.labels[step.id] for e in rows if step.id in e.labels}
        wanted = {"violated", "ok"} if step.kind == "dont" else {"demonstrated", "missed"}
        assert wanted <= seen, step.id
    assert len({e.situation for e in rows}) == 9


# Measured on files no grader had seen; see tests/data/gold/README.md for the protocol and every round.


def test_held_out_gold_split_meets_the_issue_targets():
    """Issue 4's targets on the newest held-out file, test11 (the shipped model was trained on train..test10).

    Scored once, with the grader committed before the file was read (a5d9102): macro kappa 0.868,
    macro accuracy 0.963, every step >= 0.90 (lowest: argue_back 0.902, find_out 0.909). The margins
    are thin: the three files before it each missed the per-step target by one or two steps.
    """
    report = calibrate.calibrate(GOLD / "test11.jsonl", RUBRIC)
    assert report.examples == 136
    assert report.macro_kappa is not None and report.macro_kappa >= 0.80
    for step_id, score in report.steps.items():
        assert score.accuracy >= 0.90, (step_id, score.accuracy)


def test_the_learned_part_adds_agreement_on_held_out_replies():
    """On test11, which the shipped classifier never saw, checks + classifier beat the checks alone.

    Measured: macro kappa 0.868 vs 0.699, macro accuracy 0.963 vs 0.914. A change that loses the
    learned part's gain (a broken encoder, a model file that stops loading) fails here.
    """
    both = calibrate.calibrate(GOLD / "test11.jsonl", RUBRIC)
    checks_only = calibrate.calibrate(GOLD / "test11.jsonl", RUBRIC, use_learned=False)
    assert both.macro_kappa is not None and checks_only.macro_kappa is not None
    assert both.macro_kappa >= checks_only.macro_kappa + 0.10
    assert both.macro_accuracy is not None and checks_only.macro_accuracy is not None
    assert both.macro_accuracy > checks_only.macro_accuracy


# -- Issue 13, item 4: a file that lacks what the grader needs says so, per step --------------------------

NO_CONTEXT = [
    {"id": "n1", "reply": "I'm so sorry, Dana. Please DM us.",
     "labels": {"use_name": "demonstrated", "take_offline": "demonstrated"}},
    {"id": "n2", "reply": "Sorry, Dana, we will look into it.",
     "labels": {"use_name": "demonstrated", "take_offline": "missed"}},
    {"id": "n3", "reply": "I'm sorry about that.",
     "labels": {"use_name": "not_applicable", "apologize": "demonstrated"}},
]  # fmt: skip


def test_labels_the_file_gives_no_way_to_judge_are_warned_per_step(tmp_path):
    report = calibrate.calibrate(_write(tmp_path, NO_CONTEXT), RUBRIC, use_learned=False)
    assert set(report.warnings) == {"use_name", "take_offline"}
    assert "2 of 2" in report.warnings["use_name"] and "context.persona_name" in report.warnings["use_name"]
    assert "context.channel" in report.warnings["take_offline"]
    # with the context given there is nothing to warn about
    given = [dict(row, context={"persona_name": "Dana Lee", "channel": "public_post"}) for row in NO_CONTEXT]
    assert calibrate.calibrate(_write(tmp_path, given), RUBRIC, use_learned=False).warnings == {}


def test_warnings_reach_the_text_report_the_json_and_the_trainer_upload(tmp_path, capsys):
    path = _write(tmp_path, NO_CONTEXT)
    assert _cli(str(path), "--checks-only") == 0
    assert "warning: use_name:" in capsys.readouterr().out
    assert _cli(str(path), "--json", "--checks-only") == 0
    assert set(json.loads(capsys.readouterr().out)["warnings"]) == {"use_name", "take_offline"}
    _, note = calibrate.agreement_table(path)
    assert "use_name" in note and "take_offline" in note and "context.persona_name" in note
    _, clean = calibrate.agreement_table(_write(tmp_path, ROWS))
    assert "⚠" not in clean


def test_replies_the_classifier_left_to_the_checks_are_counted_and_reported(tmp_path, capsys):
    # A support tweet (human/train.jsonl, h-twcs-0174) is unlike every reply the classifier learnt from.
    tweet = ("@USER Hi there! Sometimes content gets temporarily removed because of licensing changes. "
             "Hopefully we'll have them available again soon. We have more info here: <URL> /DR")  # fmt: skip
    rows = [*ROWS, {"id": "e", "reply": tweet, "labels": {"apologize": "missed"}}]
    path = _write(tmp_path, rows)
    report = calibrate.calibrate(path, RUBRIC)
    assert report.unfamiliar == 1
    assert calibrate.calibrate(path, RUBRIC, use_learned=False).unfamiliar == 0
    assert "left 1 of 5 replies to the checks" in calibrate.format_report(report)
    assert _cli(str(path), "--json") == 0
    assert json.loads(capsys.readouterr().out)["unfamiliar"] == 1
    _, note = calibrate.agreement_table(path)
    assert "left 1 of 5 replies to the checks" in note
    _, clean = calibrate.agreement_table(_write(tmp_path, ROWS))
    assert "left" not in clean


def test_a_persona_line_is_graded_with_the_personas_facts_wants_and_earlier_turns():
    example = calibrate.Example.model_validate({
        "id": "p1", "persona": "carter-wrong-day", "reply": "I'll find out.",
        "history": [{"role": "patient", "content": "Why hasn't a doctor called me in yet?"},
                    {"role": "trainee", "content": "Let me find out what we can do."},
                    {"role": "patient", "content": "You said that already."}],
        "labels": {"find_out": "not_applicable"}, "meets": "none",
    })  # fmt: skip
    context = calibrate.persona_context(example, RUBRIC, use_learned=False)
    assert context.persona_name == "John Carter"
    assert context.facts and context.wants is not None
    assert context.earlier.get("find_out") == 1
    assert calibrate.Example.model_validate({**example.model_dump(), "persona": None}).turn_context().facts == []
