"""The wipe service (信息清除): erasure tools' keys, signed reports, the policy by media, certificates."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec
from services.kernel.settings import ConfigError

from .api import router
from .domain.policy import PolicyError
from .settings import policy_of, settings_of
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    """Load the policy at start: a bad policy file stops the service, naming the key."""
    settings_of(rt)
    try:
        policy_of(rt)
    except (PolicyError, OSError) as exc:
        raise ConfigError(f"wipe policy ({settings_of(rt).policy_file or 'policy.toml'}): {exc}") from exc


SERVICE = ServiceSpec(name="wipe", metadata=metadata, router=router, setup=setup)
