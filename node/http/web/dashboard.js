// The operator's dashboard: polls /v1/dashboard about once a second and draws what it answers.
// Plain JavaScript, no library: the charts are small hand-written SVG line charts. Every value from
// the server is written with textContent or as an SVG attribute, never parsed as HTML.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1a5fd0", "#d81b60", "#1e9e4a", "#c77700", "#6a3fb5", "#00838f", "#5d4037", "#546e7a"];
  const MAX_BACKOFF_MS = 5000;
  // A sample further than this from the previous one breaks the line (nobody was watching).
  const GAP_S = 5;
  const CHART = { width: 480, height: 180, left: 48, right: 10, top: 10, bottom: 22 };

  let pollMs = 1000;
  let failures = 0;
  const colours = new Map();

  const byId = (id) => document.getElementById(id);

  function colourOf(name) {
    if (!colours.has(name)) colours.set(name, PALETTE[colours.size % PALETTE.length]);
    return colours.get(name);
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function number(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits ?? 0 });
  }

  function bytes(value) {
    if (value === null || value === undefined) return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let scaled = value;
    let unit = 0;
    while (Math.abs(scaled) >= 1000 && unit < units.length - 1) {
      scaled /= 1000;
      unit += 1;
    }
    return `${number(scaled, unit === 0 ? 0 : 1)} ${units[unit]}`;
  }

  function pill(state, title, kind) {
    const span = element("span", state, `state ${kind || state}`);
    if (title) span.title = title;
    return span;
  }

  // Why a node that answers refuses writes: its write-ahead log failed (reads still work).
  function notReadyReason(node) {
    const since = node.wal_failed_since ? ` since ${new Date(node.wal_failed_since * 1000).toLocaleTimeString()}` : "";
    return `refusing writes${since}: ${node.wal_failure}`;
  }

  // [text, class, title] of a node's status pill: down, up but not ready (no writes), or up.
  function nodeState(node) {
    if (!node.up) return ["down", "down", node.error || node.url];
    if (node.ready === false) return ["not ready", "not-ready", notReadyReason(node)];
    return ["up", "up", node.url];
  }

  function statusPill(node) {
    const [text, kind, title] = nodeState(node);
    return pill(text, title, kind);
  }

  // -- the summary cards and tables --------------------------------------------------------------

  function renderSummary(data) {
    byId("served-by").textContent = data.node;
    byId("alive-count").textContent = String(data.alive);
    byId("members-note").textContent = `of ${data.members.length}, as node ${data.node} sees them`;
    const agreement = byId("agreement");
    agreement.textContent = data.agree ? "agree" : "differ";
    agreement.dataset.agree = String(data.agree);
    byId("convergence-lag").textContent = number(data.convergence_lag_s, 1);
    const rates = data.nodes.map((n) => n.like_rate).filter((r) => r !== null && r !== undefined);
    byId("total-rate").textContent = rates.length ? number(rates.reduce((a, b) => a + b, 0), 1) : "–";
    byId("updated").textContent = new Date(data.time * 1000).toLocaleTimeString();
  }

  function renderMembers(data) {
    const names = new Set(data.nodes.map((n) => n.name));
    for (const node of data.nodes) for (const m of node.members || []) names.add(m.name);
    const columns = [...names].sort();
    const table = byId("members");
    const head = element("tr");
    head.append(element("th", "node ↓ sees →"));
    for (const name of columns) head.append(element("th", name));
    const rows = [head];
    for (const node of data.nodes) {
      const row = element("tr");
      row.dataset.node = node.name;
      const label = element("th");
      label.append(swatch(node.name), document.createTextNode(node.name + " "));
      label.append(statusPill(node));
      row.append(label);
      const seen = new Map((node.members || []).map((m) => [m.name, m.state]));
      for (const name of columns) {
        const cell = element("td");
        cell.dataset.member = name;
        if (node.up) cell.append(pill(seen.get(name) || "unknown"));
        else cell.textContent = "–";
        row.append(cell);
      }
      rows.push(row);
    }
    table.replaceChildren(...rows);
  }

  function swatch(name) {
    const span = element("span", null, "swatch");
    span.style.background = colourOf(name);
    span.setAttribute("aria-hidden", "true");
    return span;
  }

  const NODE_COLUMNS = [
    ["items", "items", (n) => number(n.items)],
    ["likes-held", "likes held", (n) => number(n.likes_held)],
    ["local-likes", "liked here", (n) => number(n.local_likes)],
    ["like-rate", "likes/s", (n) => number(n.like_rate, 1)],
    ["gossip", "gossip sent / received", (n) => `${bytes(n.gossip_bytes_sent)} / ${bytes(n.gossip_bytes_received)}`],
    ["gossip-rate", "gossip/s", (n) => (n.gossip_bytes_rate === null ? "–" : `${bytes(n.gossip_bytes_rate)}/s`)],
    ["deltas", "deltas sent / merged", (n) => `${number(n.deltas_sent)} / ${number(n.deltas_merged)}`],
    ["repairs", "repair rounds / items", (n) => `${number(n.anti_entropy_rounds)} / ${number(n.anti_entropy_keys_repaired)}`],
    ["wal-records", "WAL records", (n) => number(n.wal_records)],
    ["wal-fsync", "fsync p50 ms", (n) => number(n.wal_fsync_p50_ms, 3)],
  ];

  function checkpointText(node) {
    if (!node.checkpoint) return "–";
    const sinks = Object.entries(node.checkpoint);
    if (!sinks.length) return "none";
    const lane = ([sink, status]) => {
      const errors = status.errors ? `, ${number(status.errors)} errors` : "";
      const down = status.down ? " DOWN" : "";
      return `${sink}${down}: ${number(status.lag_ms)} ms, ${number(status.pending_items)} pending${errors}`;
    };
    return sinks.map(lane).join("; ");
  }

  function renderNodes(data) {
    const head = element("tr");
    head.append(element("th", "node"), element("th", "status"));
    for (const [, title] of NODE_COLUMNS) head.append(element("th", title));
    head.append(element("th", "checkpoint lag"), element("th", "fingerprint"));
    const rows = [head];
    for (const node of data.nodes) {
      const row = element("tr");
      row.dataset.node = node.name;
      const name = element("td");
      name.append(swatch(node.name), document.createTextNode(node.name));
      const status = element("td");
      status.append(statusPill(node));
      if (node.up && node.ready === false) status.append(element("span", notReadyReason(node), "reason"));
      row.append(name, status);
      for (const [key, , show] of NODE_COLUMNS) row.append(element("td", show(node), `num ${key}`));
      row.append(element("td", checkpointText(node), "checkpoint"));
      const fingerprint = node.fingerprint ? `${node.fingerprint.slice(0, 8)} ${node.agrees ? "=" : "≠"}` : "–";
      const cell = element("td", fingerprint, "mono fingerprint");
      if (node.fingerprint) cell.title = node.fingerprint;
      row.append(cell);
      rows.push(row);
    }
    byId("nodes").replaceChildren(...rows);
  }

  // One line per node that answers but refuses writes, at the top of the page; rewritten only when
  // it changes, so a screen reader hears it once.
  function renderAlerts(data) {
    const lines = data.nodes.filter((n) => n.up && n.ready === false).map((n) => `${n.name} is not ready: ${notReadyReason(n)}`);
    const alerts = byId("alerts");
    const text = lines.join("\n");
    if (alerts.dataset.text === text) return;
    alerts.dataset.text = text;
    alerts.replaceChildren(...lines.map((line) => element("p", line, "alert")));
    alerts.hidden = lines.length === 0;
  }

  function renderLegend(data) {
    const items = data.nodes.map((node) => {
      const item = element("span");
      item.append(swatch(node.name), document.createTextNode(node.name));
      return item;
    });
    const cluster = element("span");
    cluster.append(swatch("cluster"), document.createTextNode("cluster (convergence lag)"));
    byId("legend").replaceChildren(...items, cluster);
  }

  // -- charts ----------------------------------------------------------------------------------------

  function svgElement(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The smallest 1, 2 or 5 times a power of ten at least ``value``.
  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  // Axis labels with as many decimals as the scale needs (0.05 s is not "0").
  function scaled(value, top) {
    return number(value, top >= 10 ? 0 : top >= 1 ? 1 : top >= 0.1 ? 2 : 3);
  }

  // series: [{name, colour, points: [[t, value or null], ...]}]; format: (value, axis top) -> label;
  // floor: the least top of the axis, so noise near zero does not fill the chart.
  function drawChart(svg, series, format, floor) {
    const { width, height, left, right, top, bottom } = CHART;
    const all = series.flatMap((s) => s.points);
    const values = all.map(([, v]) => v).filter((v) => v !== null && v !== undefined);
    const children = [];
    const plotted = values.length;
    svg.dataset.points = String(plotted);
    if (!all.length) {
      children.push(svgElement("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "waiting for data…"));
      svg.replaceChildren(...children);
      return;
    }
    const times = all.map(([t]) => t);
    const tMax = Math.max(...times);
    const tMin = Math.min(tMax - 30, Math.min(...times));
    const yMax = niceCeiling(Math.max(floor, ...values));
    const x = (t) => left + ((t - tMin) / (tMax - tMin || 1)) * (width - left - right);
    const y = (v) => height - bottom - (v / yMax) * (height - top - bottom);
    for (const fraction of [0, 0.5, 1]) {
      const level = yMax * fraction;
      children.push(svgElement("line", { x1: left, x2: width - right, y1: y(level), y2: y(level), class: "axis" }));
      children.push(svgElement("text", { x: left - 4, y: y(level) + 3, "text-anchor": "end", class: "tick" }, format(level, yMax)));
    }
    children.push(svgElement("text", { x: left, y: height - 6, class: "tick" }, `-${Math.round(tMax - tMin)} s`));
    children.push(svgElement("text", { x: width - right, y: height - 6, "text-anchor": "end", class: "tick" }, "now"));
    for (const s of series) {
      let path = "";
      let previous = null;
      let last = null;
      let most = null;
      for (const [t, v] of s.points) {
        if (v === null || v === undefined) {
          previous = null;
          continue;
        }
        const joined = previous !== null && t - previous <= GAP_S;
        path += `${joined ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        previous = t;
        last = v;
        most = most === null ? v : Math.max(most, v);
      }
      if (!path) continue;
      const line = svgElement("path", { d: path, class: "series", stroke: s.colour });
      line.dataset.series = s.name;
      line.dataset.last = String(last);
      line.dataset.max = String(most);
      children.push(line);
    }
    if (!plotted) {
      children.push(svgElement("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "no values yet"));
    }
    svg.replaceChildren(...children);
  }

  function perNode(history, names, field) {
    return names.map((name) => ({
      name,
      colour: colourOf(name),
      points: history.map((sample) => {
        const node = sample.nodes[name];
        return [sample.t, node && node.up ? node[field] : null];
      }),
    }));
  }

  function renderCharts(data) {
    const names = data.nodes.map((n) => n.name);
    const history = data.history;
    drawChart(byId("chart-like-rate"), perNode(history, names, "like_rate"), scaled, 1);
    drawChart(
      byId("chart-convergence"),
      [{ name: "cluster", colour: colourOf("cluster"), points: history.map((s) => [s.t, s.convergence_lag_s]) }],
      scaled,
      1,
    );
    drawChart(byId("chart-gossip"), perNode(history, names, "gossip_bytes_rate"), bytes, 1000);
    drawChart(byId("chart-wal"), perNode(history, names, "wal_fsync_p50_ms"), scaled, 1);
    drawChart(byId("chart-checkpoint"), perNode(history, names, "checkpoint_lag_s"), scaled, 1);
  }

  // -- polling -----------------------------------------------------------------------------------------

  function setLive(state, text) {
    const live = byId("live");
    live.dataset.state = state;
    live.textContent = text;
  }

  function render(data) {
    for (const node of data.nodes) colourOf(node.name);
    renderSummary(data);
    renderAlerts(data);
    renderMembers(data);
    renderNodes(data);
    renderLegend(data);
    renderCharts(data);
  }

  async function poll() {
    try {
      const response = await fetch("/v1/dashboard", { cache: "no-store", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      pollMs = data.poll_ms || pollMs;
      render(data);
      failures = 0;
      setLive("live", "live");
    } catch (error) {
      failures += 1;
      setLive("down", `no answer from this node (${error.message}); retrying`);
    } finally {
      setTimeout(poll, Math.min(MAX_BACKOFF_MS, pollMs * 2 ** Math.min(failures, 3)));
    }
  }

  poll();
})();
