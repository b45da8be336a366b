"""Every prompt the LLM job types send, in one place.

Each system prompt carries a marker such as `[jobcast:personas start=1 count=10]`:
it names the request for logs and for the stand-in model (`llm/fake.py`),
and costs a real model a dozen tokens.
"""

from __future__ import annotations

from typing import Any

__all__ = ["backlog_epic", "backlog_stories", "backlog_tasks", "lore_step", "personas"]

Messages = list[dict[str, Any]]


def personas(start: int, count: int, template: str | None, intensity: str | None, categories: list[str]) -> Messages:
    wants = [f"{count} distinct user personas"]
    if template:
        wants.append(f"following this template: {template}")
    if intensity:
        wants.append(f"with {intensity} intensity")
    if categories:
        wants.append(f"covering these categories: {', '.join(categories)}")
    return [
        {"role": "system", "content": f"[jobcast:personas start={start} count={count}] You write realistic user "
                                      "personas for product research. Answer with JSON only."},
        {"role": "user", "content": "Write " + ", ".join(wants) + ". Reply as a JSON object "
                                    '{"personas": [{"name", "age", "occupation", "background", "goals": [..]}]}.'},
    ]


def lore_step(kind: str, theme: str, piece: int, step: str, so_far: dict[str, str]) -> Messages:
    known = "; ".join(f"{k}: {v}" for k, v in so_far.items()) or "nothing yet"
    return [
        {"role": "system", "content": f"[jobcast:lore kind={kind} step={step} piece={piece}] You build lore for a "
                                      "fictional world, one detail at a time. Answer with JSON only."},
        {"role": "user", "content": f"Theme: {theme}. We are building {kind} #{piece}; known so far: {known}. "
                                    f'Write its {step}. Reply as {{"value": "..."}}.'},
    ]


def backlog_epic(brief: str) -> Messages:
    return [
        {"role": "system", "content": "[jobcast:epic] You are a product owner. Answer with JSON only."},
        {"role": "user", "content": f"Brief: {brief}\nWrite the epic that covers it. "
                                    'Reply as {"title": "...", "description": "..."}.'},
    ]


def backlog_stories(brief: str, epic: dict[str, Any], count: int) -> Messages:
    return [
        {"role": "system", "content": f"[jobcast:stories count={count}] You are a product owner. "
                                      "Answer with JSON only."},
        {"role": "user", "content": f"Brief: {brief}\nEpic: {epic['title']}: {epic['description']}\n"
                                    f"Split it into at most {count} user stories. "
                                    'Reply as {"stories": [{"title": "...", "description": "..."}]}.'},
    ]


def backlog_tasks(epic: dict[str, Any], story: dict[str, Any], number: int) -> Messages:
    return [
        {"role": "system", "content": f"[jobcast:tasks story={number}] You are a tech lead. Answer with JSON only."},
        {"role": "user", "content": f"Epic: {epic['title']}\nStory: {story['title']}: {story['description']}\n"
                                    "Break it into engineering tasks with estimates in hours. "
                                    'Reply as {"tasks": [{"title": "...", "estimate_h": 3}]}.'},
    ]
