"""Persona files: the shipped personas load, bad files fail with one clear line, the CLI works."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from agent import mood as mood_rules
from agent.cli import main
from agent.patient import Context, problem, quantities
from agent.personas import (
    SEEDS_DIR,
    PersonaError,
    lint,
    lint_text,
    load_persona,
    load_persona_file,
    load_personas,
    parse_persona,
    persona_files,
    personas_dir,
    schema_text,
)

BAD_DIR = Path(__file__).parent / "data" / "bad_personas"
BAD_FILES = sorted(BAD_DIR.glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (?P<field>\S+(?: level\))?) line=(?P<line>\d+)")

# The scenarios the seeds describe (issue 3); each must exist and cite its seed.
REQUIRED = {
    "carter-wrong-day": "004_54c74b88a13cd7e8.txt",
    "lopez-deployed-hinge": "004_54c74b88a13cd7e8.txt",
    "finance-wrong-department": "004_54c74b88a13cd7e8.txt",
    "facebook-review": "004_54c74b88a13cd7e8.txt",
    "online-irate-patient": "000_d9a981906783eefd.txt",
    "multiple-complaints": "001_df2d76a94ebfedee.txt",
    "abusive-caller": "002_990c0a021fc758d5.txt",
    "back-pain-wait": "003_b1a4d77d6ffdbf07.txt",
}


def test_shipped_personas_load():
    personas = load_personas()
    ids = [p.id for p in personas]
    assert len(ids) >= 8 and len(set(ids)) == len(ids)
    for persona_id, seed in REQUIRED.items():
        assert persona_id in ids
        assert seed in load_persona(persona_id).sources
    assert {p.channel for p in personas} == {"front_desk", "phone", "chat", "public_post"}


def test_every_persona_cites_existing_seeds_and_points_editors_at_the_schema():
    for path in persona_files():
        assert path.read_text().startswith("# yaml-language-server: $schema=persona.schema.json\n"), path
    if SEEDS_DIR.is_dir():
        for persona in load_personas():
            assert all((SEEDS_DIR / s).is_file() for s in persona.sources), persona.id


def test_every_persona_has_scripts_and_fallbacks():
    for persona in load_personas():
        assert len(persona.script.good) >= 6, persona.id
        assert persona.fallback_lines, persona.id
        assert persona.triggers.calm and persona.triggers.escalate, persona.id


def test_every_persona_has_its_own_bad_script_and_the_lint_passes(capsys):
    """The generic hostile lines are a fallback only; each shipped persona plays its own, and the
    lint (errors and warnings) has nothing to say about the shipped files."""
    for persona in load_personas():
        assert len(persona.script.bad) >= 6, persona.id
        assert lint(persona) == [], persona.id
    assert main(["personas", "lint"]) == 0
    assert capsys.readouterr().out.strip() == f"ok: {len(persona_files())} persona file(s)"


# -- wants: what resolves the patient, what partly helps, what it rejects (issue 20) ----------------


def _seed_text(name: str) -> str:
    return re.sub(r"\s+", " ", (SEEDS_DIR / name).read_text(encoding="utf-8").replace("\u2019", "'")).lower()


def test_every_shipped_persona_has_a_remedy_that_resolves_it_quoted_from_its_seeds():
    """Each persona resolves on at least one remedy whose ``source`` names one of the persona's own
    seeds and quotes it: every quoted passage (split at "...") is in that seed's text."""
    for persona in load_personas():
        assert persona.thresholds.need_met and persona.wants is not None, persona.id
        cited = 0
        for remedy in persona.wants.resolves:
            assert remedy.cues and all(cue.strip() for cue in remedy.cues), (persona.id, remedy.id)
            found = re.search(r"\bseed (\d{3})\b", remedy.source or "")
            if not found:
                continue
            seeds = [s for s in persona.sources if s.startswith(found[1] + "_")]
            assert seeds, f"{persona.id}.{remedy.id}: seed {found[1]} is not in the persona's sources"
            quotes = re.findall(r'"([^"]+)"', remedy.source or "")
            assert quotes, f"{persona.id}.{remedy.id}: quote the seed passage"
            if SEEDS_DIR.is_dir():
                text = _seed_text(seeds[0])
                for quote in quotes:
                    for part in filter(None, (p.strip().lower() for p in quote.split("..."))):
                        assert part in text, f"{persona.id}.{remedy.id}: {part!r} is not in {seeds[0]}"
            cited += 1
        assert cited >= 1, f"{persona.id}: no wants.resolves remedy cites a seed"


