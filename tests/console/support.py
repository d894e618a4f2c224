"""Helpers of the console's browser tests: the browser's flags, screenshots, signing in through the page."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# DESIGN.md's flags for Debian's chromium under automation (Playwright adds a fresh --user-data-dir).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--lang=zh-CN",  # the browser's own widgets (date and month pickers) in Chinese too
]
ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("CONSOLE_ARTEFACTS", ROOT / "build" / "console"))


def shot(page, name: str) -> Path:
    """A screenshot kept as a test artefact."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page, phone: str) -> None:
    """Sign in through the login page as a person would: phone, ask for the code, type the code shown."""
    page.goto("/console/#/login")
    page.get_by_label("手机号").fill(phone)
    page.get_by_role("button", name="获取验证码").click()
    status = page.locator("#otp-status")
    status.filter(has_text="开发环境验证码").wait_for()
    code = status.inner_text().split("开发环境验证码：")[1].strip("）) ")
    page.get_by_label("验证码", exact=True).fill(code)
    page.get_by_role("button", name="登录", exact=True).click()
    page.get_by_role("button", name="退出").wait_for()
