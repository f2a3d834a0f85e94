"""Rubric loading: the shipped rubric covers the seeds' steps; bad files fail naming file and field."""

from pathlib import Path

import pytest
import yaml

from agent.rubrics import DEFAULT_DIR, RubricError, load_rubric, load_rubric_file, rubric_path

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
DESIGN_TURN_STEPS = {
    "do": ["empathize", "apologize", "use_name", "summarize", "ask_questions", "offer_solution",
           "involve_manager", "set_boundary", "explain_transfer", "take_offline", "find_out"],
    "dont": ["argue_back", "lose_cool", "say_i_dont_know"],
}  # fmt: skip
SESSION_STEPS = ["let_vent", "patience", "simple_to_complex", "agreed_resolution", "debrief"]


@pytest.fixture(scope="module")
def rubric():
    return load_rubric()


def test_the_design_steps_are_all_there_with_their_kind(rubric):
    for kind, ids in DESIGN_TURN_STEPS.items():
        for step_id in ids:
            step = rubric.step(step_id)
            assert (step.kind, step.scope) == (kind, "turn"), step_id
    for step_id in SESSION_STEPS:
        assert rubric.step(step_id).scope == "session"


def test_every_step_explains_itself_and_cites_a_seed(rubric):
    for step in rubric.steps:
        assert step.description and step.title
        assert step.sources
        assert step.good, f"{step.id} has no good example"
        if step.graded:
            assert step.bad, f"{step.id} has no bad example"
        if SEEDS.is_dir():
            for source in step.sources:
                assert (SEEDS / source).is_file(), f"{step.id} cites missing seed {source}"


def test_situational_steps_apply_only_in_their_situation(rubric):
    assert rubric.step("explain_transfer").applies_when == ["transferring"]
    assert rubric.step("take_offline").applies_when == ["public_channel"]
    assert rubric.step("set_boundary").applies_when == ["patient_abusive"]
    assert "patient_demands_manager_or_rude" in rubric.step("involve_manager").applies_when
    assert rubric.step("find_out").applies_when == ["trainee_uncertain"]
    assert {"public_post", "chat"} <= set(rubric.conditions.public_channels)


def test_verdict_vocabulary_follows_the_kind(rubric):
    assert rubric.step("empathize").verdicts == ("demonstrated", "missed", "not_applicable")
    assert rubric.step("argue_back").verdicts == ("violated", "ok")


def test_unknown_step_is_a_key_error(rubric):
    with pytest.raises(KeyError, match="no step 'hug_patient'"):
        rubric.step("hug_patient")


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _raw() -> dict:
    return yaml.safe_load((DEFAULT_DIR / "deescalation.yaml").read_text(encoding="utf-8"))


def test_a_bad_regex_names_file_step_and_pattern(tmp_path):
    data = _raw()
    index = [s["id"] for s in data["steps"]].index("apologize")
    data["steps"][index]["check"]["match"][1] = "(unclosed"
    with pytest.raises(RubricError) as error:
        load_rubric_file(_write(tmp_path, data))
    message = str(error.value)
    assert "broken.yaml" in message
    assert f"steps[{index}] (apologize).check.match" in message
    assert "(unclosed" in message


def test_a_missing_field_and_a_bad_kind_are_both_reported(tmp_path):
    data = _raw()
    del data["steps"][0]["description"]
    data["steps"][1]["kind"] = "maybe"
    with pytest.raises(RubricError) as error:
        load_rubric_file(_write(tmp_path, data))
    message = str(error.value)
    assert "steps[0] (empathize).description: Field required" in message
    assert "steps[1] (apologize).kind" in message


def test_sources_must_be_seed_file_names(tmp_path):
    data = _raw()
    data["steps"][0]["sources"] = ["some blog post"]
    with pytest.raises(RubricError, match=r"steps\[0\] \(empathize\)\.sources.*not a seed file name"):
        load_rubric_file(_write(tmp_path, data))


