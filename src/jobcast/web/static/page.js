// The page at `/`: a form built from each job type's JSON Schema, and a live card per job, all of them
// followed over one stream of your jobs (`watchJobs`, `GET /events`): jobs submitted from another tab, the
// CLI or a backend appear as they are created.
import { cancelJob, describe, jobTypes, retryJob, setApiKey, submitJob, watchJobs } from "./jobcast.js";

const $ = (selector, root = document) => root.querySelector(selector);
const cards = new Map(); // job id -> {element}
let watching = null; // the watchJobs handle of the job list
let mode = null; // how the list hears about its jobs: "sse" or "polling"
const TERMINAL = new Set(["completed", "failed", "canceled"]);
let types = [];

// -- the API key (only needed when the server requires one) ----------------------

$("#auth-form").addEventListener("submit", (e) => e.preventDefault());
const keyInput = $("#api-key");
keyInput.value = sessionStorage.getItem("jobcast.apiKey") || "";
setApiKey(keyInput.value);
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("jobcast.apiKey", keyInput.value);
  setApiKey(keyInput.value);
  restart(); // another key may be another owner
});

// -- the submit form ---------------------------------------------------------------

/** A property's schema with `$ref`s resolved and an optional (`anyOf [X, null]`) unwrapped. */
function resolve(spec, defs) {
  if (spec.$ref) return { ...resolve(defs[spec.$ref.split("/").pop()] || {}, defs), ...spec, $ref: undefined };
  const options = (spec.anyOf || []).filter((s) => s.type !== "null");
  if (!spec.type && options.length === 1) return { ...resolve(options[0], defs), ...spec, anyOf: undefined };
  return spec;
}

function fieldType(spec) {
  if (spec.enum) return "enum";
  if (spec.type) return spec.type;
  return spec.properties ? "object" : "string";
}

/** Put `text` into `element`, its `inline code` as <code> (never as HTML: descriptions come from job authors). */
function inline(element, text) {
  element.replaceChildren(...String(text).split("`").map(
    (part, i) => (i % 2 ? Object.assign(document.createElement("code"), { textContent: part }) : part)));
}

const isStandIn = (typeName) => !!types.find((t) => t.name === typeName)?.stand_in;

function renderForm(type) {
  const fields = $("#payload-fields");
  fields.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "Payload" }));
  inline($("#type-description"), type.available ? type.description : `Unavailable: ${type.unavailable_reason}`);
  $("#type-stand-in").hidden = !type.stand_in;
  const schema = type.schema || {};
  const required = new Set(schema.required || []);
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    const spec = resolve(raw, schema.$defs || {});
    const kind = fieldType(spec);
    const label = document.createElement("label");
    label.append(`${spec.title || name}${required.has(name) ? " *" : ""} `);
    let input;
    if (kind === "enum") {
      input = document.createElement("select");
      const nullable = (raw.anyOf || []).some((s) => s.type === "null");
      if (nullable || (!required.has(name) && spec.default === undefined)) input.append(new Option("", ""));
      for (const value of spec.enum) input.append(new Option(String(value), String(value)));
    } else if (kind === "boolean") {
      input = Object.assign(document.createElement("input"), { type: "checkbox", checked: !!spec.default });
    } else if (kind === "integer" || kind === "number") {
      input = Object.assign(document.createElement("input"), { type: "number", step: kind === "integer" ? "1" : "any" });
      if (spec.minimum !== undefined) input.min = spec.minimum;
      if (spec.maximum !== undefined) input.max = spec.maximum;
    } else if (kind === "array" || kind === "object") {
      input = Object.assign(document.createElement("textarea"), { rows: 3, placeholder: "JSON" });
    } else {
      input = Object.assign(document.createElement("input"), { type: "text" });
    }
    input.name = name;
    input.dataset.kind = kind;
    if (spec.default !== undefined && spec.default !== null && kind !== "boolean") {
      input.value = typeof spec.default === "object" ? JSON.stringify(spec.default) : spec.default;
    }
    if (required.has(name) && kind !== "boolean") input.required = true; // a required checkbox could never be false
    label.append(input);
    if (spec.description) {
      const hint = document.createElement("small");
      inline(hint, ` ${spec.description}`);
      label.append(hint);
    }
    fields.append(label);
  }
}

