// Concord dashboard: polls /api/state (served by `concord dashboard`) and redraws when the chain's
// head moves. No framework and nothing from the network: the charts are drawn here as SVG.
"use strict";

const POLL_MS = 1000;
const MAX_TIMELINE_ROWS = 40;
const SVG_NS = "http://www.w3.org/2000/svg";
const STALE_MS = 15000; // a document older than this (server time) is shown as stale
const view = { head: null, error: null, renders: 0, decimals: 18, symbol: "" };
window.concordDashboard = view; // for whoever drives the page (tests read head and renders)

// ---------------------------------------------------------------------------- small helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Amounts arrive as decimal strings of token base units (exact: a JSON number is a double); shown as
// whole tokens with the symbol, exactly, as client/units.py's format_amount does (BigInt, never Number).
function units(x) {
  if (x === null || x === undefined || x === "") return null;
  return BigInt(x);
}

function tok(x) {
  const v = units(x);
  if (v === null) return "-";
  const neg = v < 0n;
  const abs = neg ? -v : v;
  const one = 10n ** BigInt(view.decimals);
  const whole = abs / one;
  const frac = abs % one;
  let text = whole.toString();
  if (frac) text += "." + frac.toString().padStart(view.decimals, "0").replace(/0+$/, "");
  return (neg ? "-" : "") + text + (view.symbol ? " " + view.symbol : "");
}

function short(h) {
  if (!h) return "-";
  return h.length > 16 ? h.slice(0, 10) + "\u2026" + h.slice(-4) : h;
}

function clock(t) {
  if (!t) return "-";
  return new Date(t * 1000).toISOString().slice(11, 19) + "Z";
}

function num(x) {
  if (typeof x === "number") return Number.isInteger(x) ? String(x) : x.toPrecision(5);
  return String(x);
}

function table(cls, headers, rows, numeric) {
  const nums = new Set(numeric || []);
  return el(
    "table",
    { class: cls },
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: nums.has(i) ? "num" : null }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: nums.has(i) ? "num" : null }, c)))))
  );
}

function card(title, id, wide, ...body) {
  return el("div", { class: wide ? "card wide" : "card", id }, el("h3", {}, title), ...body);
}

// ---------------------------------------------------------------------------- sections

