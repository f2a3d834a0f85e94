"""Persona files: the shipped personas load, bad files fail with one clear line, the CLI works."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from agent.cli import main
from agent.personas import (
    SEEDS_DIR,
    PersonaError,
    load_persona,
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
        load_persona(path)
    problems = raised.value.problems
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line
    assert line.startswith(f"{path}:{expected['line']}: {expected['field']}"), line


def test_yaml_error_reports_the_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("id: x\nname: [unclosed\nage: 3\n")
    with pytest.raises(PersonaError, match=r"x\.yaml:\d+: \(yaml\): not valid YAML"):
        load_persona(path)


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
