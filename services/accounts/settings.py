"""Accounts settings that the platform `Settings` does not (yet) carry.

Read from the environment (OTP_TTL_S=300, ...). A field of the same name on the platform `Settings` object wins, so
moving these fields into `services/kernel/settings.py` later needs no code change here.
"""

from __future__ import annotations

from typing import Literal

from pydantic_settings import SettingsConfigDict

from services.kernel.ports import Port
from services.kernel.settings import Settings, StrictSettings


class AccountsSettings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="forbid")

    # One-time login codes sent by SMS
    otp_ttl_s: int = 300  # a code expires 5 minutes after it was sent
    otp_max_attempts: int = 5  # wrong guesses per code before it is burned
    otp_per_phone_limit: int = 5  # codes per phone number ...
    otp_per_phone_window_s: int = 600  # ... per 10 minutes
    otp_length: int = 6
    # log = keep messages in memory and log them masked (dev, test); aliyun = the documented stub adapter
    sms_provider: Literal["log", "aliyun"] = "log"
    sms_sign_name: str = ""
    sms_template_code: str = ""
    sms_access_key_id: str = ""
    sms_access_key_secret: str = ""
    # collectors: the largest service radius an application may ask for
    collector_max_radius_km: float = 50.0


SETTINGS: Port[AccountsSettings] = Port("accounts.settings")


def accounts_settings(settings: Settings) -> AccountsSettings:
    base = AccountsSettings()
    overrides = {
        f: getattr(settings, f) for f in AccountsSettings.model_fields if f in type(settings).model_fields
    }
    return base.model_copy(update=overrides) if overrides else base
