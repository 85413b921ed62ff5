#!/usr/bin/env python3
"""Parses a scrape of mpspy's /metrics with the Prometheus project's own Python client
(`prometheus_client`), an implementation independent of the Rust crate that wrote it, and
prints every sample as one JSON array (tests/metrics.rs reads it). A scrape the parser rejects
fails with its error.

    promparse.py [--openmetrics] < SCRAPE

--openmetrics uses the strict OpenMetrics parser (it checks, among others, the `# EOF` line,
counter and histogram naming, and that histogram buckets are cumulative); without it the
Prometheus text format 0.0.4 parser.
"""

import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus_text


def main():
    text = sys.stdin.read()
    parse = openmetrics if "--openmetrics" in sys.argv[1:] else prometheus_text
    out = []
    for family in parse(text):
        for s in family.samples:
            value = s.value
            if isinstance(value, float) and math.isinf(value):
                value = "+Inf" if value > 0 else "-Inf"
            out.append(
                {
                    "family": family.name,
                    "type": family.type,
                    "name": s.name,
                    "labels": s.labels,
                    "value": value,
                }
            )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
