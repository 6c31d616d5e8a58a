"""I/O adapters: the orchestrator over gRPC (with its bearer token), live events on Redis.

Each implements a port of `worker.ports` and translates its transport's failures into
`worker.errors` types.
"""
