"""Rule test files (``rules/<rule id>.test.yaml``): format, loading, and conversion to CDS Hooks requests.

One file per rule, beside it, as semgrep keeps ``rule.yaml`` beside ``rule.test.yaml``::

    rule: metformin-renal              # must equal the rule file's id (and the file stem)
    now: 2026-11-01T09:00:00Z          # evaluation time: relative dates count back from it
    defaults:                          # merged into every case (a case's own keys win)
      hook: patient-view
      patient: {age: 54, gender: female, bmi: 24}
      data: [LOINC#98979-8 52 mL/min/{1.73_m2} 2 months ago]
    cases:
      - name: drafted metformin with eGFR 25 is critical
        hook: order-sign
        data:
          - LOINC#98979-8 25 mL/min/{1.73_m2} 1 month ago
          - RXNORM#861007 draft
        expect: fires                  # fires | silent
        indicator: critical            # optional; checked only when given
        suggestions: [delete MedicationRequest]   # optional: exact set of action kinds
        summary_contains: eGFR 25      # optional text checks

Expectations name only what matters; keys not given are not checked (CQL-TF's rule). A case marked
``todo: <reason>`` records a known gap: it is reported, and fails only once it starts passing.
The data lines use the compact notation of :mod:`cds.authoring.notation`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cds.authoring.notation import NotationError, expand_mapping, parse_item, resolve_date
from cds.fhir.dates import parse_now
from cds.rules.yamlsource import LoadedYaml, YamlSyntaxError, load_yaml

if TYPE_CHECKING:
    from cds.rules.model import RuleSet

__all__ = [
    "CaseSpec",
    "PatientSpec",
    "TestCase",
    "TestFile",
    "TestFileError",
    "TestFileSpec",
    "build_request",
    "discover_test_files",
    "load_test_file",
    "test_path_for",
]

TEST_SUFFIX = ".test.yaml"
BODY_CODES = {"bmi": ("LOINC#39156-5", "kg/m2"), "weight": ("LOINC#29463-7", "kg"), "height": ("LOINC#8302-2", "m")}


class TestFileError(ValueError):
    """A test file cannot be used; ``problems`` holds every (line, message) found."""

    __test__ = False  # not a pytest test class

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        self.path, self.problems = path, problems
        super().__init__("\n".join(f"{path}:{line}: {message}" for line, message in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientSpec(_Strict):
    """The patient header. ``bmi``/``weight``/``height`` are shorthands for body-measure Observations."""

    id: str = "test-patient"
    age: float | None = Field(default=None, ge=0, description="years at the evaluation time (birthDate derived)")
    birthDate: str | None = Field(default=None, description="ISO date or relative ('40 years ago')")
    gender: Literal["female", "male", "other", "unknown"] | None = None
    deceased: bool | str | None = Field(default=None, description="true, or a (relative) date of death")
    bmi: float | str | None = Field(default=None, description="22.5 (kg/m2) or '22.5 kg/m2 3 months ago'")
    weight: float | str | None = Field(default=None, description="80 (kg) or '176 [lb_av]'")
    height: float | str | None = Field(default=None, description="1.7 (m) or '170 cm'")


DataItem = str | dict[str, Any]


class CaseSpec(_Strict):
    """One test case: a patient, a hook, and the expected outcome for the rule under test."""

    name: str = Field(min_length=3)
    expect: Literal["fires", "silent"]
    hook: Literal["patient-view", "order-select", "order-sign"] | None = None
    now: str | None = None
    patient: PatientSpec | None = None
    data: list[DataItem] = Field(default_factory=list)
    indicator: Literal["info", "warning", "critical"] | None = None
    suggestions: list[str] | None = Field(default=None, description="action kinds: 'create ServiceRequest', 'delete', ...")
    summary_contains: str | list[str] | None = None
    detail_contains: str | list[str] | None = None
    todo: str | None = Field(default=None, description="known gap: reason; the case may fail without failing the run")
    include_drafts: bool = True

    @field_validator("suggestions")
    @classmethod
    def _kinds(cls, value: list[str] | None) -> list[str] | None:
        for kind in value or []:
            if kind.split(" ")[0] not in ("create", "delete", "update"):
                raise ValueError(f"suggestion kind {kind!r} must start with create, delete or update")
        return value


class DefaultsSpec(_Strict):
    hook: Literal["patient-view", "order-select", "order-sign"] | None = None
    patient: PatientSpec | None = None
    data: list[DataItem] = Field(default_factory=list)


class TestFileSpec(_Strict):
    """A rule's test file (``rules/<id>.test.yaml``)."""

    __test__ = False  # not a pytest test class

    rule: str
    now: str = Field(description="evaluation time (ISO 8601); relative dates count back from it")
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    cases: list[CaseSpec] = Field(min_length=1)