def test_every_good_script_restates_a_fact_and_offers_a_remedy_that_resolves():
    """The good trainee says something about the complaint (a word of a fact that is not a stop word
    appears in a good line) and carries a cue of a ``resolves`` remedy; the bad one carries no such cue."""
    for persona in load_personas():
        good = " ".join(persona.fill(line) for line in persona.script.good).lower()
        bad = " ".join(persona.fill(line) for line in persona.script.bad).lower()
        cues = [cue.lower() for remedy in persona.wants.resolves for cue in remedy.cues]
        assert any(cue in good for cue in cues), persona.id
        assert not any(re.search(rf"\b{re.escape(cue)}\b", bad) for cue in cues), persona.id
        fact_words = {w for fact in persona.facts for w in re.findall(r"[a-z]{4,}", fact.lower())} - COMMON
        assert fact_words & set(re.findall(r"[a-z]{4,}", good)), persona.id


COMMON = {
    "with",
    "that",
    "have",
    "been",
    "they",
    "this",
    "from",
    "about",
    "your",
    "what",
    "when",
    "will",
    "there",
    "their",
    "here",
    "than",
    "them",
    "then",
}


def _without_wants(text: str) -> str:
    return re.sub(r"\nwants:\n(?:  .*\n)+", "\n", text)


def test_a_persona_without_wants_fails_closed_naming_the_file_and_field(tmp_path):
    text = _without_wants((personas_dir() / "carter-wrong-day.yaml").read_text(encoding="utf-8"))
    assert "wants:" not in text
    path = tmp_path / "carter-wrong-day.yaml"
    path.write_text(text)
    with pytest.raises(PersonaError) as raised:
        load_persona_file(path)
    assert raised.value.problems == [
        f"{path}:2: wants: missing; thresholds.need_met needs it (or set thresholds.need_met: false)"
    ]
    # A trainer who opts out of need-based resolution may leave it out.
    path.write_text(text.replace("thresholds:\n", "thresholds:\n  need_met: false\n"))
    assert load_persona_file(path).wants is None


def test_duplicate_remedy_ids_name_the_field_path_and_the_line_of_the_duplicate():
    text = (personas_dir() / "carter-wrong-day.yaml").read_text(encoding="utf-8")
    text = text.replace("id: call_back_confirm", "id: same_day_slot")
    with pytest.raises(PersonaError) as raised:
        parse_persona(text, "persona.yaml")
    line = text.splitlines().index("    - id: same_day_slot", 40) + 1
    assert raised.value.problems == [
        f"persona.yaml:{line}: wants.partly[1].id: 'same_day_slot' is used twice; remedy ids must be unique"
    ]


@pytest.mark.parametrize("cue", ['""', '"   "', "null", "[today]"])
def test_remedy_cues_are_non_empty_strings(cue):
    text = (personas_dir() / "carter-wrong-day.yaml").read_text(encoding="utf-8")
    text = text.replace("cues: [call you back, call you before, ring you]", f"cues: [call you back, {cue}]")
    with pytest.raises(PersonaError, match=r"persona\.yaml:\d+: wants\.partly\[1\]\.cues"):
        parse_persona(text, "persona.yaml")


def test_lint_fails_a_persona_without_its_own_good_script_and_warns_on_vague_remedies(tmp_path, capsys):
    text = (personas_dir() / "carter-wrong-day.yaml").read_text(encoding="utf-8")
    text = text.replace("says: a call back at a stated time to confirm what the clinic can do", "says: sort it out")
    text = text[: text.index("script:")]
    line = text.splitlines().index("      says: sort it out") + 1
    errors, warnings = lint_text(text, "persona.yaml")
    assert len(errors) == 1 and re.match(r"persona\.yaml:\d+: script\.good: missing; ", errors[0])
    assert any(
        re.match(rf"persona\.yaml:{line}: warning: wants\.partly\[1\]\.says: vague \('sort it out'\)", w)
        for w in warnings
    )
    assert any(": warning: script.bad: missing" in w for w in warnings)
    path = tmp_path / "carter-wrong-day.yaml"
    path.write_text(text)
    assert main(["personas", "lint", str(path)]) == 1
    out = capsys.readouterr().out
    assert "script.good: missing" in out and "vague ('sort it out')" in out


