"""The stigmer-service stub: the orchestrator's side of the Stigmer contract, for local runs.

A gRPC server (default 127.0.0.1:7234, with health checking and server reflection) implementing
the contract's agent, agent instance, session, skill, environment and agent execution services
on MongoDB, plus a Temporal worker hosting the `stigmer/agent-execution/invoke` workflow that
drives the runner's `EnsureThread` and `ExecuteGraphton` activities.

Run it with `stigmer-stub` (or `python -m stigmer_stub`) next to a Temporal server and a
MongoDB-wire server; `stigmer_stub.settings` lists the environment variables it reads. Only the
generated protos (`ai.stigmer...`) are shared with the runner in `worker/`; nothing is imported
from it.

Layout: `settings`, `logs` → `store/` (one collection per kind, compare-and-swap writes, change
streams) → `resources`, `executions`, `skills` (the operations) → `rpc/` (servicers, error
mapping, server) and `workflow`/`activities`/`temporal` (Temporal) → `app` (composition root).
The client side (the `stigmer` CLI, its typed async client, the live view and the demo) lives
apart, in `stigmer_cli`.
"""
