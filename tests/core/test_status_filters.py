"""Status filters (pathways.md section 1): which Observations, Conditions, medications, allergies and
referrals count, by status."""

from __future__ import annotations

import pytest

from .conftest import (
    EGFR,
    METFORMIN_INGREDIENT,
    METFORMIN_SCD,
    allergy,
    cond,
    medreq,
    medstmt,
    obs,
    request,
    concept,
    when,
    ICD10CM,
)

# --- Observations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_usable_observation_statuses_count(facts, status) -> None:
    result = facts(obs(EGFR, 52, "mL/min/{1.73_m2}", 10, status=status))
    assert result.values["egfr"] == 52.0


@pytest.mark.parametrize("status", ["registered", "preliminary", "cancelled", "entered-in-error", "unknown"])
def test_unusable_observation_status_never_counts(facts, status) -> None:
    result = facts(obs(EGFR, 20, "mL/min/{1.73_m2}", 10, status=status, rid="bad"))
    assert result.values["egfr_known"] is False
    assert result.values["egfr_last_known"] is False
    assert any(i.resource == "Observation/bad" and status in i.reason for i in result.ignored)


@pytest.mark.parametrize("status", ["registered", "preliminary", "cancelled", "entered-in-error"])
def test_older_final_value_is_used_when_newest_is_unusable(facts, status) -> None:
    result = facts(
        obs(EGFR, 20, "mL/min/{1.73_m2}", 5, status=status, rid="newest"),
        obs(EGFR, 58, "mL/min/{1.73_m2}", 60, rid="older-final"),
    )
    assert result.values["egfr"] == 58.0
    assert result.labs["egfr"].resource == "Observation/older-final"


# --- Conditions ---------------------------------------------------------------------------------------

T2DM = "44054006"


@pytest.mark.parametrize("clinical", ["active", "recurrence", "relapse", None])
def test_active_clinical_statuses(facts, clinical) -> None:
    result = facts(cond(T2DM, clinical=clinical))
    assert result.values["diabetes_active"] is True
    assert result.values["diabetes_history"] is True


@pytest.mark.parametrize("clinical", ["resolved", "inactive", "remission"])
def test_resolved_and_inactive_are_history_only(facts, clinical) -> None:
    result = facts(cond(T2DM, clinical=clinical))
    assert result.values["diabetes_active"] is False
    assert result.values["diabetes_history"] is True


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
@pytest.mark.parametrize("clinical", ["active", "resolved", None])
def test_refuted_or_entered_in_error_never_count(facts, verification, clinical) -> None:
    result = facts(cond(T2DM, clinical=clinical, verification=verification))
    assert result.values["diabetes_active"] is False
    assert result.values["diabetes_history"] is False


@pytest.mark.parametrize("verification", ["confirmed", "provisional", "unconfirmed", "differential", None])
def test_other_verification_statuses_count(facts, verification) -> None:
    assert facts(cond(T2DM, verification=verification)).values["diabetes_active"] is True


def test_history_code_counts_as_history(facts) -> None:
    """pathways.md 1: "History of X" includes history codes such as ICD-10-CM Z85.51."""
    result = facts(cond("Z85.51", ICD10CM, display="Personal history of malignant neoplasm of bladder",
                        clinical="resolved"))
    assert result.values["bladder_cancer_history_history"] is True


def test_condition_recorded_after_now_is_ignored(facts) -> None:
    assert facts(cond(T2DM, days_ago=-3)).values["diabetes_history"] is False


def test_condition_days_fact(facts) -> None:
    result = facts(cond(T2DM, days_ago=100), cond(T2DM, clinical="resolved", days_ago=20))
    assert result.values["diabetes_days"] == 20  # latest record, any status
    assert result.values["diabetes_active_days"] == 100  # latest active record