def lint_warnings_with(persona_id: str, old: str, new: str) -> tuple[list[str], list[str]]:
    """The lint's warnings on a shipped persona file, and on the same file with ``old`` replaced by ``new``."""
    name = f"{persona_id}.yaml"
    text = (personas_dir() / name).read_text(encoding="utf-8")
    changed = text.replace(old, new, 1)
    assert changed != text, f"{old!r} is not in {name}"
    return lint_text(text, name)[1], lint_text(changed, name)[1]


def test_lint_warns_on_a_cue_a_formula_trainee_names():
    # "first available slot" as a cue of Mr. Carter's same-day slot: the formula trainee's "I will book you
    # the first available slot" would meet his need, so a content-free script could resolve him.
    shipped, warnings = lint_warnings_with(
        "carter-wrong-day", "cues: [today, this afternoon,", "cues: [first available slot, today, this afternoon,"
    )
    assert not any("formula trainee" in w for w in shipped)
    assert any(
        re.match(r"carter-wrong-day\.yaml:\d+: warning: wants\.resolves\[0\]\.cues: the formula trainee 'issue20' "
                 r'meets this need by cue "first available slot"', w)
        for w in warnings
    ), warnings  # fmt: skip


def test_lint_is_quiet_on_a_call_back_cue_the_grader_needs_more_than():
    # "phone you" as a cue of Ms. Whitfield's manager call: the formula's "call you back within the hour"
    # names it (the grader's synonyms), but a cue that says only how meets her need only beside a word of
    # what the remedy is (agent.grounding: contact), so the grader does not meet it and the lint is quiet.
    _, warnings = lint_warnings_with("facebook-review", "personally call]", "personally call, phone you]")
    assert not any("formula trainee" in w for w in warnings), warnings


def test_lint_warns_on_a_cue_that_ends_in_a_determiner():
    # "physio this" read as "physio": it named "the physio team" in any sentence about the referral.
    shipped, warnings = lint_warnings_with("abusive-caller", "physio this week,", "physio this,")
    assert not any("ends in" in w for w in shipped)
    assert any(re.search(r"wants\.resolves\[0\]\.cues: 'physio this' ends in 'this'.*the cue is 'physio'", w)
               for w in warnings), warnings  # fmt: skip


def test_lint_warns_when_the_good_script_offers_a_remedy_nothing_in_the_persona_is_about():
    # Mr. Carter came about a wrong booking: a refund in his good script would meet nothing.
    text = (personas_dir() / "carter-wrong-day.yaml").read_text(encoding="utf-8")
    good = load_persona("carter-wrong-day").script.good
    assert not any(w for w in lint_text(text, "carter-wrong-day.yaml")[1] if "script.good[" in w)
    first = good[0].replace('"', '\\"')
    changed = text.replace(first, first + " I'll also refund your parking today.", 1)
    assert changed != text
    _, warnings = lint_text(changed, "carter-wrong-day.yaml")
    assert any(
        re.match(r"carter-wrong-day\.yaml:\d+: warning: script\.good\[0\]: offers 'refund', 'parking', which", w)
        for w in warnings
    ), warnings  # fmt: skip


def test_vague_says_are_remedies_with_fewer_than_two_words_that_name_something():
    from agent.personas import vague

    for says in ["sort it out", "help him", "make things right", "take care of it for her"]:
        assert vague(says), says
    for says in ["a same-day slot this afternoon", "a call back before five", "a nurse checks on him"]:
        assert not vague(says), says


