"""Sending login codes by SMS: the port and its adapters.

- `LogSmsProvider` (dev and test): keeps the last messages in memory and logs that a code was sent (masked phone,
  never the code). Tests read the code through the runtime port: `sms_of(platform["accounts"]).last_code(phone)`
  — there is no HTTP way to read it outside the dev environment.
- `AliyunSmsProvider`: the interface a real provider adapter fills in (阿里云短信 SendSms with a sign name and a
  template holding `${code}`). It is a stub: it refuses to send until implemented with the provider's SDK.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from services.kernel.pii import mask_phone
from services.kernel.ports import Port
from services.kernel.settings import ConfigError

from .settings import AccountsSettings

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmsMessage:
    phone: str
    code: str
    ttl_s: int
    sent_at: datetime


class SmsProvider(Protocol):
    name: str

    def send_code(self, phone: str, code: str, ttl_s: int) -> None:
        """Deliver a login code to a mainland mobile number; raise SmsError if the provider refused it."""


class SmsError(RuntimeError):
    """The provider did not accept the message (the user may ask for a new code)."""


class LogSmsProvider:
    name = "log"

    def __init__(self, keep: int = 1000):
        self._outbox: deque[SmsMessage] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def send_code(self, phone: str, code: str, ttl_s: int) -> None:
        with self._lock:
            self._outbox.append(SmsMessage(phone, code, ttl_s, datetime.now(UTC)))
        log.info("login code sent to %s (log SMS provider: not delivered)", mask_phone(phone))

    # --- test/dev access (in process only) ---------------------------------------------------------
    def messages(self, phone: str | None = None) -> list[SmsMessage]:
        with self._lock:
            return [m for m in self._outbox if phone is None or m.phone == phone]

    def last_code(self, phone: str) -> str | None:
        msgs = self.messages(phone)
        return msgs[-1].code if msgs else None


class AliyunSmsProvider:
    """Stub of a real adapter (Alibaba Cloud SMS). To implement: call SendSms with PhoneNumbers=phone,
    SignName=sms_sign_name, TemplateCode=sms_template_code, TemplateParam={"code": code}; map a non-"OK" Code
    to SmsError. Credentials come from SMS_ACCESS_KEY_ID / SMS_ACCESS_KEY_SECRET."""

    name = "aliyun"

    def __init__(self, cfg: AccountsSettings):
        missing = [
            f
            for f in ("sms_sign_name", "sms_template_code", "sms_access_key_id", "sms_access_key_secret")
            if not getattr(cfg, f)
        ]
        if missing:
            raise ConfigError(f"SMS_PROVIDER=aliyun needs {', '.join(m.upper() for m in missing)}")
        self.cfg = cfg

    def send_code(self, phone: str, code: str, ttl_s: int) -> None:
        raise SmsError("the aliyun SMS adapter is a stub; implement AliyunSmsProvider.send_code")


# The runtime's SMS provider (tests read the codes sent from it: `sms_of(platform["accounts"]).last_code(phone)`).
SMS: Port[SmsProvider] = Port("accounts.sms")


def sms_of(rt: ServiceRuntime) -> SmsProvider:
    return rt.ports[SMS]


def make_sms_provider(cfg: AccountsSettings) -> SmsProvider:
    if cfg.sms_provider == "aliyun":
        return AliyunSmsProvider(cfg)
    return LogSmsProvider()
