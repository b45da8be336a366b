// jobcast browser client: watch a job live, with automatic fallback to polling.
//
//   import { watchJob } from "https://jobs.example.com/static/jobcast.js";
//   const handle = watchJob(job, {
//     onState: (job) => ...,          // every change: the whole job object as it now stands
//     onOutput: (output, job) => ..., // {kind: "item", item} or {kind: "delta", text}, as produced
//     onDone: (job) => ...,           // the terminal job object (completed, failed or canceled)
//     onError: (error) => ...,        // the job is gone (404), or the key is refused (401)
//     onMode: (mode) => ...,          // "sse" or "polling"
//   });
//   handle.close();
//
// `job.output` in onState is always the truth (a new attempt starts it afresh);
// onOutput only reports what is new, for UIs that append.
//
// It uses EventSource on the job's `links.events`. Every stream it opens starts
// with a snapshot of the job, which the server sends at once, and EventSource
// resumes by itself with Last-Event-ID after a network blip. It falls back to
// polling GET /jobs/{id} (with If-None-Match) when EventSource is missing, when
// the stream fails to open repeatedly, or when no event arrives within a few
// seconds of opening (a proxy that buffers the stream). Past four streams of
// single jobs, the next jobs share one set stream (`GET /events?job=...`), so a
// page of many jobs never runs out of connections. Jobs being watched are
// remembered in localStorage, so `resumeWatches()` re-attaches to them after a
// page reload.
//
// Many jobs on one page: `watchJobs({tag: {project: "apollo"}}, handlers)` follows a set of them (a list,
// the jobs carrying tags, or all of yours) over one stream, `GET /events`, new jobs joining as they come.
// Sets being watched are remembered too: `resumeSetWatches()` re-attaches to them.

const TERMINAL = new Set(["completed", "failed", "canceled"]);
const STORE_KEY = "jobcast.watching";
const SETS_KEY = "jobcast.watching-sets";
const FIRST_EVENT_TIMEOUT_MS = 4000;
const MAX_STREAM_FAILURES = 3;
const MAX_ITEMS = 1000; // as many as the server keeps
// A browser opens at most 6 connections to one host over HTTP/1.1; an open event
// stream holds one for good. Past this many streams of single jobs, the next jobs
// share one set stream (5 connections in all), so the page's other requests never
// wait behind them.
const MAX_STREAMS = 4;
let openStreams = 0;
const MAX_IDS = 100; // the most jobs one GET /events?job=... lists

let apiKey = null;
// The API this client talks to: where this file is served from (`<api>/static/jobcast.js`), so it works
// from a page under a mount prefix (`/jobcast/`) and from a page on another origin (which the API must
// allow: JOBCAST_CORS_ORIGINS) alike.
let apiBase = new URL("..", import.meta.url);

/** Talk to the API at `url` instead of the one this file came from. */
export function setApiUrl(url) {
  apiBase = new URL(url.endsWith("/") ? url : `${url}/`, location.href);
}

/** The absolute URL of an API path (`/jobs/...`), under the API's base. */
function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), apiBase).href;
}

/** Send `Authorization: Bearer <key>` with every request this client makes (null: none). */
export function setApiKey(key) {
  apiKey = key || null;
}

function headers(extra = {}) {
  return apiKey ? { ...extra, Authorization: `Bearer ${apiKey}` } : extra;
}

export async function api(path, options = {}) {
  const response = await fetch(apiUrl(path), { ...options, headers: headers(options.headers || {}) });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(body?.error?.message || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.code = body?.error?.code;
    error.details = body?.error?.details;
    throw error;
  }
  return body;
}

export const submitJob = (type, payload = {}, extra = {}) =>
  api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
                 body: JSON.stringify({ type, payload, ...extra }) });
export const getJob = (id) => api(`/jobs/${id}`);
export const cancelJob = (id) => api(`/jobs/${id}/cancel`, { method: "POST" });
export const retryJob = (id) => api(`/jobs/${id}/retry`, { method: "POST" });
export const listJobs = (query = "") => api(`/jobs${query ? `?${query}` : ""}`);
export const jobTypes = () => api("/job-types");

