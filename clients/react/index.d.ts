export { useJob, type UseJob } from "./useJob.js";
export { useJobs, type UseJobs } from "./useJobs.js";
