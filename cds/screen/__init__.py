"""Population screening (issue 11): the SIR pathways over a whole population's FHIR data.

Modules, one job each (data flows down):

* :mod:`cds.screen.ingest` - INPUT (Bulk Data NDJSON folder or manifest, folder of Bundles) streamed
  as ``(patient id, fullUrl, resource)`` with ``Patient/<id>`` and ``urn:uuid:`` references normalised.
* :mod:`cds.screen.prefilter` - stage 1, derived from the loaded rules: which value sets each record
  belongs to, and could some patient-view card's conditions be met by a patient's records?
* :mod:`cds.screen.buckets` - bounded-memory grouping by patient (hash-partitioned bucket files).
* :mod:`cds.screen.core` - the per-patient core shared by every engine: :class:`~cds.screen.core.PatientData`
  -> the ``patient-view`` request -> :meth:`cds.engine.Engine.evaluate` -> :class:`~cds.screen.core.WorklistRow`
  (:func:`~cds.screen.core.screen_patient`, :func:`~cds.screen.core.screen_batch`).
* :mod:`cds.screen.local` - ``--engine local``: the engine worker pool (:mod:`cds.workers`).
* ``cds.screen.spark`` - ``--engine spark`` (optional extra; contract in :mod:`cds.screen.run`).
* :mod:`cds.screen.result` - :class:`~cds.screen.result.EngineRun`, what an engine returns.
* :mod:`cds.screen.outputs` - worklist.csv/.parquet, summary.json, errors.csv.
* :mod:`cds.screen.report` - report.html (self-contained, inline SVG charts by matplotlib).
* :mod:`cds.screen.run` - end to end, used by ``cds screen`` (:mod:`cds.cli.screen`).
"""
