"""The second-hand categories (categories.toml) and the prohibited-items rule's configuration."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

CONDITIONS = ("new", "like_new", "good", "fair", "for_parts")
CONDITION_NAMES = {
    "new": "全新",
    "like_new": "几乎全新",
    "good": "轻微使用痕迹",
    "fair": "明显使用痕迹",
    "for_parts": "功能故障/拆件",
}


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    holds_storage: bool


@functools.lru_cache(maxsize=4)
def categories(path: str | None = None) -> dict[str, Category]:
    file = Path(path) if path else Path(__file__).parent.parent / "categories.toml"
    raw = tomllib.loads(file.read_text())["categories"]
    return {code: Category(code, c["name"], bool(c.get("holds_storage", False))) for code, c in raw.items()}
