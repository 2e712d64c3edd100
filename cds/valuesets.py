"""Value sets as data: load ``rulesets/valuesets/<id>.yaml`` and match FHIR codings and free text.

Why data and not Python: clinical informaticians maintain the code lists (SNOMED CT, ICD-10, ICD-10-CM,
LOINC, RxNorm) without touching the engine, and every code carries its source. The file format is
documented in ``rulesets/valuesets/README.md``; in short a value set is the union of

* ``sources``: vendored, pre-expanded VSAC / US Core ValueSet JSON files (descendant codes included),
  optionally filtered by display text or code system;
* ``codes``: single codes added by hand, each naming its source;
* ``prefixes``: ICD-10 / ICD-10-CM code families (``I50`` matches ``I50.9`` and ``I509``);
* ``names``: case-insensitive regular expressions, the fallback when no coding matches;

minus ``exclude`` (codes or ICD prefixes) and ``exclude_names`` (text patterns). Exclusions always win.
``left_out`` records codes deliberately *not* included (e.g. unverified ones) so the gap is visible;
the loader refuses a file whose ``left_out`` code is still matched.

Matching is precomputed at load time (sets of normalised codes, one compiled alternation per name
list) and text results are memoised, because ``matches_concept`` runs thousands of times per patient.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from cds.resources import builtin_rulesets_dir
from cds.rules.yamlsource import LineLoader

__all__ = [
    "DEFAULT_DIRECTORY",
    "ICD_SYSTEMS",
    "SYSTEM_ALIASES",
    "LeftOut",
    "SourceRef",
    "ValueSet",
    "ValueSetError",
    "load_valueset",
    "load_valuesets",
    "system_uri",
]

#: The value sets shipped with the project (package data: cds.resources).
DEFAULT_DIRECTORY = builtin_rulesets_dir() / "valuesets"

_SNOMED = "http://snomed.info/sct"
_LOINC = "http://loinc.org"
_RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
_ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
_ICD10 = "http://hl7.org/fhir/sid/icd-10"  # WHO ICD-10 (the classification UK data use)

#: Short names usable in the YAML files; the canonical FHIR system URIs are accepted as written too.
SYSTEM_ALIASES: dict[str, str] = {
    "SNOMED": _SNOMED,
    "SCT": _SNOMED,
    "LOINC": _LOINC,
    "RXNORM": _RXNORM,
    "ICD10CM": _ICD10CM,
    "ICD10": _ICD10,
}

#: Systems whose codes are compared without the dot (E88.1 == E881) and which may have ``prefixes``.
ICD_SYSTEMS = frozenset({_ICD10CM, _ICD10})

_KNOWN_URIS = frozenset(SYSTEM_ALIASES.values())

# Spellings of the same systems seen in incoming FHIR data: the HL7 OIDs (urn:oid:) of each
# terminology and a trailing slash. Source: HL7 terminology (THO) identifier OIDs for SNOMED CT
# 2.16.840.1.113883.6.96, LOINC 2.16.840.1.113883.6.1, RxNorm 2.16.840.1.113883.6.88,
# ICD-10-CM 2.16.840.1.113883.6.90 and ICD-10 2.16.840.1.113883.6.3.
_INCOMING_SYSTEMS: dict[str, str] = {
    **{uri: uri for uri in _KNOWN_URIS},
    **{uri + "/": uri for uri in _KNOWN_URIS},
    "urn:oid:2.16.840.1.113883.6.96": _SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": _LOINC,
    "urn:oid:2.16.840.1.113883.6.88": _RXNORM,
    "urn:oid:2.16.840.1.113883.6.90": _ICD10CM,
    "urn:oid:2.16.840.1.113883.6.3": _ICD10,
}

_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

Kind = Literal["condition", "medication", "observation", "procedure", "device"]


class ValueSetError(ValueError):
    """Raised when a value set file cannot be read, parsed or validated.

    ``path`` is the file, ``line`` the 1-based line of the offending entry when known. When
    :func:`load_valuesets` finds several problems it raises the first and lists all of them in
    ``errors`` (each itself a :class:`ValueSetError`), so one run reports every broken file.
    """

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        self.errors: list[ValueSetError] = [self]
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}"
        return f"{where}: {self.message}"


def system_uri(alias_or_uri: str) -> str:
    """Return the FHIR system URI for an alias (``SNOMED``, ``ICD10CM``...) or a known URI as written."""
    if not isinstance(alias_or_uri, str):
        raise ValueError(f"code system must be a string, got {alias_or_uri!r}")
    key = alias_or_uri.strip()
    if key in _KNOWN_URIS:
        return key
    uri = SYSTEM_ALIASES.get(key.upper())
    if uri is None:
        known = ", ".join(sorted(SYSTEM_ALIASES))
        raise ValueError(f"unknown code system alias {alias_or_uri!r} (known: {known}, or their URIs)")
    return uri


def _incoming_system(system: str | None) -> str | None:
    """Canonical URI for a system found in FHIR data; unknown systems are returned unchanged."""
    if not system:
        return None
    canonical = _INCOMING_SYSTEMS.get(system)
    if canonical is not None:
        return canonical
    stripped = system.strip()
    return _INCOMING_SYSTEMS.get(stripped) or SYSTEM_ALIASES.get(stripped.upper()) or stripped


def canonical_system(system: str | None) -> str | None:
    """Public form of :func:`_incoming_system`: the canonical URI for a system spelled in FHIR data."""
    return _incoming_system(system)


def _norm_code(system: str, code: str) -> str:
    """Normalised form used for comparison: ICD codes upper-case without dots, others stripped."""
    code = code.strip()
    if system in ICD_SYSTEMS:
        return code.upper().replace(".", "")
    return code


def _compile_alternation(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for a list of patterns (one search per text instead of one per pattern).

    Raises ``ValueError`` naming the first bad pattern.
    """
    if not patterns:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    except re.error:
        for p in patterns:  # only on failure: find the culprit for the message
            try:
                re.compile(f"(?:{p})", re.IGNORECASE)
            except re.error as exc:
                hint = " (names are already case-insensitive: drop inline flags)" if "flags" in str(exc) else ""
                raise ValueError(f"pattern {p!r} is not a valid regular expression: {exc}{hint}") from None
        raise