function termsCard(task) {
  const p = task.params;
  const f = task.params_full || {};
  const rows = [
    ["trainer reward / round", tok(p.trainer_reward_per_round)],
    ["validator fee / round", tok(p.validator_fee_per_round)],
    ["slash per rejected submission", tok(p.slash_amount)],
    ["bounty share of a slash", (p.bounty_bps / 100).toFixed(2) + " %"],
    ["rounds", p.max_rounds ? String(p.max_rounds) : "unbounded"],
    ["async level", String(p.async_level)],
    ["validators needed", String(p.min_validators)],
    ["max work units / submission", String(p.max_work_units)],
    ["phases (submit / commit / reveal)", `${f.submit_seconds} s / ${f.commit_seconds} s / ${f.reveal_seconds} s`],
    ["min stake (trainer / validator)", `${tok(f.min_trainer_stake)} / ${tok(f.min_validator_stake)}`],
    ["spec", el("code", { title: p.spec_digest }, short(p.spec_digest))],
  ];
  const spec = task.spec;
  const specRows = [];
  if (spec) {
    for (const [section, value] of Object.entries(spec)) {
      if (section === "kind" || section === "limits") continue;
      const text = value && typeof value === "object" ? Object.entries(value).map(([k, v]) =>
        `${k}=${v && typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") : String(value);
      specRows.push([section, el("span", { class: "mono" }, text)]);
    }
  }
  return [
    card("Terms", `task-${task.task_id}-terms`, false,
      el("table", { class: "kv" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))))),
    card("Task spec (from IPFS, by its digest)", `task-${task.task_id}-spec`, false,
      spec
        ? el("table", { class: "kv spec" }, el("tbody", {}, specRows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))))
        : el("p", { class: "muted" }, "spec not read from IPFS: " + (task.spec_error || "-"))),
  ];
}

function budgetCard(task) {
  const e = task.escrow;
  const p = task.params;
  const done = task.finalized_rounds;
  const total = p.max_rounds || null;
  const returned = task.rounds.reduce((a, r) => a + (units(r.returned) || 0n), 0n).toString();
  const rows = [
    ["budget left", tok(task.budget)],
    ["held for this task", tok(e.held)],
    ["reserved for open rounds", tok(e.reserved)],
    ["returned to the budget", tok(returned)],
    ["rounds settled", total ? `${done} of ${total}` : String(done)],
    ["head round", String(task.head_round)],
    ["model", el("span", {}, `#${task.model.index} `, el("code", { title: task.model.digest }, short(task.model.digest)))],
    ["initiator", el("code", {}, short(task.initiator))],
  ];
  return card(
    "Budget",
    `task-${task.task_id}-budget`,
    false,
    el("table", { class: "kv" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))),
    total ? el("div", { class: "bar", title: `${done}/${total} rounds settled` },
      el("span", { style: `width:${Math.min(100, (100 * done) / total).toFixed(1)}%` })) : null
  );
}

const PHASES = [
  ["submit", "opened", "submit_closed"],
  ["commit", "submit_closed", "commit_closed"],
  ["reveal", "commit_closed", "reveal_closed"],
  ["finalize", "reveal_closed", "finalized"],
];

function timelineCard(task, now) {
  const rows = task.timeline.filter((t) => t.opened && t.opened <= now).slice(-MAX_TIMELINE_ROWS);
  const W = 760, left = 44, right = 90, rowH = 22, top = 8;
  const H = top + rows.length * rowH + 24;
  const t0 = rows.length ? Math.min(...rows.map((t) => t.opened)) : now;
  // the axis ends where the last drawn phase ends: "now" only while a round is unsettled
  const ends = rows.map((t) => t.finalized || now);
  const t1 = Math.max(t0 + 1, ...ends);
  const x = (t) => left + ((W - left - right) * (t - t0)) / (t1 - t0);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "rounds timeline" });
  rows.forEach((t, i) => {
    const y = top + i * rowH;
    const row = svg("g", { class: "round-row", "data-round": t.round, "data-phase": t.phase });
    row.append(svg("text", { x: 4, y: y + 14 }, `r${t.round}`));
    for (const [name, from, to] of PHASES) {
      const a = t[from];
      if (!a) break;
      const b = t[to] || now;
      row.append(svg("rect", { class: `seg-${name}`, x: x(a), y: y + 2, width: Math.max(1.5, x(b) - x(a)), height: rowH - 5 },
        svg("title", {}, `round ${t.round} ${name}: ${clock(a)} to ${t[to] ? clock(b) : "now"}`)));
    }
    row.append(svg("text", { x: W - right + 6, y: y + 14 }, t.phase));
    g.append(row);
  });
  const yAxis = top + rows.length * rowH + 4;
  g.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: yAxis, y2: yAxis }));
  for (let k = 0; k <= 4; k++) {
    const t = t0 + ((t1 - t0) * k) / 4;
    g.append(svg("text", { x: x(t) - 10, y: yAxis + 14 }, `+${Math.round(t - t0)}s`));
  }
  return card(
    "Rounds",
    `task-${task.task_id}-timeline`,
    false,
    rows.length ? g : el("p", { class: "muted" }, "no round has opened yet"),
    el("div", { class: "legend" }, PHASES.map(([n]) => el("span", {}, el("i", { class: "", style: `background:var(--${n})` }), n)))
  );
}

