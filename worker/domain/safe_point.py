"""Where a run may be stopped and resumed elsewhere without running a side effect twice.

A worker that is shutting down hands its executions over: it stops the agent and lets Temporal
retry the attempt on another worker, which resumes from the thread's checkpoint. Stopping is safe
while the agent is only talking to the model (a model call that is cut off is simply asked again),
and unsafe while a tool call is between its request and its result: the tool may have acted, yet
its result is not in the checkpoint, so the resumed run would call it again.

A tool call counts as outstanding from the model turn that requests it (the tool may already be
running before its start event reaches the runner) until its end event, for the main agent and
sub-agents alike.
"""

from __future__ import annotations

from worker.domain.agent_events import AgentEvent, ModelTurnEnded, ToolEnded, ToolStarted


class OutstandingTools:
    """The tool calls of a run that were requested or started and have not ended yet."""

    def __init__(self) -> None:
        self._open: set[str] = set()
        self._ended: set[str] = set()

    def observe(self, event: AgentEvent) -> None:
        if isinstance(event, ModelTurnEnded):
            self._open.update(c.id for c in event.tool_calls if c.id and c.id not in self._ended)
        elif isinstance(event, ToolStarted):
            if event.tool_call_id not in self._ended:
                self._open.add(event.tool_call_id)
        elif isinstance(event, ToolEnded):
            self._ended.add(event.tool_call_id)
            self._open.discard(event.tool_call_id)

    @property
    def idle(self) -> bool:
        """True when no tool call is outstanding: a safe point to stop the run."""
        return not self._open

    def __len__(self) -> int:
        return len(self._open)
