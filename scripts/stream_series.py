"""The per-request series of OSD stream runs, in one small CSV, so SEs and paired differences can be rechecked
without the run directories (docs/results/testbed_v2/).

    python scripts/stream_series.py STREAM_DIR --out FILE.csv

STREAM_DIR holds one run directory per arm (``scripts/osd_study.sh`` writes ``OUT/stream/<arm>``); each row is
(arm, request, acceptance_rate, accepted_fraction, overlap_t1, tokens, target_forwards) from its metrics.jsonl.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from distill.io import atomic_write_text

COLUMNS = ("request", "acceptance_rate", "accepted_fraction", "overlap_t1", "tokens", "target_forwards")


def rows(stream: Path):
    for run in sorted(p for p in stream.iterdir() if (p / "metrics.jsonl").is_file()):
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a torn last line of an interrupted run
                continue
            if "request" in record:
                yield [run.name, *(_short(record.get(c)) for c in COLUMNS)]


def _short(value):
    return f"{value:.5g}" if isinstance(value, float) else ("" if value is None else value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stream", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["arm", *COLUMNS])
    count = 0
    for row in rows(args.stream):
        writer.writerow(row)
        count += 1
    atomic_write_text(args.out, buffer.getvalue())
    print(f"wrote {count} requests to {args.out}")


if __name__ == "__main__":
    main()