# --------------------------------------------------------------------------------------------------
# The compiled value set: what the engine uses.
# --------------------------------------------------------------------------------------------------


class SourceRef(BaseModel):
    """Provenance of codes taken from a vendored ValueSet JSON file (kept for documentation)."""

    model_config = ConfigDict(frozen=True)

    vsac: str | None = None
    valueset: str | None = None
    version: str
    title: str
    file: str
    filter_display: str | None = None
    filter_system: str | None = None
    count: int = 0


class LeftOut(BaseModel):
    """A code deliberately not included, with the reason (e.g. unverified in codes.md)."""

    model_config = ConfigDict(frozen=True)

    system: str
    code: str
    reason: str


class ValueSet(BaseModel):
    """One value set: codes, ICD prefixes and name patterns, minus exclusions.

    Construct it with :func:`load_valuesets` (or directly, e.g. in tests: systems may be aliases,
    names plain strings). Immutable; the lookup structures are built once in ``model_post_init``.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    kind: Kind
    description: str = ""
    #: (system URI, code as written) pairs, VSAC expansions included.
    codes: frozenset[tuple[str, str]] = frozenset()
    #: (system URI, prefix as written) pairs; ICD systems only.
    prefixes: tuple[tuple[str, str], ...] = ()
    #: Free-text patterns as written (case-insensitive); compiled into one alternation, see :attr:`names_regex`.
    names: tuple[str, ...] = ()
    exclude_codes: frozenset[tuple[str, str]] = frozenset()
    exclude_prefixes: tuple[tuple[str, str], ...] = ()
    exclude_names: tuple[str, ...] = ()
    sources: tuple[SourceRef, ...] = ()
    left_out: tuple[LeftOut, ...] = ()
    path: Path | None = None

    _matcher: _Matcher = PrivateAttr()

    if TYPE_CHECKING:
        # pydantic declares this ``dict | None`` (None on models without private attributes); this
        # model has one (``_matcher``), so after construction it is always the dict the fast
        # accessors below read.
        __pydantic_private__: dict[str, Any]

    @field_validator("codes", "exclude_codes", mode="before")
    @classmethod
    def _pairs_to_uris(cls, value: Any) -> Any:
        if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
            return frozenset((system_uri(s), str(c)) for s, c in value)
        return value

    @field_validator("prefixes", "exclude_prefixes", mode="before")
    @classmethod
    def _prefix_pairs(cls, value: Any) -> Any:
        if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
            pairs = tuple((system_uri(s), str(p)) for s, p in value)
            for s, p in pairs:
                if s not in ICD_SYSTEMS:
                    raise ValueError(f"prefix {p!r}: prefixes are only meaningful for ICD-10 / ICD-10-CM")
            return pairs
        return value

    def model_post_init(self, __context: Any) -> None:
        self._matcher = _Matcher(self)

    # Pydantic private attributes cost microseconds per access (``__getattr__``); the matching
    # methods run thousands of times per patient, so they read the matcher from the private dict.

    def matches_coding(self, system: str | None, code: str | None) -> bool:
        """True when (system, code) is in the set: exact code or ICD prefix, and not excluded."""
        return self.__pydantic_private__["_matcher"].coding_state(system, code) == 1

    def matches_text(self, text: str | None) -> bool:
        """True when any ``names`` pattern occurs in ``text`` (case-insensitive) and no ``exclude_names``."""
        return self.__pydantic_private__["_matcher"].text(text)

    def matches_concept(self, codeable_concept: Mapping[str, Any] | None) -> bool:
        """True when a FHIR CodeableConcept (a raw dict) is in the set.

        Order: an excluded coding, or a ``text`` matching ``exclude_names``, rejects the concept
        (exclusions win: "hydrocortisone cream" coded with the bare ingredient is still a cream); else
        any included coding accepts it; else the ``text`` or any coding ``display`` matching ``names``.
        """
        return self.__pydantic_private__["_matcher"].concept(codeable_concept)

    # -- documentation / prefetch ----------------------------------------------------------------

    def codes_for(self, system: str) -> list[str]:
        """The explicit codes of one system (alias or URI), sorted: for documentation and prefetch queries.

        Excluded codes are not listed; ICD families are in :meth:`prefixes_for`.
        """
        uri = system_uri(system)
        excluded = self.__pydantic_private__["_matcher"].excluded
        return sorted(c for s, c in self.codes if s == uri and not excluded(s, _norm_code(s, c)))

    def prefixes_for(self, system: str) -> list[str]:
        """The ICD code families (prefixes) of one system, sorted."""
        uri = system_uri(system)
        return sorted(p for s, p in self.prefixes if s == uri)

    @property
    def names_regex(self) -> re.Pattern[str] | None:
        """The compiled alternation of :attr:`names` (None when the set has no names)."""
        return self.__pydantic_private__["_matcher"].names_re

    @property
    def systems(self) -> list[str]:
        """Every code system the set uses (codes or prefixes), sorted."""
        return sorted({s for s, _ in self.codes} | {s for s, _ in self.prefixes})


def _group_prefixes(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    grouped: dict[str, list[str]] = {}
    for system, prefix in pairs:
        grouped.setdefault(system, []).append(_norm_code(system, prefix))
    return {s: tuple(sorted(set(ps))) for s, ps in grouped.items()}


_UNCOMPILED: Any = object()  # a _Matcher's pattern not compiled yet (unpickled); None means no patterns


class _Matcher:
    """The precomputed lookup structures of one value set and the matching logic (a plain class:
    attribute access on it is fast). Text results are memoised, since the same drug or diagnosis
    names recur across a patient's resources and across patients."""

    __slots__ = ("codes", "prefixes", "excl_codes", "excl_prefixes", "names", "excl_names", "_names_re",
                 "_excl_names_re", "_text_cache")

    _CACHE_LIMIT = 4096

    def __init__(self, vs: ValueSet) -> None:
        self.codes = frozenset((s, _norm_code(s, c)) for s, c in vs.codes)
        self.excl_codes = frozenset((s, _norm_code(s, c)) for s, c in vs.exclude_codes)
        self.prefixes = _group_prefixes(vs.prefixes)
        self.excl_prefixes = _group_prefixes(vs.exclude_prefixes)
        self.names = tuple(vs.names)
        self.excl_names = tuple(vs.exclude_names)
        # compiled now, when the value set is built from its file, so a bad pattern is a load error
        self._names_re: Any = _compile_alternation(self.names)
        self._excl_names_re: Any = _compile_alternation(self.excl_names)
        self._text_cache: dict[str, tuple[bool, bool]] = {}

    # A pickled RuleSet (the loader's cache, the workers' copy) carries the pattern texts only: they were
    # compiled once when the files were loaded, and recompiling every set's alternation on unpickling
    # cost `cds evaluate` ~0.18 s for the few sets one patient needs. Unpickled, each compiles on first use.
    def __getstate__(self) -> dict[str, Any]:
        return {"codes": self.codes, "prefixes": self.prefixes, "excl_codes": self.excl_codes,
                "excl_prefixes": self.excl_prefixes, "names": self.names, "excl_names": self.excl_names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self._names_re = self._excl_names_re = _UNCOMPILED
        self._text_cache = {}

    @property
    def names_re(self) -> re.Pattern[str] | None:
        if self._names_re is _UNCOMPILED:
            self._names_re = _compile_alternation(self.names)
        return self._names_re

    @property
    def excl_names_re(self) -> re.Pattern[str] | None:
        if self._excl_names_re is _UNCOMPILED:
            self._excl_names_re = _compile_alternation(self.excl_names)
        return self._excl_names_re

    def _key(self) -> tuple[Any, ...]:
        return (self.codes, self.prefixes, self.excl_codes, self.excl_prefixes, self.names, self.excl_names)

    def __eq__(self, other: object) -> bool:  # so equal value sets compare equal (pydantic compares privates)
        return isinstance(other, _Matcher) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def excluded(self, system: str, code: str) -> bool:
        if (system, code) in self.excl_codes:
            return True
        prefixes = self.excl_prefixes.get(system)
        return prefixes is not None and code.startswith(prefixes)

    def coding_state(self, system: Any, code: Any) -> int:
        """-1 excluded, 1 included, 0 neither. A code without a system never matches."""
        if not code or not isinstance(code, str) or not system or not isinstance(system, str):
            return 0
        uri = _incoming_system(system)
        if uri is None:
            return 0
        norm = _norm_code(uri, code)
        if (self.excl_codes or self.excl_prefixes) and self.excluded(uri, norm):
            return -1
        if (uri, norm) in self.codes:
            return 1
        prefixes = self.prefixes.get(uri)
        return 1 if prefixes is not None and norm.startswith(prefixes) else 0

    def _flags(self, text: str) -> tuple[bool, bool]:
        """(matches names and no exclude_names, matches exclude_names), memoised per text."""
        flags = self._text_cache.get(text)
        if flags is None:
            vetoed = self.excl_names_re is not None and self.excl_names_re.search(text) is not None
            named = not vetoed and self.names_re is not None and self.names_re.search(text) is not None
            flags = (named, vetoed)
            if len(self._text_cache) >= self._CACHE_LIMIT:
                self._text_cache.clear()
            self._text_cache[text] = flags
        return flags

    def text(self, text: Any) -> bool:
        if not text or self.names_re is None or not isinstance(text, str):
            return False
        return self._flags(text)[0]

    def concept(self, concept: Any) -> bool:
        if not concept or not isinstance(concept, Mapping):
            return False
        codings = concept.get("coding") or ()
        included = False
        for coding in codings:
            if isinstance(coding, dict):
                state = self.coding_state(coding.get("system"), coding.get("code"))
                if state < 0:
                    return False
                if state > 0:
                    included = True
        text = concept.get("text")
        if text and isinstance(text, str):
            named, vetoed = self._flags(text)
            if vetoed:
                return False
            if included or named:
                return True
        elif included:
            return True
        if self.names_re is None:
            return False
        for coding in codings:
            if isinstance(coding, dict):
                display = coding.get("display")
                if display and display != text and isinstance(display, str) and self._flags(display)[0]:
                    return True
        return False
        codings = concept.get("coding") or ()
        text = concept.get("text")
        included = False
        for coding in codings:
            if isinstance(coding, dict):
                state = self.coding_state(coding.get("system"), coding.get("code"))
                if state < 0:
                    return False
                if state > 0:
                    included = True
        if not isinstance(text, str):
            text = None
        if text and self.excl_names_re is not None and self.excl_names_re.search(text):
            return False
        if included:
            return True
        if self.names_re is None:
            return False
        if text and self.text(text):
            return True
        for coding in codings:
            if isinstance(coding, dict):
                display = coding.get("display")
                if display and display != text and self.text(display):
                    return True
        return False


# --------------------------------------------------------------------------------------------------
# The file schema: what an informatician writes. Closed (unknown keys are errors).
# --------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _require_str(value: Any, what: str) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"{what} must be a quoted string (YAML read {value!r} as a number); write \"{value}\"")
    return value


class _SystemField(_Strict):
    system: str

    @field_validator("system")
    @classmethod
    def _known_system(cls, value: str) -> str:
        return system_uri(value)


class _CodeEntry(_SystemField):
    code: str
    display: str = ""
    source: str = Field(min_length=1)

    @field_validator("code", mode="before")
    @classmethod
    def _code_str(cls, value: Any) -> Any:
        return _require_str(value, "code")


class _PrefixEntry(_SystemField):
    prefix: str = Field(min_length=1)
    display: str = ""
    source: str = Field(min_length=1)

    @field_validator("prefix", mode="before")
    @classmethod
    def _prefix_str(cls, value: Any) -> Any:
        return _require_str(value, "prefix")

    @model_validator(mode="after")
    def _icd_only(self) -> _PrefixEntry:
        if self.system not in ICD_SYSTEMS:
            raise ValueError(f"prefix {self.prefix!r}: prefixes are only meaningful for ICD10 / ICD10CM")
        return self


class _ExcludeEntry(_SystemField):
    code: str | None = None
    prefix: str | None = None
    display: str = ""
    reason: str = Field(min_length=1)

    @field_validator("code", "prefix", mode="before")
    @classmethod
    def _as_str(cls, value: Any) -> Any:
        return _require_str(value, "code/prefix")

    @model_validator(mode="after")
    def _one_of(self) -> _ExcludeEntry:
        if (self.code is None) == (self.prefix is None):
            raise ValueError("an exclude entry needs exactly one of `code` or `prefix`")
        if self.prefix is not None and self.system not in ICD_SYSTEMS:
            raise ValueError("prefixes are only meaningful for ICD10 / ICD10CM")
        return self


class _LeftOutEntry(_SystemField):
    code: str
    display: str = ""
    reason: str = Field(min_length=1)

    @field_validator("code", mode="before")
    @classmethod
    def _code_str(cls, value: Any) -> Any:
        return _require_str(value, "code")


class _Filter(_Strict):
    display: str | None = None
    system: str | None = None

    @field_validator("display")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"filter.display is not a valid regular expression: {exc}") from exc
        return value

    @field_validator("system")
    @classmethod
    def _known_system(cls, value: str | None) -> str | None:
        return None if value is None else system_uri(value)


