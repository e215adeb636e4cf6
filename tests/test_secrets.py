"""The one scrubber: every URL and DSN form, as a property, and what it keeps."""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from sergas_guard.secrets import REDACTED, ScrubbingFilter, scrub, scrub_url, url_secrets
from tests.secret_leaks import Form, leaks, libpq_quoted, percent_encoded, query, secrets

FORMS = [
    Form("mysql://app:{}@db.internal/app"),
    Form("redis://:{}@127.0.0.1:6379/0"),
    Form("redis://app:{}@127.0.0.1:6379/0"),
    Form("rediss://app:{}@cache.internal:6380/0?ssl_cert_reqs=none"),
    Form("redis://app:{}@127.0.0.1:6379/0", percent_encoded),
    Form("redis+cluster://app:{}@10.0.0.1:7000,10.0.0.2:7001"),
    Form("postgresql://app:{}@db1:5432,db2:5432/app"),
    Form("redis+sentinel://:{}@s1:26379,s2:26379/mymaster"),
    Form("amqp://guest:{}@rabbit:5672/%2F"),
    Form("unix://:{}@/var/run/redis.sock?db=0"),
    query("redis+sentinel://s1:26379,s2:26379/mymaster?sentinel_password={}&db=0"),
    query("redis://127.0.0.1:6379/0?password={}"),
    query("postgresql://app@db/app?sslpassword={}&sslmode=require"),
    query("postgresql://app@db/app?sslpassword={}&sslmode=require", percent_encoded),
    query("https://api.example/v1/items?X-Amz-Signature={}&X-Amz-Date=20240101"),
    query("https://api.example/v1/items?page=2&api_key={}"),
    Form("host=db port=5432 user=app password={} dbname=app", libpq_quoted),
    Form("Authorization: Bearer {}"),
    Form("Cookie: session={}"),
    Form("headers={'X-Api-Key': {}}", repr),
]
# Where a scrubbed text may stand: alone, in a sentence, quoted by repr().
CONTEXTS = ["{}", "connecting to {} failed: Connection refused", "url={!r}; retrying"]


def _place(context: str, text: str) -> str:
    return context.replace("{!r}", repr(text)).replace("{}", text)


@pytest.mark.parametrize("form", FORMS, ids=str)
@given(secret=secrets, context=st.sampled_from(CONTEXTS))
@example(secret="Pg@TopSecret", context="{}")  # issue 12: shown as app:***@TopSecret@h
@example(secret="a b\\' c 'd", context="{}")
@example(secret="x:y/z?w#v", context="{!r}")
def test_no_generated_secret_survives_scrub(form: Form, secret: str, context: str) -> None:
    assume(form.fits(secret))
    fixed = [_place(context, form.fill(filler)) for filler in ("", REDACTED)]
    assume(not any(secret in text for text in fixed))
    text = _place(context, form.fill(secret))
    assert leaks(secret, [scrub(text)], fixed) == []
    assert leaks(secret, [scrub(form.fill(secret), *url_secrets(form.fill(secret)))], fixed) == []


@pytest.mark.parametrize("form", FORMS, ids=str)
@given(secret=secrets)
def test_scrubbing_twice_changes_nothing(form: Form, secret: str) -> None:
    assume(form.fits(secret))
    once = scrub(form.fill(secret))
    assert scrub(once) == once


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("mysql://app:Pg@TopSecret@h/db", "mysql://app:***@h/db"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://app@127.0.0.1:6379/0", "redis://app@127.0.0.1:6379/0"),  # user only: kept
        ("redis+cluster://u:p w@h1:1,h2:2", "redis+cluster://u:***@h1:1,h2:2"),
        ("postgresql://u:p%40ss@h1,h2/db", "postgresql://u:***@h1,h2/db"),
        (
            "postgresql://app@db/app?sslpassword=s3&sslmode=require",
            "postgresql://app@db/app?sslpassword=***&sslmode=require",
        ),
        (
            "redis+sentinel://:a@s1:26379/mymaster?password=b&sentinel_password=c&db=0",
            "redis+sentinel://:***@s1:26379/mymaster?password=***&sentinel_password=***&db=0",
        ),
        ("host=db password='a b' dbname=app", "host=db password='***' dbname=app"),
        # An escape may be doubled (a DSN quoted by repr()): hidden to the line's end.
        ("host=db password='a b\\' c' dbname=app", "host=db password='***"),
        ("host=db password=abc dbname=app", "host=db password=*** dbname=app"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: ***"),
        ("sent Bearer eyJhbGciOi.eyJzdWIi.c2ln to the API", "sent Bearer *** to the API"),
        ("https://s3/x?X-Amz-Signature=ab&design=2", "https://s3/x?X-Amz-Signature=***&design=2"),
        # What is not a secret stays readable.
        ("InvalidPasswordError: password authentication failed", None),
        ("burst applies only to token_bucket and leaky_bucket", None),
        ("a token bucket of 5; basic limits apply", None),
        ("Error 111 connecting to auth.internal:6379", None),
        ("https://auth.example.com:8443/health", None),
        ("memory://?max_keys=ten", None),
        ("Error 111 connecting to 127.0.0.1:6390. Connection refused.", None),
    ],
)
def test_what_is_hidden_and_what_is_kept(text: str, shown: str | None) -> None:
    assert scrub(text) == (text if shown is None else shown)


def test_a_known_secret_is_hidden_wherever_it_is_echoed() -> None:
    url = "redis://app:p%40ss w@h:6379/0?password=tok+en"
    assert set(url_secrets(url)) >= {"p%40ss w", "p@ss w", "tok+en", "tok en"}
    echoed = "AUTH p@ss w failed; also tried tok en"
    assert scrub(echoed, *url_secrets(url)) == "AUTH *** failed; also tried ***"
    assert scrub_url("redis://hunter2:hunter2@h") == "redis://***:***@h"


def test_the_logging_filter_scrubs_messages_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.secrets.filter")
    caplog.handler.addFilter(ScrubbingFilter("app-known-secret"))
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("connecting to %s", "redis://u:Pg@Top Secret@h/0")
            try:
                raise RuntimeError("token=abcdef app-known-secret")
            except RuntimeError:
                logger.exception("failed")
    finally:
        caplog.handler.filters.clear()
    text = caplog.text
    assert "redis://u:***@h/0" in text
    assert "RuntimeError: token=*** ***" in text
    for secret in ("Top Secret", "abcdef", "app-known-secret"):
        assert secret not in text


@pytest.mark.parametrize(
    "unit",
    ["password='", "password=x", "?password=x&", "a://", "x://u:p@", "Bearer x ", "token:", "é"],
)
def test_scrubbing_is_linear_in_hostile_text(unit: str) -> None:
    # 200 KB of one pattern: linear work takes milliseconds, quadratic took minutes (each
    # unclosed quote used to scan to the end of the line).
    text = unit * (200_000 // len(unit))
    started = time.perf_counter()
    scrub(text)
    assert time.perf_counter() - started < 2.0


def test_django_settings_show_their_storage_url_scrubbed() -> None:
    pytest.importorskip("django")
    from sergas_guard.django.settings import GuardSettings

    settings = GuardSettings.from_mapping({"storage": "redis://app:Pg@Top Secret@cache:6379/0"})
    assert "Top Secret" not in repr(settings)
    assert "redis://app:***@cache:6379/0" in repr(settings)