/** What localStorage holds under `key`: a list (of job ids, or of sets as JSON). */
function stored(key) {
  try {
    const list = JSON.parse(localStorage.getItem(key) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

/** Add `entry` to the list under `key` (yes) or take it out. */
function remember(key, entry, yes) {
  const list = stored(key).filter((other) => other !== entry);
  if (yes) list.push(entry);
  localStorage.setItem(key, JSON.stringify(list));
}

/** The ids of jobs being watched when the page was left. */
export function rememberedJobs() {
  return stored(STORE_KEY);
}

/**
 * Re-attach to every job that was being watched when the page was left. Each
 * starts from a snapshot of the job as it now is (everything it produced so
 * far included), then goes on live: nothing seen before the reload is missed.
 */
export function resumeWatches(handlersFor) {
  return rememberedJobs().map((id) => watchJob(id, handlersFor(id)));
}

/** The sets (as watchJobs takes them) being watched when the page was left. */
export function rememberedSets() {
  return stored(SETS_KEY).flatMap((key) => {
    try {
      return [JSON.parse(key)];
    } catch {
      return []; // (not one of ours)
    }
  });
}

/** Re-attach to every set that was being watched when the page was left, each from a snapshot of its jobs. */
export function resumeSetWatches(handlersFor) {
  return rememberedSets().map((set) => watchJobs(set, handlersFor(set)));
}

/** The items of `after` that come after the last one in `before` (both capped lists). */
function newItems(before, after) {
  if (!before.length) return after;
  const last = JSON.stringify(before[before.length - 1]);
  for (let i = after.length - 1; i >= 0; i--) {
    if (JSON.stringify(after[i]) === last) return after.slice(i + 1);
  }
  return after;
}

/**
 * Watch a job: `jobOrId` is a job object (as POST /jobs returns it) or a job id.
 * Returns a handle with `close()`, `mode` and `job` (the latest job object).
 */
export function watchJob(jobOrId, handlers = {}) {
  const { onState = () => {}, onOutput = () => {}, onDone = () => {}, onError = () => {},
          onMode = () => {} } = handlers;
  const id = typeof jobOrId === "string" ? jobOrId : jobOrId.id;
  let job = typeof jobOrId === "string" ? null : jobOrId;
  let closed = false;
  let source = null;
  let pollTimer = null;
  let firstEventTimer = null;
  let failures = 0;
  let unshare = null; // leaves the shared set stream, when this job is followed there
  const handle = { mode: null, close, get job() { return job; } };

  function setMode(mode) {
    if (handle.mode !== mode) {
      handle.mode = mode;
      onMode(mode);
    }
  }

  function closeSource() {
    if (source) {
      source.close();
      source = null;
      openStreams -= 1;
    }
    if (unshare) unshare();
    unshare = null;
    clearTimeout(firstEventTimer);
  }

  function close() {
    closed = true;
    closeSource();
    clearTimeout(pollTimer);
  }

  function finish(final) {
    job = final;
    remember(STORE_KEY, id, false);
    close();
    onState(final);
    onDone(final);
  }

  function fail(error) {
    remember(STORE_KEY, id, false);
    close();
    onError(error);
  }

  function replace(current) {
    job = current;
    onState(job);
  }

  function applyState(state) {
    replace(withState(job, state));
  }

  function applyOutput(out) {
    if (job) job = withOutput(job, out);
    onOutput(out, job);
  }

  function seen(event) {
    failures = 0;
    clearTimeout(firstEventTimer);
    if (job && event.lastEventId) job = { ...job, last_event_id: Number(event.lastEventId) };
  }

  function openStream() {
    if (closed) return;
    if (typeof EventSource === "undefined" || globalThis.JOBCAST_DISABLE_EVENTSOURCE) {
      startPolling();
      return;
    }
    if (openStreams >= MAX_STREAMS) {
      unshare = share(id, {
        state(current) {
          if (job && current.attempt === job.attempt && current.last_event_id < job.last_event_id) return;
          reportNewOutput(current); // a snapshot (the shared stream opened again) brings what came meanwhile
          if (TERMINAL.has(current.status)) finish(current);
          else replace(current);
        },
        output(out, current) {
          job = current;
          onOutput(out, current);
        },
        mode: setMode,
        error: fail,
      });
      if (!unshare) startPolling(); // the shared stream is full
      return;
    }
    setMode("sse");
    // No Last-Event-ID on a fresh open: the stream then starts with a snapshot,
    // at once, which both brings the job up to date and shows the stream flows.
    source = new EventSource(job?.links?.events || apiUrl(`/jobs/${id}/events`));
    openStreams += 1;
    firstEventTimer = setTimeout(() => {
      // Nothing yet, though the server always answers at once: a proxy buffers the stream.
      closeSource();
      startPolling();
    }, FIRST_EVENT_TIMEOUT_MS);
    source.addEventListener("snapshot", (e) => {
      seen(e);
      const current = JSON.parse(e.data);
      reportNewOutput(current); // what it produced before the stream opened (or while this client lagged)
      replace(current);
    });
    source.addEventListener("state", (e) => {
      seen(e);
      applyState(JSON.parse(e.data));
    });
    source.addEventListener("output", (e) => {
      seen(e);
      applyOutput(JSON.parse(e.data));
    });
    for (const name of TERMINAL) {
      source.addEventListener(name, (e) => {
        seen(e);
        finish(JSON.parse(e.data));
      });
    }
    source.onerror = () => {
      if (closed || !source) return;
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= MAX_STREAM_FAILURES) {
        // The server refused the stream (204 after the end, 401, 404, 503), or it keeps
        // dropping: ask the server plainly what is going on.
        closeSource();
        recover();
      }
      // Otherwise EventSource reconnects by itself, with Last-Event-ID.
    };
  }

  async function recover() {
    let current;
    try {
      current = await getJob(id);
    } catch (error) {
      if (error.status === 404 || error.status === 401) return fail(error);
      current = null; // unreachable for now
    }
    if (closed) return;
    if (current && TERMINAL.has(current.status)) return finish(current);
    if (current) replace(current); // with a fresh links.events (and stream token)
    if (failures >= MAX_STREAM_FAILURES) startPolling();
    else setTimeout(openStream, 1000 * failures);
  }

  function startPolling() {
    if (closed) return;
    closeSource();
    setMode("polling");
    let etag = null;
    const started = Date.now();
    // The stream token in links.events also opens GET /jobs/{id}, for pages that hold no API key.
    const token = job?.links?.events ? new URL(job.links.events, apiBase).searchParams.get("token") : null;
    const url = apiUrl(token ? `/jobs/${id}?token=${encodeURIComponent(token)}` : `/jobs/${id}`);
    const tick = async () => {
      if (closed) return;
      try {
        const response = await fetch(url, { headers: headers(etag ? { "If-None-Match": etag } : {}) });
        if (response.status === 404 || response.status === 401) {
          const body = await response.json().catch(() => null);
          const error = new Error(body?.error?.message || `${response.status}`);
          error.status = response.status;
          return fail(error);
        }
        if (response.status === 200) {
          etag = response.headers.get("ETag");
          const current = await response.json();
          reportNewOutput(current);
          if (TERMINAL.has(current.status)) return finish(current);
          replace(current);
        }
      } catch {
        // the network is down for now: keep trying
      }
      // About every second, backing off to every 5 s for a job that runs for long.
      const delay = Math.min(5000, 1000 + (Date.now() - started) / 30);
      pollTimer = setTimeout(tick, delay);
    };
    tick();
  }

  function reportNewOutput(current) {
    const before = job && job.attempt === current.attempt ? job.output : undefined;
    for (const out of newOutput(before, current.output)) onOutput(out, current);
  }

  remember(STORE_KEY, id, true);
  if (job) onState(job);
  if (job && TERMINAL.has(job.status)) {
    finish(job);
    return handle;
  }
  openStream();
  return handle;
}

// The set stream that watches of single jobs share past MAX_STREAMS: `GET /events?job=...` of their ids,
// opened afresh whenever a job joins (its snapshots bring every job up to date, the new one included).
const shared = { watchers: new Map(), handle: null, timer: null };

/** Follow job `id` on the shared stream; returns the function that leaves it, or null when it is full. */
function share(id, watcher) {
  if (shared.watchers.size >= MAX_IDS) return null;
  shared.watchers.set(id, watcher);
  clearTimeout(shared.timer);
  shared.timer = setTimeout(reopenShared, 0); // jobs watched one after another share one opening
  return () => {
    shared.watchers.delete(id);
    if (shared.watchers.size) return;
    clearTimeout(shared.timer);
    if (shared.handle) shared.handle.close();
    shared.handle = null;
  };
}

function reopenShared() {
  if (shared.handle) shared.handle.close();
  const each = (call) => (...args) => shared.watchers.forEach((watcher) => watcher[call](...args));
  shared.handle = followSet({ ids: [...shared.watchers.keys()] }, {
    onState: (job) => shared.watchers.get(job.id)?.state(job),
    onOutput: (out, job) => shared.watchers.get(job.id)?.output(out, job),
    onMode: each("mode"),
    onError: each("error"),
  });
}

/**
 * Watch a set of your jobs over one stream (`GET /events`): `{ids: [...]}` (a fixed list, at most 100),
 * `{tag: {key: value}}` (every job carrying all of them, the ones created later too) or `{}` (all of yours);
 * `type` narrows any of them. The handlers are watchJob's, each given the job it is about: onState(job),
 * onOutput(output, job), onDone(job), onError(error), onMode(mode). Returns a handle with `close()`, `mode`
 * and `jobs` (a Map of job id to its latest job object). It polls `GET /jobs` with the same filters (a list:
 * `GET /jobs/{id}` of each) when the stream cannot work: no EventSource, or it keeps failing. A list's watch
 * ends by itself once every job of it has ended. The set is remembered until then (or `close()`), for
 * `resumeSetWatches()` after a reload.
 */
export function watchJobs(set = {}, handlers = {}) {
  return followSet(set, handlers, true);
}

function followSet(set, handlers, remembered = false) {
  const { onState = () => {}, onOutput = () => {}, onDone = () => {}, onError = () => {},
          onMode = () => {} } = handlers;
  const jobs = new Map();
  const listed = set.ids ? new Set(set.ids) : null;
  const filters = new URLSearchParams(); // the filters as GET /jobs takes them
  for (const [key, value] of Object.entries(set.tag || {})) filters.append("tag", `${key}:${value}`);
  if (set.type) filters.append("type", set.type);
  const query = new URLSearchParams([...(set.ids || []).map((id) => ["job", id]), ...filters]);
  const storedAs = JSON.stringify({ ...(set.ids && { ids: set.ids }), ...(filters.has("tag") && { tag: set.tag }),
                                    ...(set.type && { type: set.type }) });
  let closed = false;
  let source = null;
  let pollTimer = null;
  let failures = 0;
  const handle = { mode: null, jobs, close };

  function setMode(mode) {
    if (handle.mode !== mode) {
      handle.mode = mode;
      onMode(mode);
    }
  }

  function close() {
    closed = true;
    if (remembered) remember(SETS_KEY, storedAs, false);
    if (source) source.close();
    source = null;
    clearTimeout(pollTimer);
  }

  const listDone = () => !!set.ids && jobs.size > 0 && [...jobs.values()].every((j) => TERMINAL.has(j.status));

  function update(job) {
    const before = jobs.get(job.id);
    jobs.set(job.id, job);
    onState(job);
    if (TERMINAL.has(job.status) && !(before && TERMINAL.has(before.status))) onDone(job);
    if (listDone()) close();
  }

  function apply(name, data) {
    const { job_id: id, seq, ...rest } = data;
    if (listed && !listed.has(id)) return; // (a list followed on the stream of all your jobs)
    const job = jobs.get(id);
    if (name === "snapshot" || TERMINAL.has(name)) return update({ ...rest, last_event_id: seq });
    if (!job) return;
    if (name === "state") return update({ ...withState(job, rest), last_event_id: seq });
    const next = { ...withOutput(job, rest), last_event_id: seq };
    jobs.set(id, next);
    onOutput(rest, next);
  }

  async function streamUrl() {
    if (typeof EventSource === "undefined" || globalThis.JOBCAST_DISABLE_EVENTSOURCE) return null;
    if (!apiKey) return apiUrl(`/events?${query}`);
    // EventSource sends no key: the set's URL with a stream token, from GET /jobs with the same filters. GET
    // /jobs takes no list of ids, so a list is followed on the stream of the filters (all your jobs, without).
    return (await listJobs(`${filters}&limit=1`)).links?.events || null;
  }

  async function openStream() {
    const url = await streamUrl().catch(() => null);
    if (closed) return;
    if (!url) return startPolling();
    setMode("sse");
    source = new EventSource(url);
    // The server answers at once; nothing at all within a few seconds: a proxy holds the stream back.
    let firstTimer = setTimeout(() => {
      if (source) source.close();
      source = null;
      startPolling();
    }, FIRST_EVENT_TIMEOUT_MS);
    const flowing = () => {
      clearTimeout(firstTimer);
      firstTimer = null;
    };
    source.addEventListener("open", flowing);
    for (const name of ["snapshot", "state", "output", ...TERMINAL]) {
      source.addEventListener(name, (e) => {
        flowing();
        failures = 0;
        apply(name, JSON.parse(e.data));
      });
    }
    source.onerror = () => {
      if (closed || !source) return;
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= MAX_STREAM_FAILURES) {
        clearTimeout(firstTimer);
        source.close();
        source = null;
        if (listDone()) return close();
        startPolling();
      }
      // Otherwise EventSource reconnects by itself, with the cursor as Last-Event-ID.
    };
  }

  function startPolling() {
    if (closed) return;
    setMode("polling");
    const tick = async () => {
      if (closed) return;
      try {
        const current = set.ids
          ? (await Promise.all(set.ids.map((id) => getJob(id).catch(() => null)))).filter(Boolean)
          : (await listJobs(`${filters}&limit=500`)).jobs;
        for (const job of current.reverse()) {
          const before = jobs.get(job.id);
          if (before && before.last_event_id >= job.last_event_id) continue;
          if (before && before.attempt === job.attempt) {
            for (const out of newOutput(before.output, job.output)) onOutput(out, job);
          }
          update(job);
        }
      } catch (error) {
        if (error.status === 401) return onError(error);
      }
      pollTimer = setTimeout(tick, 1000);
    };
    tick();
  }

  if (remembered) remember(SETS_KEY, storedAs, true);
  openStream();
  return handle;
}

/** `job` after a `state` event: a new attempt starts with no output, and no result or error yet. */
function withState(job, state) {
  const next = { ...(job || {}), ...state };
  delete next.ts;
  if (job && state.attempt !== job.attempt) {
    Object.assign(next, { output: { items: [], text: "" }, result: null, error: null, ended_at: null });
  }
  return next;
}

/** `job` after an `output` event: an item appended (the newest MAX_ITEMS kept), or text. */
function withOutput(job, out) {
  const output = job.output || { items: [], text: "" };
  return { ...job, output: out.kind === "item"
    ? { ...output, items: [...output.items, out.item].slice(-MAX_ITEMS) }
    : { ...output, text: output.text + out.text } };
}

/** What `after` (a job's output) holds beyond `before`: its new items, and the text it grew by. */
function newOutput(before = { items: [], text: "" }, after = { items: [], text: "" }) {
  const out = newItems(before.items, after.items).map((item) => ({ kind: "item", item }));
  if (after.text.length > before.text.length && after.text.startsWith(before.text)) {
    out.push({ kind: "delta", text: after.text.slice(before.text.length) });
  }
  return out;
}

/** How a job's state reads to a person: "Queued — 2 ahead", "Starting", "Generating 20/50", ... */
export function describe(job) {
  if (!job) return "";
  if (job.status === "queued" && job.queue_position !== null && job.queue_position !== undefined) {
    return job.stage === "waiting" ? job.message : `Queued — ${job.queue_position} ahead`;
  }
  return job.message || job.status;
}
