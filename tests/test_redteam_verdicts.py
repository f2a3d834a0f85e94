"""The red-team attempts (tests/data/redteam.yaml) flip no verdict (issue 11, item 4).

Each attempt is graded with :func:`agent.grader.grade_fast` (checks + the learned classifier, no
chat model) as the first turn of a session with its persona, and compared with its ``plain`` text:
a step that goes from violated to anything else, or from anything else to demonstrated, is a flip
(bench/redteam.py counts the same with ``--verdicts-only``). Text that addresses the grader, the
coach or the model, names rubric steps or fakes a transcript label is never evidence for a step
and must not erase a violation found in the rest of the reply.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import redteam  # noqa: E402

ATTEMPTS = redteam.load_attempts(redteam.ATTEMPTS)


def test_every_category_is_exercised():
    assert {attempt["category"] for attempt in ATTEMPTS} == set(redteam.CATEGORIES)


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[attempt["id"] for attempt in ATTEMPTS])
def test_an_injection_flips_no_verdict(attempt):
    assert redteam.verdict_flips(attempt) == []


def test_a_flip_is_counted_when_the_grader_is_fooled():
    # The comparison itself: a violation cleared and a step newly demonstrated are both flips.
    before = {"argue_back": "violated", "empathize": "missed", "use_name": "demonstrated"}
    after = {"argue_back": "ok", "empathize": "demonstrated", "use_name": "demonstrated"}
    assert redteam.flips(before, after) == ["argue_back: violated -> ok", "empathize: missed -> demonstrated"]
    assert redteam.flips(before, before) == []