function readPayload() {
  const payload = {};
  for (const input of $("#payload-fields").querySelectorAll("[name]")) {
    const { kind } = input.dataset;
    if (kind === "boolean") payload[input.name] = input.checked;
    else if (input.value === "") continue;
    else if (kind === "integer" || kind === "number") payload[input.name] = Number(input.value);
    else if (kind === "array" || kind === "object") {
      try {
        payload[input.name] = JSON.parse(input.value);
      } catch {
        throw new Error(`${input.name}: not valid JSON`);
      }
    } else payload[input.name] = input.value;
  }
  return payload;
}

$("#job-type").addEventListener("change", (e) => renderForm(types.find((t) => t.name === e.target.value)));

$("#submit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("#submit-error").textContent = "";
  try {
    show(await submitJob($("#job-type").value, readPayload()));
  } catch (error) {
    const details = (error.details || []).map((d) => `${d.path}: ${d.message}`).join("; ");
    $("#submit-error").textContent = details ? `${error.message} (${details})` : error.message;
  }
});

// -- job cards -------------------------------------------------------------------------

function renderItem(item) {
  const box = Object.assign(document.createElement("div"), { className: "item" });
  if (item && typeof item === "object" && !Array.isArray(item)) {
    const list = document.createElement("dl");
    for (const [key, value] of Object.entries(item)) {
      list.append(Object.assign(document.createElement("dt"), { textContent: key }),
                  Object.assign(document.createElement("dd"), {
                    textContent: typeof value === "object" ? JSON.stringify(value) : String(value) }));
    }
    box.append(list);
  } else {
    box.textContent = JSON.stringify(item);
  }
  return box;
}

function render(card, job) {
  const el = card.element;
  el.className = `job ${job.status}`;
  $(".type", el).textContent = job.type || "";
  $(".status", el).textContent = job.status;
  $(".status", el).className = `status ${job.status}`;
  const pct = Number(job.progress || 0);
  const bar = $(".bar", el);
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-valuetext", `${pct}% — ${describe(job)}`);
  $(".fill", el).style.width = `${pct}%`;
  $(".message", el).textContent = describe(job);
  $(".stage", el).textContent = job.stage ? `Stage: ${job.stage}.` : "";
  $(".attempt", el).textContent = job.max_attempts > 1 ? `Attempt ${job.attempt} of ${job.max_attempts}.` : "";
  $(".eta", el).textContent = job.eta_s !== null && job.eta_s !== undefined ? `About ${job.eta_s} s left.` : "";
  renderError(el, job.status !== "completed" ? job.error : null);
  $(".stand-in", el).hidden = !isStandIn(job.type);
  $(".took", el).textContent = took(job);
  $(".usage", el).textContent = usage(job);
  renderResult(card, job);
  $(".cancel", el).hidden = TERMINAL.has(job.status);
  $(".retry", el).hidden = !(job.status === "failed" || job.status === "canceled");
  if (job.output) {
    // Rebuild the items when they are not what is shown (new ones, a new attempt, a capped list moving on).
    const last = job.output.items.at(-1);
    const key = `${job.attempt}:${job.output.items.length}:${JSON.stringify(last)}`;
    if (card.itemsKey !== key) {
      card.itemsKey = key;
      $(".items", el).replaceChildren(...job.output.items.map(renderItem));
    }
    const text = $(".text", el);
    text.hidden = !job.output.text;
    text.textContent = job.output.text;
  }
}

function renderError(el, error) {
  const box = $(".error", el);
  if (!error) box.replaceChildren();
  else box.replaceChildren(Object.assign(document.createElement("code"), { textContent: error.code }), error.message);
}

/** "Ran 4.2 s." for a job that has ended after it started. */
/** A job's model usage as a card shows it: "1,234 tokens (3 calls), $0.0012", "~" when estimated. */
function usage(job) {
  const u = job.usage;
  if (!u) return "";
  const tokens = (u.prompt_tokens + u.completion_tokens).toLocaleString("en");
  const cost = u.cost_usd === null || u.cost_usd === undefined ? "" : `, $${u.cost_usd.toFixed(4)}`;
  return `${u.estimated ? "~" : ""}${tokens} tokens (${u.calls} call${u.calls === 1 ? "" : "s"})${cost}.`;
}

function took(job) {
  if (!TERMINAL.has(job.status) || !job.started_at || !job.ended_at) return "";
  const seconds = (Date.parse(job.ended_at) - Date.parse(job.started_at)) / 1000;
  return `Ran ${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s.`;
}

