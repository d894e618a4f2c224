"""Errors in Elasticsearch's reply shape: `{"error": {"root_cause": [...], "type", "reason", ...}, "status"}`.

https://www.elastic.co/docs/reference/elasticsearch/rest-apis/common-options (error responses)
"""

from __future__ import annotations

from typing import Any, NoReturn


class EsError(Exception):
    def __init__(self, status: int, type_: str, reason: str, root_type: str | None = None, **extra: Any):
        super().__init__(reason)
        self.status, self.type, self.reason, self.extra = status, type_, reason, extra
        self.root_type = root_type or type_

    def body(self) -> dict[str, Any]:
        cause = {"type": self.root_type, "reason": self.reason, **self.extra}
        return {
            "error": {"root_cause": [cause], "type": self.type, "reason": self.reason, **self.extra},
            "status": self.status,
        }

    def item_error(self) -> dict[str, Any]:
        """The `error` of one bulk item."""
        return {"type": self.type, "reason": self.reason, **self.extra}


NOT_IMPLEMENTED = "fake_not_implemented_exception"


def not_implemented(what: str) -> NoReturn:
    """A feature real Elasticsearch has and this fake does not model: refused, so nothing relies on it silently."""
    raise EsError(400, NOT_IMPLEMENTED, f"the fake Elasticsearch does not implement {what}")
