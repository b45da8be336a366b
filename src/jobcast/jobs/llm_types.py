"""The LLM job types: personas, lore, a backlog, and a streamed chat answer.

They talk to any OpenAI-compatible server (`OPENAI_BASE_URL`, `JOBCAST_MODEL`,
`OPENAI_API_KEY`) through `jobcast.llm`, with their prompts in `jobcast.prompts`.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import jiter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobcast.batches import PartResults
from jobcast.context import JobContext, JobFailed
from jobcast.llm import prompts
from jobcast.registry import job_type

if TYPE_CHECKING:
    from jobcast.llm import LLM


def _llm(ctx: JobContext) -> LLM:
    """The model client, imported only when a job needs it: `openai` is large, and most workers fork."""
    from jobcast.llm import LLM

    return LLM(ctx)

__all__ = ["backlog_tasks", "chat", "generate_backlog", "generate_lore", "generate_personas"]

BATCH = 10
PARALLEL_CALLS = 3
LLM_DEFAULTS: dict[str, Any] = {"max_attempts": 3, "timeout_s": 1800, "requires_model": True}
T = TypeVar("T")


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- generate_personas -------------------------------------------------------------------


class PersonasPayload(_Payload):
    count: int = Field(ge=1, le=200, description="How many personas.")
    template: str | None = Field(None, max_length=2000, description="A template the personas follow.")
    intensity: str | None = Field(None, max_length=100, description="How strongly drawn they are.")
    categories: list[str] = Field(default_factory=list, max_length=20, description="Categories to cover.")
    first: int = Field(1, ge=1, le=200, description="The number of the first persona (each part of a batch makes "
                                                    "its own; leave it out).")


class Persona(BaseModel):
    name: str
    age: int
    occupation: str
    background: str
    goals: list[str] = []


class PersonaBatch(BaseModel):
    personas: list[dict[str, Any]]


_END = object()


def _in_order(llm: LLM, workers: int, calls: Sequence[Callable[[Callable[[T], None]], None]]) -> Iterator[T]:
    """Run `calls` a few at a time; yield what each one reports (through the function it is given) as soon
    as it does, call after call in order; the first failure stops the rest."""
    pool = ThreadPoolExecutor(workers)
    lines: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in calls]

    def run(call: Callable[[Callable[[T], None]], None], line: queue.SimpleQueue[Any]) -> None:
        try:
            call(line.put)
        finally:
            line.put(_END)

    futures = [pool.submit(run, call, line) for call, line in zip(calls, lines, strict=True)]
    try:
        for future, line in zip(futures, lines, strict=True):
            while (got := line.get()) is not _END:
                yield got
            future.result()  # (raises the call's failure)
    except BaseException:
        llm.abort()  # hang up the calls in flight: no more tokens paid for a job that has failed
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class _Arrivals:
    """The personas of one answer as the model writes them: each one once it is whole (the next has begun,
    or the answer has ended), if it is valid, up to `wanted` of them."""

    def __init__(self, wanted: int, found: Callable[[Persona], None]) -> None:
        self.wanted, self.found = wanted, found
        self.text = ""
        self.seen = 0
        """Entries of the answer's list looked at so far."""
        self.valid = 0

    def feed(self, piece: str) -> None:
        self.text += piece
        if "{" not in piece:
            return  # no new entry can have begun: the ones before it are as they were
        try:
            # (jiter, the openai client's own parser, reads the unfinished JSON as far as it goes)
            so_far = jiter.from_json(self.text.encode(), partial_mode=True)
        except ValueError:
            return  # not JSON (yet): the whole answer is checked at its end
        entries = so_far.get("personas") if isinstance(so_far, dict) else None
        if isinstance(entries, list):
            self._check(entries[self.seen:-1])  # the last one may be unfinished

    def end(self, answer: PersonaBatch) -> None:
        """The rest of the answer (or of its repair, which repeats the entries already seen)."""
        self._check(answer.personas[self.seen:])

    def _check(self, entries: list[Any]) -> None:
        for raw in entries:
            self.seen += 1
            if self.valid == self.wanted:
                continue
            try:
                persona = Persona.model_validate(raw)
            except ValidationError:
                continue
            self.valid += 1
            self.found(persona)


