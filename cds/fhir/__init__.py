"""FHIR R4 input: parse CDS Hooks requests and Bundles, validate the resources the rules use."""
