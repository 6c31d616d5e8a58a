"""The worker process settles its heap once composed: frozen, and a roomier young generation."""

from __future__ import annotations

import json
import subprocess
import sys

from worker.app import YOUNG_GC_THRESHOLD


def test_settle_heap_freezes_what_is_alive_and_widens_the_young_generation() -> None:
    # In a child process: freezing and thresholds are process-wide, and the test process's own
    # garbage collection should stay as pytest set it.
    script = (
        "import gc, json\n"
        "before = gc.get_threshold()\n"
        "from worker.app import settle_heap\n"
        "frozen = settle_heap()\n"
        "print(json.dumps({'before': before, 'after': gc.get_threshold(), 'frozen': frozen}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["frozen"] > 10_000  # the imported libraries, at least
    assert result["after"] == [YOUNG_GC_THRESHOLD, *result["before"][1:]]
    assert result["before"][0] < YOUNG_GC_THRESHOLD
