"""Where a Redis connection goes: a fixed address, or one looked up anew on each connect.

A connection asks its :class:`AddressResolver` before every (re)connect, and tells it when
the address it was given stopped serving (refused, reset, or answered ``READONLY`` as a
replica does after a failover), so that a Sentinel-backed resolver asks the Sentinels
again instead of returning the old master.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Address", "AddressResolver", "FixedAddress", "TcpAddress", "UnixAddress"]


@dataclass(frozen=True, slots=True)
class TcpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


Address = TcpAddress | UnixAddress


class AddressResolver(Protocol):
    """Tells a connection where to connect; asked before every (re)connect."""

    async def resolve(self) -> Address:
        """The address to connect to now; raises StorageUnavailable when none is known."""
        ...

    def resolve_sync(self) -> Address:
        """:meth:`resolve` for the sync face (blocking, bounded by the connect timeout)."""
        ...

    def invalidate(self, address: Address) -> None:
        """``address`` failed or is no longer the master: look again on the next resolve."""
        ...


class FixedAddress:
    """A resolver for a plain ``redis://`` / ``rediss://`` / ``unix://`` URL: always one address."""

    __slots__ = ("address",)

    def __init__(self, address: Address) -> None:
        self.address = address

    async def resolve(self) -> Address:
        return self.address

    def resolve_sync(self) -> Address:
        return self.address

    def invalidate(self, address: Address) -> None:
        """Nothing to look up again: the next connect tries the same address."""

    def __repr__(self) -> str:
        return f"FixedAddress({self.address})"
