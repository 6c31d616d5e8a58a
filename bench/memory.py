"""Status-side memory: what the runner holds for one execution's status, against the status's size.

Measured in a fresh process per size (the allocator does not give memory back, so an earlier
pass would hide or inflate this one), after the recorded run's events are decoded:

- `builder`: the StatusBuilder's state after reducing every event (plain Python only: protos are
  built when a status is sent);
- `in flight`: plus what sending one update holds: the builder's per-entry protos and encodings
  (its caches), the joined encoded status and the `updateStatus` request bytes made of it;
- `final`: plus the final `snapshot()` proto the run ends with.

Each stage is measured two ways: `tracemalloc` (Python's own allocations; protobuf's upb backend
allocates outside it, so this misses every cached proto) and the growth of the process's
resident set (RSS, everything, allocator slack included). The ratio is to the serialized status.

    python -m bench.memory --events 100000     # one measurement, as JSON on stdout
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tracemalloc
from collections.abc import Sequence
from typing import Any

from bench.fixtures import load_run, scaled
from worker.domain.status_wire import update_request_bytes

STAGES = ("builder", "in flight", "final")


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(count: int) -> dict[str, Any]:
    from bench.builder import new_builder

    events = scaled(load_run(), count)
    gc.collect()
    rss_before = _rss()
    tracemalloc.start()
    try:
        traced_before = tracemalloc.get_traced_memory()[0]
        stages: dict[str, dict[str, int]] = {}

        def mark(stage: str) -> None:
            gc.collect()
            stages[stage] = {
                "traced_bytes": tracemalloc.get_traced_memory()[0] - traced_before,
                "rss_bytes": _rss() - rss_before,
            }

        builder = new_builder()
        for event in events:
            builder.apply(event)
        mark("builder")
        encoded = builder.encoded()
        request = update_request_bytes("aex-bench", encoded)
        mark("in flight")
        final = builder.snapshot()
        mark("final")
        size = len(encoded.data)
        del request, final
    finally:
        tracemalloc.stop()
    return {"events": count, "status_bytes": size, "stages": stages}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.events)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
