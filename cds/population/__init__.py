"""Synthetic populations for screening tests and benchmarks (``cds population generate``).

``templates`` turns the Synthea bundles and the ``fhir_samples`` patients into compiled text templates
once; ``generate`` streams a FHIR Bulk Data export (NDJSON per type, a manifest and a labels file) from
them, one patient at a time, so memory stays bounded whatever the population size.
"""
