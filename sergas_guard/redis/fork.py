"""Which process a socket belongs to: a forked child must never use its parent's sockets.

A child inherits the parent's file descriptors; writing a command on one would interleave
with the parent's commands and hand replies to the wrong process. Each connection notes
the :func:`generation` it was opened in and treats itself as closed (without touching the
socket, which the parent still uses) once the number changed: it changes in every child.
"""

from __future__ import annotations

import os

__all__ = ["generation", "state"]


class _State:
    __slots__ = ("generation",)

    def __init__(self) -> None:
        self.generation = 0


#: ``state.generation`` changes in every forked child (an attribute read per call is
#: cheaper than ``os.getpid()``).
state = _State()


def generation() -> int:
    """A number that changes in a forked child."""
    return state.generation


def _after_fork_in_child() -> None:
    state.generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)
