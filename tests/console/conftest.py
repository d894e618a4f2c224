"""The console's browser tests: Debian's chromium driven by Playwright, against the embedded run (`recycle run`).

One platform and one browser for the whole package (starting them is most of the time); each test gets a fresh
browser context (no shared sign-in). Screenshots go to build/console/ (CONSOLE_ARTEFACTS overrides), kept by CI
as artefacts; the ones in docs/console.md are copies of these.
"""

from __future__ import annotations

import os

import pytest

from tests.console.seed import ADMIN_PHONE, Api, seed_prices
from tests.console.support import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.flow import embedded_run
from workers.supervisor import free_port


@pytest.fixture(scope="package")
def platform(tmp_path_factory):
    """`recycle run` in a fresh data directory, with the price data of tests/console/seed.py."""
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    with embedded_run(
        tmp,
        port,
        ADMIN_PHONES=ADMIN_PHONE,
        JWT_SECRET="console-test-" + "x" * 40,
        PII_KEY="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
        # every sign-in of the package comes from this host: raise the SMS-pumping budgets, as harnesses do
        OTP_PER_CLIENT_LIMIT="100000",
        OTP_PER_PHONE_LIMIT="1000",
    ) as (base, log, _):
        api = Api(base)
        admin = api.login(ADMIN_PHONE)["access_token"]
        prices = seed_prices(api, admin)
        yield {"base": base, "api": api, "admin": admin, "prices": prices, "log": log, "data_dir": tmp}


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(
        timeout=15_000
    )  # as the contexts' default: a loaded CI machine is slow to start things

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: `make install` installs Debian's chromium and fonts-wqy-microhei "
            "(as root)"
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, platform):
    """A fresh context (Chinese locale, Shanghai time) on the console; fails the test on any script or server
    error."""
    context = browser.new_context(
        base_url=platform["base"],
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
        viewport={"width": 1280, "height": 860},
        accept_downloads=True,
    )
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # refusals the page handles (a wrong code's 401) are not errors; a server error or a script error is
    pg.on(
        "console",
        lambda m: errors.append(m.text)
        if m.type == "error" and not m.text.startswith("Failed to load resource")
        else None,
    )
    pg.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    yield pg
    context.close()
    assert not errors, errors
