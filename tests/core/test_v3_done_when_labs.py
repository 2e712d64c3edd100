"""Issue 8 "done when" (lab side): the cards catalogue v3 requires, and no unsafe one-click order.

1. An unreadable eGFR with a drafted metformin: ``safety-data-needed`` at warning naming the
   unreadable value (never "No eGFR on record"), and no one-click metformin order anywhere.
2. Pregnant by a pregnancy-status Observation (LOINC 82810-3) with a drafted pioglitazone:
   ``pioglitazone-safety`` pregnancy warning, and no one-click pioglitazone or metformin suggestion
   (on the order hook, nor on patient-view where the start/consider rules would otherwise offer them).

Real engine, real rulesets, real CDS Hooks requests (conftest builders); no mocks.
"""

from __future__ import annotations

from typing import Any


from .conftest import ALT, EGFR, HBA1C, LOINC, agree, bundle, cond, medreq, obs, patient, request, text_obs

METFORMIN_SCD = "861007"
PIOGLITAZONE_SCD = "317573"  # pioglitazone 15 MG Oral Tablet
DRUG_WORDS = ("metformin", "pioglitazone", "861007", "317573", "6809", "33738")


def _cards(evaluation) -> list[Any]:
    return list(evaluation.response.cards)


def _drug_orders(evaluation) -> list[str]:
    """Every suggestion that would create a MedicationRequest for metformin or pioglitazone."""
    found = []
    for card in _cards(evaluation):
        for suggestion in card.suggestions or []:
            for action in suggestion.actions or []:
                resource = action.resource if isinstance(action.resource, dict) else (
                    action.resource.model_dump() if action.resource is not None else {})
                if action.type == "create" and resource.get("resourceType") == "MedicationRequest":
                    text = str(resource.get("medicationCodeableConcept", "")).lower()
                    if any(word in text for word in DRUG_WORDS):
                        found.append(f"{card.source.topic.code}: {suggestion.label}")
    return found


def _by_rule(evaluation) -> dict[str, Any]:
    return {card.source.topic.code: card for card in _cards(evaluation)}


def _sir_diabetes() -> list[dict[str, Any]]:
    """Partial lipodystrophy with type 2 diabetes and a normal ALT: metformin-start and
    pioglitazone-consider would both be met but for what each test below adds."""
    return [
        cond(None, text="Familial partial lipodystrophy (Dunnigan)"),
        cond("E11.9", "http://hl7.org/fhir/sid/icd-10-cm"),
        obs(HBA1C, 8.1, "%", 20),
        obs(ALT, 25, "U/L", 20),
    ]


def _unreadable_egfr() -> dict[str, Any]:
    o = text_obs(EGFR, "see report", 0, rid="egfr-see-report")
    o["effectiveDateTime"] = "2026-10-01T08:00:00Z"
    return o


def test_unreadable_egfr_with_drafted_metformin_gets_a_named_warning_and_no_order(engine) -> None:
    draft = medreq(METFORMIN_SCD, status="draft", rid="draft-metformin",
                   display="metformin hydrochloride 500 MG Oral Tablet")
    for hook in ("order-select", "order-sign"):
        evaluation = engine.evaluate(request(hook, _unreadable_egfr(), *_sir_diabetes(), drafts=[draft]),
                                     now="2026-11-01T09:00:00Z")
        cards = _by_rule(evaluation)
        assert "safety-data-needed" in cards, sorted(cards)
        card = cards["safety-data-needed"]
        assert card.indicator == "warning"
        assert "eGFR of 2026-10-01 could not be read ('see report')" in card.summary
        assert "eGFR needed for metformin safety" in card.summary
        assert "No eGFR on record" not in card.summary and "no eGFR" not in card.detail
        assert "eGFR of 2026-10-01 could not be read" in card.detail  # named by date (issue 12), no resource id
        assert "Observation/" not in card.detail
        assert "metformin-renal" not in cards  # nothing decides the band: the safety card speaks instead
        assert _drug_orders(evaluation) == []
        agree(engine, evaluation)


def test_unreadable_egfr_on_patient_view_offers_no_metformin_start(engine) -> None:
    evaluation = engine.evaluate(request("patient-view", _unreadable_egfr(), *_sir_diabetes()),
                                 now="2026-11-01T09:00:00Z")
    cards = _by_rule(evaluation)
    assert "metformin-start" not in cards
    assert cards["safety-data-needed"].indicator == "info"
    assert "eGFR needed before metformin can be considered" in cards["safety-data-needed"].summary
    assert not any("metformin" in o.lower() for o in _drug_orders(evaluation))  # pioglitazone may be offered
    agree(engine, evaluation)


def _pregnancy_status() -> dict[str, Any]:
    o = obs("82810-3", None, None, 30, rid="preg-status", display="Pregnancy status")
    o["valueCodeableConcept"] = {"coding": [{"system": LOINC, "code": "LA15173-0", "display": "Pregnant"}]}
    return o


def test_pregnant_by_status_observation_with_drafted_pioglitazone(engine) -> None:
    draft = medreq(PIOGLITAZONE_SCD, status="draft", rid="draft-pio", display="pioglitazone 15 MG Oral Tablet")
    records = [_pregnancy_status(), *_sir_diabetes(), obs(EGFR, 80, "mL/min/{1.73_m2}", 20)]
    evaluation = engine.evaluate(request("order-sign", *records, drafts=[draft], pt=patient(32)),
                                 now="2026-11-01T09:00:00Z")
    assert evaluation.facts.definitions["def_pregnant"] is True
    cards = _by_rule(evaluation)
    assert "pioglitazone-safety" in cards, sorted(cards)
    card = cards["pioglitazone-safety"]
    assert card.indicator == "warning"
    assert "Pregnancy recorded" in card.summary
    assert "not pregnant" not in " ".join(c.detail + c.summary for c in _cards(evaluation)).lower()
    assert _drug_orders(evaluation) == []
    agree(engine, evaluation)


def test_pregnant_by_status_observation_gets_no_one_click_start_on_patient_view(engine) -> None:
    records = [_pregnancy_status(), *_sir_diabetes(), obs(EGFR, 80, "mL/min/{1.73_m2}", 20)]
    evaluation = engine.evaluate(request("patient-view", *records, pt=patient(32)), now="2026-11-01T09:00:00Z")
    cards = _by_rule(evaluation)
    assert "metformin-start" not in cards and "pioglitazone-consider" not in cards
    assert _drug_orders(evaluation) == []
    # control: the same patient without the pregnancy status is offered both
    control = engine.evaluate(request("patient-view", *records[1:], pt=patient(32)), now="2026-11-01T09:00:00Z")
    assert {"metformin-start", "pioglitazone-consider"} <= set(_by_rule(control))
    assert len(_drug_orders(control)) == 2
    agree(engine, evaluation)


def test_positive_hcg_blocks_the_one_click_starts_too(engine) -> None:
    hcg = obs("2106-3", None, None, 14, rid="hcg")
    hcg["valueString"] = "Positive"
    records = [hcg, *_sir_diabetes(), obs(EGFR, 80, "mL/min/{1.73_m2}", 20)]
    evaluation = engine.evaluate(bundle(*records, pt=patient(29)), now="2026-11-01T09:00:00Z")
    assert _drug_orders(evaluation) == []
