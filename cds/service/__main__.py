"""``python -m cds.service``: the same as ``cds serve``."""

from __future__ import annotations

from cds.service.server import main

if __name__ == "__main__":
    main()
