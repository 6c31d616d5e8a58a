"""Status-side memory: what the runner holds for one execution's status, against the status's size.

Measured in a fresh process per size (the allocator does not give memory back, so an earlier
pass would hide or inflate this one). The recorded run's events are loaded first, outside the
measure, but each event is decoded again from its JSON line as it is applied, inside the measure:
a scaled run repeats the recording, so its events share their strings with one another and with
the loaded list, and the text the builder keeps would otherwise not count (a real run's text
exists once, held by the builder). The stages:

- `builder`: the StatusBuilder's state after reducing every event, between two updates. As in a
  run, a status is encoded every `UPDATE_EVERY` events (the runner sends one every 10 events or
  200 ms, so far more often): each entry's encoding is kept until it changes, and an entry that
  finished is kept as its encoding alone;
- `in flight`: plus what sending one update holds: the builder's per-entry encodings (its
  caches), the encoded status (pieces of those caches, not joined) and the `updateStatus`
  request bytes made of it;
- `final`: once the final update is sent (its request freed), plus what the run ends with (its
  entries' encodings, `worker.run.service`, never parsed into one proto) and the activity's
  result made of them (`bounded_result`, with the default bound: the result is slim for a long
  run, or the status without its additions when it fits).

The figure that counts is the largest of the stages.

Each stage is measured two ways, in two processes: `tracemalloc` (Python's own allocations;
protobuf's upb backend allocates outside it, so this misses every cached proto) and, without
tracemalloc (whose own bookkeeping is resident memory too), the growth of the process's resident
set (RSS: everything, allocator slack included). The ratio is to the serialized status.

    python -m bench.memory --events 100000 [--traced]   # one measurement, JSON on stdout
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
from worker.activities.result import bounded_result
from worker.domain import agent_events
from worker.domain.status_wire import update_request_bytes
from worker.settings import ContentSettings

STAGES = ("builder", "in flight", "final")
UPDATE_EVERY = 1_000


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(count: int, *, traced: bool) -> dict[str, Any]:
    """Bytes held at each stage: `tracemalloc`'s count when `traced`, else RSS growth."""
    from bench.builder import new_builder

    lines = [agent_events.dumps(event) for event in scaled(load_run(), count)]
    gc.collect()
    rss_before = _rss()
    if traced:
        tracemalloc.start()
    try:
        traced_before = tracemalloc.get_traced_memory()[0]
        stages: dict[str, int] = {}

        def mark(stage: str) -> None:
            gc.collect()
            if traced:
                stages[stage] = tracemalloc.get_traced_memory()[0] - traced_before
            else:
                stages[stage] = _rss() - rss_before

        builder = new_builder()
        for n, line in enumerate(lines, 1):
            builder.apply(agent_events.loads(line))
            if n % UPDATE_EVERY == 0:
                builder.parts()  # an update is sent; its request is gone once it lands
        mark("builder")
        encoded = builder.encoded()
        size = encoded.ByteSize()
        request = update_request_bytes("aex-bench", encoded)
        mark("in flight")
        del request, encoded
        final = builder.encoded()
        result = bounded_result(final, ContentSettings().result_max_bytes)
        mark("final")
        del final, result
    finally:
        tracemalloc.stop()
    return {"events": count, "status_bytes": size, "traced": traced, "stages": stages}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--traced", action="store_true", help="tracemalloc instead of RSS")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.events, traced=args.traced)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
