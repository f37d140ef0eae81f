// The explorer's page script. It only draws: every number comes from the server's block through
// /api/attention, /api/shuffle and /api/model, or, in a standalone snapshot, from the answers
// the server saved with the page (window.SNAPSHOT). Text goes in through textContent, never as
// HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const HEAD_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const CONTROLS = ["sentence", "scale", "scale-number", "axis", "temperature", "causal", "positional", "heads", "d-model", "projections", "qk-norm", "ssmax", "softmax", "gate", "kernel", "path", "seed"];
const SNAPSHOT = window.SNAPSHOT || null;
let timer = null; // the debounce of the controls' changes
const state = {
  info: null, result: null, query: 0, queries: [0], head: 0, step: 0, sent: 0, version: 0,
  shuffles: 0, example: null,
};

function el(tag, attrs, ...children) {
  const svg = ["svg", "line", "text", "g", "title", "rect"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else if (k === "on") for (const [ev, f] of Object.entries(v)) node.addEventListener(ev, f);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

/** A number from an answer; a field the answer lacks is shown as missing, never as a value. */
const fmt = (v, digits = 3) => (v === null || v === undefined || Number.isNaN(Number(v)) ? "missing" : Number(v).toFixed(digits));
/** A scaled score: null is the block's mark for a key the mask hides. */
const fmtScore = (v, digits = 3) => (v === null ? "−∞" : fmt(v, digits));

/** Same JSON whatever the order of an object's keys (the server's answers sort them). */
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  return JSON.stringify(v);
}

/** A snapshot's answer to what the live page would ask its server. */
function fromSnapshot(path, body) {
  const withoutSelection = (b) => {
    const copy = JSON.parse(JSON.stringify(b));
    delete copy.options.query;
    delete copy.options.queries;
    delete copy.options.shuffle_seed; // a snapshot holds one shuffle, whose seed it shows
    return canonical(copy);
  };
  const elsewhere = "this snapshot holds the inputs and knobs it was saved with; run explore to change them";
  if (path === "/api/info") return SNAPSHOT.info;
  if (path === "/api/attention") {
    if (withoutSelection(body) !== withoutSelection(SNAPSHOT.request)) throw new Error(elsewhere);
    if (body.options.queries && body.options.queries.length > 1) throw new Error("summed attention of several queries needs the server (run explore)");
    const answer = JSON.parse(JSON.stringify(SNAPSHOT.attention));
    answer.neuron = answer.neurons[body.options.query || 0];
    return answer;
  }
  if (path === "/api/shuffle") {
    if (withoutSelection(body) !== withoutSelection(SNAPSHOT.request)) throw new Error(elsewhere);
    return SNAPSHOT.shuffle;
  }
  if (path === "/api/model") {
    if (!SNAPSHOT.example || body.model !== SNAPSHOT.example.model || body.seed !== SNAPSHOT.example_seed) throw new Error(elsewhere);
    return SNAPSHOT.example;
  }
  throw new Error("a snapshot has no server: run explore for this");
}

async function api(path, body) {
  if (SNAPSHOT) return fromSnapshot(path, body);
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function words() {
  return $("sentence").value.trim().split(/\s+/).filter((w) => w.length > 0);
}

function temperature() {
  return Math.exp(parseFloat($("temperature").value));
}

/** The request for the current controls: trace --input's fields plus the options. */
function request() {
  const tokens = words();
  const dModel = parseInt($("d-model").value, 10);
  const scale = $("scale").value === "number" ? parseFloat($("scale-number").value) : $("scale").value;
  const last = Math.max(tokens.length - 1, 0);
  const body = {
    tokens,
    options: {
      causal: $("causal").checked,
      scale,
      softmax_axis: $("axis").value,
      temperature: temperature(),
      positional: $("positional").value,
      n_heads: parseInt($("heads").value, 10),
      projections: $("projections").checked,
      qk_norm: $("qk-norm").checked,
      ssmax: $("ssmax").checked,
      softmax: $("softmax").value,
      gate: $("gate").value,
      kernel: $("kernel").value,
      path: $("path").value,
      seed: parseInt($("seed").value || "0", 10),
      query: Math.min(state.query, last),
    },
  };
  const queries = state.queries.filter((q) => q <= last);
  if (queries.length > 1) body.options.queries = queries;
  const example = state.info.example;
  if (tokens.join(" ") === example.tokens.join(" ") && dModel === example.x[0].length) {
    body.x = example.x;
  } else {
    body.options.d_model = dModel;
  }
  return body;
}

function finished(ok, message) {
  $("status").textContent = message || "";
  // A change still waiting for its debounce keeps the page busy: what is shown is not yet it.
  document.body.dataset.state = timer !== null ? "busy" : ok ? "ready" : "error";
  document.body.dataset.version = String(++state.version);
}

async function recompute() {
  const mine = ++state.sent;
  $("scale-number").hidden = $("scale").value !== "number";
  document.body.dataset.state = "busy";
  try {
    const result = await api("/api/attention", request());
    if (mine !== state.sent) return; // a newer request is on its way
    state.result = result;
    state.query = Math.min(state.query, result.tokens.length - 1);
    state.queries = state.queries.filter((q) => q < result.tokens.length);
    if (state.queries.length === 0) state.queries = [state.query];
    state.head = Math.min(state.head, result.n_heads - 1);
    render();
    finished(true);
  } catch (e) {
    if (mine !== state.sent) return;
    finished(false, e.message);
  }
}

function schedule() {
  clearTimeout(timer);
  document.body.dataset.state = "busy";
  timer = setTimeout(() => {
    timer = null;
    recompute();
  }, 120);
}

/** A click chooses one query; a shift-click adds it to (or takes it from) the selection. */
function choose(i, event) {
  if (event && event.shiftKey) {
    const at = state.queries.indexOf(i);
    if (at >= 0 && state.queries.length > 1) state.queries.splice(at, 1);
    else if (at < 0) state.queries.push(i);
    state.query = state.queries[state.queries.length - 1];
  } else {
    state.query = i;
    state.queries = [i];
  }
  recompute();
}

function render() {
  const r = state.result;
  const heads = $("head");
  heads.replaceChildren(...r.heads.map((_, h) => el("option", { value: h, text: `head ${h}` })));
  heads.value = String(state.head);
  // What the answer used, not what the slider says.
  $("temperature-value").textContent = fmt(r.temperature, 2);
  $("temperature-value").dataset.value = r.temperature;
  $("formula").textContent = r.formula;
  const p = r.paths;
  $("paths").textContent = p
    ? `${r.fused ? "Shown: the fused op's own weights." : r.path === "fused" ? "The fused op does not compute these settings (it has the row softmax only, and ALiBi only under the mask): the steps ran." : "Shown: the decomposed steps."} Fused against decomposed: max |Δ weights| = ${Number(p.weights_max_diff).toExponential(2)}, max |Δ context| = ${Number(p.context_max_diff).toExponential(2)}${p.fused_ran ? "" : " (both took the steps)"}.`
    : "";
  if (p) {
    $("paths").dataset.weights = p.weights_max_diff;
    $("paths").dataset.context = p.context_max_diff;
  }
  renderHeatmap();
  renderHeadView();
  renderDetail();
  renderStep();
}

function tokenButton(i) {
  const chosen = state.queries.includes(i) ? " chosen" : "";
  return el("button", {
    type: "button", class: "token" + chosen, "data-i": i, text: state.result.tokens[i],
    on: { click: (e) => choose(i, e) },
  });
}

function shade(w) {
  const a = Math.max(0, Math.min(1, w));
  return `rgba(31, 119, 180, ${a.toFixed(3)})`;
}

function renderHeatmap() {
  const r = state.result;
  const head = r.heads[state.head];
  const n = r.tokens.length;
  const top = el("tr", {}, el("th", { text: "query \\ key" }),
    ...r.tokens.map((t, j) => el("th", { class: "key-token", "data-j": j }, el("button", {
      type: "button", class: "token" + (state.queries.includes(j) ? " chosen" : ""), text: t,
      title: "choose this token as the query", on: { click: (e) => choose(j, e) },
    }))), el("th", { text: "Σ row" }));
  const rows = head.weights.map((row, i) => {
    const cells = row.map((w, j) => {
      const masked = head.scaled[i][j] === null;
      return el("td", {
        class: "cell" + (masked ? " masked" : ""), "data-i": i, "data-j": j, "data-weight": w,
        style: `background-color: ${masked ? "" : shade(w)}; color: ${w > 0.55 ? "#fff" : "#222"}`,
        title: `${r.tokens[i]} → ${r.tokens[j]}: ${w}`, text: fmt(w),
      });
    });
    const sum = head.row_sums[i];
    const off = head.row_sum_off[i] ? " off" : "";
    return el("tr", { class: state.queries.includes(i) ? "chosen" : "" }, el("th", {}, tokenButton(i)), ...cells,
      el("td", { class: "sum row-sum" + off, "data-sum": sum, title: off ? `off 1 by more than ${r.row_sum_tolerance}` : "", text: fmt(sum) }));
  });
  const bottom = el("tr", {}, el("th", { text: "Σ column" }),
    ...head.column_sums.map((s) => el("td", { class: "sum column-sum", "data-sum": s, text: fmt(s) })), el("td"));
  $("heatmap").replaceChildren(top, ...rows, bottom);
  $("heatmap").dataset.n = String(n);
}

function renderHeadView() {
  const r = state.result;
  const n = r.tokens.length;
  const rowH = 22, width = 420, left = 110, right = width - 110;
  const svg = $("headview");
  svg.setAttribute("viewBox", `0 0 ${width} ${n * rowH + 10}`);
  svg.style.height = `${n * rowH + 10}px`;
  const y = (i) => 14 + i * rowH;
  const items = [];
  r.tokens.forEach((t, i) => {
    const chosen = state.queries.includes(i);
    items.push(el("text", { class: "hv-token query-side", "data-i": i, x: left - 8, y: y(i) + 4, "text-anchor": "end", text: t,
      "font-weight": chosen ? "bold" : "normal", on: { click: (e) => choose(i, e) } }));
    items.push(el("text", { class: "hv-token key-side", "data-i": i, x: right + 8, y: y(i) + 4, text: t,
      on: { click: (e) => choose(i, e) } }));
  });
  r.heads.forEach((head, h) => {
    const colour = HEAD_COLOURS[h % HEAD_COLOURS.length];
    for (const q of state.queries) {
      head.weights[q].forEach((w, j) => {
        if (w <= 0) return;
        items.push(el("line", {
          class: "hv-line", "data-head": h, "data-i": q, "data-j": j, "data-weight": w,
          x1: left, y1: y(q) + (h - (r.heads.length - 1) / 2) * 2, x2: right, y2: y(j),
          stroke: colour, "stroke-width": (0.5 + 9 * w).toFixed(2), "stroke-opacity": 0.65,
        }, el("title", {}, `head ${h}: ${r.tokens[q]} → ${r.tokens[j]} ${fmt(w)}`)));
      });
    }
  });
  svg.replaceChildren(...items);
}

function renderDetail() {
  const r = state.result;
  const q = state.query;
  const head = r.heads[state.head];
  $("query-name").textContent = `${r.tokens[q]} (position ${q}, head ${state.head})`;
  const entropy = head.entropy[q];
  $("entropy").textContent = fmt(entropy, 4);
  $("entropy").dataset.value = entropy;
  $("entropy-max").textContent = fmt(head.entropy_max[q], 4);
  $("entropy-max").dataset.value = head.entropy_max[q];
  const perHead = r.heads.map((h, i) => `head ${i}: ${fmt(h.entropy[q], 3)}`).join(", ");
  $("row-detail").replaceChildren(
    el("p", { text: `Weights of this row: ${head.weights[q].map((w, j) => `${r.tokens[j]} ${fmt(w)}`).join(", ")}` }),
    el("p", { class: "hint", text: `Entropy per head: ${perHead}` }));
  const selection = r.selection;
  if (selection) {
    const summed = selection.heads[state.head];
    $("selection").textContent = `Summed attention of ${selection.queries.map((i) => r.tokens[i]).join(" + ")} (head ${state.head}): `
      + summed.map((w, j) => `${r.tokens[j]} ${fmt(w)}`).join(", ");
    $("selection").dataset.queries = selection.queries.join(",");
    $("selection").dataset.summed = JSON.stringify(summed);
  } else {
    $("selection").textContent = "";
    delete $("selection").dataset.queries;
    delete $("selection").dataset.summed;
  }
  const neuron = r.neuron ? r.neuron[state.head] : null;
  if (!neuron) { $("neuron").replaceChildren(); return; }
  const linear = r.kernel === "linear";
  const vec = (v) => "[" + v.map((x) => fmt(x, 2)).join(", ") + "]";
  const rows = neuron.keys.map((k, j) => el("tr", {},
    el("th", { text: r.tokens[j] }),
    el("td", { class: "vec", text: vec(k.k) }),
    el("td", { class: "vec", text: vec(k.product) }),
    el("td", { text: fmt(k.dot) }),
    el("td", { text: fmtScore(k.scaled) }),
    el("td", { class: "numerator", text: fmt(k.numerator, 4) }),
    el("td", { class: "normaliser", text: fmt(k.normaliser, 4) }),
    el("td", { class: "cell", "data-weight": k.weight, style: `background-color: ${shade(k.weight)}`, text: fmt(k.weight) })));
  const scaleHead = linear ? "φ(q)·φ(k)" : `÷ ${fmt(r.scale)}`;
  const numeratorHead = linear ? "numerator = φ(q)·φ(k)" : `exp(s − m), m = ${fmt(neuron.keys[0] ? neuron.keys[0].shift : null, 3)}`;
  $("neuron").replaceChildren(
    el("tr", {}, el("th", { text: "q =" }), el("td", { class: "vec", colspan: 7, text: vec(neuron.q) })),
    el("tr", {}, ...["key", "k", "q ⊙ k", "q·k", scaleHead, numeratorHead, "÷ Z (normaliser)", "= weight"].map((t) => el("th", { text: t }))),
    ...rows);
}

function matrixTable(rowNames, colNames, rows, score = false) {
  return el("table", {},
    el("tr", {}, el("th"), ...colNames.map((c) => el("th", { text: c }))),
    ...rows.map((row, i) => el("tr", {}, el("th", { text: rowNames[i] }), ...row.map((v) => el("td", { text: score ? fmtScore(v) : fmt(v) })))));
}

/** Head h's columns of a d_model × n_heads·d matrix. */
const headColumns = (w, h, d) => w.map((row) => row.slice(h * d, (h + 1) * d));

function captioned(caption, table) {
  return el("div", { class: "step-part" }, el("p", { class: "hint", text: caption }), table);
}

function renderStep() {
  const r = state.result;
  const head = r.heads[state.head];
  const steps = [...$("steps").children];
  const step = steps[state.step];
  const cols = (n, p) => Array.from({ length: n }, (_, i) => `${p}${i}`);
  const dims = cols(r.d_model, "x");
  const tables = [];
  let title = step.textContent;
  if (state.step === 0) {
    tables.push(captioned("X, the token embeddings", matrixTable(r.tokens, dims, r.x)));
    if (r.x_positional) {
      title = `1. X + ${r.positional} positional encoding`;
      tables.push(captioned("X after the positional encoding: what W_Q, W_K and W_V multiply", matrixTable(r.tokens, dims, r.x_positional)));
    }
  } else if (state.step <= 3) {
    const [name, w, d, out, p] = [["W_Q", r.w_q, r.d_k, head.q, "q"], ["W_K", r.w_k, r.d_k, head.k, "k"], ["W_V", r.w_v, r.d_v, head.v, "v"]][state.step - 1];
    const input = r.x_positional || r.x;
    if (w) {
      tables.push(captioned(r.x_positional ? "X after the positional encoding" : "X", matrixTable(r.tokens, dims, input)));
      tables.push(captioned(`${name}, head ${state.head}'s columns (d_model × ${d})`, matrixTable(dims, cols(d, p), headColumns(w, state.head, d))));
    } else {
      title = title.replace(/·W_[QKV]/, "") + " (no projections)";
    }
    const after = [];
    if (state.step !== 3 && r.qk_norm) after.push("QK-norm");
    if (state.step !== 3 && r.positional === "rotary") after.push("rotary");
    if (state.step === 1 && r.ssmax) after.push("SSMax's s·ln n");
    tables.push(captioned(`= ${name.slice(2)}${after.length ? ` (after ${after.join(", ")})` : ""}`, matrixTable(r.tokens, cols(d, p), out)));
  } else if (state.step === 4) {
    if (r.kernel === "linear") title = "5. φ(Q)·φ(K)ᵀ";
    tables.push(matrixTable(r.tokens, r.tokens, head.scores));
  } else if (state.step === 5) {
    const alibi = r.positional === "alibi" ? ", + ALiBi's −m_h·|i − j|" : "";
    title = r.kernel === "linear" ? "6. masked (linear attention has no scale)" : `6. ÷ ${fmt(r.scale, 4)} (${r.scale_rule}${r.temperature === 1 ? "" : " × τ"})${alibi}`;
    tables.push(matrixTable(r.tokens, r.tokens, head.scaled, true));
  } else if (state.step === 6) {
    title = r.kernel === "linear" ? "7. each row ÷ its sum" : `7. softmax over ${r.softmax_axis}`;
    tables.push(matrixTable(r.tokens, r.tokens, head.weights));
  } else {
    tables.push(matrixTable(r.tokens, cols(r.d_v, "o"), head.output));
  }
  $("step-title").textContent = (r.n_heads > 1 && state.step > 0 ? `head ${state.head}: ` : "") + title;
  $("step-title").dataset.step = String(state.step + 1);
  $("step-count").textContent = `${state.step + 1} / ${steps.length}`;
  $("step-what").textContent = step.dataset.what;
  $("step-tables").replaceChildren(...tables);
  $("step-back").disabled = state.step === 0;
  $("step-next").disabled = state.step === steps.length - 1;
}

async function shuffle() {
  const body = request();
  // A seed per click, returned by the server: a shuffle can be repeated.
  body.options.shuffle_seed = ++state.shuffles;
  document.body.dataset.state = "busy";
  try {
    const s = await api("/api/shuffle", body);
    $("max-delta").textContent = Number(s.max_delta).toExponential(2);
    $("max-delta").dataset.value = s.max_delta;
    $("shuffle-what").textContent = s.equivariant
      ? `≤ ${s.tolerance}: every output row moved with its token, unchanged (equivariant).`
      : `> ${s.tolerance}: the outputs changed with the order (a positional encoding or the mask tells positions apart).`;
    const width = s.before.output[0].length;
    const cols = Array.from({ length: width }, (_, i) => `o${i}`);
    const aligned = matrixTable(s.before.tokens, [...cols, "max |Δ|"], s.aligned.map((row, i) => [...row, s.row_delta[i]]));
    aligned.id = "shuffle-aligned";
    $("shuffle-compare").replaceChildren(
      el("div", {}, el("h3", { text: "f(x): before" }), matrixTable(s.before.tokens, cols, s.before.output)),
      el("div", {}, el("h3", { text: `f(P·x), rows put back in the order above (shuffle seed ${s.shuffle_seed}: order ${s.permutation.join(", ")})` }), aligned));
    finished(true);
  } catch (e) {
    finished(false, e.message);
  }
}

/** A compact heatmap of one matrix as SVG cells (the model view's small multiples). */
function miniMap(w, from, to, title) {
  const size = 9, n = to - from;
  const svg = el("svg", { class: "mini", width: n * size, height: n * size, viewBox: `0 0 ${n * size} ${n * size}` }, el("title", {}, title));
  for (let i = from; i < to; i++) {
    for (let j = from; j < to; j++) {
      svg.append(el("rect", { x: (j - from) * size, y: (i - from) * size, width: size, height: size, fill: shade(w[i][j]),
        "data-i": i, "data-j": j, "data-weight": w[i][j] }, el("title", {}, `${i} → ${j}: ${fmt(w[i][j])}`)));
    }
  }
  return svg;
}

function renderGrid() {
  const e = state.example;
  if (!e) return;
  const n = e.tokens.length;
  const from = Math.max(0, Math.min(n - 1, parseInt($("grid-from").value || "0", 10)));
  const toInput = parseInt($("grid-to").value || String(n - 1), 10);
  const to = Math.max(from, Math.min(n - 1, Number.isNaN(toInput) ? n - 1 : toInput)) + 1;
  const grid = el("table", { class: "grid", "data-from": from, "data-to": to - 1 },
    el("tr", {}, el("th"), ...e.layers[0].map((_, h) => el("th", { text: `head ${h}` }))),
    ...e.layers.map((heads, l) => el("tr", {}, el("th", { text: `layer ${l}` }),
      ...heads.map((w, h) => el("td", { class: "grid-cell", "data-layer": l, "data-head": h }, miniMap(w, from, to, `layer ${l}, head ${h}`))))));
  $("model-grid").replaceChildren(grid,
    el("p", { class: "hint", text: `positions ${from} … ${to - 1} of ${n} (${e.tokens.slice(from, to).join(" ")})` }));
  const rollout = matrixTable(e.tokens, e.tokens, e.rollout);
  rollout.id = "rollout-table";
  [...rollout.rows].slice(1).forEach((row, i) => [...row.cells].slice(1).forEach((cell, j) => {
    cell.style.backgroundColor = shade(e.rollout[i][j]);
    cell.style.color = e.rollout[i][j] > 0.55 ? "#fff" : "#222";
  }));
  $("rollout").replaceChildren(rollout);
}

async function example() {
  document.body.dataset.state = "busy";
  try {
    const e = await api("/api/model", { model: $("model").value, seed: parseInt($("example-seed").value || "0", 10) });
    state.example = e;
    const answers = new Set(e.answer_positions);
    const line = el("p", { class: "tokens-line" },
      ...e.tokens.map((t, i) => el("span", { class: answers.has(i) ? "answer" : "", text: t })));
    const verdict = el("p", {},
      `Answer${e.targets.length > 1 ? "s" : ""}: expected ${e.targets.join(" ")}, the model says `,
      el("span", { class: e.correct === e.targets.length ? "right" : "wrong", text: e.predictions.join(" ") }),
      ` (${e.correct} of ${e.targets.length} right).`);
    const maps = el("div", { class: "maps" });
    e.layers.forEach((heads, l) => heads.forEach((w, h) => {
      const table = matrixTable(e.tokens, e.tokens, w);
      const gate = e.gates[l] ? e.gates[l][h] : null;
      // Beside each query: the weight it left unspent (off-by-one) and its head's gate.
      // A standard softmax spends every row (up to rounding): no column for it.
      const unspent = e.unspent[l][h].some((u) => Math.abs(u) > 1e-6) ? e.unspent[l][h] : null;
      const extra = [["unspent", unspent], ["gate", gate]].filter(([, v]) => v);
      extra.forEach(([name]) => table.rows[0].append(el("th", { class: "extra", text: name })));
      [...table.rows].slice(1).forEach((row, i) => {
        if (answers.has(i)) row.classList.add("answer");
        [...row.cells].slice(1).forEach((cell, j) => {
          cell.style.backgroundColor = shade(w[i][j]);
          cell.style.color = w[i][j] > 0.55 ? "#fff" : "#222";
          cell.classList.add("cell");
          if (j === 0) cell.classList.add("first-key");
        });
        extra.forEach(([, v]) => row.append(el("td", { class: "extra", text: Number(v[i]).toFixed(2) })));
      });
      const sink = e.first_key[l][h];
      const caption = el("p", { class: "sink" + (sink > 0.3 ? " is-sink" : "") },
        `mean weight on position 0 (column outlined): ${sink.toFixed(2)}${sink > 0.3 ? ", an attention sink (> 0.3)" : ""}`);
      maps.append(el("div", { class: "map" }, el("h3", { text: `layer ${l}, head ${h}` }), caption, table));
    }));
    $("trained-view").replaceChildren(line, verdict, maps);
    renderGrid();
    finished(true);
  } catch (err) {
    finished(false, err.message);
  }
}

/** The current head's weights as a standalone SVG document: cells, numbers, tokens, legend and
 * formula, from the answer on screen. */
function viewSvg() {
  const r = state.result;
  const head = r.heads[state.head];
  const n = r.tokens.length;
  const cell = 44, left = 90, top = 80;
  const width = left + n * cell + 20, height = top + n * cell + 50;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("xmlns", ns);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("font-family", "sans-serif");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("rect", { x: 0, y: 0, width, height, fill: "#fff", class: "background" });
  add("text", { x: 10, y: 20, "font-size": 13 }, `${r.formula} (head ${state.head} of ${r.n_heads}, ${r.backend || state.info.backend})`);
  r.tokens.forEach((t, j) => add("text", { x: left + j * cell + cell / 2, y: top - 8, "text-anchor": "middle", "font-size": 11 }, t));
  head.weights.forEach((row, i) => {
    add("text", { x: left - 6, y: top + i * cell + cell / 2 + 4, "text-anchor": "end", "font-size": 11 }, r.tokens[i]);
    row.forEach((w, j) => {
      const masked = head.scaled[i][j] === null;
      add("rect", { class: "weight", x: left + j * cell, y: top + i * cell, width: cell, height: cell,
        fill: masked ? "#eee" : shade(w), stroke: "#ddd", "data-i": i, "data-j": j, "data-weight": w });
      add("text", { x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 4, "text-anchor": "middle", "font-size": 10,
        fill: w > 0.55 ? "#fff" : "#222" }, fmt(w, 2));
    });
  });
  // The legend: the colour scale from weight 0 to 1.
  const ly = top + n * cell + 20;
  for (let k = 0; k <= 10; k++) add("rect", { class: "legend", x: left + k * 16, y: ly, width: 16, height: 10, fill: shade(k / 10) });
  add("text", { x: left - 6, y: ly + 9, "text-anchor": "end", "font-size": 10 }, "0");
  add("text", { x: left + 11 * 16 + 4, y: ly + 9, "font-size": 10 }, "1");
  return new XMLSerializer().serializeToString(svg);
}

function download(name, blob) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function exportSvg() {
  const text = viewSvg();
  document.body.dataset.lastExport = text;
  download("attention-weights.svg", new Blob([text], { type: "image/svg+xml" }));
}

function exportPng() {
  const text = viewSvg();
  const image = new Image();
  document.body.dataset.state = "busy";
  image.onload = () => {
    const canvas = el("canvas", { width: image.width * 2, height: image.height * 2 });
    const context = canvas.getContext("2d");
    context.scale(2, 2);
    context.drawImage(image, 0, 0);
    const url = canvas.toDataURL("image/png");
    document.body.dataset.lastExport = url;
    canvas.toBlob((blob) => { download("attention-weights.png", blob); finished(true); }, "image/png");
  };
  image.onerror = () => finished(false, "the PNG could not be drawn");
  image.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(text);
}

/** A standalone page: the server computes every answer this view needs and sends the page back. */
async function exportHtml() {
  const controls = {};
  for (const id of CONTROLS) controls[id] = $(id).type === "checkbox" ? $(id).checked : $(id).value;
  controls.query = state.query;
  controls.head = state.head;
  const body = { request: request(), controls, shuffle_seed: state.shuffles + 1 };
  delete body.request.options.queries;
  if (!$("trained").hidden && $("model").value) {
    body.model = $("model").value;
    body.example_seed = parseInt($("example-seed").value || "0", 10);
  }
  document.body.dataset.state = "busy";
  try {
    const response = await fetch("/api/export", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    if (!response.ok) throw new Error((await response.json()).error || response.statusText);
    const html = await response.text();
    document.body.dataset.lastExport = html;
    download("attention-explorer.html", new Blob([html], { type: "text/html" }));
    finished(true);
  } catch (e) {
    finished(false, e.message);
  }
}

async function start() {
  try {
    state.info = await api("/api/info");
  } catch (e) {
    finished(false, `cannot reach the server: ${e.message}`);
    return;
  }
  $("seed").value = state.info.seed;
  if (SNAPSHOT) {
    // The controls as they were; they stay as they are (the snapshot holds no other answers).
    for (const [id, v] of Object.entries(SNAPSHOT.controls)) {
      if (!CONTROLS.includes(id)) continue;
      if ($(id).type === "checkbox") $(id).checked = Boolean(v); else $(id).value = v;
    }
    state.query = Number(SNAPSHOT.controls.query || 0);
    state.queries = [state.query];
    state.head = Number(SNAPSHOT.controls.head || 0);
    state.shuffles = SNAPSHOT.shuffle.shuffle_seed - 1;
    for (const id of [...CONTROLS, "export-html", "example-seed", "example", "model"]) $(id).disabled = true;
    $("snapshot").hidden = false;
    $("snapshot").append(` Saved from ${SNAPSHOT.provenance.crate} at commit ${SNAPSHOT.provenance.commit}.`);
  } else {
    for (const id of CONTROLS) {
      $(id).addEventListener("input", schedule);
      $(id).addEventListener("change", schedule);
    }
  }
  $("head").addEventListener("change", () => { state.head = parseInt($("head").value, 10); render(); finished(true); });
  $("step-back").addEventListener("click", () => { state.step = Math.max(0, state.step - 1); renderStep(); });
  $("step-next").addEventListener("click", () => { state.step = Math.min(7, state.step + 1); renderStep(); });
  $("shuffle").addEventListener("click", shuffle);
  $("export-svg").addEventListener("click", exportSvg);
  $("export-png").addEventListener("click", exportPng);
  $("export-html").addEventListener("click", exportHtml);
  for (const id of ["grid-from", "grid-to"]) $(id).addEventListener("input", renderGrid);
  const trained = state.info.trained;
  if (trained && trained.models.length > 0) {
    $("trained").hidden = false;
    $("model").replaceChildren(...trained.models.map((m) => el("option", { value: m.name,
      text: `${m.name} (${m.task}, ${m.n_layers} layers × ${m.n_heads} heads, d_model ${m.d_model}, ${m.positional})` })));
    if (SNAPSHOT) $("example-seed").value = SNAPSHOT.example_seed;
    $("example").addEventListener("click", example);
    $("model").addEventListener("change", example);
  } else if (!SNAPSHOT) {
    $("trained-hint").hidden = false;
  }
  await recompute();
  if (!$("trained").hidden) await example();
}

start();
