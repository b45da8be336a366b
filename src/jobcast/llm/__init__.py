"""The model side of the LLM job types: `client.LLM` (calls with retries, streaming and parallel calls),
`prompts` (what the built-in types ask), `fake` (the stand-in model of `jobcast dev` and the tests)."""

from jobcast.llm.client import LLM

__all__ = ["LLM"]
