"""Everything jobcast keeps in Redis, and the only code that talks to it.

`keys` names every key; `record` is a job's record and the job object made from it;
`scripts` loads the Lua scripts of `lua/` (one per change of a job, each declaring its
keys); `writer.Store` makes every change (workers, and the API's commands);
`reader.AsyncStore` serves the API's reads; `trips` takes jobs into RQ and out of it;
`subscription` is the API's live pub/sub connection; `connections` makes the clients;
`capacity` is the models' capacity every worker shares.
"""

from jobcast.store.capacity import Grant, ModelCapacity, ModelInUse
from jobcast.store.reader import IDEMPOTENCY_TTL_S, AsyncStore, Event, FeedEvent, Snapshot, logged_data
from jobcast.store.writer import EmitKind, EmitResult, Store, count_submission

__all__ = [
    "AsyncStore", "EmitKind", "EmitResult", "Event", "FeedEvent", "Grant", "IDEMPOTENCY_TTL_S", "ModelCapacity",
    "ModelInUse", "Snapshot", "Store", "count_submission", "logged_data",
]
