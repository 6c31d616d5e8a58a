// The Stigmer console: fills the page shells from the console's JSON API.
// Agent-produced text is untrusted: it only ever enters the document as text nodes
// (`el` below turns every string child into a text node; nothing here sets innerHTML).
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function link(href, text) {
    return el("a", { href: href }, text);
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
    if (response.status === 401 && page !== "login") {
      window.location.assign("/login");
      throw new Error("sign in first");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const code = data.code ? data.code + ": " : "";
      throw new Error(code + (data.error || response.statusText));
    }
    return data;
  }

  function post(path, payload) {
    return api(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload || {}),
    });
  }

  function seconds(start, end) {
    if (!start) return "";
    const a = Date.parse(start);
    const b = end ? Date.parse(end) : Date.now();
    if (isNaN(a) || isNaN(b)) return "";
    const s = Math.max(0, (b - a) / 1000);
    return s < 60 ? s.toFixed(1) + " s" : Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }

  function when(stamp) {
    if (!stamp) return "";
    const t = new Date(stamp);
    return isNaN(t) ? stamp : t.toLocaleString();
  }

  function phaseBadge(phase) {
    return el("span", { className: "phase phase-" + phase.toLowerCase() }, phase);
  }

  // Executions list ----------------------------------------------------------------------

  function executionRow(row) {
    return el(
      "tr",
      { "data-id": row.id, "data-phase": row.phase },
      el("td", {}, link("/executions/" + encodeURIComponent(row.id), row.name || row.id)),
      el("td", {}, phaseBadge(row.phase)),
      el("td", {}, row.agent_id),
      el("td", {}, row.session_id ? link("/sessions/" + encodeURIComponent(row.session_id), row.session_id) : ""),
      el("td", {}, when(row.started_at || row.created_at)),
      el("td", {}, seconds(row.started_at, row.completed_at)),
      el("td", { className: "num" }, row.messages),
      el("td", { className: "num" }, row.tool_calls)
    );
  }

  function fillRows(table, items) {
    const tbody = table.querySelector("tbody");
    clear(tbody);
    for (const row of items) tbody.append(executionRow(row));
    if (!items.length) tbody.append(el("tr", {}, el("td", { colspan: 8, className: "note" }, "no executions")));
  }

  function executionsPage() {
    const table = document.getElementById("executions");
    const filter = document.getElementById("phase-filter");
    const state = document.getElementById("live-state");
    const next = document.getElementById("next-page");
    let token = "";
    let nextToken = "";
    let source = null;

    function connect() {
      if (source) source.close();
      const query = new URLSearchParams({ phase: filter.value, token: token, size: "50" });
      source = new EventSource("/api/executions/stream?" + query.toString());
      source.addEventListener("open", () => { state.textContent = "live"; });
      source.addEventListener("page", (event) => {
        const data = JSON.parse(event.data);
        fillRows(table, data.items);
        nextToken = data.next_token || "";
        next.disabled = !nextToken;
        state.textContent = "live";
      });
      source.addEventListener("failure", (event) => {
        state.textContent = JSON.parse(event.data).error;
      });
      source.addEventListener("error", () => { state.textContent = "reconnecting…"; });
    }

    filter.addEventListener("change", () => { token = ""; connect(); });
    next.addEventListener("click", () => { token = nextToken; connect(); });
    document.getElementById("first-page").addEventListener("click", () => { token = ""; connect(); });
    connect();

    const form = document.getElementById("new-run");
    const result = document.getElementById("new-run-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fields = Object.fromEntries(new FormData(form).entries());
      result.textContent = "starting…";
      try {
        const created = await post("/api/executions", fields);
        clear(result);
        result.append("started ", link("/executions/" + encodeURIComponent(created.id), created.id));
      } catch (err) {
        result.textContent = "could not start: " + err.message;
      }
    });
  }

  // One execution ------------------------------------------------------------------------

  function executionPage() {
    const id = body.dataset.executionId;
    document.getElementById("execution-id").textContent = id;
    const live = {}; // message index -> text streamed so far (live stream)
    let latest = null;

    function renderLinks(ex) {
      const links = document.getElementById("links");
      clear(links);
      if (ex.session_id) links.append(link("/sessions/" + encodeURIComponent(ex.session_id), "session " + ex.session_id), " ");
      if (ex.agent_id) links.append(el("span", {}, "agent " + ex.agent_id), " ");
      const ui = body.dataset.temporalUiUrl;
      if (ui) {
        const ns = encodeURIComponent(body.dataset.temporalNamespace || "default");
        const wf = ui + "/namespaces/" + ns + "/workflows/" + encodeURIComponent(ex.workflow_id);
        links.append(el("a", { href: wf, target: "_blank", rel: "noopener noreferrer" }, "workflow in the Temporal UI"));
      }
      if (ex.model) links.append(" ", el("span", { className: "note" }, "model " + ex.model));
    }

    function contentLinks(ref) {
      if (!ref || !ref.storage_key) return [];
      const base = "/api/executions/" + encodeURIComponent(id) + "/content?key=" + encodeURIComponent(ref.storage_key);
      const size = ref.size_bytes ? " (" + ref.size_bytes + " bytes)" : "";
      return [
        el("a", { href: base, target: "_blank", rel: "noopener", className: "open-content" }, "open whole" + size),
        " ",
        el("a", { href: base + "&download=1", className: "download-content" }, "download"),
      ];
    }

    function renderMessages(container, messages, offset, liveTexts) {
      clear(container);
      messages.forEach((message, i) => {
        const index = offset + i;
        let text = message.content;
        const streamed = liveTexts && liveTexts[index];
        if (streamed && streamed.length > text.length && streamed.startsWith(text)) text = streamed;
        container.append(
          el("div", { className: "message message-" + message.type.toLowerCase(), "data-index": index },
            el("div", { className: "who" }, message.type.toLowerCase()),
            el("pre", { className: "text" }, text),
            contentLinks(message.content_ref))
        );
      });
      if (liveTexts) {
        // Streamed messages the status has not caught up with yet.
        const last = offset + messages.length;
        Object.keys(liveTexts).map(Number).filter((n) => n >= last).sort((a, b) => a - b).forEach((n) => {
          container.append(el("div", { className: "message message-ai streaming", "data-index": n },
            el("div", { className: "who" }, "ai (streaming)"), el("pre", { className: "text" }, liveTexts[n])));
        });
      }
    }

    function toolNode(call, subs, byAgent) {
      const args = Object.keys(call.args || {}).length ? JSON.stringify(call.args, null, 2) : call.args_preview;
      const sub = subs[call.id];
      let subNode = null;
      if (sub) {
        const messages = el("div", {});
        renderMessages(messages, sub.messages, 0, null);
        subNode = el("div", { className: "sub-agent", "data-sub-agent": sub.id },
          el("div", { className: "label" }, "sub-agent " + sub.name + " · " + sub.status),
          el("pre", { className: "text" }, sub.input),
          (byAgent[sub.id] || []).map((inner) => toolNode(inner, subs, byAgent)),
          messages,
          sub.output ? el("pre", { className: "result" }, sub.output) : null,
          sub.error ? el("pre", { className: "error" }, sub.error) : null);
      }
      return el("details", { className: "tool tool-" + call.status.toLowerCase(), "data-id": call.id, open: call.status === "WAITING_APPROVAL" },
        el("summary", {},
          el("b", {}, call.name), " ", el("span", { className: "tool-status" }, call.status), " ",
          el("span", { className: "note" }, seconds(call.started_at, call.completed_at))),
        call.approval_message ? el("p", { className: "approval" }, call.approval_message) : null,
        call.status === "WAITING_APPROVAL" ? el("div", { className: "row" },
          el("button", { "data-action": "approve", "data-call": call.id }, "Approve"),
          el("button", { "data-action": "skip", "data-call": call.id }, "Skip"),
          el("button", { "data-action": "reject", "data-call": call.id }, "Reject…")) : null,
        el("div", { className: "label" }, "arguments"), el("pre", { className: "args" }, args || ""),
        el("div", { className: "label" }, "result"), el("pre", { className: "result" }, call.result || ""),
        call.error ? el("pre", { className: "error" }, call.error) : null,
        call.approved_by ? el("p", { className: "note" }, "decided by " + call.approved_by) : null,
        contentLinks(call.output_ref),
        subNode);
    }

    function renderTools(ex) {
      const box = document.getElementById("tool-calls");
      clear(box);
      const subs = {};
      for (const sub of ex.sub_agents) subs[sub.parent_tool_call_id] = sub;
      // Calls made by a sub-agent go under it; the rest are the agent's own.
      const byAgent = {};
      const own = [];
      for (const call of ex.tool_calls) {
        if (call.sub_agent_id && subs[call.sub_agent_id]) (byAgent[call.sub_agent_id] = byAgent[call.sub_agent_id] || []).push(call);
        else own.push(call);
      }
      if (!ex.tool_calls.length) box.append(el("p", { className: "note" }, "no tool calls"));
      for (const call of own) box.append(toolNode(call, subs, byAgent));
    }

    function renderTodos(ex) {
      const list = document.getElementById("todos");
      clear(list);
      if (!ex.todos.length) list.append(el("li", { className: "note" }, "none"));
      for (const todo of ex.todos) {
        list.append(el("li", { className: "todo todo-" + todo.status.toLowerCase() },
          el("span", { className: "todo-status" }, todo.status.replace("_", " ").toLowerCase()), " ", todo.content));
      }
    }

    function renderUsage(ex) {
      const dl = document.getElementById("usage");
      clear(dl);
      const total = (ex.usage && ex.usage.total) || {};
      const rows = [["input tokens", total.input_tokens], ["output tokens", total.output_tokens],
        ["model calls", total.model_calls], ["duration", seconds(ex.started_at, ex.completed_at)]];
      for (const [name, value] of rows) dl.append(el("dt", {}, name), el("dd", {}, value === undefined ? "0" : value));
    }

    function render(ex) {
      latest = ex;
      const phase = document.getElementById("phase");
      phase.textContent = ex.phase;
      phase.className = "phase phase-" + ex.phase.toLowerCase();
      body.dataset.phase = ex.phase;
      document.getElementById("request").textContent = ex.request;
      const error = document.getElementById("error");
      error.hidden = !ex.error;
      error.textContent = ex.error || "";
      renderLinks(ex);
      const note = document.getElementById("window-note");
      note.textContent = ex.message_offset ? "showing the latest " + ex.messages.length + " of " + ex.total_messages + " messages" : "";
      renderMessages(document.getElementById("conversation"), ex.messages, ex.message_offset, live);
      renderTools(ex);
      renderTodos(ex);
      renderUsage(ex);
      for (const button of document.querySelectorAll("#actions button")) {
        button.disabled = !ex.actions.includes(button.dataset.action);
      }
    }

    function connect() {
      const source = new EventSource("/api/executions/" + encodeURIComponent(id) + "/stream");
      source.addEventListener("execution", (event) => render(JSON.parse(event.data)));
      source.addEventListener("live", (event) => {
        const data = JSON.parse(event.data);
        body.dataset.liveEvents = String(Number(body.dataset.liveEvents || 0) + 1);
        if (data.type === "token" && data.message_index !== undefined) {
          const n = Number(data.message_index);
          live[n] = (live[n] || "") + (data.text || "");
          if (latest) renderMessages(document.getElementById("conversation"), latest.messages, latest.message_offset, live);
        }
      });
      source.addEventListener("end", () => { source.close(); body.dataset.ended = "true"; });
      source.addEventListener("failure", (event) => {
        document.getElementById("action-result").textContent = JSON.parse(event.data).error;
        source.close();
      });
    }

    const result = document.getElementById("action-result");
    document.body.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const action = button.dataset.action;
      const payload = {};
      if (button.dataset.call) payload.tool_call_id = button.dataset.call;
      else if (latest && ["approve", "skip", "reject"].includes(action)) {
        const waiting = latest.tool_calls.find((c) => c.status === "WAITING_APPROVAL");
        if (waiting) payload.tool_call_id = waiting.id;
      }
      if (action === "reject") {
        const reason = window.prompt("Why reject it?");
        if (reason === null) return;
        payload.reason = reason;
      } else if (["cancel", "terminate"].includes(action)) {
        if (!window.confirm(action + " this execution?")) return;
      }
      result.textContent = action + "…";
      try {
        const done = await post("/api/executions/" + encodeURIComponent(id) + "/" + action, payload);
        result.textContent = action + " done: the execution is " + done.phase;
      } catch (err) {
        result.textContent = action + " failed: " + err.message;
      }
    });
    connect();
  }

  // Agents and sessions ------------------------------------------------------------------

  async function agentsPage() {
    const tbody = document.querySelector("#agents tbody");
    const data = await api("/api/agents");
    for (const a of data.items) {
      tbody.append(el("tr", {}, el("td", {}, a.name), el("td", {}, el("code", {}, a.id)), el("td", {}, a.description)));
    }
  }

  async function sessionsPage() {
    const tbody = document.querySelector("#sessions tbody");
    const data = await api("/api/sessions");
    for (const s of data.items) {
      tbody.append(el("tr", {}, el("td", {}, link("/sessions/" + encodeURIComponent(s.id), s.name || s.id)),
        el("td", {}, s.subject), el("td", {}, s.agent_instance_id)));
    }
  }

  async function sessionPage() {
    const id = body.dataset.sessionId;
    document.getElementById("session-id").textContent = id;
    const data = await api("/api/sessions/" + encodeURIComponent(id) + "/executions?size=1000");
    fillRows(document.getElementById("executions"), data.items);
  }

  function loginPage() {
    const form = document.getElementById("login");
    const result = document.getElementById("login-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await post("/api/login", { key: new FormData(form).get("key") });
        window.location.assign("/");
      } catch (err) {
        result.textContent = err.message;
      }
    });
  }

  const logout = document.getElementById("logout");
  if (body.dataset.keys !== "on" || page === "login") logout.hidden = true;
  logout.addEventListener("click", async () => {
    await post("/api/logout", {});
    window.location.assign("/login");
  });

  const pages = {
    executions: executionsPage, execution: executionPage, agents: agentsPage,
    sessions: sessionsPage, session: sessionPage, login: loginPage,
  };
  Promise.resolve(pages[page]()).catch((err) => {
    document.querySelector("main").prepend(el("p", { className: "error" }, err.message));
  });
})();
