// useJob: a React hook over the jobcast browser client. Copy this file and
// jobcast.js (served by jobcast at /static/jobcast.js) into your app.
//
//   import { useJob } from "./useJob.js";
//
//   function JobProgress({ job }) {              // a job object from POST /jobs, or a job id
//     const { status, progress, message, output, mode } = useJob(job);
//     return (
//       <div>
//         <div role="progressbar" aria-valuenow={progress} aria-valuemin={0} aria-valuemax={100}
//              style={{ width: `${progress}%` }} />
//         <p>{message} {mode === "polling" && "(polling)"}</p>
//         {output.items.map((item, i) => <pre key={i}>{JSON.stringify(item)}</pre>)}
//         {output.text && <p>{output.text}</p>}
//       </div>
//     );
//   }
import { useEffect, useState } from "react";
import { describe, watchJob } from "./jobcast.js";

const NO_OUTPUT = { items: [], text: "" };

/**
 * Follow a job live: `jobOrId` is a job object (as POST /jobs returns it) or a job id.
 * Returns {job, status, progress, message, output, mode, error}, re-rendering as the job changes;
 * `mode` is "sse" or "polling". Watching stops when the job ends or the component unmounts.
 */
export function useJob(jobOrId) {
  const id = typeof jobOrId === "string" ? jobOrId : jobOrId?.id;
  const [state, setState] = useState(() => ({
    job: jobOrId && typeof jobOrId === "object" ? jobOrId : null, mode: null, error: null,
  }));

  useEffect(() => {
    if (!id) return undefined;
    const handle = watchJob(jobOrId, {
      onState: (job) => setState((s) => ({ ...s, job })),
      onOutput: (_, job) => job && setState((s) => ({ ...s, job })),
      onDone: (job) => setState((s) => ({ ...s, job })),
      onError: (error) => setState((s) => ({ ...s, error })),
      onMode: (mode) => setState((s) => ({ ...s, mode })),
    });
    return () => handle.close();
  }, [id]); // eslint-disable-line react-hooks/exhaustive-deps -- a new id is a new job; the object is only its start

  const { job, mode, error } = state;
  return {
    job,
    status: job?.status ?? null,
    progress: job?.progress ?? 0,
    message: describe(job),
    output: job?.output ?? NO_OUTPUT,
    mode,
    error,
  };
}
