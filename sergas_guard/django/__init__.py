"""Django integration: rate-limit middleware and problem+json error responses.

    # settings.py
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "sergas_guard.django.RateLimitMiddleware",
        "sergas_guard.django.GuardErrorMiddleware",
        ...
    ]
    SERGAS_GUARD_RATELIMIT = {"default_limits": "100/minute", "storage": "redis://redis:6379/0"}

See docs/django.md. Needs Django (the ``django`` extra).
"""

from __future__ import annotations

from sergas_guard.django.middleware import (
    DjangoRequestInfo,
    GuardErrorMiddleware,
    RateLimitMiddleware,
    error_rejection,
    rejection_response,
)
from sergas_guard.django.settings import SETTING, GuardSettings, GuardSettingsError, read_settings

__all__ = [
    "SETTING",
    "DjangoRequestInfo",
    "GuardErrorMiddleware",
    "GuardSettings",
    "GuardSettingsError",
    "RateLimitMiddleware",
    "error_rejection",
    "read_settings",
    "rejection_response",
]
