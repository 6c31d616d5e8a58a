"""The client side of the stub: what talks to the orchestrator's gRPC API rather than serving it.

`client` is a small typed async client (used by the CLI, the demo, tests and benchmarks);
`follow` renders an execution live from its status stream and, when given Redis, its live
events; `cli` is the `stigmer` command; `demo` (`python -m stigmer_cli.demo`, `make demo`) starts
the embedded stack, the stub and a worker and runs an execution end to end. Nothing here is
imported by `stigmer_stub` or `worker`.
"""
