// The page's script: asks POST /translate for the translation, its n-best list, attention and beam trace, and
// draws them. Plain DOM, no libraries, no build step (it must work offline).
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function fmt(score) {
  return score === null || score === undefined ? "n/a" : score.toFixed(3);
}

async function post(body) {
  const response = await fetch("/translate", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// a word is marked when one of its pieces has a probability below this (seq2seq/decoding/confidence.py LOW_PROB)
const LOW_PIECE_PROB = 0.2;

function confidenceWords(entry) {
  // the output's words, each with the lowest probability of its pieces (\u2581 starts a word), or null when the
  // pieces do not spell the text (byte pieces, for instance): then the text is shown unmarked
  const words = [];
  (entry.pieces || []).forEach((piece, i) => {
    if (piece === "</s>") return;
    const prob = entry.piece_probs[i];
    if (piece.startsWith("\u2581") || !words.length) words.push({ text: piece.replace(/^\u2581/, ""), prob });
    else { words[words.length - 1].text += piece; words[words.length - 1].prob = Math.min(words[words.length - 1].prob, prob); }
  });
  const spelled = words.map((w) => w.text).filter((w) => w).join(" ");
  return words.length && spelled === entry.text ? words.filter((w) => w.text) : null;
}

function drawTranslation(entry) {
  const box = $("translation");
  box.replaceChildren();
  const words = confidenceWords(entry);
  if (!words) box.textContent = entry.text;
  else words.forEach((word, i) => {
    const span = el("span", word.text, word.prob < LOW_PIECE_PROB ? "unsure" : undefined);
    span.title = `probability ${word.prob.toFixed(2)} (lowest of its pieces)`;
    box.append(...(i ? [" ", span] : [span]));
  });
  const known = entry.confidence !== null && entry.confidence !== undefined;
  $("confidence").textContent = !known ? "" : `confidence ${entry.confidence.toFixed(2)} ` + (entry.confidence_calibrated
    ? "(an estimate of this sentence's chrF / 100, calibrated on held-out sentences)"
    : "(uncalibrated: the mean piece probability; run python -m seq2seq.calibrate on the model)") +
    "; underlined words are ones the model was unsure of.";
  $("warning").textContent = known && entry.low_confidence
    ? "Warning: this translation is unlikely to be right. The input may be unlike anything the model learned from." : "";
}

function drawNbest(entry) {
  const table = $("nbest-list");
  table.replaceChildren();
  const head = el("tr");
  ["#", "score", "translation"].forEach((name) => head.appendChild(el("th", name)));
  table.appendChild(head);
  (entry.nbest || [entry]).forEach((hyp, rank) => {
    const row = el("tr");
    row.append(el("td", String(rank + 1)), el("td", fmt(hyp.score)), el("td", hyp.text));
    table.appendChild(row);
  });
}

function drawHeatmap(entry) {
  const table = $("heatmap");
  table.replaceChildren();
  const best = entry.nbest ? entry.nbest[0] : entry; // with an n-best list, each hypothesis has its attention
  const weights = best.attention || [];
  if (!weights.length) return;
  const thead = el("thead");
  const head = el("tr");
  head.appendChild(el("th", ""));
  entry.src_pieces.forEach((piece) => head.appendChild(el("th", piece)));
  thead.appendChild(head);
  const tbody = el("tbody");
  weights.forEach((row, i) => {
    const tr = el("tr");
    tr.appendChild(el("th", best.tgt_pieces[i]));
    row.forEach((weight, j) => {
      const cell = el("td", weight.toFixed(2));
      cell.style.background = `rgba(20, 70, 160, ${Math.min(1, weight).toFixed(3)})`;
      cell.title = `${best.tgt_pieces[i]} <- ${entry.src_pieces[j]}: ${weight.toFixed(3)}`;
      tr.appendChild(cell);
    });
    tbody.appendChild(tr);
  });
  table.append(thead, tbody);
}

function drawBeam(steps) {
  const box = $("beam-steps");
  box.replaceChildren();
  steps.forEach((step, t) => {
    const column = el("div", undefined, step.done ? "step done" : "step");
    const hyps = el("div", undefined, "hyps");
    step.finished.forEach((hyp) => hyps.appendChild(hypothesis(hyp, "hyp finished")));
    step.kept.forEach((hyp) => hyps.appendChild(hypothesis(hyp, "hyp kept")));
    column.append(el("h3", `step ${t + 1}${step.done ? " (done)" : ""}`), hyps);
    box.appendChild(column);
  });
}

function hypothesis(hyp, className) {
  // the prefix, then the piece this step added in bold (\u2581 marks a word start: shown as a space)
  const words = (pieces) => pieces.join("").replaceAll("\u2581", " ").trim();
  const node = el("span", undefined, className);
  const last = hyp.pieces[hyp.pieces.length - 1] || "";
  node.append(words(hyp.pieces.slice(0, -1)) + (last.startsWith("\u2581") ? " " : ""), el("b", words([last])));
  node.appendChild(el("span", fmt(hyp.score), "score"));
  node.title = hyp.pieces.join(" ");
  return node;
}

async function translate(event) {
  if (event) event.preventDefault();
  const text = $("source").value;
  const beamSize = Number($("beam-size").value);
  const nbest = Math.min(Number($("nbest-size").value), beamSize);
  $("error").textContent = "";
  $("translate").disabled = true;
  document.body.dataset.state = "busy";
  try {
    const [rich, greedy] = await Promise.all([
      post({ text, beam_size: beamSize, nbest, return_scores: true, return_attention: true, return_beam: true }),
      post({ text, beam_size: 1, return_scores: true }),
    ]);
    const entry = rich.translations[0];
    drawTranslation(entry);
    $("greedy").textContent = `greedy search (beam 1): ${greedy.translations[0].text}  (score ${fmt(greedy.translations[0].score)})`;
    drawNbest(entry);
    drawHeatmap(entry);
    drawBeam(entry.beam || []);
    document.body.dataset.state = "done";
  } catch (err) {
    $("error").textContent = `error: ${err.message}`;
    document.body.dataset.state = "error";
  } finally {
    $("translate").disabled = false;
  }
}

async function describe() {
  try {
    const info = await (await fetch("/info")).json();
    $("langs").textContent = `(${info.src_lang} \u2192 ${info.tgt_lang})`;
    $("beam-size").value = info.default_beam_size;
    $("beam-size").max = info.limits.max_beam_size;
    $("nbest-size").max = info.limits.max_beam_size;
    $("nbest-size").value = Math.min(3, info.default_beam_size);
    const model = info.model;
    const bleu = info.results && Object.entries(info.results)[0];
    $("model-note").textContent = `${model.rnn_type.toUpperCase()} encoder-decoder, ${model.attention} attention, ` +
      `vocabularies ${info.src_vocab_size} / ${info.tgt_vocab_size} pieces` +
      (bleu && bleu[1].beam5 ? `; test BLEU ${bleu[1].beam5.bleu} on ${bleu[0]} (beam 5)` : "") + ".";
  } catch (err) {
    $("model-note").textContent = `could not read /info: ${err.message}`;
  }
}

$("form").addEventListener("submit", translate);
describe().then(() => {
  const preset = new URLSearchParams(window.location.search).get("text");
  if (preset !== null) {
    $("source").value = preset;
    $("form").requestSubmit();
  }
});
