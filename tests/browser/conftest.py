"""What the browser tests share: one headless Chromium (Debian's, driven by Playwright
for Python; a process runs one sync Playwright at a time, so every file uses this one),
the servers browser.sh started, and calls to the API and to recoup-local."""

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

RECOUP_LOCAL = os.environ["RECOUP_LOCAL_BIN"]
CHROMIUM = os.environ.get("RECOUP_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking switches Chromium keeps trying the closed internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def token(role, customer=None):
    args = [RECOUP_LOCAL, "token", "--role", role] + (["--customer", customer] if customer else [])
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def api(base, method, path, bearer, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + bearer)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def new_owner(base, email="ada@example.com"):
    status, customer = api(base, "POST", "/v1/customers", token("merchant"), {"email": email})
    assert status == 201, customer
    return customer["id"], token("owner", customer["id"])


def cards(base, owner):
    status, listing = api(base, "GET", "/v1/payment-methods", owner)
    assert status == 200, listing
    return listing["data"]


def fill_card_element(form, number):
    """Types a card into localstripe's stand-in for the Card Element (one input per field)
    on `form.page`."""
    element = form.page.locator("#card-element")
    element.locator("input[placeholder=number]").fill(number)
    element.locator("input[placeholder=exp_month]").fill("12")
    element.locator("input[placeholder=exp_year]").fill("31")  # the stand-in prefixes "20"
    element.locator("input[placeholder=cvc]").fill("123")
    element.locator("input[placeholder=postal_code]").fill("10001")


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def sandbox():
    return os.environ["RECOUP_SANDBOX_URL"]


@pytest.fixture
def stripe():
    return os.environ["RECOUP_STRIPE_URL"]
