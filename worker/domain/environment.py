"""The merged environment of one execution: the agent's own, its instance's, the execution's.

Layers, later ones winning per variable: `agent.spec.env_spec`, then each environment named by
`agent_instance.spec.environment_refs` in order, then `execution.spec.runtime_env`. The result goes
to the sandbox's commands and to MCP servers' placeholders for this execution only; the worker's
own environment never enters it.

Every value marked secret in any layer is collected for masking, even one a later layer replaced:
it is still a secret, and it may still appear in a file or a transcript.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ai.stigmer.agentic.environment.v1 import spec_pb2 as environment_spec
from ai.stigmer.agentic.executioncontext.v1 import spec_pb2 as execution_context

from worker.errors import InvalidInput

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class EnvironmentLayer:
    """One source of variables, named for error messages (`agent env_spec`, `environment x`)."""

    source: str
    values: Mapping[str, str]
    secret_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MergedEnvironment:
    values: Mapping[str, str] = field(default_factory=dict)
    secret_names: frozenset[str] = frozenset()
    """Variables whose winning value is secret."""
    secret_values: frozenset[str] = frozenset()
    """Every secret value seen in any layer, for masking."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Which layer each variable's value came from."""

    def public_view(self) -> dict[str, str]:
        """The variables with secret values masked, for logs and diagnostics."""
        return {k: "***" if k in self.secret_names else v for k, v in self.values.items()}


def check_name(name: str, source: str) -> None:
    if not _NAME.match(name):
        raise InvalidInput(
            f"{source}: environment variable name {name!r} is not valid "
            "(letters, digits and underscores, not starting with a digit)"
        )


def spec_layer(source: str, spec: environment_spec.EnvironmentSpec) -> EnvironmentLayer:
    """A layer from an `EnvironmentSpec` (the agent's `env_spec`, or an `Environment`'s spec)."""
    data = spec.data
    return EnvironmentLayer(
        source,
        {name: item.value for name, item in data.items()},
        frozenset(name for name, item in data.items() if item.is_secret),
    )


def runtime_layer(
    runtime_env: Mapping[str, execution_context.ExecutionValue],
) -> EnvironmentLayer:
    return EnvironmentLayer(
        "execution runtime_env",
        {name: item.value for name, item in runtime_env.items()},
        frozenset(name for name, item in runtime_env.items() if item.is_secret),
    )


def merge_layers(layers: Iterable[EnvironmentLayer]) -> MergedEnvironment:
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    secret_names: set[str] = set()
    secret_values: set[str] = set()
    for layer in layers:
        for name, value in layer.values.items():
            check_name(name, layer.source)
            if "\x00" in value:
                raise InvalidInput(f"{layer.source}: the value of {name} contains a NUL byte")
            values[name] = value
            sources[name] = layer.source
            if name in layer.secret_names:
                secret_names.add(name)
                if value:
                    secret_values.add(value)
            else:
                secret_names.discard(name)
    return MergedEnvironment(
        values=values,
        secret_names=frozenset(secret_names),
        secret_values=frozenset(secret_values),
        sources=sources,
    )


def merge_environment(
    agent_env: environment_spec.EnvironmentSpec | None,
    environments: Iterable[tuple[str, environment_spec.EnvironmentSpec]],
    runtime_env: Mapping[str, execution_context.ExecutionValue],
) -> MergedEnvironment:
    """Agent `env_spec` → each `(name, spec)` of the instance's environments in order →
    the execution's `runtime_env`; the last layer to set a variable wins."""
    layers = []
    if agent_env is not None:
        layers.append(spec_layer("agent env_spec", agent_env))
    layers.extend(spec_layer(f"environment {name}", spec) for name, spec in environments)
    layers.append(runtime_layer(runtime_env))
    return merge_layers(layers)
