"""The console's page shells, rendered on the server.

A shell holds the page's frame, its navigation and the ids `static/console.js` fills; it holds
no data (that comes from the API, after the key check). Every value placed here is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

TITLES = {
    "executions": "Executions",
    "execution": "Execution",
    "agents": "Agents",
    "sessions": "Sessions",
    "session": "Session",
    "login": "Sign in",
}

_BODIES = {
    "executions": """
<section class="panel">
  <h2>New run</h2>
  <form id="new-run" class="row">
    <label>Agent id <input name="agent_id" placeholder="agent id"></label>
    <label>or session id <input name="session_id" placeholder="session id"></label>
    <label>Model <input name="model" placeholder="default"></label>
    <label class="grow">Message
      <input name="message" required placeholder="What should it do?"></label>
    <button type="submit">Start</button>
  </form>
  <p id="new-run-result" class="note" role="status"></p>
</section>
<section class="panel">
  <div class="row">
    <h2 class="grow">Executions</h2>
    <label>Phase <select id="phase-filter">
      <option value="">any</option>
      <option>PENDING</option><option>IN_PROGRESS</option><option>WAITING_FOR_APPROVAL</option>
      <option>PAUSED</option><option>COMPLETED</option><option>FAILED</option>
      <option>CANCELLED</option><option>TERMINATED</option>
    </select></label>
    <span id="live-state" class="note">connecting…</span>
  </div>
  <table id="executions"><thead><tr>
    <th>Execution</th><th>Phase</th><th>Agent</th><th>Session</th><th>Started</th>
    <th>Duration</th><th>Messages</th><th>Tool calls</th>
  </tr></thead><tbody></tbody></table>
  <div class="row"><button id="first-page" type="button">First page</button>
  <button id="next-page" type="button" disabled>Next page</button></div>
</section>""",
    "execution": """
<section class="panel">
  <div class="row">
    <h2 class="grow">Execution <code id="execution-id"></code></h2>
    <span id="phase" class="phase"></span>
  </div>
  <p id="links" class="row"></p>
  <p><b>Request:</b> <span id="request"></span></p>
  <p id="error" class="error" hidden></p>
  <div id="actions" class="row">
    <button data-action="approve" disabled>Approve</button>
    <button data-action="skip" disabled>Skip</button>
    <button data-action="reject" disabled>Reject…</button>
    <button data-action="approve_all" disabled>Approve all</button>
    <button data-action="pause" disabled>Pause</button>
    <button data-action="resume" disabled>Resume</button>
    <button data-action="cancel" disabled>Cancel</button>
    <button data-action="terminate" disabled>Terminate</button>
    <button data-action="recover" disabled>Recover</button>
  </div>
  <p id="action-result" class="note" role="status"></p>
</section>
<div class="columns">
  <section class="panel grow">
    <h2>Conversation</h2>
    <p id="window-note" class="note"></p>
    <div id="conversation"></div>
  </section>
  <aside class="side">
    <section class="panel"><h2>Todos</h2><ul id="todos"></ul></section>
    <section class="panel"><h2>Usage</h2><dl id="usage"></dl></section>
  </aside>
</div>
<section class="panel">
  <h2>Tool calls</h2>
  <div id="tool-calls"></div>
</section>""",
    "agents": """
<section class="panel"><h2>Agents</h2>
<table id="agents"><thead><tr><th>Agent</th><th>Id</th><th>Description</th></tr></thead>
<tbody></tbody></table></section>""",
    "sessions": """
<section class="panel"><h2>Sessions</h2>
<table id="sessions"><thead><tr><th>Session</th><th>Subject</th><th>Agent instance</th></tr>
</thead><tbody></tbody></table></section>""",
    "session": """
<section class="panel"><h2>Session <code id="session-id"></code></h2>
<table id="executions"><thead><tr>
  <th>Execution</th><th>Phase</th><th>Agent</th><th>Session</th><th>Started</th>
  <th>Duration</th><th>Messages</th><th>Tool calls</th>
</tr></thead><tbody></tbody></table></section>""",
    "login": """
<section class="panel narrow"><h2>Sign in</h2>
<p>This stub requires an API key. Give a <b>user</b> key (the console refuses runner keys).</p>
<form id="login" class="row">
  <label class="grow">Key <input name="key" type="password" autocomplete="off" required></label>
  <button type="submit">Sign in</button>
</form>
<p id="login-result" class="error" role="status"></p></section>""",
}


def render(name: str, params: Mapping[str, str], settings: Mapping[str, str]) -> str:
    """The page `name`; `params` (ids from the path) and `settings` go into data attributes."""
    data = {**settings, **params, "page": name}
    attributes = " ".join(
        f'data-{escape(key.replace("_", "-"))}="{escape(value)}"' for key, value in data.items()
    )
    title = TITLES[name]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · Stigmer console</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body {attributes}>
<header><a class="brand" href="/">Stigmer console</a>
<nav><a href="/">Executions</a> <a href="/sessions">Sessions</a> <a href="/agents">Agents</a>
<button id="logout" type="button" class="link">Sign out</button></nav></header>
<main>{_BODIES[name]}</main>
</body></html>
"""