def test_unknown_condition_and_duplicate_ids_are_rejected(tmp_path):
    data = _raw()
    data["steps"][0]["applies_when"] = ["full_moon"]
    with pytest.raises(RubricError, match=r"applies_when"):
        load_rubric_file(_write(tmp_path, data))
    data = _raw()
    data["steps"][1]["id"] = data["steps"][0]["id"]
    with pytest.raises(RubricError, match="duplicate step id 'empathize'"):
        load_rubric_file(_write(tmp_path, data))


def test_a_turn_step_without_a_check_is_rejected(tmp_path):
    data = _raw()
    del data["steps"][0]["check"]
    with pytest.raises(RubricError, match=r"steps\[0\] \(empathize\).*needs a 'check'"):
        load_rubric_file(_write(tmp_path, data))


def test_unreadable_and_non_yaml_files(tmp_path):
    with pytest.raises(RubricError, match="cannot read rubric"):
        load_rubric_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [unclosed", encoding="utf-8")
    with pytest.raises(RubricError, match="bad.yaml: not valid YAML"):
        load_rubric_file(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(RubricError, match="expected a mapping"):
        load_rubric_file(listing)


def test_names_resolve_to_the_rubrics_folder():
    assert rubric_path("deescalation") == DEFAULT_DIR / "deescalation.yaml"


# -- references are ids inside the rubrics folder (issue 11, finding 1) ---------------------------

NOT_IDS = ["/dev/zero", "/etc/passwd", "../rubrics/deescalation", "rubrics/deescalation", "deescalation.yaml", "..",
           ".", "", "Deescalation", "de escalation", "deescalation\n", "de\\escalation", "~/x", "C:x"]  # fmt: skip


def refuse_file_access(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"touched the file system: {self}")

    for name in ("read_text", "read_bytes", "open", "stat", "exists", "is_file", "is_dir"):
        monkeypatch.setattr(Path, name, refuse)


@pytest.mark.parametrize("reference", NOT_IDS)
def test_a_rubric_is_named_by_id_only_and_nothing_else_is_opened(reference, monkeypatch):
    with monkeypatch.context() as patched:
        refuse_file_access(patched)
        with pytest.raises(RubricError, match=r"is not a rubric id"):
            load_rubric(reference)
        with pytest.raises(RubricError, match=r"is not a rubric id"):
            rubric_path(reference)


def test_a_bare_id_is_not_looked_up_in_the_working_directory(tmp_path, monkeypatch):
    data = _raw() | {"id": "mine"}
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "mine.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RubricError, match=r"no rubric 'mine' in the rubrics folder \(known: deescalation\)"):
        load_rubric("mine")
    monkeypatch.setenv("DEESCALATE_RUBRICS_DIR", str(tmp_path / "rubrics"))
    assert load_rubric("mine").id == "mine"


def test_the_command_line_loads_a_rubric_file_explicitly(tmp_path):
    from agent.rubrics import load_rubric_argument

    path = _write(tmp_path, _raw() | {"id": "mine"})
    assert load_rubric_file(path).id == "mine"
    assert load_rubric_argument(str(path)).id == "mine"
    assert load_rubric_argument("deescalation").id == "deescalation"
    with pytest.raises(RubricError, match="cannot read rubric"):
        load_rubric_argument(str(tmp_path / "missing.yaml"))


def test_a_key_given_twice_is_an_error_naming_it(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text((DEFAULT_DIR / "deescalation.yaml").read_text(encoding="utf-8") + "title: Again\n")
    with pytest.raises(RubricError, match=r"twice\.yaml: not valid YAML at line \d+: duplicate key 'title'"):
        load_rubric_file(path)


def test_a_yaml_error_is_one_line_and_quotes_no_lines_of_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nsteps: [unclosed\nsecret: hunter2\n", encoding="utf-8")
    with pytest.raises(RubricError) as error:
        load_rubric_file(bad)
    message = str(error.value)
    assert "\n" not in message and "hunter2" not in message and "unclosed" not in message
    assert message.startswith(f"{bad}: not valid YAML at line ")