def _join_personas(ctx: JobContext, p: PersonasPayload, parts: PartResults) -> dict[str, Any]:
    return {"personas": [persona for result in parts.results for persona in result["personas"]]}


@job_type("generate_personas", payload=PersonasPayload, join=_join_personas, **LLM_DEFAULTS,
          description="Generates `count` personas, 10 per model call; over 10, as a batch of parts of 10 that "
                      "any free workers run at once.")
def generate_personas(ctx: JobContext, p: PersonasPayload) -> dict[str, Any]:
    if p.count > BATCH:
        counts = [min(BATCH, p.count - start) for start in range(0, p.count, BATCH)]
        ctx.parts("generate_personas", [
            {**p.model_dump(exclude={"count", "first"}), "count": n, "first": p.first + BATCH * i}
            for i, n in enumerate(counts)], weights=counts)
    llm = _llm(ctx)
    batches = [(p.first + start - 1, min(BATCH, p.count - start + 1)) for start in range(1, p.count + 1, BATCH)]
    made = ctx.stage("generate", 0, 95).tracker(items=p.count, message=f"Generating {p.count} personas")

    def batch(start: int, count: int, found: Callable[[Persona], None]) -> None:
        """`count` valid personas to `found`, each as soon as the model has written it and it checks out on
        its own; the missing ones are asked for once more."""
        valid = 0
        for _ in range(2):
            arrivals = _Arrivals(count - valid, found)
            prompt = prompts.personas(start + valid, count - valid, p.template, p.intensity, p.categories)
            arrivals.end(llm.json(prompt, PersonaBatch, on_text=arrivals.feed))
            valid += arrivals.valid
            if valid == count:
                return
        raise JobFailed(f"the model gave {valid} valid personas of the {count} asked for, even when asked "
                        "again", code="bad_model_output", retryable=False)

    personas: list[dict[str, Any]] = []
    calls = [functools.partial(batch, start, count) for start, count in batches]
    for persona in _in_order(llm, PARALLEL_CALLS, calls):  # in order, so the items come out in order
        personas.append(persona.model_dump())
        ctx.item(persona)
        made.finish(len(personas) - 1, f"Generated {len(personas)}/{p.count} personas")
    ctx.progress(100, "Saving", stage="save")
    return {"personas": personas}


# -- generate_lore -------------------------------------------------------------------------

LORE_STEPS: dict[str, list[str]] = {
    "characters": ["name", "appearance", "backstory", "traits", "skills", "stats"],
    "factions": ["name", "ideology", "structure", "relations"],
    "settings": ["name", "geography", "climate", "culture", "history", "secrets"],
    "events": ["name", "causes", "consequences"],
    "relics": ["name", "origin", "powers"],
}


class LorePayload(_Payload):
    kind: Literal["characters", "factions", "settings", "events", "relics"]
    theme: str = Field(min_length=1, max_length=2000)
    count: int = Field(ge=1, le=10)


class LoreValue(BaseModel):
    value: str


@job_type("generate_lore", payload=LorePayload, **LLM_DEFAULTS,
          description="Builds `count` pieces of lore, each in several model steps, pieces in parallel.")
def generate_lore(ctx: JobContext, p: LorePayload) -> dict[str, Any]:
    llm = _llm(ctx)
    steps = LORE_STEPS[p.kind]
    progress = ctx.tracker(items=p.count, steps=len(steps), message=f"Building {p.count} {p.kind}")
    done = {step: 0 for step in steps}
    lock = threading.Lock()

    def piece(index: int) -> dict[str, str]:
        fields: dict[str, str] = {}
        for step in steps:
            fields[step] = llm.json(prompts.lore_step(p.kind, p.theme, index + 1, step, fields), LoreValue).value
            with lock:
                done[step] += 1
                message = f"Generated {step} ({done[step]}/{p.count})"
            progress.advance(index, message=message)
        ctx.item({"kind": p.kind, "index": index + 1, **fields})
        return fields

    def report_piece(index: int, report: Callable[[dict[str, str]], None]) -> None:
        report(piece(index))

    pieces = list(_in_order(llm, PARALLEL_CALLS, [functools.partial(report_piece, i) for i in range(p.count)]))
    return {"pieces": pieces}


