import type { ApiError, Job, JobSet, WatchMode } from "jobcast";

export interface UseJobs {
  /** The set's jobs, newest first, each as it now stands (its output included). */
  jobs: Job[];
  mode: WatchMode | null;
  error: ApiError | null;
}

/** Follow a set of jobs live over one stream; re-renders as any of them changes. */
export function useJobs(set?: JobSet): UseJobs;
