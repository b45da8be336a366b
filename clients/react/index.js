// The hooks of jobcast-react: useJob (one job) and useJobs (a set of them over one stream).
export { useJob } from "./useJob.js";
export { useJobs } from "./useJobs.js";
