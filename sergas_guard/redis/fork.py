"""Which process a socket belongs to: a forked child must never use its parent's sockets.

A child inherits the parent's file descriptors; writing a command on one would interleave
with the parent's commands and hand replies to the wrong process. Each connection notes
the :func:`generation` it was opened in and treats itself as closed (without touching the
socket, which the parent still uses) once the number changed: it changes in every child.
"""

from __future__ import annotations

import os

__all__ = ["generation"]

_generation = 0


def generation() -> int:
    """A number that changes in a forked child (cheaper than ``os.getpid()`` per call)."""
    return _generation


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)
