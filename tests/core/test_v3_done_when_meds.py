"""Issue 8 "done when", medication side: the card v3 requires and no unsafe one-click order.

1. A patient on U-500 with recent hypoglycaemia (glucose 1.9 mmol/L last week) gets
   ``hypoglycaemia-deescalation`` and no one-click pioglitazone or metformin.
2. A patient whose metformin is known only as the ingredient of a referenced Medication with a local
   product code gets ``metformin-renal`` at eGFR 22, and no one-click "start metformin" at eGFR 80.

The whole engine runs on real CDS Hooks requests; the response cards are inspected as the EHR sees them.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import (
    ALT,
    BMI,
    EGFR,
    GLUCOSE,
    HBA1C,
    ICD10CM,
    RXNORM,
    WEIGHT,
    cond,
    dosage,
    medreq,
    obs,
    request,
)

LOCAL = "http://hospital.example.org/fhir/CodeSystem/local-formulary"


def _one_click_orders(cards: list[Any]) -> list[str]:
    """Text of every MedicationRequest a suggestion would create (a one-click drug order)."""
    found = []
    for card in cards:
        for suggestion in card.suggestions or []:
            for action in suggestion.actions or []:
                resource = action.resource if isinstance(action.resource, dict) else None
                if action.type == "create" and resource and resource.get("resourceType") == "MedicationRequest":
                    found.append(str(resource.get("medicationCodeableConcept")))
    return found


def _rule_ids(cards: list[Any]) -> dict[str, str]:
    return {card.source.topic.code: card.indicator for card in cards}


def _sir_diabetes_base() -> list[dict[str, Any]]:
    """Lean adult with type A insulin resistance (SIR-spectrum) and type 2 diabetes, recent normal ALT."""
    return [
        cond(None, text="Type A insulin resistance"),
        cond("E11.9", ICD10CM, display="Type 2 diabetes mellitus without complications"),
        obs(BMI, 24, "kg/m2", 20),
        obs(WEIGHT, 70, "kg", 20),
        obs(HBA1C, 9.1, "%", 20),
        obs(ALT, 25, "U/L", 20),
    ]


# --- 1. U-500 with recent hypoglycaemia ------------------------------------------------------------------


def _u500_hypo(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *_sir_diabetes_base(),
        obs(EGFR, 80, "mL/min/{1.73_m2}", 20),
        medreq("1731317", display="Humulin R U-500 KwikPen", dosages=[dosage(100, timing_code="TID")], days_ago=200),
        obs(GLUCOSE, 1.9, "mmol/L", 7),
        *extra,
    ]


def test_u500_with_glucose_1_9_last_week_gets_deescalation_on_patient_view(evaluate) -> None:
    result = evaluate(request("patient-view", *_u500_hypo()))
    rules = _rule_ids(result.cards)
    assert rules.get("hypoglycaemia-deescalation") == "warning"
    assert not any("metformin" in order.lower() for order in _one_click_orders(result.cards))
    assert "metformin-start" not in rules
    assert "concentrated-insulin" not in rules
    card = next(c for c in result.cards if c.source.topic.code == "hypoglycaemia-deescalation")
    assert "1.9 mmol/L" in card.summary
    kinds = {(a.type, (a.resource or {}).get("resourceType")) for s in card.suggestions for a in s.actions}
    assert kinds == {("create", "ServiceRequest")}  # urgent review, never a dose change


def test_u500_with_recent_hypoglycaemia_no_one_click_pioglitazone(evaluate) -> None:
    """pioglitazone-consider excludes hypoglycaemia (catalogue v3 change 11)."""
    result = evaluate(request("patient-view", *_u500_hypo()))
    assert "pioglitazone-consider" not in _rule_ids(result.cards)
    assert _one_click_orders(result.cards) == []


@pytest.mark.parametrize(("code", "display"), [
    ("317573", "pioglitazone 15 MG Oral Tablet"),
    ("861007", "metformin hydrochloride 500 MG Oral Tablet"),
])
def test_u500_with_recent_hypoglycaemia_deescalation_on_order_sign(evaluate, code, display) -> None:
    draft = medreq(code, display=display, status="draft", rid="draft-1")
    result = evaluate(request("order-sign", *_u500_hypo(), drafts=[draft]))
    assert _rule_ids(result.cards).get("hypoglycaemia-deescalation") == "warning"
    assert _one_click_orders(result.cards) == []


def test_without_the_hypoglycaemia_no_deescalation(evaluate) -> None:
    """Close miss: the same patient with glucose 4.2 mmol/L last week."""
    resources = [r for r in _u500_hypo() if not (r["resourceType"] == "Observation"
                                                  and r["code"]["coding"][0]["code"] == GLUCOSE)]
    resources.append(obs(GLUCOSE, 4.2, "mmol/L", 7))
    result = evaluate(request("patient-view", *resources))
    assert "hypoglycaemia-deescalation" not in _rule_ids(result.cards)


# --- 2. metformin known only by ingredient -------------------------------------------------------------------


def _ingredient_only_metformin(status: str = "active", rid: str = "mr-metformin") -> list[dict[str, Any]]:
    medication = {
        "resourceType": "Medication",
        "id": "local-mf-850",
        "code": {"coding": [{"system": LOCAL, "code": "MF-850-TAB"}]},
        "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "6809"}]}}],
    }
    return [medication, medreq(None, medication_reference="Medication/local-mf-850", status=status, rid=rid,
                               dosages=[dosage(850, "mg", timing_code="BID")])]


def test_ingredient_only_metformin_at_egfr_22_gets_metformin_renal(evaluate) -> None:
    result = evaluate(request("patient-view", *_sir_diabetes_base(), obs(EGFR, 22, "mL/min/{1.73_m2}", 15),
                              *_ingredient_only_metformin()))
    rules = _rule_ids(result.cards)
    assert rules.get("metformin-renal") == "warning"
    card = next(c for c in result.cards if c.source.topic.code == "metformin-renal")
    updates = [a for s in card.suggestions for a in s.actions if a.type == "update"]
    assert updates and updates[0].resource["status"] == "stopped"
    assert updates[0].resource["id"] == "mr-metformin"
    assert "metformin-start" not in rules


def test_drafted_ingredient_only_metformin_at_egfr_22_is_critical_with_delete(evaluate) -> None:
    medication, draft = _ingredient_only_metformin(status="draft", rid="draft-mf")
    payload = request("order-sign", *_sir_diabetes_base(), obs(EGFR, 22, "mL/min/{1.73_m2}", 15), medication,
                      drafts=[draft])
    result = evaluate(payload)
    assert _rule_ids(result.cards).get("metformin-renal") == "critical"
    card = next(c for c in result.cards if c.source.topic.code == "metformin-renal")
    deletes = [a for s in card.suggestions for a in s.actions if a.type == "delete"]
    assert deletes and deletes[0].resourceId == "MedicationRequest/draft-mf"


def test_ingredient_only_metformin_at_egfr_80_no_one_click_start(evaluate) -> None:
    result = evaluate(request("patient-view", *_sir_diabetes_base(), obs(EGFR, 80, "mL/min/{1.73_m2}", 15),
                              *_ingredient_only_metformin()))
    rules = _rule_ids(result.cards)
    assert "metformin-start" not in rules
    assert not any("metformin" in order.lower() or "861007" in order for order in _one_click_orders(result.cards))


def test_control_without_metformin_at_egfr_80_does_offer_the_start(evaluate) -> None:
    """The control shows the test above could fail: without the metformin the start card fires."""
    result = evaluate(request("patient-view", *_sir_diabetes_base(), obs(EGFR, 80, "mL/min/{1.73_m2}", 15)))
    assert "metformin-start" in _rule_ids(result.cards)
    assert any("861007" in order for order in _one_click_orders(result.cards))