function rewardCard(task) {
  const pts = task.rewards;
  const W = 760, H = 240, left = 48, right = 16, top = 12, bottom = 34;
  const values = pts.flatMap((r) => [r.mean, ...r.rejected]).filter((v) => v !== null && v !== undefined);
  let lo = Math.min(0, ...values), hi = Math.max(1, ...values);
  if (hi - lo < 1e-9) hi = lo + 1;
  const n = Math.max(pts.length, 2);
  const x = (r) => left + ((W - left - right) * r) / (n - 1);
  const y = (v) => top + (H - top - bottom) * (1 - (v - lo) / (hi - lo));
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "reward per round" });
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    g.append(svg("line", { class: "gridline", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
    g.append(svg("text", { x: 4, y: y(v) + 4 }, v.toFixed(2)));
  }
  g.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: H - bottom, y2: H - bottom }));
  const step = Math.max(1, Math.ceil(pts.length / 15));
  pts.forEach((r, i) => { if (i % step === 0) g.append(svg("text", { x: x(i) - 4, y: H - bottom + 16 }, String(r.round))); });
  g.append(svg("text", { x: (W - left) / 2, y: H - 4 }, "round"));
  const line = pts.filter((r) => r.mean !== null).map((r) => `${x(r.round).toFixed(1)},${y(r.mean).toFixed(1)}`);
  if (line.length > 1) g.append(svg("polyline", { class: "curve", points: line.join(" ") }));
  for (const r of pts) {
    if (r.mean !== null) {
      g.append(svg("circle", { class: "pt", cx: x(r.round), cy: y(r.mean), r: 3.5, "data-round": r.round, "data-reward": r.mean },
        svg("title", {}, `round ${r.round}: mean reward ${r.mean.toFixed(4)} (${r.accepted.length} accepted)`)));
    }
    for (const c of r.rejected) {
      const cx = x(r.round), cy = y(c), d = 4;
      g.append(svg("g", { class: "rej", "data-round": r.round },
        svg("line", { class: "rej", x1: cx - d, y1: cy - d, x2: cx + d, y2: cy + d }),
        svg("line", { class: "rej", x1: cx - d, y1: cy + d, x2: cx + d, y2: cy - d }),
        svg("title", {}, `round ${r.round}: a rejected submission claimed ${c.toFixed(4)}`)));
    }
  }
  return card(
    "Reward per round",
    `task-${task.task_id}-rewards`,
    false,
    g,
    el("div", { class: "legend" },
      el("span", {}, el("i", { style: "background:#2563eb" }), "mean claimed reward of accepted submissions (validators recomputed it)"),
      el("span", {}, el("i", { style: "background:var(--bad)" }), "what a rejected submission claimed"))
  );
}

function evidenceCell(s) {
  if (s.verdict !== "rejected") return "";
  const docs = s.evidence_docs || [];
  if (!docs.length) return el("span", { class: "muted" }, "no local validator's evidence (see --validator-state)");
  return el("div", { class: "evidence" }, docs.map((d) => {
    const numbers = Object.entries(d.numbers || {}).slice(0, 10);
    return el("div", { class: "evidence-doc", "data-check": d.failed_check },
      el("div", {}, el("span", { class: "check" }, `${d.failed_check} failed`), d.detail ? ` \u2014 ${d.detail}` : ""),
      numbers.length ? el("dl", {}, numbers.map(([k, v]) => [el("dt", {}, k), el("dd", {}, num(v))])) : null,
      el("div", { class: "muted" },
        `by ${short(d.validator || "")} \u00b7 evidence `, el("code", { title: d.digest }, short(d.cid)),
        d.source ? ` (${d.source})` : ` (unavailable: ${d.unavailable || "?"})`));
  }));
}

function submissionsCard(task) {
  const rows = [];
  for (const r of [...task.rounds].reverse()) {
    for (const s of r.submissions) {
      const money = "reward" in s ? el("span", { class: "pos" }, "+" + tok(s.reward))
        : "slashed" in s ? el("span", { class: "neg" }, "\u2212" + tok(s.slashed)) : "-";
      const tr = [
        String(r.round), String(s.index), el("code", { title: s.trainer }, short(s.trainer)), String(s.base_round),
        String(s.work_units), s.claimed_reward === null || s.claimed_reward === undefined ? "-" : s.claimed_reward.toFixed(4),
        el("span", { class: `badge ${s.verdict}` }, s.verdict), money, evidenceCell(s),
      ];
      rows.push(tr);
    }
  }
  const t = table("subs", ["round", "#", "trainer", "base", "work", "claimed reward", "verdict", "paid", "evidence"], rows, [0, 1, 3, 4, 5, 7]);
  t.querySelectorAll("tbody tr").forEach((tr, i) => tr.setAttribute("data-verdict", rows[i][6].textContent));
  return card("Submissions and verdicts", `task-${task.task_id}-submissions`, true, rows.length ? t : el("p", { class: "muted" }, "no submission yet"));
}

