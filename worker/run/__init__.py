"""One ExecuteGraphton run, from the execution proto to its final, pushed status.

`service` drives a run; `resolve` checks the execution and finds its agent; `prepare` readies the
sandbox, environment, skills and tools; `runtime` runs the Graphton agent; `status_publisher`
pushes its status; `heartbeat` and `attempt` tie it to the Temporal attempt; `failures` types
whatever ended it.
"""
