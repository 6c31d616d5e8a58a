"""`python -m bench`: run the benchmarks, save raw JSON, write `docs/benchmarks.md`.

python -m bench                      # everything; writes bench/results/<commit>.json + docs
python -m bench --only builder       # one benchmark (merged into the commit's results)
python -m bench --quick              # shorter runs; results in <commit>-quick.json, no docs
python -m bench --compare A.json B.json
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import machine, report
from bench.results import NotRun, Result, Run, load, save

RESULTS = machine.ROOT / "bench" / "results"
DOC = machine.ROOT / "docs" / "benchmarks.md"

Runner = Callable[[argparse.Namespace], Result]


def _builder(args: argparse.Namespace) -> Result:
    from bench.builder import run

    return run(quick=args.quick, sizes=args.sizes)


def _pipeline(args: argparse.Namespace) -> Result:
    from bench.pipeline import run

    return run(quick=args.quick, sizes=args.sizes)


def _overhead(args: argparse.Namespace) -> Result:
    from bench.overhead import run

    return run(quick=args.quick)


def _throughput(args: argparse.Namespace) -> Result:
    from bench.throughput import run

    return run(quick=args.quick)


def _limits(args: argparse.Namespace) -> Result:
    from bench.limits import run

    return run(quick=args.quick, sizes=args.sizes)


def _cancel(args: argparse.Namespace) -> Result:
    from bench.cancel_latency import run

    return run(quick=args.quick)


BENCHMARKS: dict[str, tuple[str, Runner]] = {
    "builder": ("StatusBuilder throughput", _builder),
    "pipeline": ("Status pipeline", _pipeline),
    "overhead": ("Overhead of an ExecuteGraphton run", _overhead),
    "throughput": ("Throughput end to end", _throughput),
    "limits": ("Sizes against their limits", _limits),
    "cancel": ("Cancel latency", _cancel),
}


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bad sizes {text!r}: {err}") from err
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the runner's own cost.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="much shorter runs")
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A.json", "B.json"),
        help="print B's metrics against A's and exit",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="event counts for the builder and pipeline benchmarks (e.g. 1000,10000)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help=f"where to write the report (default {DOC.relative_to(machine.ROOT)}; "
        "not written for --quick unless given)",
    )
    return parser.parse_args(argv)


def run_one(name: str, args: argparse.Namespace) -> Result:
    title, runner = BENCHMARKS[name]
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    try:
        result = runner(args)
    except NotRun as err:
        result = Result(name=name, title=title, about="", status="not run", reason=str(err))
    except Exception as err:
        traceback.print_exc()
        result = Result(
            name=name,
            title=title,
            about="",
            status="failed",
            reason=f"{type(err).__name__}: {err}",
        )
    result.started_at = started.isoformat(timespec="seconds")
    result.seconds = round(time.perf_counter() - began, 1)
    result.load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    verdicts = ", ".join(
        f"{t.goal}: {'met' if t.met else 'MISSED' if t.met is False else '?'}"
        for t in result.targets
    )
    detail = f" ({result.reason})" if result.reason else ""
    print(
        f"bench: {name} {result.status}{detail} in {result.seconds:.0f} s; {verdicts}",
        file=sys.stderr,
        flush=True,
    )
    return result


def _quiet_logs() -> None:
    from worker.logs import configure

    configure(level="WARNING", fmt="console")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.compare:
        a, b = (load(path) for path in args.compare)
        for line in report.compare(a, b):
            print(line)
        return 0
    _quiet_logs()
    commit = machine.commit()
    meta = {
        "commit": commit,
        "dirty": machine.dirty(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "machine": machine.describe(),
    }
    path = args.results_dir / f"{commit}{'-quick' if args.quick else ''}.json"
    run = Run(meta=meta)
    if args.only and path.exists():
        # Benchmarks run one at a time accumulate into the commit's results.
        run.results.update(load(path).results)
    try:
        for name in args.only or list(BENCHMARKS):
            run.results[name] = run_one(name, args)
    finally:
        from bench import infra

        infra.close()
    save(run, path)
    print(f"bench: results in {path}", file=sys.stderr)
    doc = args.doc or (None if args.quick else DOC)
    if doc is not None:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(report.document(run))
        print(f"bench: report in {doc}", file=sys.stderr)
    failed = [r.name for r in run.results.values() if r.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