def test_facts_add_no_figure_the_persona_does_not_already_carry():
    """The seeds give scenarios, not figures: every number in ``facts`` is one of the persona's own
    (opening line, situation, backstory), so the filter's list adds no clinic detail of its own."""
    for persona in load_personas():
        own = quantities(" ".join([persona.opening_line, persona.situation, persona.backstory]))
        for fact in persona.facts:
            assert quantities(fact) <= own, f"{persona.id}: {fact!r} has a figure the persona does not carry"
        assert persona.facts, f"{persona.id}: no facts for the filter to check numbers against"


def test_fallback_lines_pass_the_patient_filter_and_are_several():
    """A fallback line is shown when the model fails the filter twice, so it must pass it itself,
    and there are enough of them not to repeat one in a short session."""
    for persona in load_personas():
        assert len(set(persona.fallback_lines)) >= 4, persona.id
        context = Context(persona=persona, mood=mood_rules.initial(persona))
        for line in persona.fallback_lines:
            assert problem(line, context, first=True) is None, f"{persona.id}: {line!r}"


def test_committed_schema_is_up_to_date():
    committed = (personas_dir() / "persona.schema.json").read_text()
    assert committed == schema_text(), "run `python -m agent personas schema --write`"
    schema = json.loads(committed)
    assert {"id", "name", "channel", "anger", "trust", "triggers", "sources"} <= set(schema["required"])


def test_twenty_or_more_bad_files_are_covered():
    assert len(BAD_FILES) >= 20


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_persona_gives_one_line_naming_file_field_and_line(path):
    expected = EXPECT.match(path.read_text().splitlines()[0])
    assert expected, f"{path.name} needs an '# expect: FIELD line=N' header"
    with pytest.raises(PersonaError) as raised:
        load_persona_file(path)
    problems = raised.value.problems
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line
    assert line.startswith(f"{path}:{expected['line']}: {expected['field']}"), line


def test_yaml_error_reports_the_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("id: x\nname: [unclosed\nage: 3\n")
    with pytest.raises(PersonaError, match=r"x\.yaml:\d+: \(yaml\): not valid YAML"):
        load_persona_file(path)


def test_bad_file_in_a_directory_loads_nothing(tmp_path):
    shutil.copy(personas_dir() / "carter-wrong-day.yaml", tmp_path)
    shutil.copy(BAD_DIR / "anger-eleven.yaml", tmp_path)
    with pytest.raises(PersonaError) as raised:
        load_personas(tmp_path)
    assert len(raised.value.problems) == 1 and "anger-eleven.yaml" in raised.value.problems[0]


def test_id_must_match_file_name_and_be_unique(tmp_path):
    text = (personas_dir() / "carter-wrong-day.yaml").read_text()
    (tmp_path / "carter-wrong-day.yaml").write_text(text)
    (tmp_path / "copy.yml").write_text(text.replace("id: carter-wrong-day", "id: copy"))
    assert len(load_personas(tmp_path)) == 2
    (tmp_path / "copy.yml").write_text(text)
    with pytest.raises(PersonaError, match="must match the file name"):
        load_personas(tmp_path)
    (tmp_path / "copy.yml").unlink()
    (tmp_path / "carter-wrong-day.yml").write_text(text)
    with pytest.raises(PersonaError, match="duplicate persona id 'carter-wrong-day'"):
        load_personas(tmp_path)


def test_unknown_persona_lists_known_ones():
    with pytest.raises(PersonaError, match="known: .*carter-wrong-day"):
        load_persona("nobody")


def test_step_triggers_are_checked_against_the_rubric():
    text = (personas_dir() / "carter-wrong-day.yaml").read_text().replace("step: summarize", "step: summarise")
    with pytest.raises(PersonaError, match=r"triggers\.calm\[3\]\.step: unknown step 'summarise'"):
        parse_persona(text, "edited.yaml")