const OPEN_RESULT_LINES = 12; // a result longer than this starts folded

function renderResult(card, job) {
  const box = $(".result", card.element);
  const shown = job.status === "completed" && job.result !== null && job.result !== undefined;
  box.hidden = !shown;
  if (!shown || card.resultShown === job.id + job.last_event_id) return;
  card.resultShown = job.id + job.last_event_id;
  const json = JSON.stringify(job.result, null, 2);
  $(".json", box).textContent = json;
  $(".size", box).textContent = `(${json.length < 1024 ? `${json.length} B` : `${(json.length / 1024).toFixed(1)} KiB`})`;
  box.open = json.split("\n").length <= OPEN_RESULT_LINES;
}

async function copyResult(card) {
  const button = $(".copy", card.element);
  const json = $(".json", card.element).textContent;
  try {
    await navigator.clipboard.writeText(json);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed: select the text instead";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
}

const modeLabel = () => (mode === "sse" ? "live" : mode === "polling" ? "polling" : "");

/** The tag filter as watchJobs takes it: "key:value" (or key=value), several separated by commas. */
function tagFilter() {
  const tag = {};
  for (const pair of $("#tag-filter").value.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [key, ...value] = pair.split(/[:=]/);
    if (key && value.length) tag[key.trim()] = value.join(":").trim();
  }
  return tag;
}

/** Follow the owner's jobs (those carrying the filter's tags) over one stream, their cards newest first. */
$("#tag-filter").addEventListener("change", () => restart());

function restart() {
  watching?.close();
  cards.clear();
  $("#jobs").replaceChildren();
  watching = watchJobs({ tag: tagFilter() }, {
    onState: show,
    onOutput: (_, job) => show(job),
    onError: (error) => { $("#submit-error").textContent = error.message; },
    onMode: (m) => {
      mode = m;
      for (const card of cards.values()) $(".mode", card.element).textContent = modeLabel();
    },
  });
}

/** Show `job` on its card (made if need be), unless the card shows a newer state of it already. A batch's
 * parts have no card of their own: the batch's card shows them (its bar, "3/6 parts done", their items). */
function show(job) {
  if (job.parent_id) return;
  const card = track(job);
  if ((job.last_event_id ?? 0) >= (card.seq ?? 0)) {
    card.seq = job.last_event_id;
    render(card, job);
  }
}

function track(job) {
  const id = job.id;
  let card = cards.get(id);
  if (!card) {
    const element = $("#job-card").content.firstElementChild.cloneNode(true);
    element.dataset.jobId = id;
    $(".id", element).textContent = id.slice(0, 8);
    $(".id", element).id = `job-${id}`;
    $(".bar", element).setAttribute("aria-labelledby", `job-${id}`);
    $(".cancel", element).setAttribute("aria-label", `Cancel job ${id.slice(0, 8)}`);
    $(".retry", element).setAttribute("aria-label", `Retry job ${id.slice(0, 8)}`);
    card = { element, createdAt: job.created_at };
    cards.set(id, card);
    $(".mode", element).textContent = modeLabel();
    $(".cancel", element).addEventListener("click", () => cancelJob(id).then(show).catch(
      (error) => { $(".error", element).textContent = error.message; }));
    $(".retry", element).addEventListener("click", () => retryJob(id).then(show).catch(
      (error) => { $(".error", element).textContent = error.message; }));
    $(".copy", element).addEventListener("click", () => copyResult(card));
    // Newest first: before the first card created earlier than this job.
    const older = [...$("#jobs").children].find((el) => cards.get(el.dataset.jobId).createdAt < card.createdAt);
    $("#jobs").insertBefore(element, older || null);
  }
  return card;
}

async function start() {
  try {
    types = (await jobTypes()).job_types;
    const select = $("#job-type");
    const label = (t) => (!t.available ? `${t.name} (unavailable)` : t.stand_in ? `${t.name} (stand-in model)` : t.name);
    select.replaceChildren(...types.map((t) => new Option(label(t), t.name)));
    const first = types.find((t) => t.available) || types[0];
    if (first) {
      select.value = first.name;
      renderForm(first);
    }
    restart();
  } catch (error) {
    $("#submit-error").textContent = error.message;
  }
}

start();
