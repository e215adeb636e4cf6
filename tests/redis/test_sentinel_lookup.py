"""The lookup as a pure plan, over every combination of answers: hypothesis invariants.

``SentinelResolver._lookup`` yields each exchange it wants and receives its outcome, so
the rules of the lookup are checked here without sockets, over answers real servers
rarely give together (a Sentinel naming a replica while the next one hangs...). The
real-server tests of test_sentinel.py hold the drivers to the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.errors import StorageUnavailable
from sergas_guard.redis.address import AddressResolver, TcpAddress
from sergas_guard.redis.control import ErrorReply, ProtocolError, Reply
from sergas_guard.redis.sentinel import SentinelResolver

PASSWORD = "Lookup-Pw-2b7d"
CANDIDATES = [TcpAddress("10.0.0.9", 6379 + k) for k in range(3)]

# What one exchange can come back with, apart from replies: the driver's exceptions.
failures = st.sampled_from(
    [ConnectionRefusedError(), TimeoutError(), ProtocolError("not RESP"), ConnectionResetError()]
)
sentinel_answers = st.one_of(
    failures,
    st.just(ErrorReply("ERR unknown command 'SENTINEL'")),
    st.just(None),  # knows no such service
    st.just(["garbage"]),
    st.sampled_from([[c.host, str(c.port)] for c in CANDIDATES]),
)
roles = st.one_of(
    failures,
    st.just(ErrorReply("NOAUTH Authentication required.")),
    st.sampled_from([["master", 0, []], ["slave", "10.0.0.1", 6379, "connected", 1], "sentinel"]),
)


@dataclass
class World:
    """What each Sentinel and candidate would answer; counts what the plan asked."""

    sentinels: dict[TcpAddress, object]
    roles: dict[TcpAddress, object]
    auth_refused: bool

    def answer(self, address: TcpAddress, commands: tuple[tuple[str, ...], ...]) -> object:
        table = self.sentinels if address in self.sentinels else self.roles
        outcome = table[address]
        if isinstance(outcome, Exception):
            return outcome
        auth = [c for c in commands if c[0] == "AUTH"]
        assert all(c[-1] == PASSWORD for c in auth)  # the password goes to AUTH, nowhere else
        auth_reply: list[Reply] = [
            ErrorReply("WRONGPASS invalid username-password pair") if self.auth_refused else "OK"
            for _ in auth
        ]
        return [*auth_reply, outcome]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(sentinel_answers, min_size=1, max_size=4),
    st.lists(roles, min_size=len(CANDIDATES), max_size=len(CANDIDATES)),
    st.booleans(),
    st.booleans(),
)
def test_the_lookup_returns_the_first_verified_master(
    answers: list[object], candidate_roles: list[object], with_password: bool, auth_refused: bool
) -> None:
    sentinels = [TcpAddress("10.0.0.1", 26379 + i) for i in range(len(answers))]
    world = World(
        dict(zip(sentinels, answers, strict=True)),
        dict(zip(CANDIDATES, candidate_roles, strict=True)),
        auth_refused and with_password,
    )
    password = PASSWORD if with_password else None
    resolver = SentinelResolver(
        sentinels, "svc", password=password, master_password=password, connect_timeout=1.0
    )

    def verified(sentinel: TcpAddress) -> TcpAddress | None:
        named = world.sentinels[sentinel]
        if world.auth_refused or not isinstance(named, list) or len(named) != 2:
            return None
        candidate = TcpAddress(named[0], int(named[1]))
        role = world.roles[candidate]
        return candidate if isinstance(role, list) and role[0] == "master" else None

    winner = next((s for s in sentinels if verified(s)), None)
    result, asked = run(resolver, world)
    if winner is not None:
        assert result == verified(winner)
        assert resolver.master == result
        # The answering Sentinel comes first; the others keep their order.
        assert resolver.sentinels == (winner, *(s for s in sentinels if s != winner))
    else:
        assert isinstance(result, StorageUnavailable)
        assert resolver.master is None
        assert resolver.sentinels == tuple(sentinels)
        for sentinel in sentinels:
            assert f"Sentinel {sentinel} " in str(result)
        assert PASSWORD not in str(result)
    # Sentinels in order, none after the winner; each candidate's ROLE asked once at most.
    asked_sentinels = [a for a in asked if a in world.sentinels]
    stop = sentinels.index(winner) + 1 if winner else len(sentinels)
    assert asked_sentinels == sentinels[:stop]
    asked_candidates = [a for a in asked if a in world.roles]
    assert len(asked_candidates) == len(set(asked_candidates))
    assert len(asked) <= 2 * len(sentinels)


def run(
    resolver: SentinelResolver, world: World
) -> tuple[TcpAddress | StorageUnavailable, list[TcpAddress]]:
    """Drive the lookup plan against ``world``: its result (or error), and whom it asked."""
    asked: list[TcpAddress] = []
    plan = resolver._lookup()
    try:
        step = next(plan)
        while True:
            asked.append(step[0])
            step = plan.send(world.answer(*step))  # type: ignore[arg-type]
    except StopIteration as done:
        return done.value, asked
    except StorageUnavailable as error:
        return error, asked


def test_a_sentinel_resolver_is_an_address_resolver() -> None:
    resolver: AddressResolver = SentinelResolver(
        [TcpAddress("127.0.0.1", 26379)], "svc", connect_timeout=1.0
    )
    assert "svc" in repr(resolver)
