"""Authoring tools for informaticians: rule tests, explanations, the catalogue, schema export, safe reload.

Nothing here changes how rules are evaluated: every module drives the real loader and
:class:`cds.engine.Engine`, so what a test or an explanation shows is what the service does.

* :mod:`~cds.authoring.notation`  compact test-patient notation (``LOINC#27873-9 38 uIU/mL``) -> FHIR
* :mod:`~cds.authoring.testfile`  ``rules/<id>.test.yaml``: format, loading, CDS Hooks request building
* :mod:`~cds.authoring.runner`    run the tests, diff expected vs actual
* :mod:`~cds.authoring.gate`      validation + rule-test checks on request; the serve/reload gate, cached by digest
* :mod:`~cds.authoring.explain`   facts as seen and, per rule, the first failing condition
* :mod:`~cds.authoring.catalog`   the Markdown/HTML rule catalogue a safety officer signs off
* :mod:`~cds.authoring.schemas`   JSON Schema export of the rule and test file formats
* :mod:`~cds.authoring.reload`    validate + test a changed ruleset before swapping the live engine
"""