def test_fill_uses_the_persona_names():
    carter = load_persona("carter-wrong-day")
    assert carter.fill("Hello {address} ({first_name} / {name})") == "Hello Mr. Carter (John / John Carter)"


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_list_json(capsys):
    assert main(["personas", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 8
    assert all({"id", "name", "channel"} <= set(row) for row in rows)


def test_cli_list_text(capsys):
    assert main(["personas", "list"]) == 0
    assert "carter-wrong-day" in capsys.readouterr().out


def test_cli_lint_ok_and_bad(capsys):
    assert main(["personas", "lint"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert main(["personas", "lint", str(BAD_DIR / "unknown-step-calm.yaml")]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "triggers.calm[0].step" in out[0]
    assert main(["personas", "lint", str(BAD_DIR)]) == 1
    assert len(capsys.readouterr().out.strip().splitlines()) == len(BAD_FILES)


def test_cli_schema_is_json(capsys):
    assert main(["personas", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "deescalate persona"


# -- references are ids inside their folders (issue 11, finding 1) --------------------------------

CARTER = personas_dir() / "carter-wrong-day.yaml"
NOT_IDS = ["/dev/zero", "/etc/passwd", "../personas/carter-wrong-day", "personas/carter-wrong-day",
           "carter-wrong-day.yaml", "..", "", "Carter", "carter wrong day", "carter-wrong-day\n", "~/x"]  # fmt: skip


def refuse_file_access(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"touched the file system: {self}")

    for name in ("read_text", "read_bytes", "open", "stat", "exists", "is_file", "is_dir"):
        monkeypatch.setattr(Path, name, refuse)


@pytest.mark.parametrize("reference", ["/dev/zero", "../rubrics/deescalation", "rubrics/deescalation.yaml",
                                       "deescalation.yaml", "/etc/passwd", "Deescalation"])  # fmt: skip
def test_the_rubric_a_persona_names_is_an_id_and_a_path_fails_before_any_file_is_read(reference, monkeypatch):
    text = CARTER.read_text(encoding="utf-8") + f"rubric: {json.dumps(reference)}\n"
    line = len(text.splitlines())
    with monkeypatch.context() as patched:
        refuse_file_access(patched)
        with pytest.raises(PersonaError) as raised:
            parse_persona(text, "persona.yaml")
    assert raised.value.problems == [
        f"persona.yaml:{line}: rubric: {reference!r} is not a rubric id "
        "(lowercase letters, digits, - and _, starting with a letter, e.g. deescalation)"
    ]


def test_an_unknown_rubric_id_is_named_without_a_server_path():
    text = CARTER.read_text(encoding="utf-8") + "rubric: nonesuch\n"
    with pytest.raises(PersonaError, match=r"^persona\.yaml:\d+: rubric: no rubric 'nonesuch' in the rubrics folder"):
        parse_persona(text, "persona.yaml")


@pytest.mark.parametrize("reference", NOT_IDS)
def test_a_persona_is_loaded_by_id_only_and_nothing_else_is_opened(reference, monkeypatch):
    from agent.personas import persona_path

    with monkeypatch.context() as patched:
        refuse_file_access(patched)
        with pytest.raises(PersonaError, match="is not a persona id"):
            load_persona(reference)
        with pytest.raises(PersonaError, match="is not a persona id"):
            persona_path(reference)


def test_a_bare_persona_id_is_not_looked_up_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "carter-wrong-day").write_text("not: a persona\n")
    monkeypatch.chdir(tmp_path)
    assert load_persona("carter-wrong-day").name == "John Carter"


def test_the_command_line_loads_a_persona_file_explicitly(tmp_path):
    from agent.personas import load_persona_argument

    path = tmp_path / "elsewhere" / "carter-wrong-day.yaml"
    path.parent.mkdir()
    path.write_text(CARTER.read_text(encoding="utf-8").replace("name: John Carter", "name: Jon Carter"))
    assert load_persona_file(path).name == "Jon Carter"
    assert load_persona_argument(str(path)).name == "Jon Carter"
    assert load_persona_argument("carter-wrong-day").name == "John Carter"
    with pytest.raises(PersonaError, match="cannot read persona"):
        load_persona_argument(str(tmp_path / "missing.yaml"))


# -- duplicate keys and setting the id (issue 11, finding 9) -----------------------------------------


def test_a_field_given_twice_is_one_error_naming_it():
    text = CARTER.read_text(encoding="utf-8") + "name: Someone Else\n"
    with pytest.raises(PersonaError) as raised:
        parse_persona(text, "persona.yaml")
    line = len(text.splitlines())
    expected = f"persona.yaml:{line}: name: duplicate key (first at line 3); give each field once"
    assert raised.value.problems == [expected]


def test_a_duplicate_key_inside_a_section_is_an_error_too():
    text = CARTER.read_text(encoding="utf-8") + "dynamics:\n  ignored_anger: 1\n  ignored_anger: 0\n"
    with pytest.raises(PersonaError, match=r"persona\.yaml:\d+: ignored_anger: duplicate key"):
        parse_persona(text, "persona.yaml")


def _top_level_keys(text: str) -> list[str]:
    import yaml

    return [key.value for key, _ in yaml.compose(text).value]


@pytest.mark.parametrize(
    "spelling",
    ["id : carter-wrong-day", '"id": carter-wrong-day', "'id' :   carter-wrong-day   # the file name",
     'id: "carter-wrong-day"', "id:", "id: ~", "id: |\n  carter-wrong-day", "? id\n: carter-wrong-day",
     "id: [carter, wrong]", "id:\n  nested: carter"],
)  # fmt: skip
def test_with_id_replaces_any_spelling_of_the_top_level_id(spelling):
    from agent.personas import with_id

    text = CARTER.read_text(encoding="utf-8").replace("id: carter-wrong-day", spelling)
    result = with_id(text, "carter-copy", "carter-copy.yaml")
    assert _top_level_keys(result).count("id") == 1
    assert result.startswith("# yaml-language-server: $schema=persona.schema.json\n")
    persona = parse_persona(result, "carter-copy.yaml")
    assert persona.id == "carter-copy"
    assert persona.model_dump(exclude={"id"}) == load_persona("carter-wrong-day").model_dump(exclude={"id"})


def test_with_id_adds_an_id_where_there_is_none_and_keeps_the_rest():
    from agent.personas import with_id

    text = CARTER.read_text(encoding="utf-8").replace("id: carter-wrong-day\n", "")
    result = with_id(text, "carter-copy", "carter-copy.yaml")
    assert parse_persona(result, "carter-copy.yaml").id == "carter-copy"
    assert result.replace("id: carter-copy\n", "") == text
    assert with_id("", "x", "x.yaml") == "id: x\n"
    assert with_id("# just a comment", "x", "x.yaml") == "# just a comment\nid: x\n"
    assert with_id("{name: A}", "x", "x.yaml").startswith("{id: x, ")


def test_with_id_rejects_a_second_id_bad_yaml_and_a_bad_id():
    from agent.personas import with_id

    text = CARTER.read_text(encoding="utf-8")
    twice = text + "id : carter-again\n"
    with pytest.raises(PersonaError, match=r"^copy\.yaml:\d+: id: duplicate key \(first at line 2\)"):
        with_id(twice, "copy", "copy.yaml")
    with pytest.raises(PersonaError, match=r"copy\.yaml:\d+: \(yaml\): not valid YAML"):
        with_id("name: [unclosed\n", "copy", "copy.yaml")
    with pytest.raises(PersonaError, match=r"copy\.yaml:1: \(top level\): expected a mapping"):
        with_id("- a\n- b\n", "copy", "copy.yaml")
    with pytest.raises(PersonaError, match=r"copy\.yaml: id: '\.\./x' is not a persona id"):
        with_id(text, "../x", "copy.yaml")


def test_lint_warns_when_the_good_script_offers_only_a_time_of_the_remedy():
    # Mr. Carter's good script without its real offer: "I'll sort it all out for you today" names the cue
    # "today" of his same-day slot, but says nothing of what it is, so the grader meets no need with it.
    text = (personas_dir() / "carter-wrong-day.yaml").read_text(encoding="utf-8")
    good = load_persona("carter-wrong-day").script.good
    assert not any("script.good: no line" in w for w in lint_text(text, "carter-wrong-day.yaml")[1])
    changed = text
    for line in good[3:]:
        changed = changed.replace(line.replace("Mr. Carter", "{address}"), "I'll sort it all out for you today.", 1)
    assert changed != text
    _, warnings = lint_text(changed, "carter-wrong-day.yaml")
    assert any("script.good: no line offers a wants.resolves remedy" in w for w in warnings), warnings
