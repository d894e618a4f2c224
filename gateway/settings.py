"""Gateway settings that the platform `Settings` does not (yet) carry.

Read from the environment like every setting (IDEMPOTENCY_TTL_S=..., ...). A field of the same name on the platform
`Settings` object wins, so moving these fields into `services/kernel/settings.py` later needs no code change here.
"""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.kernel.settings import Settings, StrictSettings


class GatewaySettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="forbid")

    # Idempotency-Key: how long a stored reply is replayed, and how long a claimed key waits for its first
    # request to finish (a crashed request frees its key after this).
    idempotency_ttl_s: int = 24 * 3600
    idempotency_lock_s: int = 60
    # Rate limits: the window the per-minute limits of Settings apply over (GCRA: a burst of the whole limit is
    # allowed, then one request per window/limit).
    rate_limit_window_s: int = 60
    # Behind a trusted reverse proxy, take the client IP from X-Forwarded-For (never trust it otherwise).
    trust_forwarded_for: bool = False
    # Distributed run: how long the gateway waits for a service's reply before answering 504 (streams: no limit).
    # The service finishes the work anyway; a retry with the same Idempotency-Key gets its reply.
    upstream_timeout_s: float = 30.0
    # Key prefix in Redis (distributed run: REDIS_URL set).
    gateway_redis_prefix: str = "recycle:gw:"


def gateway_settings(settings: Settings) -> GatewaySettings:
    base = GatewaySettings()
    overrides = {
        f: getattr(settings, f) for f in GatewaySettings.model_fields if f in type(settings).model_fields
    }
    return base.model_copy(update=overrides) if overrides else base