@dataclass
class TestCase:
    """A case ready to run: the CDS Hooks request it becomes, and where it was written."""

    __test__ = False  # not a pytest test class

    rule: str
    spec: CaseSpec
    path: Path
    line: int
    now: datetime
    hook: str
    request: dict[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class TestFile:
    __test__ = False  # not a pytest test class

    path: Path
    spec: TestFileSpec
    cases: list[TestCase] = field(default_factory=list)

    @property
    def rule(self) -> str:
        return self.spec.rule


def test_path_for(rule_path: Path) -> Path:
    """``rules/metformin-renal.yaml`` -> ``rules/metformin-renal.test.yaml``."""
    return rule_path.with_name(rule_path.stem + TEST_SUFFIX)


def discover_test_files(ruleset: RuleSet) -> tuple[list[Path], list[str]]:
    """Test files of the ruleset's rules, and problems: orphan test files (no rule of that id)."""
    rules_dir = ruleset.directory / "rules"
    found = sorted(rules_dir.glob(f"*{TEST_SUFFIX}")) if rules_dir.is_dir() else []
    rule_files = {test_path_for(r.path) for r in ruleset.rules}
    problems = [f"{p}:1: test file has no rule {p.name[:-len(TEST_SUFFIX)]!r} beside it" for p in found
                if p not in rule_files]
    return [p for p in found if p in rule_files], problems


def _patient_resource(spec: PatientSpec, now: datetime) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": spec.id}
    if spec.gender:
        patient["gender"] = spec.gender
    if spec.birthDate is not None:
        patient["birthDate"] = resolve_date(spec.birthDate, now)[:10]
    elif spec.age is not None:
        whole = int(spec.age)
        birth = now.replace(year=now.year - whole) if not (now.month == 2 and now.day == 29) else \
            now.replace(year=now.year - whole, day=28)
        birth -= timedelta(days=round((spec.age - whole) * 365.25))
        patient["birthDate"] = birth.date().isoformat()
    if spec.deceased is True:
        patient["deceasedBoolean"] = True
    elif isinstance(spec.deceased, str):
        patient["deceasedDateTime"] = resolve_date(spec.deceased, now)
    return patient


def _body_lines(spec: PatientSpec) -> list[str]:
    lines = []
    for name, (code, unit) in BODY_CODES.items():
        value = getattr(spec, name)
        if value is None:
            continue
        text = f"{value:g} {unit}" if isinstance(value, (int, float)) else str(value)
        lines.append(f"{code} {text}")
    return lines


def build_request(rule: str, case: CaseSpec, *, hook: str, now: datetime, patient: PatientSpec,
                  data: list[tuple[DataItem, int]], path: Path, patient_line: int = 1) -> dict[str, Any]:
    """Turn a case into a real CDS Hooks request: Patient and records in prefetch, drafts in context.

    On order hooks, drafted orders go to ``context.draftOrders`` (as an EHR sends them) and their ids to
    ``context.selections``; on patient-view they stay in prefetch with status draft.
    """
    problems: list[tuple[int, str]] = []
    patient_resource = _patient_resource(patient, now)
    records: list[dict[str, Any]] = []
    drafts: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    lines = [(body, patient_line) for body in _body_lines(patient)] + data
    for item, line in lines:
        try:
            if isinstance(item, str):
                parsed = parse_item(item, now)
                resource, drafted = parsed.resource, parsed.drafted
            elif isinstance(item, dict) and isinstance(item.get("resourceType"), str):
                resource = expand_mapping(item, now)
                drafted = resource.get("status") == "draft" and resource["resourceType"] in (
                    "MedicationRequest", "ServiceRequest", "DeviceRequest", "SupplyRequest")
            else:
                raise NotationError("a data item is a notation line or a mapping with resourceType")
        except NotationError as exc:
            problems.append((line, str(exc)))
            continue
        rtype = resource["resourceType"]
        counters[rtype] = counters.get(rtype, 0) + 1
        resource.setdefault("id", f"{rtype[0].lower()}{rtype[1:]}-{counters[rtype]}")
        subject_field = "patient" if rtype == "AllergyIntolerance" else "subject"
        if rtype not in ("Medication", "Patient", "SupplyRequest"):  # R4 SupplyRequest has no subject
            resource.setdefault(subject_field, {"reference": f"Patient/{patient.id}"})
        (drafts if drafted and hook != "patient-view" else records).append(resource)
    if problems:
        raise TestFileError(path, problems)
    context: dict[str, Any] = {"userId": "Practitioner/rule-tests", "patientId": patient.id}
    if hook != "patient-view":
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": r} for r in drafts]}
        context["selections"] = [f"{r['resourceType']}/{r['id']}" for r in drafts]
    return {
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"rule-test/{rule}/{case.name}")),
        "hook": hook,
        "context": context,
        "prefetch": {
            "patient": patient_resource,
            "records": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in records]},
        },
    }