class _SourceEntry(_Strict):
    vsac: str | None = None
    valueset: str | None = None
    version: str
    title: str
    file: str
    filter: _Filter | None = None
    note: str = ""

    @field_validator("version", "vsac", mode="before")
    @classmethod
    def _as_str(cls, value: Any) -> Any:
        return _require_str(value, "vsac/version")

    @model_validator(mode="after")
    def _one_of(self) -> _SourceEntry:
        if (self.vsac is None) == (self.valueset is None):
            raise ValueError("a source needs exactly one of `vsac` (an OID) or `valueset` (a canonical URL)")
        return self


class _ValueSetFile(_Strict):
    id: str
    title: str = Field(min_length=1)
    kind: Kind
    description: str = ""
    sources: list[_SourceEntry] = []
    codes: list[_CodeEntry] = []
    prefixes: list[_PrefixEntry] = []
    names: list[str] = []
    exclude: list[_ExcludeEntry] = []
    exclude_names: list[str] = []
    left_out: list[_LeftOutEntry] = []

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"id {value!r} must be lower-case words joined by hyphens (e.g. heart-failure)")
        return value

    @field_validator("names", "exclude_names")
    @classmethod
    def _regexes(cls, values: list[str]) -> list[str]:
        for i, pattern in enumerate(values):
            if not pattern.strip():
                raise ValueError(f"pattern {i} is empty")
        _compile_alternation(values)  # one compile (re caches it for ValueSet); inline (?i) is refused
        return values

    @model_validator(mode="after")
    def _not_empty(self) -> _ValueSetFile:
        if not (self.sources or self.codes or self.prefixes or self.names):
            raise ValueError("a value set needs at least one of sources, codes, prefixes or names")
        return self


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

