// useJobs: a set of your jobs, live, over one stream (watchJobs of the `jobcast` package).
//
//   import { useJobs } from "jobcast-react";
//
//   function Batch({ tag }) {                    // e.g. {project: "apollo"}; or {ids: [...]}, or {} for all
//     const { jobs, mode } = useJobs({ tag });
//     return <ul>{jobs.map((job) => <li key={job.id}>{job.progress}% {job.message}</li>)}</ul>;
//   }
import { useEffect, useState } from "react";
import { watchJobs } from "jobcast";

const newestFirst = (a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0);

/**
 * Follow a set of jobs live: `{ids}` (a list), `{tag}` (jobs carrying every tag, later ones too) or `{}` (all of
 * yours), with an optional `type`. Returns {jobs, mode, error}: `jobs` newest first, each the job object with its
 * output as it now stands, re-rendering as any of them changes. Watching stops on unmount, and starts again when
 * the set asked for changes.
 */
export function useJobs(set = {}) {
  const key = JSON.stringify([set.ids ?? null, set.tag ?? null, set.type ?? null]);
  const [state, setState] = useState({ jobs: [], mode: null, error: null });

  useEffect(() => {
    setState({ jobs: [], mode: null, error: null });
    const show = () => setState((s) => ({ ...s, jobs: [...handle.jobs.values()].sort(newestFirst) }));
    const [ids, tag, type] = JSON.parse(key);
    const handle = watchJobs({ ...(ids && { ids }), ...(tag && { tag }), ...(type && { type }) }, {
      onState: show,
      onOutput: show,
      onError: (error) => setState((s) => ({ ...s, error })),
      onMode: (mode) => setState((s) => ({ ...s, mode })),
    });
    return () => handle.close();
  }, [key]);

  return state;
}
