"""Large content: references to content the orchestrator stores, uploads, and size bounds.

- `refs`: `ContentRef` (the Python side of `ToolCallOutputRef`), previews and cut markers;
- `limits`: the bounds the StatusBuilder applies and the `Offloader` it hands content to;
- `offload`: the uploader (`uploadContent`/`statContent`, chunked, by hash, resumable) and the
  once-per-process probe of whether the orchestrator stores content at all.
"""