def _merge_patient(default: PatientSpec | None, own: PatientSpec | None) -> PatientSpec:
    if default is None:
        return own or PatientSpec()
    if own is None:
        return default
    return PatientSpec.model_validate({**default.model_dump(exclude_unset=True), **own.model_dump(exclude_unset=True)})


def _now(text: str) -> datetime:
    return parse_now(text).astimezone(UTC)


def load_test_file(path: Path) -> TestFile:
    """Read and check a test file; every problem is reported with its line, not just the first."""
    try:
        loaded: LoadedYaml = load_yaml(path)
    except YamlSyntaxError as exc:
        raise TestFileError(path, [(exc.line, exc.message)]) from None
    try:
        spec = TestFileSpec.model_validate(loaded.data or {})
    except ValidationError as exc:
        schema_problems = []
        for error in exc.errors():
            loc = tuple(error.get("loc", ()))
            message = "unknown field" if error.get("type") == "extra_forbidden" else error.get("msg", "invalid")
            schema_problems.append((loaded.line_of(loc), f"{'.'.join(str(p) for p in loc) or '(file)'}: {message}"))
        raise TestFileError(path, schema_problems) from None
    problems: list[tuple[int, str]] = []
    expected_stem = path.name[: -len(TEST_SUFFIX)] if path.name.endswith(TEST_SUFFIX) else path.stem
    if spec.rule != expected_stem:
        problems.append((loaded.line_of(("rule",)), f"rule {spec.rule!r} must equal the file name stem {expected_stem!r}"))
    try:
        file_now = _now(spec.now)
    except ValueError as exc:
        problems.append((loaded.line_of(("now",)), str(exc)))
        file_now = datetime(2026, 1, 1, tzinfo=UTC)
    result = TestFile(path=path, spec=spec)
    names: set[str] = set()
    for index, case in enumerate(spec.cases):
        line = loaded.line_of(("cases", index))
        if case.name in names:
            problems.append((line, f"duplicate case name {case.name!r}"))
        names.add(case.name)
        try:
            now = _now(case.now) if case.now else file_now
        except ValueError as exc:
            problems.append((loaded.line_of(("cases", index, "now")), str(exc)))
            continue
        hook = case.hook or spec.defaults.hook or "patient-view"
        data = [(item, loaded.line_of(("defaults", "data", j))) for j, item in enumerate(spec.defaults.data)]
        data += [(item, loaded.line_of(("cases", index, "data", j))) for j, item in enumerate(case.data)]
        patient = _merge_patient(spec.defaults.patient, case.patient)
        try:
            patient_line = loaded.line_of(("cases", index, "patient") if case.patient else ("defaults", "patient"))
            request = build_request(spec.rule, case, hook=hook, now=now, patient=patient, data=data, path=path,
                                    patient_line=patient_line)
        except TestFileError as exc:
            problems += exc.problems
            continue
        result.cases.append(TestCase(rule=spec.rule, spec=case, path=path, line=line, now=now, hook=hook,
                                     request=request))
    if problems:
        raise TestFileError(path, problems)
    return result
