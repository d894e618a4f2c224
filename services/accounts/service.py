"""The accounts service: users and roles, phone login, identities, firms, collectors and their verification."""

from __future__ import annotations

import logging

from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .api import router
from .settings import SETTINGS, accounts_settings
from .sms import SMS, make_sms_provider
from .store import metadata

log = logging.getLogger(__name__)


def setup(rt: ServiceRuntime) -> None:
    """Ports: the accounts settings and the SMS provider (tests read codes from it)."""
    cfg = accounts_settings(rt.settings)
    rt.ports[SETTINGS] = cfg
    rt.ports[SMS] = make_sms_provider(cfg)
    from .handlers import republish_versions

    republish_versions(rt)  # revocations of the last hour back into a fresh memory copy or a flushed Redis
    if rt.settings.env == "prod" and cfg.sms_provider == "log":
        log.warning("SMS_PROVIDER=log in prod: login codes are not delivered to anyone")


SERVICE = ServiceSpec(name="accounts", metadata=metadata, router=router, setup=setup)
