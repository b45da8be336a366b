// useJob: a React hook over the jobcast browser client (the `jobcast` package, clients/js).
// Install both from a checkout of jobcast: `npm install <jobcast>/clients/js <jobcast>/clients/react`.
//
//   import { useJob } from "jobcast-react";
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
import { describe, watchJob } from "jobcast";

const NO_OUTPUT = { items: [], text: "" };

const TERMINAL = new Set(["completed", "failed", "canceled"]);

const initial = (jobOrId) => ({ job: jobOrId && typeof jobOrId === "object" ? jobOrId : null, mode: null, error: null });

/**
 * Follow a job live: `jobOrId` is a job object (as POST /jobs returns it) or a job id.
 * Returns {job, status, progress, message, output, mode, error}, re-rendering as the job changes;
 * `mode` is "sse" or "polling". Watching stops when the job ends or the component unmounts, and
 * starts again for another job, or for the same one handed in live again (after POST /retry).
 */
export function useJob(jobOrId) {
  const id = typeof jobOrId === "string" ? jobOrId : jobOrId?.id;
  const live = !!jobOrId && (typeof jobOrId === "string" || !TERMINAL.has(jobOrId.status));
  const [state, setState] = useState(() => initial(jobOrId));

  useEffect(() => {
    if (!id) return undefined;
    setState(initial(jobOrId));
    const handle = watchJob(jobOrId, {
      onState: (job) => setState((s) => ({ ...s, job })),
      onOutput: (_, job) => job && setState((s) => ({ ...s, job })),
      onDone: (job) => setState((s) => ({ ...s, job })),
      onError: (error) => setState((s) => ({ ...s, error })),
      onMode: (mode) => setState((s) => ({ ...s, mode })),
    });
    return () => handle.close();
  }, [id, live]); // eslint-disable-line react-hooks/exhaustive-deps -- the object is only where watching starts

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
