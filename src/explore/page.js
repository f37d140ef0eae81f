// The explorer's page script. It only draws: every number comes from the server's block through
// /api/attention, /api/shuffle and /api/model. Text goes in through textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const HEAD_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
let timer = null; // the debounce of the controls' changes
const state = { info: null, result: null, query: 0, head: 0, step: 0, sent: 0, shown: 0, version: 0 };

function el(tag, attrs, ...children) {
  const svg = ["svg", "line", "text", "g", "title"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else if (k === "on") for (const [ev, f] of Object.entries(v)) node.addEventListener(ev, f);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const fmt = (v, digits = 3) => (v === null || v === undefined ? "−∞" : Number(v).toFixed(digits));

async function api(path, body) {
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
      seed: parseInt($("seed").value || "0", 10),
      query: Math.min(state.query, Math.max(tokens.length - 1, 0)),
    },
  };
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
  $("temperature-value").textContent = temperature().toFixed(2);
  $("scale-number").hidden = $("scale").value !== "number";
  document.body.dataset.state = "busy";
  try {
    const result = await api("/api/attention", request());
    if (mine !== state.sent) return; // a newer request is on its way
    state.result = result;
    state.query = Math.min(state.query, result.tokens.length - 1);
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

function render() {
  const r = state.result;
  const heads = $("head");
  heads.replaceChildren(...r.heads.map((_, h) => el("option", { value: h, text: `head ${h}` })));
  heads.value = String(state.head);
  renderHeatmap();
  renderHeadView();
  renderDetail();
  renderStep();
}

function tokenButton(i) {
  const chosen = i === state.query ? " chosen" : "";
  return el("button", {
    type: "button", class: "token" + chosen, "data-i": i, text: state.result.tokens[i],
    on: { click: () => { state.query = i; recompute(); } },
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
    ...r.tokens.map((t) => el("th", { text: t })), el("th", { text: "Σ row" }));
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
    const off = Math.abs(sum - 1) > 1e-3 ? " off" : "";
    return el("tr", { class: i === state.query ? "chosen" : "" }, el("th", {}, tokenButton(i)), ...cells,
      el("td", { class: "sum row-sum" + off, "data-sum": sum, text: fmt(sum) }));
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
    items.push(el("text", { x: left - 8, y: y(i) + 4, "text-anchor": "end", text: t,
      "font-weight": i === state.query ? "bold" : "normal" }));
    items.push(el("text", { x: right + 8, y: y(i) + 4, text: t }));
  });
  r.heads.forEach((head, h) => {
    const colour = HEAD_COLOURS[h % HEAD_COLOURS.length];
    head.weights[state.query].forEach((w, j) => {
      if (w <= 0) return;
      items.push(el("line", {
        class: "hv-line", "data-head": h, "data-j": j, "data-weight": w,
        x1: left, y1: y(state.query) + (h - (r.heads.length - 1) / 2) * 2, x2: right, y2: y(j),
        stroke: colour, "stroke-width": (0.5 + 9 * w).toFixed(2), "stroke-opacity": 0.65,
      }, el("title", {}, `head ${h}: ${r.tokens[state.query]} → ${r.tokens[j]} ${fmt(w)}`)));
    });
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
  $("entropy-max").textContent = fmt(Math.log(r.tokens.length), 4);
  const perHead = r.heads.map((h, i) => `head ${i}: ${fmt(h.entropy[q], 3)}`).join(", ");
  $("row-detail").replaceChildren(
    el("p", { text: `Weights of this row: ${head.weights[q].map((w, j) => `${r.tokens[j]} ${fmt(w)}`).join(", ")}` }),
    el("p", { class: "hint", text: `Entropy per head: ${perHead}` }));
  const neuron = r.neuron ? r.neuron[state.head] : null;
  if (!neuron) { $("neuron").replaceChildren(); return; }
  const vec = (v) => "[" + v.map((x) => fmt(x, 2)).join(", ") + "]";
  const rows = neuron.keys.map((k, j) => el("tr", {},
    el("th", { text: r.tokens[j] }),
    el("td", { class: "vec", text: vec(k.k) }),
    el("td", { class: "vec", text: vec(k.product) }),
    el("td", { text: fmt(k.dot) }),
    el("td", { text: fmt(k.scaled) }),
    el("td", { class: "cell", "data-weight": k.weight, style: `background-color: ${shade(k.weight)}`, text: fmt(k.weight) })));
  $("neuron").replaceChildren(
    el("tr", {}, el("th", { text: "q =" }), el("td", { class: "vec", colspan: 5, text: vec(neuron.q) })),
    el("tr", {}, ...["key", "k", "q ⊙ k", "q·k", `÷ ${fmt(r.scale)}`, "weight"].map((t) => el("th", { text: t }))),
    ...rows);
}

function matrixTable(rowNames, colNames, rows) {
  return el("table", {},
    el("tr", {}, el("th"), ...colNames.map((c) => el("th", { text: c }))),
    ...rows.map((row, i) => el("tr", {}, el("th", { text: rowNames[i] }), ...row.map((v) => el("td", { text: fmt(v) })))));
}

function renderStep() {
  const r = state.result;
  const head = r.heads[state.head];
  const steps = [...$("steps").children];
  const step = steps[state.step];
  const cols = (n, p) => Array.from({ length: n }, (_, i) => `${p}${i}`);
  const matrices = [
    [r.x, cols(r.d_model, "x")], [head.q, cols(r.d_k, "q")], [head.k, cols(r.d_k, "k")], [head.v, cols(r.d_v, "v")],
    [head.scores, r.tokens], [head.scaled, r.tokens], [head.weights, r.tokens], [head.output, cols(r.d_v, "o")],
  ];
  let title = step.textContent;
  if (state.step === 5) {
    const alibi = r.positional === "alibi" ? ", + ALiBi's −m_h·|i − j|" : "";
    title = `6. ÷ ${fmt(r.scale, 4)} (${r.scale_rule}${r.temperature === 1 ? "" : " × τ"})${alibi}`;
  }
  if (state.step === 6) title = `7. softmax over ${r.softmax_axis}`;
  if (state.step >= 1 && state.step <= 3 && !r.projections) title = title.replace(/·W_[QKV]/, "") + " (no projections)";
  $("step-title").textContent = (r.n_heads > 1 && state.step > 0 ? `head ${state.head}: ` : "") + title;
  $("step-title").dataset.step = String(state.step + 1);
  $("step-what").textContent = step.dataset.what;
  const [rows, colNames] = matrices[state.step];
  $("step-table").replaceChildren(matrixTable(r.tokens, colNames, rows));
  $("step-back").disabled = state.step === 0;
  $("step-next").disabled = state.step === steps.length - 1;
}

async function shuffle() {
  const body = request();
  const n = body.tokens.length;
  const permutation = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [permutation[i], permutation[j]] = [permutation[j], permutation[i]];
  }
  if (n > 1 && permutation.every((p, i) => p === i)) permutation.push(permutation.shift());
  body.options.permutation = permutation;
  document.body.dataset.state = "busy";
  try {
    const s = await api("/api/shuffle", body);
    $("max-delta").textContent = Number(s.max_delta).toExponential(2);
    $("max-delta").dataset.value = s.max_delta;
    $("shuffle-what").textContent = s.equivariant
      ? `≤ ${s.tolerance}: every output row moved with its token, unchanged (equivariant).`
      : `> ${s.tolerance}: the outputs changed with the order (a positional encoding or the mask tells positions apart).`;
    const outs = (res) => res.output.map((row) => row.slice(0, 6));
    const cols = Array.from({ length: Math.min(s.before.output[0].length, 6) }, (_, i) => `o${i}`);
    $("shuffle-compare").replaceChildren(
      el("div", {}, el("h3", { text: "before" }), matrixTable(s.before.tokens, cols, outs(s.before))),
      el("div", {}, el("h3", { text: `after (order ${s.permutation.join(", ")})` }), matrixTable(s.after.tokens, cols, outs(s.after))));
    finished(true);
  } catch (e) {
    finished(false, e.message);
  }
}

async function example() {
  document.body.dataset.state = "busy";
  try {
    const e = await api("/api/model", { model: $("model").value, seed: parseInt($("example-seed").value || "0", 10) });
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
    finished(true);
  } catch (err) {
    finished(false, err.message);
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
  for (const id of ["sentence", "scale", "scale-number", "axis", "temperature", "causal", "positional", "heads", "d-model", "projections", "qk-norm", "ssmax", "softmax", "gate", "kernel", "seed"]) {
    $(id).addEventListener("input", schedule);
    $(id).addEventListener("change", schedule);
  }
  $("head").addEventListener("change", () => { state.head = parseInt($("head").value, 10); render(); finished(true); });
  $("step-back").addEventListener("click", () => { state.step = Math.max(0, state.step - 1); renderStep(); });
  $("step-next").addEventListener("click", () => { state.step = Math.min(7, state.step + 1); renderStep(); });
  $("shuffle").addEventListener("click", shuffle);
  const trained = state.info.trained;
  if (trained && trained.models.length > 0) {
    $("trained").hidden = false;
    $("model").replaceChildren(...trained.models.map((m) => el("option", { value: m.name,
      text: `${m.name} (${m.task}, ${m.n_layers} layers × ${m.n_heads} heads, d_model ${m.d_model}, ${m.positional})` })));
    $("example").addEventListener("click", example);
    $("model").addEventListener("change", example);
  }
  await recompute();
  if (!$("trained").hidden) await example();
}

start();
