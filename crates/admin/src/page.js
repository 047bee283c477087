// The System Overview page: renders the status document (embedded at load, then GET /api/status
// every REFRESH_MS) into the DOM and sends the operator's actions as POSTs with the header the admin
// listener demands (X-Requested-By; a cross-site page cannot send it). Everything is built with
// textContent and text nodes only (never parsed markup), so no label from cluster.toml can become markup. Updates are
// applied in place (morph) so buttons, hover and scroll survive a refresh and nothing flickers.
"use strict";
(() => {
  const REFRESH_MS = 2000;
  const TIMEOUT_MS = 4000;
  const app = document.getElementById("app");
  const refreshed = document.getElementById("refreshed");
  const notice = document.getElementById("notice");
  const confirmBox = document.getElementById("confirm");
  const confirmText = document.getElementById("confirm-text");
  const confirmClose = document.getElementById("confirm-close");
  const confirmCloseBox = document.getElementById("confirm-close-box");
  const confirmOk = document.getElementById("confirm-ok");
  let timer = null;
  let failingSince = null;
  let pending = null; // the action waiting for the operator's confirmation
  let noticeTimer = null;

  // ---- small DOM helpers ------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      el.setAttribute(key === "cls" ? "class" : key, value === true ? "" : String(value));
    }
    for (const child of children.flat(4)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }
  const badge = (text, cls) => h("span", { cls: "badge " + cls }, text);
  const small = (...text) => h("span", { cls: "small" }, ...text);

  // Brings `old` to look like `fresh`, touching only what differs.
  function morph(old, fresh) {
    if (old.nodeType !== fresh.nodeType || old.nodeName !== fresh.nodeName) {
      old.replaceWith(fresh);
      return;
    }
    if (old.nodeType === Node.TEXT_NODE) {
      if (old.data !== fresh.data) old.data = fresh.data;
      return;
    }
    for (const attr of [...old.attributes]) {
      if (!fresh.hasAttribute(attr.name)) old.removeAttribute(attr.name);
    }
    for (const attr of [...fresh.attributes]) {
      if (old.getAttribute(attr.name) !== attr.value) old.setAttribute(attr.name, attr.value);
    }
    const olds = [...old.childNodes];
    const freshes = [...fresh.childNodes];
    freshes.forEach((child, i) => (i < olds.length ? morph(olds[i], child) : old.append(child)));
    olds.slice(freshes.length).forEach((child) => child.remove());
  }

  // ---- formatting ------------------------------------------------------------------------
  function age(ms) {
    if (ms === null || ms === undefined) return "-";
    if (ms < 1000) return ms + " ms";
    let s = Math.floor(ms / 1000);
    if (s < 60) return s + " s";
    const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    s %= 60;
    if (d) return `${d} d ${hr} h`;
    if (hr) return `${hr} h ${m} min`;
    return `${m} min ${s} s`;
  }
  const utc = (ms) => new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  const shortDigest = (digest) => (digest || "").slice(0, 12) || "-";
  // Where an admin state came from, in the words of tandem_status::AdminSource's Display.
  function adminSource(source) {
    if (!source) return null;
    const how = {
      operator: "set by an operator",
      replicated: "replicated from the peer, set by an operator",
      restored: "restored from state_dir, set by an operator",
    }[source.via] || source.via;
    return `${how} on ${source.set_by} at ${utc(source.at_unix_ms)}`;
  }
  function stateClass(state) {
    switch (state) {
      case "active": case "up": case "online": return "good";
      case "standby": return "info"; // the right state for the other node of a healthy pair
      case "drain": case "init": case "claiming": case "acquiring": case "releasing": return "warn";
      case "fault": case "down": case "halt": case "dead": return "bad";
      default: return "idle";
    }
  }
  const vipList = (vips) => (vips && vips.length ? vips.join(", ") : "none");

  // ---- the cluster panel -----------------------------------------------------------------
  function row(term, ...value) {
    return [h("dt", null, term), h("dd", null, ...value)];
  }

  function syncLine(rep) {
    if (!rep) return "standalone (no sync session)";
    if (!rep.connected) {
      return [badge("disconnected", "bad"), rep.last_error ? small(rep.last_error) : null];
    }
    const tables = rep.tables.map((t) =>
      `${t.label} ${t.local_entries}/${t.peer_entries === null ? "?" : t.peer_entries}${t.resyncing ? " (resyncing)" : ""}`);
    return [
      badge(rep.caught_up ? "connected" : "catching up", rep.caught_up ? "good" : "warn"),
      ` ${rep.direction}, last ack ${age(rep.last_ack_age_ms)} ago`,
      tables.length ? small("stick entries here/peer: ", tables.join(", ")) : null,
    ];
  }

  // Duplicate-VIP detection: every MAC that claimed a VIP of this node (none: no row).
  function conflictRow(c) {
    if (!c || !c.vips || !c.vips.length) return null;
    const lines = c.vips.flatMap((v) => v.claimants.map((m) => h("div", { cls: "conflict" },
      badge(m.current ? "now" : "past", m.current ? "bad" : "warn"),
      ` ${v.vip} claimed by ${m.mac}`,
      small(`${m.kind}, ${m.frames} frames, last ${age(m.last_seen_age_ms)} ago`))));
    return row("VIP conflicts", lines);
  }

  function thisNode(s) {
    const n = s.node;
    const why = n.fault || s.cluster.last_event;
    const held = new Set(n.vips_held);
    const vips = n.vips.length
      ? n.vips.map((vip, i) => [i ? ", " : "", held.has(vip) ? vip : h("span", { cls: "muted" }, vip + " (not held)")])
      : "none configured";
    return h("section", { cls: "node", id: "node-local" },
      h("h3", null, n.name, h("span", { cls: "which" }, "this node"), badge(n.state, stateClass(n.state))),
      h("dl", null,
        row("Role", n.role),
        row("State", `${n.state} for ${age(n.state_since_ms)}`, why ? small(why) : null),
        row("Address", n.address, small(`interface ${n.interface}${n.manage_vips ? "" : ", VIPs moved by something else"}`)),
        row("VIPs held", held.size ? vipList(n.vips_held) : "none", small("configured: ", vips)),
        conflictRow(n.vip_conflicts),
        row("Config", `generation ${s.config.generation}, digest `, h("code", null, shortDigest(s.config.digest))),
        row("Config sync", s.config.sync),
        row("Sync (TCP 7778)", syncLine(s.replication)),
        row("Ping nodes", n.ping),
        row("Heartbeats", `sent ${s.cluster.heartbeats.sent}, received ${s.cluster.heartbeats.received}`,
          rejectedTotal(s) ? small(`rejected ${rejectedTotal(s)}`) : null),
        row("Up", age(n.uptime_s * 1000)),
      ));
  }

  function rejectedTotal(s) {
    return Object.values(s.cluster.heartbeats.rejected || {}).reduce((a, b) => a + b, 0);
  }

  function peerNode(s) {
    const p = s.node.peer;
    const rep = s.replication;
    if (s.config.sync === "standalone") {
      return h("section", { cls: "node", id: "node-peer" },
        h("h3", null, "Peer", badge("none", "idle")),
        h("p", { cls: "empty" }, "Standalone node: no peer in node.toml."));
    }
    if (!p) {
      const odd = s.cluster.wire && s.cluster.wire.incompatible_peer;
      return h("section", { cls: "node", id: "node-peer" },
        h("h3", null, odd ? odd.name : "Peer", h("span", { cls: "which" }, "peer"), badge("unknown", "warn")),
        h("p", { cls: "empty" }, odd
          ? `Alive, but speaks heartbeat wire version ${odd.version} (heard ${age(odd.last_heard_ms)} ago): its state is unknown.`
          : "Not heard yet."),
        h("dl", null, row("Sync (TCP 7778)", syncLine(rep))));
    }
    const digestDiffers = p.config_digest !== s.config.digest;
    return h("section", { cls: "node", id: "node-peer" },
      h("h3", null, p.name, h("span", { cls: "which" }, "peer, as this node hears it"), badge(p.state, stateClass(p.state))),
      h("dl", null,
        row("Role", p.role),
        row("State", p.alive
          ? `${p.state}${p.state_since_ms === null || p.state_since_ms === undefined ? "" : ` for ${age(p.state_since_ms)}`}`
          : "dead: no heartbeat within the dead time",
          small(`last heard ${age(p.last_heard_ms)} ago`)),
        row("Address", p.address || "-"),
        row("VIPs held", p.holds_vips ? vipList(s.node.vips) : "none"),
        row("Config", h("span", { cls: digestDiffers ? "mismatch" : null },
          `generation ${p.config_generation}, digest `, h("code", null, shortDigest(p.config_digest)),
          digestDiffers ? " (differs from this node)" : "")),
        row("Servers up", `${p.servers_up}/${p.servers_total} (its own health checks)`),
        row("Sync (TCP 7778)", syncLine(rep),
          rep && rep.config && rep.config.peer ? small(`config it reported: generation ${rep.config.peer.generation}`) : null),
      ));
  }

  function banners(s) {
    const out = [];
    const n = s.node, p = n.peer;
    const banner = (cls, title, detail) => h("div", { cls: "banner " + cls }, title, detail ? h("span", { cls: "detail" }, detail) : null);
    if (n.state === "fault") out.push(banner("bad", "This node is in fault.", n.fault));
    if (p && p.alive && n.state === "active" && p.state === "active") {
      out.push(banner("bad", "Both nodes are active (split brain).", "Each holds or claims the VIPs; see the log of both nodes."));
    }
    if (p && !p.alive) out.push(banner("warn", `Peer ${p.name} is not heard.`, `Last heartbeat ${age(p.last_heard_ms)} ago.`));
    for (const c of (n.vip_conflicts && n.vip_conflicts.vips) || []) {
      const now = c.claimants.filter((m) => m.current).map((m) => m.mac);
      if (now.length) {
        out.push(banner("bad", `VIP ${c.vip} is claimed by another machine (${now.join(", ")}).`,
          "This node re-announces it; remove the address from that machine."));
      }
    }
    const inSync = ["in sync", "standalone", "peer not heard yet"].includes(s.config.sync);
    if (!inSync || (p && p.config_digest !== s.config.digest)) {
      out.push(banner("bad", "Config out of sync.",
        `This node: generation ${s.config.generation}, digest ${shortDigest(s.config.digest)}` +
        (p ? `; ${p.name}: generation ${p.config_generation}, digest ${shortDigest(p.config_digest)}` : "") +
        ` (${s.config.sync}).`));
    }
    // A TLS service whose certificates failed to load keeps its previous settings, or is not served.
    for (const problem of s.config.not_applied || []) {
      out.push(banner("bad", "Not served as configured:", `${problem} (fix it, then reload this node).`));
    }
    if (s.replication && !s.replication.connected && s.config.sync !== "standalone") {
      out.push(banner("warn", "Replication is disconnected.", s.replication.last_error || ""));
    }
    for (const service of s.services) {
      if (service.servers.length && !service.servers.some((server) => server.health === "up")) {
        out.push(banner("bad", `Every server of ${service.label} is down.`));
      }
      for (const error of service.bind_errors) out.push(banner("bad", `${service.label} is not listening:`, error));
    }
    return h("div", { id: "banners" }, out);
  }

  // ---- services and servers --------------------------------------------------------------
  function serviceRows(service) {
    const up = service.servers.filter((server) => server.health === "up").length;
    const total = service.servers.length;
    const p = service.persistence;
    const details = [
      p.table_size ? `stick table ${service.stick_table_size}/${p.table_size}` : null,
      service.traffic && service.traffic.stick_table_evictions ? `${service.traffic.stick_table_evictions} evicted` : null,
      p.timeout_s ? `expiry ${p.timeout_s} s` : null,
      p.cookie_name ? `cookie ${p.cookie_name}` : null,
    ].filter(Boolean);
    const persistence = p.mode === "none" ? "no persistence" : [p.mode, details.length ? small(details.join(", ")) : null];
    const rows = [h("tr", { cls: "service", "data-service": service.label },
      h("td", null, h("span", { cls: "label" }, service.label), small(service.balance)),
      h("td", null, service.vip),
      h("td", null, service.ports.join(", "), small(service.mode.toUpperCase())),
      h("td", { cls: "health" }, badge(`${up}/${total} up`, up === 0 ? "bad" : up < total ? "warn" : "good")),
      h("td", null, persistence),
      h("td", { cls: "num" }, service.current_connections, small(`${service.total_connections} total`)),
      h("td", { cls: "num" }, service.failures ? h("span", { cls: "mismatch" }, service.failures) : "0",
        small("no server"), fiveXX(service), service.bind_errors.length ? small(service.bind_errors.join("; ")) : null),
      h("td", null, ""),
    )];
    for (const server of service.servers) rows.push(serverRow(service, server));
    return rows;
  }

  // HTTP responses with a 5xx status (the proxy's own 502/503/504 included), from nodes that report them.
  function fiveXX(service) {
    const responses = service.mode === "http" && service.traffic && service.traffic.http_responses;
    const total = responses ? Object.values(responses).reduce((a, b) => a + b, 0) : 0;
    return total ? small(`${responses["5xx"]} 5xx of ${total}`) : null;
  }

  function serverRow(service, server) {
    const check = server.last_check;
    const events = server.events;
    const source = adminSource(server.admin_source);
    const button = (action, text, cls) => h("button", {
      type: "button", cls, "data-action": action, "data-service": service.label, "data-server": server.label,
      disabled: server.admin_state === action, title: `${text} ${server.label}`,
    }, text);
    return h("tr", { cls: "server", "data-service": service.label, "data-server": server.label },
      h("td", null, server.label),
      h("td", null, server.address),
      h("td", null, server.port === null ? "client's port" : server.port, small(`weight\u00a0${server.weight}`)),
      h("td", { cls: "health" }, badge(server.health, stateClass(server.health)),
        server.health_since_ms === null || server.health_since_ms === undefined ? null
          : h("span", { cls: "since" }, ` for ${age(server.health_since_ms)}`),
        small([
          server.health_reason,
          check ? `checked ${age(Math.max(0, Date.now() - check.at_unix_ms))} ago${check.ok ? "" : ", failed"}` : null,
          // From nodes that report them: how often it went down, and for how long in all.
          events && events.up_down ? `down ${events.up_down}\u00d7, ${age(events.downtime_ms)} in all` : null,
        ].filter(Boolean).join(" \u00b7 "))),
      h("td", { cls: "admin", title: source ? `${server.admin_state}: ${source}` : null },
        badge(server.admin_state, stateClass(server.admin_state)),
        source ? small(source) : null),
      h("td", { cls: "num" }, server.current_connections, small(`${server.total_connections} total`)),
      h("td", { cls: "num" }, `${server.check_failures} / ${server.connect_failures}`, small("check / connect")),
      h("td", { cls: "actions" },
        button("drain", "Drain", null), button("halt", "Halt", "danger"), button("online", "Online", null)),
    );
  }

  function servicesPanel(s) {
    if (!s.services.length) return h("p", { id: "services", cls: "empty" }, "No virtual services in cluster.toml.");
    return h("table", { cls: "services", id: "services" },
      h("thead", null, h("tr", null,
        ["Virtual service / real server", "Address", "Ports", "Health", "Admin state / persistence",
          "Connections", "Errors", "Actions"].map((title) => h("th", null, title)))),
      h("tbody", null, s.services.map(serviceRows)));
  }

  function render(s) {
    document.title = `tandem ${s.node.name} - System Overview`;
    document.getElementById("node-name").textContent = s.node.name;
    const fresh = h("main", { id: "app" },
      banners(s),
      h("h2", null, "Cluster"),
      h("div", { cls: "nodes" }, thisNode(s), peerNode(s)),
      h("h2", null, `Virtual services (${s.services.length})`),
      servicesPanel(s));
    morph(app, fresh);
  }

  // ---- refresh ---------------------------------------------------------------------------
  async function answerText(response) {
    const body = await response.text();
    try {
      const json = JSON.parse(body);
      return json.error || json.message || `HTTP ${response.status}`;
    } catch (e) {
      return body.trim() || response.statusText || `HTTP ${response.status}`;
    }
  }

  async function refresh() {
    clearTimeout(timer);
    const abort = new AbortController();
    const deadline = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch("/api/status", { credentials: "same-origin", cache: "no-store", signal: abort.signal });
      if (!response.ok) throw new Error(await answerText(response));
      render(await response.json());
      failingSince = null;
      app.classList.remove("stale");
      refreshed.className = "refresh";
      refreshed.textContent = `updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
    } catch (error) {
      // The node restarts, or the network is away: keep the last picture, greyed, and keep asking.
      failingSince = failingSince || Date.now();
      app.classList.add("stale");
      refreshed.className = "refresh stale";
      const why = error.name === "AbortError" ? "no answer within 4 s" : error.message;
      refreshed.textContent = `node not answering for ${age(Date.now() - failingSince)} (${why}); retrying`;
    } finally {
      clearTimeout(deadline);
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  // ---- actions -----------------------------------------------------------------------------
  function say(text, ok) {
    clearTimeout(noticeTimer);
    notice.textContent = text;
    notice.className = ok ? "good" : "bad";
    notice.hidden = false;
    noticeTimer = setTimeout(() => { notice.hidden = true; }, ok ? 5000 : 15000);
  }

  async function send(path, params) {
    const url = path + (params ? "?" + params : "");
    try {
      const response = await fetch(url, {
        method: "POST", credentials: "same-origin", headers: { "X-Requested-By": "tandem-page" },
      });
      let text = await answerText(response);
      if (response.status === 401) text = "Not signed in: " + text;
      else if (response.status === 403 && !/^refused/i.test(text)) text = "Refused: " + text;
      say(text, response.ok);
    } catch (error) {
      say("The node did not answer: " + error.message, false);
    }
    refresh();
  }

  const WHAT = {
    drain: "Drain: only persistent clients get new connections; existing ones finish.",
    halt: "Halt: no new connections; existing ones finish unless closed below.",
    online: "Online: the server takes new connections again (when its health checks pass).",
    takeover: "Takeover: this node becomes active and the VIPs move here.",
    release: "Release: this node hands the active role and the VIPs to the peer.",
    reload: "Reload: check cluster.toml on disk and apply it live (the primary pushes it to the peer).",
  };

  function ask(action, question, path) {
    pending = { action, path };
    confirmText.textContent = `${question} ${WHAT[action]}`;
    confirmCloseBox.hidden = action !== "halt";
    confirmClose.checked = false;
    confirmOk.textContent = action[0].toUpperCase() + action.slice(1);
    confirmBox.hidden = false;
    confirmOk.focus();
  }

  function answer(go) {
    confirmBox.hidden = true;
    const chosen = pending;
    pending = null;
    if (go && chosen) send(chosen.path, chosen.action === "halt" && confirmClose.checked ? "close=1" : null);
  }

  document.addEventListener("click", (event) => {
    const target = event.target.closest("button[data-action]");
    if (!target || target.disabled) return;
    const { action, service, server } = target.dataset;
    if (service !== undefined && server !== undefined) {
      ask(action, `${action[0].toUpperCase() + action.slice(1)} ${server} of ${service}?`,
        `/api/servers/${encodeURIComponent(service)}/${encodeURIComponent(server)}/${action}`);
    } else {
      ask(action, `${action[0].toUpperCase() + action.slice(1)} on ${document.getElementById("node-name").textContent}?`,
        `/api/${action}`);
    }
  });
  confirmOk.addEventListener("click", () => answer(true));
  document.getElementById("confirm-cancel").addEventListener("click", () => answer(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !confirmBox.hidden) answer(false);
  });

  // First paint from the document embedded in the page, then from /api/status.
  try {
    render(JSON.parse(document.getElementById("tandem-status").textContent));
  } catch (error) {
    app.textContent = "Could not read the status document: " + error.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
})();
