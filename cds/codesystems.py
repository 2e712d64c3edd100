"""The project's own code systems (URIs), defined once.

Card ``source.topic`` codes are our rule ids; override reasons offered on cards use our own small
code system unless a rule names another. EHR analytics and feedback join on these URIs, so they
must never drift between modules.
"""

from __future__ import annotations

__all__ = ["OVERRIDE_REASON_SYSTEM", "RULE_SYSTEM"]

RULE_SYSTEM = "https://sir-cds.org/fhir/CodeSystem/rule"
OVERRIDE_REASON_SYSTEM = "https://sir-cds.org/fhir/CodeSystem/override-reason"
