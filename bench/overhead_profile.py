"""Where the runner's CPU goes in the overhead benchmark: per-kind CPU, the builder's share, and
optionally a cProfile of each kind of batch.

`bench.overhead` reports the runner's CPU per execution as the difference of two process CPU
figures (ExecuteGraphton batches minus graph batches). That difference is small against either
figure, so it moves with the machine (a different CPU model) and with whatever else runs on it.
Comparing two commits is only meaningful on one machine at one moment, alternating runs. This
module runs the benchmark's own worker process (`bench.overhead.child_main`, unchanged) and
records, per kind of batch (`full` = ExecuteGraphton, `graph` = graph alone, `alone` = the
recorded demo replayed through the runner with no graph):

- process and main-thread CPU per run;
- CPU spent inside `StatusBuilder` (`apply`, `parts`, `encoded`, `snapshot`...), main thread;
- with `--profile DIR`: a cProfile per kind (timer: thread CPU), for `pstats`.

It needs the fake orchestrator running (`python -m bench.fake_orchestrator --port-file F
--sessions N --instructions "$(printf 'You are a careful engineer.\\nscript: demo')"`, N at least
`bench.overhead.runs_needed(concurrency, rounds)`), then:

    python bench/overhead_profile.py --json out.json -- --orchestrator 127.0.0.1:PORT \\
        --concurrency 10 --rounds 3 --data-dir DIR --out DIR/result.json

It uses only what `bench.overhead` has had since before the house work (`_timed_batch`,
`_drain`, `child_main`), so the same file measures an older commit too: extract it with
`git archive <commit> | tar -x -C OLD` and run this file from OLD with
`PYTHONPATH=OLD:OLD/apis/stubs/python`.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: import from the tree in the working directory
    sys.path[0] = str(Path.cwd())

from bench import overhead
from worker.domain import status_builder

KINDS = ("full", "graph", "alone")
WARMUP_BATCHES = 3
"""Batches before the rounds: a graph warm-up, an ExecuteGraphton warm-up, the memory batch."""
BUILDER_METHODS = ("apply", "parts", "encoded", "snapshot", "start", "complete", "note")


@dataclass
class KindTotals:
    runs: int = 0
    process_s: float = 0.0
    thread_s: float = 0.0
    builder_s: float = 0.0
    profile: cProfile.Profile = field(default_factory=lambda: cProfile.Profile(time.thread_time))

    def per_run_ms(self) -> dict[str, float]:
        runs = max(self.runs, 1)
        return {
            "runs": self.runs,
            "process_ms": self.process_s / runs * 1000,
            "thread_ms": self.thread_s / runs * 1000,
            "builder_ms": self.builder_s / runs * 1000,
        }


@dataclass
class Recorder:
    """Wraps `bench.overhead`'s batch timer and the builder's entry points."""

    rounds: int
    profiling: bool
    totals: dict[str, KindTotals] = field(default_factory=lambda: {k: KindTotals() for k in KINDS})
    batches: int = 0
    current: str | None = None

    def kind_of(self, jobs: Sequence[Callable[[], Awaitable[float]]]) -> str | None:
        """Which kind a batch is, from its place in the child's sequence (None: a warm-up)."""
        self.batches += 1
        if self.batches <= WARMUP_BATCHES:
            return None
        if self.batches > WARMUP_BATCHES + 2 * self.rounds:
            return "alone"
        return "graph" if "_drain" in jobs[0].__qualname__ else "full"

    def install(self) -> None:
        timed = overhead._timed_batch

        async def recorded(
            jobs: Sequence[Callable[[], Awaitable[float]]],
        ) -> tuple[list[float], float]:
            kind = self.kind_of(jobs)
            if kind is None:
                return await timed(jobs)
            totals = self.totals[kind]
            self.current = kind
            thread, process = time.thread_time(), time.process_time()
            if self.profiling:
                totals.profile.enable()
            try:
                return await timed(jobs)
            finally:
                if self.profiling:
                    totals.profile.disable()
                totals.thread_s += time.thread_time() - thread
                totals.process_s += time.process_time() - process
                totals.runs += len(jobs)
                self.current = None

        overhead._timed_batch = recorded
        for name in BUILDER_METHODS:
            self._time_builder(name)

    def _time_builder(self, name: str) -> None:
        method = getattr(status_builder.StatusBuilder, name, None)
        if method is None:  # an older builder without it
            return
        recorder = self

        def timed(builder: Any, *args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return method(builder, *args, **kwargs)
            finally:
                if recorder.current is not None:
                    recorder.totals[recorder.current].builder_s += time.thread_time() - began

        setattr(status_builder.StatusBuilder, name, timed)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {kind: t.per_run_ms() for kind, t in self.totals.items()}
        full, graph = out["full"], out["graph"]
        out["runner_ms"] = full["process_ms"] - graph["process_ms"]
        return out


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python bench/overhead_profile.py")
    parser.add_argument("--json", required=True, help="where to write the per-kind figures")
    parser.add_argument("--profile", help="a directory for <kind>.prof (thread-CPU cProfile)")
    parser.add_argument("child", nargs=argparse.REMAINDER, help="-- then bench.overhead's args")
    args = parser.parse_args(argv)
    child = [a for a in args.child if a != "--"]
    rounds = int(child[child.index("--rounds") + 1]) if "--rounds" in child else 1
    recorder = Recorder(rounds=rounds, profiling=args.profile is not None)
    recorder.install()
    overhead.child_main(child)
    if args.profile is not None:
        folder = Path(args.profile)
        folder.mkdir(parents=True, exist_ok=True)
        for kind, totals in recorder.totals.items():
            totals.profile.dump_stats(str(folder / f"{kind}.prof"))
    figures = recorder.report()
    Path(args.json).write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