function moneyCard(task) {
  const rows = [];
  for (const r of [...task.rounds].reverse()) {
    for (const s of r.slashes) rows.push([String(r.round), el("span", { class: "neg" }, "slash"), el("code", {}, short(s.node)), el("span", { class: "neg" }, "\u2212" + tok(s.amount)), s.why]);
    for (const b of r.bounties) rows.push([String(r.round), "bounty", el("code", {}, short(b.validator)), el("span", { class: "pos" }, "+" + tok(b.amount)), "rejected a cheater"]);
    for (const f of r.fees) rows.push([String(r.round), "fee", el("code", {}, short(f.validator)), el("span", { class: "pos" }, "+" + tok(f.amount)), "revealed with the majority"]);
  }
  const t = table("money", ["round", "kind", "node", "amount", "why"], rows, [0, 3]);
  t.querySelectorAll("tbody tr").forEach((tr, i) => tr.setAttribute("data-kind", rows[i][1].textContent || rows[i][1]));
  return card("Slashes, bounties and fees", `task-${task.task_id}-money`, false, rows.length ? t : el("p", { class: "muted" }, "none yet"));
}

function nodesCard(task) {
  const rows = task.nodes.map((n) => [el("code", { title: n.address }, short(n.address)), n.role, n.joined ? "yes" : "left", tok(n.stake), tok(n.balance)]);
  return card("Nodes", `task-${task.task_id}-nodes`, false, table("nodes", ["address", "role", "joined", "stake", "balance"], rows, [3, 4]));
}

function renderTask(task, now) {
  return el(
    "section",
    { class: "task", id: `task-${task.task_id}`, "data-task": task.task_id },
    el("h2", {}, `Task ${task.task_id} `, el("span", { class: `badge ${task.closed ? "closed" : "open"}` }, task.closed ? "closed" : "open")),
    el("div", { class: "grid" }, termsCard(task), budgetCard(task), nodesCard(task)),
    el("div", { class: "grid charts" }, timelineCard(task, now), rewardCard(task)),
    el("div", { class: "grid" }, submissionsCard(task), moneyCard(task))
  );
}

function render(doc) {
  view.decimals = doc.token_decimals;
  view.symbol = doc.token_symbol || "";
  const t = doc.totals;
  const holds = t.holds;
  document.getElementById("chain").replaceChildren(
    `chain ${doc.chain_id} \u00b7 Concord `, el("code", {}, short(doc.concord)),
    ` \u00b7 block `, el("b", { id: "head-block" }, String(doc.head_block)), ` at ${clock(doc.head_time)}`,
    ` \u00b7 escrow ${tok(t.escrow)} \u00b7 staked ${tok(t.staked)} \u00b7 credited ${tok(t.credited)} \u00b7 conservation `,
    el("span", { id: "conservation", class: holds ? "pos" : "neg" }, holds ? "holds" : "BROKEN")
  );
  const tasks = document.getElementById("tasks");
  tasks.replaceChildren(...doc.tasks.map((task) => renderTask(task, doc.head_time)));
  if (!doc.tasks.length) tasks.append(el("p", { class: "muted" }, "no task published yet"));
  document.body.setAttribute("data-head", String(doc.head_block));
  view.head = doc.head_block;
  view.renders += 1;
}

function setLive(ok, text) {
  const live = document.getElementById("live");
  live.className = ok ? "live ok" : "live stale";
  document.getElementById("live-text").textContent = text;
}

async function poll() {
  try {
    const resp = await fetch("/api/state", { cache: "no-store" });
    if (!resp.ok) throw new Error(`/api/state answered ${resp.status}`);
    const doc = await resp.json();
    if (doc.head_block !== undefined && (doc.head_block !== view.head || doc.error !== view.error)) render(doc);
    view.error = doc.error || null;
    const box = document.getElementById("error");
    box.hidden = !view.error;
    box.textContent = view.error ? `the last refresh failed (showing block ${doc.head_block}): ${view.error}` : "";
    const age = doc.refreshed_at && doc.served_at ? (doc.served_at - doc.refreshed_at) * 1000 : 0; // server clock
    if (doc.error) setLive(false, `stale \u00b7 showing block ${doc.head_block}: the chain refresh fails`);
    else if (age > STALE_MS) setLive(false, `stale \u00b7 block ${doc.head_block} was read ${Math.round(age / 1000)} s ago`);
    else setLive(true, `live \u00b7 indexed to block ${doc.index ? doc.index.last_block : "?"} in ${doc.index ? doc.index.log_requests : "?"} log requests`);
  } catch (e) {
    setLive(false, `no answer from the dashboard server: ${e.message}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
