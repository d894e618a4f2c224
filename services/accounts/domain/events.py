"""Events the accounts service publishes that no other service consumes (yet): a consumer in another service
moves the event to `services/contracts/accounts.py` first.
"""

from __future__ import annotations

from datetime import datetime

from services.kernel.events import Event


class UserRegistered(Event):
    type = "cn.recycle.accounts.user.registered.v1"
    topic = "accounts.user"
    key_field = "user_id"
    source = "/accounts"
    doc = "A phone number logged in for the first time."
    user_id: str
    phone_masked: str
    registered_at: datetime


class FirmRegistered(Event):
    type = "cn.recycle.accounts.firm.registered.v1"
    topic = "accounts.firm"
    key_field = "firm_id"
    source = "/accounts"
    firm_id: str
    owner_user_id: str
    name: str
    uscc: str  # 统一社会信用代码 is public business data, not personal
    recycler_filing_no: str
    address: str
    city_code: str
    registered_at: datetime


class CollectorRegistered(Event):
    type = "cn.recycle.accounts.collector.registered.v1"
    topic = "accounts.collector"
    key_field = "collector_id"
    source = "/accounts"
    collector_id: str
    user_id: str
    firm_id: str
    registered_at: datetime
