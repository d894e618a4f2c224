"""Events the accounts service publishes that other services consume (topics `accounts.user`, `accounts.firm`,
`accounts.collector`). Other services keep their own copies from these.

Personal data never travels in clear: `*_enc` fields are the platform's PII ciphertext (services.kernel.pii),
readable only by services holding PII_KEY; masked forms travel for display.
"""

from __future__ import annotations

from datetime import date, datetime

from services.kernel.events import Event


class RolesChanged(Event):
    type = "cn.recycle.accounts.user.roles_changed.v1"
    topic = "accounts.user"
    key_field = "user_id"
    source = "/accounts"
    doc = "The user's roles (and the firms they act for) changed; tokens issued from now on carry them."
    user_id: str
    roles: list[str]
    firm_ids: list[str] = []


class IdentityVerified(Event):
    type = "cn.recycle.accounts.user.identity_verified.v1"
    topic = "accounts.user"
    key_field = "user_id"
    source = "/accounts"
    doc = "A resident's real name and 身份证号 passed the checks (natural person; used as invoice seller)."
    user_id: str
    real_name_enc: str
    id_number_enc: str
    name_masked: str
    id_number_masked: str
    verified_at: datetime


class ConsentRecorded(Event):
    type = "cn.recycle.accounts.user.consent_recorded.v1"
    topic = "accounts.user"
    key_field = "user_id"
    source = "/accounts"
    doc = "The user agreed to something, e.g. kind=reverse_invoicing (反向开票 and 代办 filing)."
    user_id: str
    consent_id: str
    kind: str
    recorded_at: datetime


class FirmVerified(Event):
    type = "cn.recycle.accounts.firm.verified.v1"
    topic = "accounts.firm"
    key_field = "firm_id"
    source = "/accounts"
    doc = "An admin approved the firm: it may trade, employ collectors and (with a qualification) reverse-invoice."
    firm_id: str
    owner_user_id: str
    name: str
    uscc: str
    address: str
    city_code: str
    verified_at: datetime


class QualificationApproved(Event):
    type = "cn.recycle.accounts.firm.qualification_approved.v1"
    topic = "accounts.firm"
    key_field = "firm_id"
    source = "/accounts"
    doc = "A firm's qualification (recycler_filing | hazardous_waste | elv) was approved; valid until `valid_until`."
    firm_id: str
    qualification_id: str
    kind: str
    number: str
    valid_until: date
    approved_at: datetime


class AccountantAdded(Event):
    type = "cn.recycle.accounts.firm.accountant_added.v1"
    topic = "accounts.firm"
    key_field = "firm_id"
    source = "/accounts"
    firm_id: str
    user_id: str
    added_at: datetime


class CollectorVerified(Event):
    type = "cn.recycle.accounts.collector.verified.v1"
    topic = "accounts.collector"
    key_field = "collector_id"
    source = "/accounts"
    doc = "An admin approved the collector: booking lets them see and grab jobs in their area and categories."
    collector_id: str
    user_id: str
    firm_id: str
    name_masked: str
    lat: float
    lng: float
    radius_km: float
    categories: list[str]
    verified_at: datetime
