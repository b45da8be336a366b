"""The built-in job types; importing this package registers them."""

from jobcast.jobs import demo, llm_types

__all__ = ["demo", "llm_types"]
