"""``python -m cds.service``: the same as ``cds serve``."""

from __future__ import annotations

from cds.cli.serve import serve

if __name__ == "__main__":
    serve(prog_name="python -m cds.service")