# -- generate_backlog -------------------------------------------------------------------------


class BacklogPayload(_Payload):
    brief: str = Field(min_length=1, max_length=20_000)
    max_stories: int = Field(5, ge=1, le=20)


class Epic(BaseModel):
    title: str
    description: str


class Story(BaseModel):
    title: str
    description: str


class Stories(BaseModel):
    stories: list[Story]


class Task(BaseModel):
    title: str
    estimate_h: float


class Tasks(BaseModel):
    tasks: list[Task]


def _join_backlog(ctx: JobContext, p: BacklogPayload, parts: PartResults) -> dict[str, Any]:
    return {**parts.state, "tasks": [task for result in parts.results for task in result["tasks"]]}


@job_type("generate_backlog", payload=BacklogPayload, join=_join_backlog, **LLM_DEFAULTS,
          description="Turns a brief into an epic (0-30%), its stories (30-60%) and their tasks (60-100%: a part "
                      "per story, run by any free workers at once).")
def generate_backlog(ctx: JobContext, p: BacklogPayload) -> dict[str, Any]:
    llm = _llm(ctx)
    with ctx.stage("epic", 0, 30, "Writing the epic"):
        epic = llm.json(prompts.backlog_epic(p.brief), Epic).model_dump()
        ctx.item({"kind": "epic", **epic})
    with ctx.stage("stories", 30, 60, "Writing the stories"):
        stories = [s.model_dump() for s in llm.json(prompts.backlog_stories(p.brief, epic, p.max_stories),
                                                    Stories).stories[:p.max_stories]]
        for story in stories:
            ctx.item({"kind": "story", **story})
    if not stories:
        return {"epic": epic, "stories": [], "tasks": []}
    # The tasks (60-100%): a part per story, on any free workers at once.
    ctx.parts("backlog_tasks", [{"epic": epic, "story": story, "number": number}
                                for number, story in enumerate(stories, 1)], state={"epic": epic, "stories": stories})


class StoryTasksPayload(_Payload):
    epic: dict[str, Any]
    story: dict[str, Any]
    number: int = Field(ge=1, le=20)


@job_type("backlog_tasks", payload=StoryTasksPayload, part_of="generate_backlog", **LLM_DEFAULTS,
          description="The tasks of one story of a backlog: a part of `generate_backlog`.")
def backlog_tasks(ctx: JobContext, p: StoryTasksPayload) -> dict[str, Any]:
    llm = _llm(ctx)
    title = p.story["title"]
    ctx.progress(0, f"Writing the tasks of story {p.number}")
    tasks = [{"story": title, **task.model_dump()}
             for task in llm.json(prompts.backlog_tasks(p.epic, p.story, p.number), Tasks).tasks]
    for task in tasks:
        ctx.item({"kind": "task", **task})
    return {"tasks": tasks}


# -- chat -----------------------------------------------------------------------------------------


class Message(_Payload):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class ChatPayload(_Payload):
    messages: list[Message] = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1, le=32_000)


@job_type("chat", payload=ChatPayload, **LLM_DEFAULTS,
          description="Streams the model's reply to `messages` (OpenAI chat format) as text deltas.")
def chat(ctx: JobContext, p: ChatPayload) -> dict[str, Any]:
    ctx.progress(0, "Thinking", stage="generate")
    text, usage = _llm(ctx).stream([m.model_dump() for m in p.messages], on_text=ctx.delta, max_tokens=p.max_tokens)
    return {"text": text, "usage": usage}
