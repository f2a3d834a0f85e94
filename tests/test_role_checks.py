"""The benches' own reading of a patient line (tests/role_checks.py), where it can go wrong."""

from tests import role_checks


def test_thanks_for_an_offer_never_made_counts():
    assert role_checks.unearned_acceptance("Thank you for the make-up session.", []) is not None
    assert role_checks.unearned_acceptance("Thanks so much for the refund.", ["I'll call you at four."]) is not None


def test_thanks_then_a_complaint_is_not_thanks_for_what_the_complaint_names():
    # Seen in bench/patient_role.py (Mrs. Lopez): the patient thanks for the promise to check and
    # says she is still waiting; "for an answer" belongs to the waiting, not to the thanks.
    line = "Thank you, but I'm still waiting for an answer."
    offer = "I'll check with our pediatric therapist whether we treat that."
    assert role_checks.unearned_acceptance(line, [offer]) is None
