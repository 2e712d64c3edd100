"""Facts: what the rules see, built from one patient's FHIR record and normalised per pathways.md 1."""
