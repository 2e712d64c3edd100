"""Noise check: which cards the rulesets give the 40 Synthea patients (a population nobody here wrote).

Run it before and after a catalogue change and compare the two JSON files; every card added or removed
must be explained in the change's notes::

    python tests/tools/synthea_noise.py --out before.json            # on the old rules
    python tests/tools/synthea_noise.py --out after.json             # on the new rules
    python tests/tools/synthea_noise.py --compare before.json after.json

Each bundle is evaluated on patient-view and order-sign at a fixed instant (``--now``, default
2026-11-01) and at the bundle's own latest record date (so that its data are "recent", as they were
when Synthea wrote them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

DEFAULT_BUNDLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "synthea-r4"
DATE_KEYS = {"effectiveDateTime", "issued", "authoredOn", "onsetDateTime", "recordedDate", "start", "end",
             "performedDateTime", "occurrenceDateTime", "date", "abatementDateTime"}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}")


def latest_date(node: object, found: list[str] | None = None) -> str:
    """The latest clinical date written anywhere in ``node`` (YYYY-MM-DD)."""
    found = [] if found is None else found
    if isinstance(node, dict):
        for key, value in node.items():
            if key in DATE_KEYS and isinstance(value, str) and ISO.match(value):
                found.append(value[:10])
            else:
                latest_date(value, found)
    elif isinstance(node, list):
        for item in node:
            latest_date(item, found)
    return max(found) if found else "2026-11-01"


def run(bundles: Path, now: str) -> dict[str, dict[str, list[str]]]:
    from cds.engine import Engine

    engine = Engine.load()
    results: dict[str, dict[str, list[str]]] = {}
    for path in sorted(bundles.glob("*.json")):
        payload = json.loads(path.read_text())
        own = latest_date(payload) + "T12:00:00Z"
        for label, instant in (("fixed", now), ("own", own)):
            for hook in ("patient-view", "order-sign"):
                cards = engine.evaluate(payload, hook=hook, now=instant).response.cards
                key = f"{path.stem[:40]}|{label}|{hook}"
                results[key] = sorted(f"{c.source.topic.code}:{c.indicator}" for c in cards)
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return results


def compare(before: dict[str, list[str]], after: dict[str, list[str]]) -> None:
    totals = {"before": Counter(), "after": Counter()}
    for name, data in (("before", before), ("after", after)):
        for cards in data.values():
            totals[name].update(cards)
    print("| rule:indicator | before | after |")
    print("|---|---|---|")
    for key in sorted(set(totals["before"]) | set(totals["after"])):
        print(f"| {key} | {totals['before'][key]} | {totals['after'][key]} |")
    print()
    for key in sorted(set(before) | set(after)):
        old, new = Counter(before.get(key, [])), Counter(after.get(key, []))
        added, removed = new - old, old - new
        if added or removed:
            print(f"{key}: added {sorted(added.elements())} removed {sorted(removed.elements())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", type=Path, default=DEFAULT_BUNDLES)
    parser.add_argument("--now", default="2026-11-01T09:00:00Z")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        compare(json.loads(args.compare[0].read_text()), json.loads(args.compare[1].read_text()))
        return
    if not args.bundles.is_dir():
        parser.error(f"{args.bundles}: no such folder (the Synthea bundles live in ../shared/data/synthea-r4)")
    results = run(args.bundles, args.now)
    text = json.dumps(results, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