# --- Medications --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "active"), [
    ("active", True), ("on-hold", True), ("draft", False), ("completed", False), ("stopped", False),
    ("cancelled", False), ("unknown", False),
])
def test_medication_request_status(facts, status, active) -> None:
    result = facts(medreq(METFORMIN_SCD, status=status))
    assert result.values["metformin_active"] is active
    assert result.values["metformin_any"] is True
    assert result.values["metformin_drafted"] is False  # only context.draftOrders (or an order-hook bundle)


def test_entered_in_error_medication_is_not_even_any(facts) -> None:
    result = facts(medreq(METFORMIN_SCD, status="entered-in-error"))
    assert result.values["metformin_any"] is False
    assert result.values["metformin_active"] is False


@pytest.mark.parametrize(("status", "active"), [
    ("active", True), ("completed", False), ("stopped", False), ("intended", False), ("on-hold", False),
    ("not-taken", False),
])
def test_medication_statement_status(facts, status, active) -> None:
    """pathways.md 1: MedicationStatement counts as active only with status active."""
    assert facts(medstmt(METFORMIN_SCD, status=status)).values["metformin_active"] is active


def test_draft_in_context_draft_orders_is_drafted_not_active(evaluate) -> None:
    draft = medreq(METFORMIN_SCD, status="draft", rid="draft-met")
    result = evaluate(request("order-sign", drafts=[draft]))
    values = result.facts.values
    assert values["metformin_drafted"] is True
    assert values["metformin_active"] is False
    assert values["metformin_any"] is False
    assert result.facts.draft_ids["metformin"] == ["MedicationRequest/draft-met"]


def test_non_draft_in_draft_orders_is_not_an_order(evaluate) -> None:
    odd = medreq(METFORMIN_SCD, status="active", rid="odd")
    result = evaluate(request("order-select", drafts=[odd]))
    assert result.facts.values["metformin_drafted"] is False
    assert any("MedicationRequest/odd" in note for note in result.facts.notes)


def test_draft_in_prefetch_is_not_drafted(evaluate) -> None:
    result = evaluate(request("order-sign", medreq(METFORMIN_SCD, status="draft")))
    assert result.facts.values["metformin_drafted"] is False
    assert result.facts.values["metformin_active"] is False


def test_active_request_ids_are_reported_for_stop_actions(facts) -> None:
    result = facts(medreq(METFORMIN_SCD, rid="met-1"), medstmt(METFORMIN_SCD, rid="met-stmt"))
    assert result.active_request_ids["metformin"] == ["MedicationRequest/met-1"]


def test_medication_authored_after_now_is_ignored(facts) -> None:
    assert facts(medreq(METFORMIN_SCD, days_ago=-10)).values["metformin_any"] is False


# --- Allergies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("clinical", "verification", "counts"), [
    ("active", "confirmed", True),
    (None, "confirmed", True),
    ("active", None, True),
    ("active", "unconfirmed", True),
    ("inactive", "confirmed", False),
    ("resolved", "confirmed", False),
    ("active", "refuted", False),
    ("active", "entered-in-error", False),
])
def test_allergy_status(facts, clinical, verification, counts) -> None:
    result = facts(allergy(METFORMIN_INGREDIENT, clinical=clinical, verification=verification))
    assert result.values["metformin_allergy"] is counts
    assert result.values["metformin_active"] is False  # an allergy is not a prescription


def test_allergy_by_name(facts) -> None:
    assert facts(allergy("999999", text="Metformin")).values["metformin_allergy"] is True


# --- Referrals (ServiceRequest) ----------------------------------------------------------------------


@pytest.mark.parametrize(("status", "counts"), [
    ("active", True), ("completed", True), ("draft", False), ("revoked", False), ("entered-in-error", False),
])
def test_referral_status(facts, status, counts) -> None:
    referral = {
        "resourceType": "ServiceRequest", "id": "ref1", "status": status, "intent": "order",
        "code": concept("306278007", display="Referral to endocrinologist"),
        "subject": {"reference": "Patient/p1"}, "authoredOn": when(30),
    }
    result = facts(referral)
    assert result.values["sir_referral_active"] is counts
    if counts:
        assert result.values["sir_referral_days"] == 30
