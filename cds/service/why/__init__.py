"""The "why this card" page (issue 12): a link on every card to a page built from the audited call.

Why a package of its own: the page needs the facts layer (lab series, the condition trace) and
matplotlib, which the service process must not import at start-up (``cds serve`` starts in about 2 s
because it imports neither). Everything heavy is imported lazily, on the first page view.

* :mod:`cds.service.why.tokens` signs and checks the card-bound, expiring link token;
* :mod:`cds.service.why.store` keeps the completed request (prefetch and FHIR-fetched resources)
  compressed beside the audit row, and puts the link on each card;
* :mod:`cds.service.why.series`, :mod:`cds.service.why.trace`, :mod:`cds.service.why.charts` and
  :mod:`cds.service.why.page` rebuild what the engine saw and render it.
"""
