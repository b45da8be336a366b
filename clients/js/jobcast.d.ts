// Types of jobcast.js (the browser client the server also serves at /static/jobcast.js).

/** A job's status; the last three are terminal. */
export type JobStatus = "queued" | "running" | "completed" | "failed" | "canceled";

/** What a job has produced so far: its items (the newest 1,000) and its text (the deltas joined). */
export interface JobOutput {
  items: unknown[];
  text: string;
}

/** A job object, as the API returns it (`GET /jobs/{id}`, `POST /jobs`, every snapshot and terminal event). */
export interface Job {
  id: string;
  type: string;
  status: JobStatus;
  progress: number;
  message: string;
  stage: string | null;
  attempt: number;
  max_attempts: number;
  queue_position: number | null;
  eta_s: number | null;
  tags: Record<string, string>;
  output: JobOutput;
  result: unknown;
  error: { code: string; message: string; details?: unknown } | null;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  last_event_id: number;
  webhook: { url?: string; state: "pending" | "delivered" | "failed"; attempts: number; last_status: number | null } | null;
  /** For a part of a batch, the id of the job it belongs to. */
  parent_id: string | null;
  /** For a job split into parts, where its parts stand. */
  parts: { total: number; queued: number; running: number; completed: number; failed: number; canceled: number } | null;
  /** For a job that called a model, what it used so far (`state` events bring it up to date live). */
  usage: JobUsage | null;
  links: { self: string; events: string; cancel: string };
}

/** What a job's model calls used: tokens, calls and cost (null without a price for the model). */
export interface UsageFigures {
  calls: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number | null;
  /** Some of the tokens are an estimate: the model server reported none. */
  estimated: boolean;
}

/** In all attempts, and in this `attempt`. */
export interface JobUsage extends UsageFigures {
  attempt: UsageFigures;
}

/** A registered job type (`GET /job-types`). */
export interface JobTypeInfo {
  name: string;
  description: string;
  /** The JSON Schema of the payload. */
  schema: Record<string, unknown>;
  available: boolean;
  unavailable_reason: string | null;
  /** It runs on the stand-in model of `jobcast dev` (made-up answers). */
  stand_in: boolean;
  max_attempts: number;
  timeout_s: number;
}

/** What the job produced since the last report: an item, or a piece of text. */
export type OutputEvent = { kind: "item"; item: unknown } | { kind: "delta"; text: string };

/** How a watch reaches the job: over its event stream, or by polling `GET /jobs/{id}`. */
export type WatchMode = "sse" | "polling";

/** An error of the API: the message it gave, the HTTP status, and its `error.code` and `details`. */
export interface ApiError extends Error {
  status?: number;
  code?: string;
  details?: unknown;
}

export interface WatchHandlers {
  /** Every change: the whole job object as it now stands (`job.output` included). */
  onState?: (job: Job) => void;
  /** Only what is new, for UIs that append (the job as it now stands, when known). */
  onOutput?: (output: OutputEvent, job: Job | null) => void;
  /** The terminal job object (completed, failed or canceled). */
  onDone?: (job: Job) => void;
  /** The job is gone (404), or the key is refused (401). */
  onError?: (error: ApiError) => void;
  onMode?: (mode: WatchMode) => void;
}

export interface WatchHandle {
  /** Stop watching (no handler is called after it). */
  close(): void;
  readonly mode: WatchMode | null;
  /** The latest job object (null until the first answer, for a watch started from an id). */
  readonly job: Job | null;
}

/** Talk to the API at `url` instead of the one this file came from. */
export function setApiUrl(url: string): void;
/** Send `Authorization: Bearer <key>` with every request this client makes (null: none). */
export function setApiKey(key: string | null): void;
/** A request to the API (`path` like `/jobs`): its JSON answer, null for a 204; throws an `ApiError`. */
export function api<T = unknown>(path: string, options?: RequestInit): Promise<T>;
export function submitJob(type: string, payload?: Record<string, unknown>, extra?: Record<string, unknown>): Promise<Job>;
export function getJob(id: string): Promise<Job>;
export function cancelJob(id: string): Promise<Job>;
export function retryJob(id: string): Promise<Job>;
/** `GET /jobs` with a query string (`"status=running&tag=project:apollo"`). */
export function listJobs(query?: string): Promise<{ jobs: Job[]; next_cursor: string | null }>;
export function jobTypes(): Promise<{ job_types: JobTypeInfo[] }>;
/** The ids of jobs being watched when the page was left. */
export function rememberedJobs(): string[];
/** Re-attach to every job that was being watched when the page was left. */
export function resumeWatches(handlersFor: (id: string) => WatchHandlers): WatchHandle[];
/** Watch a job: a job object (as `POST /jobs` returns it) or a job id. */
export function watchJob(jobOrId: Job | string, handlers?: WatchHandlers): WatchHandle;
/** Which of your jobs `watchJobs` follows: a list, or the jobs carrying tags (or all), narrowed by type. */
export interface JobSet {
  ids?: string[];
  tag?: Record<string, string>;
  type?: string;
}

export interface SetWatchHandle {
  close(): void;
  readonly mode: WatchMode | null;
  /** Every job of the set seen so far, by id, as it now stands. */
  readonly jobs: Map<string, Job>;
}

/** Watch a set of your jobs over one stream (`GET /events`), polling `GET /jobs` when it cannot work. */
export function watchJobs(set?: JobSet, handlers?: WatchHandlers): SetWatchHandle;
/** The sets being watched (with `watchJobs`) when the page was left. */
export function rememberedSets(): JobSet[];
/** Re-attach to every set that was being watched when the page was left. */
export function resumeSetWatches(handlersFor: (set: JobSet) => WatchHandlers): SetWatchHandle[];
/** How a job's state reads to a person: "Queued — 2 ahead", "Starting", "Generating 20/50", ... */
export function describe(job: Job | null | undefined): string;
