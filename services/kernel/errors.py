"""Domain errors. The HTTP layer turns each into an RFC 9457 problem+json reply."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 422
    slug = "rule-violated"
    title = "Rule violated"

    def __init__(self, detail: str, *, errors: list[dict[str, str]] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://recycle.example.cn/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class ValidationFailed(DomainError):
    """Malformed input: names each bad field."""

    status = 400
    slug = "validation"
    title = "Invalid request"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None):
        fields = ", ".join(e["field"] for e in errors)
        super().__init__(detail or f"invalid fields: {fields}", errors=errors)

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        return cls([{"field": field, "message": message}])


class RuleViolated(DomainError):
    """A business rule refuses the request (422); `reason` is machine-readable."""

    def __init__(self, detail: str, reason: str | None = None, field: str | None = None, **extra: Any):
        errors = [{"field": field, "message": detail}] if field else None
        if reason:
            extra["reason"] = reason
        super().__init__(detail, errors=errors, **extra)


class NotFound(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Unauthorized(DomainError):
    status = 401
    slug = "unauthorized"
    title = "Authentication required"


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class Conflict(DomainError):
    """The aggregate is in a state that does not allow this; the body says the current state."""

    status = 409
    slug = "state-conflict"
    title = "State conflict"

    def __init__(self, detail: str, current_state: str | None = None, **extra: Any):
        if current_state is not None:
            extra["current_state"] = current_state
        super().__init__(detail, **extra)


class RateLimited(DomainError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int, **extra: Any):
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    """A store the request needs cannot be reached right now (503): retrying later may succeed."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"
