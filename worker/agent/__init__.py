"""The agent runtime: chat models, the scripted model, the Graphton agent, its event stream and
checkpointer. LangChain/LangGraph objects stay inside this package; the rest of the worker sees
`worker.domain.agent_events`."""