# The project's one YAML loader: libyaml's CSafeLoader, duplicate keys refused (cds/rules/yamlsource.py).
_Loader: type = LineLoader


def _parse_yaml(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    """Parse YAML once, keeping the node tree for line numbers; reject duplicate keys."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_duplicate_keys(path, node)
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ValueSetError(path, line, f"invalid YAML: {problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueSetError(path, None, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _check_duplicate_keys(path: Path, node: yaml.Node) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise ValueSetError(path, key.start_mark.line + 1, f"duplicate key {key.value!r}")
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """1-based line of the deepest node reachable along a pydantic error location."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _format_validation_error(exc: ValidationError) -> tuple[tuple[Any, ...], str]:
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    field = ".".join(str(p) for p in loc)
    if first.get("type") == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
    return loc, f"{field}: {msg}" if field else msg


_ExpansionEntry = tuple[str, str, str]  # (system URI, code, display)


def _read_valueset_json(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return json.load(fh)


def _expansion_entries(doc: Mapping[str, Any]) -> list[_ExpansionEntry]:
    """Every (system, code, display) of a FHIR ValueSet: ``expansion.contains`` (nested too), else
    the enumerated ``compose.include[].concept`` (US Core publishes its allergy set that way)."""
    entries: list[_ExpansionEntry] = []
    expansion = doc.get("expansion")
    if isinstance(expansion, Mapping) and expansion.get("contains"):
        stack = list(expansion["contains"])
        while stack:
            item = stack.pop()
            if item.get("code") and item.get("system"):
                entries.append((item["system"], str(item["code"]), item.get("display", "")))
            stack.extend(item.get("contains") or ())
        return entries
    for include in (doc.get("compose") or {}).get("include") or ():
        system = include.get("system")
        for concept in include.get("concept") or ():
            if system and concept.get("code"):
                entries.append((system, str(concept["code"]), concept.get("display", "")))
    return entries


class _JsonCache:
    """Parsed vendored JSON files, shared by every value set of one load (several reuse one file)."""

    def __init__(self) -> None:
        self._docs: dict[Path, tuple[dict[str, Any], list[_ExpansionEntry]]] = {}

    def get(self, path: Path) -> tuple[dict[str, Any], list[_ExpansionEntry]]:
        key = path.resolve()
        if key not in self._docs:
            doc = _read_valueset_json(key)
            self._docs[key] = (doc, _expansion_entries(doc))
        return self._docs[key]


def _source_codes(
    src: _SourceEntry, directory: Path, cache: _JsonCache
) -> tuple[list[tuple[str, str]], str | None]:
    """Codes a source contributes, or an error message."""
    file = directory / src.file
    if not file.resolve().is_relative_to(directory.resolve()):
        return [], f"file {src.file!r} is outside the value set folder; vendor it under vsac/"
    if not file.is_file():
        return [], f"file {src.file!r} not found (relative to {directory})"
    try:
        doc, entries = cache.get(file)
    except (OSError, ValueError) as exc:
        return [], f"file {src.file!r} is not readable JSON: {exc}"
    if doc.get("resourceType") != "ValueSet":
        return [], f"file {src.file!r} is not a FHIR ValueSet"
    url = str(doc.get("url", ""))
    if src.vsac is not None:
        identifiers = {str(i.get("value", "")) for i in doc.get("identifier") or () if isinstance(i, Mapping)}
        if not (url.endswith("/" + src.vsac) or src.vsac in identifiers or f"urn:oid:{src.vsac}" in identifiers):
            return [], f"file {src.file!r} is value set {url!r}, not VSAC {src.vsac}"
    elif url != src.valueset:
        return [], f"file {src.file!r} is value set {url!r}, not {src.valueset!r}"
    if str(doc.get("version")) != src.version:
        return [], f"file {src.file!r} has version {doc.get('version')!r}, not {src.version!r}"
    if doc.get("title") != src.title:
        return [], f"file {src.file!r} has title {doc.get('title')!r}, not {src.title!r}"
    display_re = re.compile(src.filter.display) if src.filter and src.filter.display else None
    system = src.filter.system if src.filter else None
    codes = [
        (s, c)
        for s, c, d in entries
        if (system is None or s == system) and (display_re is None or display_re.search(d or ""))
    ]
    if not codes:
        return [], f"source {src.file!r} contributes no codes (check the filter)"
    unknown = {s for s, _ in codes} - _KNOWN_URIS
    if unknown:
        return [], f"source {src.file!r} uses code systems with no alias: {sorted(unknown)} (filter by system)"
    return codes, None


def _build(path: Path, text: str, cache: _JsonCache) -> ValueSet:
    data, root = _parse_yaml(path, text)
    if not isinstance(data, Mapping):
        raise ValueSetError(path, 1 if root is None else _line_of(root, ()), "a value set file must be a YAML mapping")
    try:
        spec = _ValueSetFile.model_validate(data)
    except ValidationError as exc:
        loc, message = _format_validation_error(exc)
        raise ValueSetError(path, _line_of(root, loc), message) from None
    if spec.id != path.stem:
        raise ValueSetError(path, _line_of(root, ("id",)), f"id {spec.id!r} must equal the file name {path.stem!r}")

    codes: set[tuple[str, str]] = set()
    sources: list[SourceRef] = []
    for i, src in enumerate(spec.sources):
        found, error = _source_codes(src, path.parent, cache)
        if error:
            raise ValueSetError(path, _line_of(root, ("sources", i)), error)
        codes.update(found)
        sources.append(
            SourceRef(
                vsac=src.vsac,
                valueset=src.valueset,
                version=src.version,
                title=src.title,
                file=src.file,
                filter_display=src.filter.display if src.filter else None,
                filter_system=src.filter.system if src.filter else None,
                count=len(set(found)),
            )
        )
    codes.update((c.system, c.code) for c in spec.codes)
    vs = ValueSet(
        id=spec.id,
        title=spec.title,
        kind=spec.kind,
        description=spec.description,
        codes=frozenset(codes),
        prefixes=tuple((p.system, p.prefix) for p in spec.prefixes),
        names=tuple(spec.names),
        exclude_codes=frozenset((e.system, e.code) for e in spec.exclude if e.code is not None),
        exclude_prefixes=tuple((e.system, e.prefix) for e in spec.exclude if e.prefix is not None),
        exclude_names=tuple(spec.exclude_names),
        sources=tuple(sources),
        left_out=tuple(LeftOut(system=e.system, code=e.code, reason=e.reason) for e in spec.left_out),
        path=path,
    )
    for i, entry in enumerate(spec.left_out):
        if vs.matches_coding(entry.system, entry.code):
            raise ValueSetError(
                path,
                _line_of(root, ("left_out", i)),
                f"left_out code {entry.code} is still matched (by a source, code or prefix); exclude it or drop it",
            )
    return vs


def load_valueset(path: Path, *, _cache: _JsonCache | None = None) -> ValueSet:
    """Load and validate one value set file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueSetError(path, None, f"cannot read file: {exc}") from None
    return _build(path, text, _cache or _JsonCache())


def load_valuesets(directory: Path = DEFAULT_DIRECTORY) -> dict[str, ValueSet]:
    """Load every ``*.yaml`` directly in ``directory``, keyed by id.

    Every file is checked before raising, so one run reports every problem (see ``ValueSetError.errors``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueSetError(directory, None, "value set directory not found")
    cache = _JsonCache()
    result: dict[str, ValueSet] = {}
    errors: list[ValueSetError] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        if path.suffix == ".yml":
            errors.append(ValueSetError(path, None, "value set files must end in .yaml"))
            continue
        if path.suffix != ".yaml":
            continue
        try:
            vs = load_valueset(path, _cache=cache)
        except ValueSetError as exc:
            errors.append(exc)
            continue
        result[vs.id] = vs
    if errors:
        first = errors[0]
        first.errors = errors
        raise first
    return result


# --------------------------------------------------------------------------------------------------
# Medication identity, route 2 (pathways.md 1): RxNorm product codes mapped to their ingredients
# --------------------------------------------------------------------------------------------------

#: The vendored VSAC expansions whose RxNorm product codes (SCD/SBD/GPCK/BPCK) identify drugs by
#: their display (pathways.md 1, Medications, Identity route 2). Files relative to the value set folder.
PRODUCT_EXPANSIONS: tuple[str, ...] = (
    "vsac/valueset-2.16.840.1.113762.1.4.1196.394.json",  # Hypoglycemics Treatment Medications
    "vsac/valueset-2.16.840.1.113762.1.4.1196.393.json",  # Hypoglycemics Severe Hypoglycemia
    "vsac/valueset-2.16.840.1.113883.3.464.1003.196.12.1266.json",  # Glucocorticoids (oral only)
    "vsac/valueset-2.16.840.1.113883.3.464.1003.1059.json",  # Potentially Harmful Sulfonylureas
)

_LEADING_QUALIFIER = re.compile(r"^(?:\d+(?:\.\d+)?\s+(?:HR|ML|ACTUAT|DAY)\s+)+", re.IGNORECASE)
_FIRST_NUMBER = re.compile(r"\s\d")


def product_ingredients(display: str) -> tuple[str, ...]:
    """Ingredient names of an RxNorm SCD/SBD display, in order.

    ``"24 HR metformin hydrochloride 1000 MG / saxagliptin 5 MG Extended Release Oral Tablet"`` ->
    ``("metformin hydrochloride", "saxagliptin")``. RxNorm clinical drug names are "ingredient strength
    [/ ingredient strength] dose form", so the name is everything before the first number of each part.
    A branded display ("... [Janumet]") keeps its brand as a last part so brand names match too.
    """
    brand = None
    text = display.strip()
    bracket = re.search(r"\[([^\]]+)\]\s*$", text)
    if bracket:
        brand = bracket.group(1).strip()
        text = text[: bracket.start()].strip()
    names: list[str] = []
    for part in text.split(" / "):
        part = _LEADING_QUALIFIER.sub("", part.strip())
        cut = _FIRST_NUMBER.search(" " + part)
        name = (part if cut is None else (" " + part)[: cut.start()]).strip()
        if name and name not in names:
            names.append(name)
    if brand:
        names.append(brand)
    return tuple(names)


class ProductIndex:
    """RxNorm product code -> expansion display, read from the vendored expansions at load time.

    Why: a request coded only with a product (SCD/SBD) code and no display, or with a local display,
    must still be recognised by its ingredients. The display of the vendored expansion names them
    ("glyburide 5 MG / metformin hydrochloride 500 MG Oral Tablet"), so no hand-kept product list is
    needed: the mapping is data, rebuilt whenever the value sets are loaded.
    """

    def __init__(self, displays: Mapping[str, str] | None = None) -> None:
        self.displays: dict[str, str] = dict(displays or {})

    def display(self, code: str) -> str | None:
        return self.displays.get(code)

    def ingredients(self, code: str) -> tuple[str, ...]:
        display = self.displays.get(code)
        return product_ingredients(display) if display else ()

    def __len__(self) -> int:
        return len(self.displays)


def load_product_index(directory: Path = DEFAULT_DIRECTORY) -> ProductIndex:
    """Read :data:`PRODUCT_EXPANSIONS` under ``directory``; a missing file is skipped (the value set
    loader already reports vendored files it needs), so an edited folder never breaks matching."""
    displays: dict[str, str] = {}
    for name in PRODUCT_EXPANSIONS:
        path = Path(directory) / name
        if not path.is_file():
            continue
        try:
            entries = _expansion_entries(_read_valueset_json(path))
        except (OSError, ValueError):
            continue
        for system, code, display in entries:
            if _incoming_system(system) == _RXNORM and display:
                displays.setdefault(code, display)
    return ProductIndex(displays)


def _vetoes(matcher: _Matcher, concept: Any) -> bool:
    if not isinstance(concept, Mapping):
        return False
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and matcher.coding_state(coding.get("system"), coding.get("code")) < 0:
            return True
    text = concept.get("text")
    return bool(text and isinstance(text, str) and matcher._flags(text)[1])


def valueset_vetoes(vs: ValueSet, concept: Any) -> bool:
    """True when ``concept`` hits an exclusion of ``vs`` (an excluded code, or text matching
    ``exclude_names``): a product excluded by its own name ("hydrocortisone cream") is not rescued by
    its ingredient list."""
    return _vetoes(vs.__pydantic_private__["_matcher"], concept)


__all__ += ["PRODUCT_EXPANSIONS", "ProductIndex", "load_product_index", "product_ingredients", "valueset_vetoes"]
