"""How PostgresBackupStrategy splits a connection string: the password never stays in it."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.errors import BackupError
from sergas_guard.recovery.postgres import _Conninfo, _libpq_pairs, _quote_value

# Passwords start with a marker so "not in the connection string" cannot be a fluke of a
# one-letter password that happens to appear in a host name.
passwords = st.text(st.characters(codec="utf-8", exclude_characters="\x00\n\r"), max_size=20).map(
    lambda text: "PW-" + text
)
names = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00\n\r"), min_size=1, max_size=20
)
users = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@given(user=users, password=passwords, dbname=names, sslmode=st.sampled_from(["", "require"]))
@settings(max_examples=200)
def test_a_url_password_moves_out_and_everything_else_stays(
    user: str, password: str, dbname: str, sslmode: str
) -> None:
    query = f"?sslmode={sslmode}" if sslmode else ""
    url = (
        f"postgresql://{user}:{quote(password, safe='')}@h1:5432,h2:5433/"
        f"{quote(dbname, safe='')}{query}"
    )
    parsed = _Conninfo.parse(url, what="source")
    assert parsed.password == password
    assert parsed.dbname == dbname
    assert password not in parsed.conninfo
    assert quote(password, safe="") not in parsed.conninfo
    assert parsed.conninfo.startswith(f"postgresql://{user}@h1:5432,h2:5433/")
    assert ("sslmode=require" in parsed.conninfo) == bool(sslmode)
    again = _Conninfo.parse(parsed.conninfo, what="source")
    assert (again.password, again.dbname, again.conninfo) == (None, dbname, parsed.conninfo)
    assert password not in parsed.shown
    assert parsed.with_dbname("postgres").conninfo.endswith("/postgres" + query)


@given(password=passwords.filter(lambda p: not any(c in p for c in "/?#%[]")))
@settings(max_examples=100)
def test_a_raw_url_password_is_read_to_the_last_at_sign(password: str) -> None:
    # "/?#[]" raw are refused (see sergas_guard.secrets.credentials_problem); "%" decodes.
    parsed = _Conninfo.parse(f"postgres://guard:{password}@127.0.0.1/app", what="source")
    assert parsed.password == password
    assert parsed.conninfo == "postgres://guard@127.0.0.1/app"


@given(password=passwords, dbname=names, host=names)
@settings(max_examples=200)
def test_a_keyword_password_moves_out_and_everything_else_stays(
    password: str, dbname: str, host: str
) -> None:
    text = (
        f"host = {_quote_value(host)}  password={_quote_value(password)} "
        f"dbname={_quote_value(dbname)}"
    )
    parsed = _Conninfo.parse(text, what="destination")
    assert (parsed.password, parsed.dbname) == (password, dbname)
    assert password not in parsed.conninfo
    assert _libpq_pairs(parsed.conninfo) == [("host", host), ("dbname", dbname)]
    assert _libpq_pairs(parsed.with_dbname("postgres").conninfo) == [
        ("host", host),
        ("dbname", "postgres"),
    ]


def test_libpq_keyword_syntax() -> None:
    assert _libpq_pairs(r"a=1 b = 'x y' c='it\'s' d=\\") == [
        ("a", "1"),
        ("b", "x y"),
        ("c", "it's"),
        ("d", "\\"),
    ]
    assert _libpq_pairs("a='open") is None
    assert _libpq_pairs("a") is None
    assert _libpq_pairs("=1") is None
    assert _libpq_pairs("") == []


def test_a_bare_name_is_a_database_name() -> None:
    parsed = _Conninfo.parse("sales", what="destination")
    assert (parsed.dbname, parsed.password, parsed.conninfo) == ("sales", None, "dbname='sales'")


@pytest.mark.parametrize(
    "text",
    ["", "   ", "postgresql://u:pa/ss@host/db", "postgresql://u:pw@host:port/db", "k='x"],
)
def test_unusable_strings_are_refused_without_their_secrets(text: str) -> None:
    with pytest.raises(BackupError) as caught:
        _Conninfo.parse(text, what="source")
    assert "pa/ss" not in str(caught.value)
    assert ":pw@" not in str(caught.value)
