import type { ApiError, Job, JobOutput, JobStatus, WatchMode } from "jobcast";

export interface UseJob {
  /** The latest job object (null until the first answer, for a job given by id). */
  job: Job | null;
  status: JobStatus | null;
  progress: number;
  /** How the job's state reads to a person (`describe` of the jobcast client). */
  message: string;
  output: JobOutput;
  mode: WatchMode | null;
  error: ApiError | null;
}

/**
 * Follow a job live: a job object (as `POST /jobs` returns it) or a job id. Re-renders as the job changes;
 * watching stops when the job ends or the component unmounts.
 */
export function useJob(jobOrId: Job | string | null | undefined): UseJob;
