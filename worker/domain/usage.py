"""The execution's token usage: every model call counted once, by who made it and by model.

Three kinds of model calls spend tokens in a run: the agent's own turns, the turns of its
sub-agents, and helper calls made inside the graph that are not turns (deepagents' summarisation
of a long history, another middleware's internal call, a model called inside a tool). Each call
lands in exactly one of `agent`, `sub_agents` and `helpers[<kind>]`, and in `by_model[<model>]`;
`total` is their sum. The status carries it as `AgentExecutionStatus.usage` (contract §7, ours),
typed integers, so its JSON shows counts as integers (int64 fields are JSON strings in ProtoJSON,
`"1012"`, never `1012.0`).

A turn is counted once per message id, so replaying a turn after a resume does not count it
twice. A helper call's usage arrives in pieces (a provider may report input and output tokens
in different chunks) that add up; helper calls are never replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ai.stigmer.agentic.agentexecution.v1 import api_pb2

from worker.domain.agent_events import Usage

UNKNOWN_MODEL = "unknown"


@dataclass(slots=True)
class Tokens:
    """Token counts and the number of model calls that spent them."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    model_calls: int = 0

    def add(self, usage: Usage | None, calls: int) -> None:
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.total_tokens += usage.total_tokens
        self.model_calls += calls

    def as_strings(self) -> dict[str, str]:
        """For a `metadata` Struct: counts as decimal strings (a Struct number is a double)."""
        return {
            "input_tokens": str(self.input_tokens),
            "output_tokens": str(self.output_tokens),
            "total_tokens": str(self.total_tokens),
            "model_calls": str(self.model_calls),
        }

    def proto(self) -> api_pb2.TokenUsage:
        return api_pb2.TokenUsage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            total_tokens=self.total_tokens,
            model_calls=self.model_calls,
        )

    @classmethod
    def of(cls, stored: api_pb2.TokenUsage) -> Tokens:
        return cls(
            stored.input_tokens, stored.output_tokens, stored.total_tokens, stored.model_calls
        )


def usage_strings(usage: Usage) -> dict[str, str]:
    """One turn's usage for a message's `metadata`, counts as decimal strings."""
    return {
        "input_tokens": str(usage.input_tokens),
        "output_tokens": str(usage.output_tokens),
        "total_tokens": str(usage.total_tokens),
    }


@dataclass(slots=True)
class UsageLedger:
    """Accumulates the execution's usage; see the module docstring."""

    agent: Tokens = field(default_factory=Tokens)
    sub_agents: Tokens = field(default_factory=Tokens)
    helpers: dict[str, Tokens] = field(default_factory=dict)
    by_model: dict[str, Tokens] = field(default_factory=dict)
    turns: set[str] = field(default_factory=set)
    helper_calls: set[str] = field(default_factory=set)
    changed: bool = False

    def turn(self, message_id: str, usage: Usage | None, model: str, sub_agent: bool) -> bool:
        """Count an agent's (or a sub-agent's) turn; False when it was counted already."""
        if message_id in self.turns:
            return False
        self.turns.add(message_id)
        (self.sub_agents if sub_agent else self.agent).add(usage, 1)
        self._model(model).add(usage, 1)
        self.changed = True
        return True

    def helper(self, call_id: str, usage: Usage, kind: str, model: str) -> None:
        """Add one piece of a helper call's usage (the call counts once, on its first piece)."""
        first = not call_id or call_id not in self.helper_calls
        if call_id:
            self.helper_calls.add(call_id)
        calls = 1 if first else 0
        found = self.helpers.get(kind)
        if found is None:
            found = self.helpers[kind] = Tokens()
        found.add(usage, calls)
        self._model(model).add(usage, calls)
        self.changed = True

    def _model(self, model: str) -> Tokens:
        name = model or UNKNOWN_MODEL
        found = self.by_model.get(name)
        if found is None:
            found = self.by_model[name] = Tokens()
        return found

    @property
    def empty(self) -> bool:
        return not self.turns and not self.helper_calls and not self.by_model

    def total(self) -> Tokens:
        out = Tokens()
        for part in (self.agent, self.sub_agents, *self.helpers.values()):
            out.input_tokens += part.input_tokens
            out.output_tokens += part.output_tokens
            out.total_tokens += part.total_tokens
            out.model_calls += part.model_calls
        return out

    def proto(self) -> api_pb2.ExecutionUsage:
        return api_pb2.ExecutionUsage(
            total=self.total().proto(),
            agent=self.agent.proto(),
            sub_agents=self.sub_agents.proto(),
            helpers={k: v.proto() for k, v in self.helpers.items()},
            by_model={k: v.proto() for k, v in self.by_model.items()},
        )

    def seed(self, stored: api_pb2.ExecutionUsage, turns: set[str]) -> None:
        """Continue from a stored status: its usage, and the turns it already counted."""
        self.agent = Tokens.of(stored.agent)
        self.sub_agents = Tokens.of(stored.sub_agents)
        self.helpers = {k: Tokens.of(v) for k, v in stored.helpers.items()}
        self.by_model = {k: Tokens.of(v) for k, v in stored.by_model.items()}
        self.turns = set(turns)
