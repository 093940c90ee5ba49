"""Rule engine cost per reading: the shipped rules over normal smoke readings, pure, in process.

python -m bench.rules --readings 100000 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sensord.adapters.rule_files import load_rules
from sensord.core.messages import Reading
from sensord.core.rules.engine import RuleEngine

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
CONTEXT = {"address_id": "A-000001", "place_type": "public_kitchen", "elderly_living_alone": 0}


def main(argv: list[str] | None = None) -> int:
    """Print µs per reading, median over runs, each run on a fresh engine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args(argv)
    rules = load_rules(RULES_DIR)
    start = datetime(2026, 11, 26, tzinfo=UTC)
    readings = [
        Reading(
            start + timedelta(seconds=i),
            start,
            f"SMK-{i % 1000:06d}",
            "smoke",
            i,
            smoke=False,
            obscuration=0.5,
            temp_c=22.0,
            battery_pct=80.0,
        )
        for i in range(args.readings)
    ]
    timings = []
    for _ in range(args.runs):
        engine = RuleEngine(rules)
        began = time.perf_counter()
        for at in range(0, len(readings), args.batch):
            engine.evaluate(readings[at : at + args.batch], lambda device_id: CONTEXT)
        timings.append((time.perf_counter() - began) / len(readings) * 1e6)
    print(
        f"{len(rules.rules)} rules, {args.readings} smoke readings, batches of {args.batch}: "
        f"median {statistics.median(timings):.2f} µs/reading "
        f"(runs {' / '.join(f'{t:.2f}' for t in timings)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
