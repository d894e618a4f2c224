"""The wipe service's settings (environment prefix `WIPE_`).

The policy itself (methods per media, passes, the NIST sample, report age, secondary share, retention) is not
here: it is `policy.toml` (or a deployment's own file named by `WIPE_POLICY_FILE`). These settings say how the
service runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_settings import SettingsConfigDict

from services.kernel.ports import Port
from services.kernel.settings import StrictSettings

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

    from .domain.policy import WipePolicy


class WipeSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="WIPE_", case_sensitive=False, extra="forbid")

    # a deployment's own policy file ("" = the shipped services/wipe/policy.toml)
    policy_file: str = ""
    # the public address printed as a QR code on a certificate's page ("" = the address the page was asked on)
    public_base_url: str = ""
    # revoking a tool also revokes the certificates it signed (a leaked key could have signed any of them)
    revoke_certificates_with_tool: bool = True


SETTINGS: Port[WipeSettings] = Port("wipe.settings")
POLICY: Port[WipePolicy] = Port("wipe.policy")


def settings_of(rt: ServiceRuntime) -> WipeSettings:
    return rt.ports.get_or_set(SETTINGS, WipeSettings)


def configure(rt: ServiceRuntime, *, policy: WipePolicy | None = None, **overrides: Any) -> WipeSettings:
    """Tests and benchmarks: replace the settings (defaults + environment + `overrides`) and, optionally, the policy."""
    s = WipeSettings(**overrides)
    rt.ports[SETTINGS] = s
    rt.ports.pop(POLICY)
    if policy is not None:
        rt.ports[POLICY] = policy
    return s


def policy_of(rt: ServiceRuntime) -> WipePolicy:
    from .domain.policy import load_policy

    return rt.ports.get_or_set(POLICY, lambda: load_policy(settings_of(rt).policy_file or None))
