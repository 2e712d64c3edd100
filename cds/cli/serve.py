"""``cds serve``: the CDS Hooks service's own command (:mod:`cds.service.server`), re-exported for the CLI."""

from __future__ import annotations

from cds.service.server import command, serve

__all__ = ["command", "serve"]
