"""Sets of one owner's jobs, as `GET /jobs` filters them and `GET /events` streams them: the filters, read
from a query string once for both, and the stream's link."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson
from starlette.datastructures import QueryParams

from jobcast.submission import invalid
from jobcast.web.auth import Auth

__all__ = ["JobSet", "MAX_IDS", "parse_tags", "set_link"]

MAX_IDS = 100
"""The most job ids one `GET /events` may list."""

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class JobSet:
    """Which of an owner's jobs a stream follows."""

    owner: str
    ids: tuple[str, ...] | None = None
    """A fixed list (`job=`, which `tag=` and `type=` narrow too), or None: every job of the owner's that the
    filters admit, later ones too."""
    tags: tuple[tuple[str, str], ...] = ()
    type: str | None = None

    @classmethod
    def from_query(cls, owner: str, params: QueryParams) -> JobSet:
        """The set `GET /events` asks for; a `422` naming the parameter for anything it cannot be."""
        ids = params.getlist("job")
        tags = parse_tags(params)
        if len(ids) > MAX_IDS:
            raise invalid("job", f"{len(ids)} jobs; one stream follows at most {MAX_IDS} listed jobs (use tag= "
                                 "for more)")
        for job_id in ids:
            if not _JOB_ID.match(job_id):
                raise invalid("job", f"{job_id[:40]!r} is not a job id (32 hexadecimal digits)")
        jtype = params.get("type")
        if jtype is not None and not jtype:
            raise invalid("type", "empty; name a job type, or leave type= out")
        return cls(owner, tuple(dict.fromkeys(ids)) if ids else None, tuple(tags), jtype)

    def admits(self, job_id: str, job_type: str, tags_json: str | None) -> bool:
        if self.ids is not None and job_id not in self.ids:
            return False
        if self.type is not None and job_type != self.type:
            return False
        if self.tags:
            tags = orjson.loads(tags_json) if tags_json else {}
            return all(tags.get(k) == v for k, v in self.tags)
        return True

    def scope(self) -> str:
        """The set as a stream token is made for it (owner and filters, in one canonical order)."""
        ids = ",".join(sorted(self.ids)) if self.ids is not None else "*"
        tags = ",".join(f"{k}:{v}" for k, v in sorted(self.tags))
        return f"set|{self.owner}|{ids}|{tags}|{self.type or ''}"

    def query(self) -> list[tuple[str, str]]:
        """The set as `GET /events` parameters."""
        params = [("job", i) for i in self.ids or ()] + [("tag", f"{k}:{v}") for k, v in self.tags]
        return params + ([("type", self.type)] if self.type else [])


def parse_tags(params: QueryParams) -> list[tuple[str, str]]:
    """The `tag=key:value` parameters; a `422` for one that is not `key:value`."""
    tags = []
    for tag in params.getlist("tag"):
        key, sep, value = tag.partition(":")
        if not sep or not key:
            raise invalid("tag", f"{tag!r} is not key:value")
        tags.append((key, value))
    return tags


def set_link(auth: Auth, jobs: JobSet, base: str) -> str:
    """The URL of the set's stream under `base`; with auth on, with a stream token for the set."""
    params = jobs.query() + ([("token", auth.set_token(jobs.scope(), jobs.owner))] if auth.enabled else [])
    return f"{base}/events" + (f"?{urlencode(params)}" if params else "")
