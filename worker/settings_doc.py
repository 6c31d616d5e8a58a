"""Generate the settings reference (`docs/settings.md`) from the settings model.

    python -m worker.settings_doc                           # print it
    python -m worker.settings_doc --write docs/settings.md  # regenerate the committed file
    python -m worker.settings_doc --check docs/settings.md  # exit 1 when the file is stale

Names, types, constraints and defaults come from `worker.settings.SETTINGS_GROUPS`. A field's
`description=` wins; until the model carries one, the sentence in `NOTES` is used, and a test
fails for a setting that has neither, so a new setting cannot ship undocumented.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from worker.settings import SETTINGS_GROUPS

GROUP_TITLES: dict[str, str] = {
    "": "General",
    "temporal": "Temporal",
    "backend": "Orchestrator (gRPC) and its credentials",
    "llm": "Model provider",
    "status": "Status updates",
    "content": "Size limits and large content",
    "sandbox": "Sandboxes",
    "mcp": "MCP servers",
    "checkpointer": "Checkpointer",
    "redis": "Live events (Redis)",
    "observability": "Health, metrics and tracing",
}

NOTES: dict[str, str] = {
    "MODE": "`local`: plaintext to services on this machine and the scripted model. `cloud`: TLS "
    "to the orchestrator, credentials and a real provider required.",
    "LOG_LEVEL": "Minimum level of the worker's log events (case-insensitive).",
    "LOG_FORMAT": "`json`, `console`, or `auto` (JSON when stderr is not a terminal).",
    "STIGMER_AGENT_RUNNER_DATA_DIR": "Local state: default parent of the sandboxes and the "
    "SQLite checkpointer.",
    "TEMPORAL_SERVICE_ADDRESS": "Temporal frontend `host:port` (Temporal Cloud: the namespace "
    "or regional endpoint).",
    "TEMPORAL_NAMESPACE": "Temporal namespace the orchestrator's workflows run in.",
    "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": "Activity task queue polled by the worker; "
    "must match the orchestrator's (the Go server uses `agent_execution_runner`).",
    "TEMPORAL_MAX_CONCURRENCY": "Activity slots per worker: executions one pod runs at once.",
    "TEMPORAL_API_KEY": "Temporal Cloud API key; implies TLS.",
    "TEMPORAL_TLS": "TLS to Temporal. Unset: on when an API key or a client certificate is set.",
    "TEMPORAL_TLS_CLIENT_CERT_PATH": "mTLS client certificate (PEM); set with the key path.",
    "TEMPORAL_TLS_CLIENT_KEY_PATH": "mTLS client private key (PEM); set with the certificate path.",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "CA bundle for Temporal's server certificate (PEM); "
    "unset: the system roots.",
    "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "On SIGTERM, how long in-flight activities may run on "
    "before they are cancelled. Keep Kubernetes' `terminationGracePeriodSeconds` longer.",
    "WORKER_HEARTBEAT_INTERVAL_SECONDS": "Activity heartbeat period; below the orchestrator's "
    "30 s heartbeat timeout. An activity scheduled with a shorter heartbeat timeout beats every "
    "third of that timeout instead. A cancel or pause reaches a run on its next heartbeat, so "
    "this bounds how fast they land.",
    "WORKER_HEARTBEAT_THROTTLE_SECONDS": "The most the Temporal SDK may hold back a heartbeat "
    "(its `max_heartbeat_throttle_interval`). Unset in the SDK, that is 80 % of the heartbeat "
    "timeout (24 s at the orchestrator's 30 s), and a cancel took that long to be seen.",
    "STIGMER_BACKEND_ENDPOINT": "The orchestrator's gRPC `host:port`.",
    "STIGMER_API_KEY": "Static bearer token for orchestrator calls (alternative to OAuth2).",
    "STIGMER_BACKEND_TLS": "TLS to the orchestrator. Unset: on in `cloud` mode.",
    "STIGMER_BACKEND_CA_CERT_PATH": "CA bundle for the orchestrator's certificate (PEM); unset: "
    "the system roots.",
    "STIGMER_BACKEND_TIMEOUT_SECONDS": "Deadline of each orchestrator RPC.",
    "STIGMER_BACKEND_MAX_MESSAGE_BYTES": "Largest gRPC message sent or received (skill "
    "artifacts, full statuses).",
    "AUTH0_DOMAIN": "OAuth2 issuer host; tokens come from `https://<domain>/oauth/token`. With "
    "the two `MACHINE_ACCOUNT_*` settings it enables the client-credentials flow.",
    "AUTH0_AUDIENCE": "`audience` requested with the client-credentials grant.",
    "MACHINE_ACCOUNT_CLIENT_ID": "OAuth2 client id of the worker's machine account.",
    "MACHINE_ACCOUNT_CLIENT_SECRET": "OAuth2 client secret of the machine account.",
    "STIGMER_LLM_PROVIDER": "Model provider. Unset: `scripted` in local mode, `anthropic` in "
    "cloud mode.",
    "STIGMER_LLM_MODEL": "Default model name when an execution does not name one.",
    "STIGMER_LLM_BASE_URL": "Base URL of an OpenAI-compatible endpoint (then no key is required).",
    "OLLAMA_BASE_URL": "Ollama server for the `ollama` provider.",
    "STIGMER_LLM_API_KEY": "Provider API key used when no provider-specific key is set.",
    "ANTHROPIC_API_KEY": "Anthropic API key (wins over `STIGMER_LLM_API_KEY`).",
    "OPENAI_API_KEY": "OpenAI API key (wins over `STIGMER_LLM_API_KEY`).",
    "STIGMER_LLM_MAX_TOKENS": "Maximum output tokens per model call; unset: the provider's "
    "default. A reply it cuts off inside a tool call fails the run (`TruncatedToolCall`), the "
    "call not run.",
    "STIGMER_LLM_TEMPERATURE": "Sampling temperature; unset: the provider's default.",
    "STIGMER_AGENT_RECURSION_LIMIT": "LangGraph recursion limit (steps) of one agent run.",
    "STIGMER_SCRIPTED_TOKEN_DELAY_MS": "Delay between tokens of the scripted model (demos, tests).",
    "STIGMER_STATUS_UPDATE_EVENTS": "Push a status update after this many agent events.",
    "STIGMER_STATUS_UPDATE_INTERVAL_MS": "Push a status update at most this long after a change "
    "(fewer events than the count above).",
    "STIGMER_STATUS_UPDATE_MIN_GAP_MS": "Least time between two status updates when significant "
    "changes (tool starts and ends, todos) arrive in a burst; they are coalesced into one update.",
    "STIGMER_STATUS_UPDATE_SETTLE_MS": "Least time between a change (or the significant change "
    "that makes an update due) and the update carrying it, so changes arriving together (a tool "
    "call's request, start and quick end) go in one update.",
    "STIGMER_STATUS_FINAL_DEADLINE_SECONDS": "How long the final status update is retried before "
    "the activity returns without it.",
    "STIGMER_STATUS_DELTAS": "Send each status update after the first as what changed since the "
    "last one the orchestrator stored (`updateStatusDelta`, contract §7) instead of the whole "
    "status. Against an orchestrator without the method (UNIMPLEMENTED, logged once, as the "
    "January contract's) whole statuses are sent, as when off.",
    "SANDBOX_BACKEND": "Where agent commands run. Unset: `daytona` in cloud mode with "
    "`DAYTONA_API_KEY`, else `local`.",
    "SANDBOX_ROOT_DIR": "Parent directory of local sandboxes. Unset: `<data dir>/sandboxes`.",
    "SANDBOX_COMMAND_TIMEOUT_SECONDS": "Time limit of every sandbox command; agents may ask less.",
    "SANDBOX_ALLOW_NETWORK": "Whether sandbox commands may use the network (cut only where "
    "they are isolated).",
    "SANDBOX_ISOLATION": "Local sandbox: `required` (the worker refuses to start where "
    "bubblewrap cannot isolate commands), `preferred` (isolate where possible, else plain "
    "processes, reported) or `off`. Unset: `required` in cloud mode, else `preferred`. "
    "See docs/sandboxes.md.",
    "MCP_SERVER_START_TIMEOUT_SECONDS": "How long a stdio or docker MCP server may take to start "
    "and list its tools (an http server's limit is its own `timeout_seconds`). A server that hangs "
    "fails the execution with the non-retryable `DeadlineExceeded`.",
    "MCP_TOOL_CALL_TIMEOUT_SECONDS": "Time limit of one tool call on a stdio or docker MCP server "
    "(an http server's is its `timeout_seconds`); a call past it returns a timeout to the model.",
    "DAYTONA_API_KEY": "Daytona API key (the `daytona` backend).",
    "DAYTONA_API_URL": "Daytona API URL; unset: the SDK's default.",
    "DAYTONA_DEV_TOOLS_SNAPSHOT_ID": "Daytona snapshot new sandboxes are created from.",
    "CHECKPOINTER": "LangGraph checkpointer backend (a session's memory, and resume on retry).",
    "CHECKPOINTER_SQLITE_PATH": "SQLite file. Unset: `<data dir>/checkpoints.sqlite`.",
    "CHECKPOINTER_URL": "Connection URL for `postgres` or `mongodb`.",
    "REDIS_HOST": "Redis for live events; unset disables them.",
    "REDIS_PORT": "Redis port.",
    "REDIS_PASSWORD": "Redis password.",
    "LIVE_EVENTS_MAXLEN": "Approximate length cap of each execution's event stream.",
    "LIVE_EVENTS_TTL_SECONDS": "Expiry of an execution's event stream after its last event.",
    "HEALTH_HOST": "Interface of the health/metrics server (`0.0.0.0` in a container).",
    "HEALTH_PORT": "Port of `/livez`, `/readyz`, `/status`, `/` and `/metrics`; 0 picks a free "
    "one.",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP/gRPC collector for traces; unset: no export.",
    "OTEL_SERVICE_NAME": "`service.name` of the worker's spans.",
}


@dataclass(frozen=True)
class SettingRow:
    group: str
    names: tuple[str, ...]
    type: str
    default: str
    description: str
    secret: bool


def env_names(info: FieldInfo) -> tuple[str, ...]:
    """Every environment name a field accepts, the preferred one first."""
    alias = info.validation_alias
    if isinstance(alias, str):
        return (alias,)
    if isinstance(alias, AliasChoices):
        return tuple(c for c in alias.choices if isinstance(c, str))
    return ()


def rows() -> Iterator[SettingRow]:
    for group, cls in SETTINGS_GROUPS.items():
        for info in cls.model_fields.values():
            names = env_names(info)
            if not names:
                continue
            yield SettingRow(
                group=group,
                names=names,
                type=_type_name(info.annotation) + _constraints(info.metadata),
                default=_default(info.default),
                description=info.description or NOTES.get(names[0], ""),
                secret=_is_secret(info.annotation),
            )


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        parts = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " | ".join(parts)
    if origin is Literal:
        return " | ".join(f"`{v}`" for v in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(f"`{m.value}`" for m in annotation)
    simple = {SecretStr: "secret", Path: "path", bool: "bool", int: "int", float: "number"}
    return simple.get(annotation, "string")


def _constraints(metadata: Sequence[Any]) -> str:
    found = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            found.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            found.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            found.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            found.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            found.append("non-empty")
    return f" ({', '.join(found)})" if found else ""


def _default(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated by `python -m worker.settings_doc --write docs/settings.md` from",
        "     worker/settings.py. Do not edit by hand: a test compares it with the code. -->",
        "",
        "The worker reads these environment variables once at startup (`worker/settings.py`);",
        "nothing else in the process reads the environment. An empty value counts as unset.",
        "Invalid values stop the worker with a message naming the variable. Secrets (type",
        "`secret`) are masked in every log line; in Kubernetes they come from the Secret",
        "`agent-runner-secrets` (see docs/operations.md), never from the ConfigMap.",
    ]
    by_group: dict[str, list[SettingRow]] = {}
    for row in rows():
        by_group.setdefault(row.group, []).append(row)
    for group, group_rows in by_group.items():
        lines += ["", f"## {GROUP_TITLES.get(group, group)}", ""]
        doc = (SETTINGS_GROUPS[group].__doc__ or "").strip()
        if group and doc and not doc.startswith("Usage docs"):
            lines += [doc.splitlines()[0], ""]
        lines += ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
        for row in group_rows:
            names = " or ".join(f"`{n}`" for n in row.names)
            lines.append(
                f"| {names} | {_cell(row.type)} | {_cell(row.default)} | {_cell(row.description)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.settings_doc", description=__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="PATH", help="write the reference to PATH")
    action.add_argument("--check", type=Path, metavar="PATH", help="exit 1 if PATH is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    elif args.check:
        current = args.check.read_text(encoding="utf-8") if args.check.exists() else ""
        if current != text:
            print(
                f"{args.check} is stale: run python -m worker.settings_doc --write {args.check}",
                file=sys.stderr,
            )
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
