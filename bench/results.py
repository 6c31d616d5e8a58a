"""What a benchmark returns, and how results are saved and read back (plain JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "not run", "failed"]
Better = Literal["higher", "lower"]


class NotRun(Exception):
    """A benchmark cannot run here (a piece it measures is missing); the message says why."""


@dataclass
class Table:
    """One table of the report; cells are already formatted for reading."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Target:
    """A goal from the issue and whether this run met it (None: could not be judged)."""

    goal: str
    measured: str
    met: bool | None


@dataclass
class Metric:
    """A number worth comparing across commits."""

    value: float
    unit: str
    better: Better


@dataclass
class Result:
    name: str
    title: str
    about: str
    status: Status = "ok"
    reason: str = ""
    started_at: str = ""
    seconds: float = 0.0
    load: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def metric(self, key: str, value: float, unit: str, better: Better) -> None:
        self.metrics[key] = Metric(round(value, 6), unit, better)


@dataclass
class Run:
    """One invocation of `python -m bench`: where, what, and each benchmark's result."""

    meta: dict[str, Any]
    results: dict[str, Result] = field(default_factory=dict)


def to_json(run: Run) -> dict[str, Any]:
    return {"meta": run.meta, "results": {k: asdict(v) for k, v in run.results.items()}}


def from_json(data: dict[str, Any]) -> Run:
    results: dict[str, Result] = {}
    for name, raw in data.get("results", {}).items():
        result = Result(
            name=raw["name"],
            title=raw["title"],
            about=raw.get("about", ""),
            status=raw.get("status", "ok"),
            reason=raw.get("reason", ""),
            started_at=raw.get("started_at", ""),
            seconds=raw.get("seconds", 0.0),
            load=list(raw.get("load", [])),
            settings=raw.get("settings", {}),
            tables=[Table(**t) for t in raw.get("tables", [])],
            targets=[Target(**t) for t in raw.get("targets", [])],
            metrics={k: Metric(**m) for k, m in raw.get("metrics", {}).items()},
            findings=list(raw.get("findings", [])),
            data=raw.get("data", {}),
        )
        results[name] = result
    return Run(meta=data.get("meta", {}), results=results)


def save(run: Run, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(run), indent=1, sort_keys=False) + "\n")


def load(path: Path) -> Run:
    return from_json(json.loads(path.read_text()))
