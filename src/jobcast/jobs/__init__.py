"""The built-in job types; importing this package registers them."""

from jobcast.jobs import demo

__all__ = ["demo"]
