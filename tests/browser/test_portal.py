"""The customer's billing portal in a real browser: headless Chromium (Debian's), driven by
Playwright for Python, against recoup-local on the sandbox (RECOUP_SANDBOX_URL; run by
infra/scripts/browser.sh).

What a customer does there: open the link the merchant made (it becomes a session cookie),
see their bills, add a card through the card form, make it the default, pay a failed bill,
refill the wallet and set automatic refill; a team member sees the bills only; a forged
or altered link is refused. The pages raise no console error (a Content-Security-Policy
violation is one), work with the keyboard alone and fit a phone. Full-page screenshots
go to target/browser-screenshots/ (or RECOUP_BROWSER_SCREENSHOTS).
"""

import base64
import json
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request

from conftest import api, cards, fill_card_element, new_owner, token
from playwright.sync_api import Error, expect

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCREENSHOTS = pathlib.Path(os.environ.get("RECOUP_BROWSER_SCREENSHOTS", ROOT / "target" / "browser-screenshots"))

INVALID_AMOUNT = "Enter an amount greater than zero, like 25.00."
ABOVE_MAXIMUM = "A single refill can be at most $1,000.00."
REFILLED = "Your wallet has been refilled."
DEFAULT_NOT_REMOVABLE = (
    "Your default card cannot be removed while you have other cards: make another card the default first."
)


def add_card(base, owner, payment_method, set_default):
    status, card = api(
        base, "POST", "/v1/payment-methods", owner, {"payment_method": payment_method, "set_default": set_default}
    )
    assert status in (200, 201), card
    return card


def issue_invoice(base, customer, amount, description):
    status, invoice = api(
        base,
        "POST",
        "/v1/invoices",
        token("merchant"),
        {"customer_id": customer, "amount": amount, "currency": "usd", "description": description},
    )
    assert status in (200, 201), invoice
    return invoice


def invoices(base, customer):
    status, listing = api(base, "GET", f"/v1/invoices?customer_id={customer}", token("merchant"))
    assert status == 200, listing
    return listing["data"]


def invoice(base, invoice_id):
    status, found = api(base, "GET", f"/v1/invoices/{invoice_id}", token("merchant"))
    assert status == 200, found
    return found


def balance(base, owner):
    status, listing = api(base, "GET", "/v1/wallet", owner)
    assert status == 200, listing
    return {w["currency"].upper(): w["balance"] for w in listing["data"]}.get("USD", 0)


def portal_link(base, customer, role="owner"):
    status, session = api(
        base, "POST", "/v1/portal-sessions", token("merchant"), {"customer_id": customer, "role": role}
    )
    assert status == 201, session
    assert (session["object"], session["customer_id"], session["role"]) == ("portal_session", customer, role)
    url = urllib.parse.urlsplit(session["url"])
    assert url.path.endswith("/portal/session") and url.query.startswith("token="), session["url"]
    # The link points at recoup-local's --portal-url (RECOUP_PORTAL_URL), which browser.sh
    # leaves at its default: the same path and token on the server under test.
    return f"{base}{url.path}?{url.query}"


def link_token(link):
    return urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


class Portal:
    """A browser context on the billing page, recording what the browser reports: console
    errors (a Content-Security-Policy violation is one) and page errors."""

    def __init__(self, browser, base, **context_options):
        self.base = base
        self.context = browser.new_context(**context_options)
        self.page = self.context.new_page()
        self.problems = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"{m.text} at {m.location['url']}"))
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))

    def open(self, link):
        """Opens a link from POST /v1/portal-sessions: on to the billing page."""
        response = self.page.goto(link)
        expect(self.page.get_by_role("heading", level=1)).to_have_text("Billing & Plans")
        return response

    def reload(self):
        self.page.goto(f"{self.base}/portal")

    def notice(self):
        return self.page.locator("p.notice[role=status]")

    def section(self, name):
        return self.page.get_by_role("region", name=name, exact=True)

    def bill(self, description):
        return self.section("Bills").locator("tbody tr", has_text=description)

    def card(self, label):
        return self.section("Payment methods").locator("tbody tr", has_text=label)

    def balance(self):
        return self.section("Wallet").locator("strong.balance")

    def refill(self, amount, card=None):
        self.page.get_by_label("Amount (USD)", exact=True).fill(amount)
        if card:
            self.page.get_by_label("Card", exact=True).select_option(label=card)
        self.page.get_by_role("button", name="Refill", exact=True).click()

    def close(self):
        self.context.close()


def test_an_owner_adds_a_card_pays_a_failed_bill_and_refills_the_wallet(browser, sandbox):
    customer, owner = new_owner(sandbox)
    # A card that saves but declines every charge, the default.
    failing = add_card(sandbox, owner, "pm_card_chargeCustomerFail", True)
    portal = Portal(browser, sandbox)
    page = portal.page

    # The link becomes a session cookie and leaves the address bar. The cookie is Secure:
    # Chromium keeps it on http://127.0.0.1, a secure context.
    link = portal_link(sandbox, customer)
    response = portal.open(link)
    assert page.url == f"{sandbox}/portal", page.url
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert csp.startswith("default-src 'none';") and "script-src" not in csp, csp
    assert "frame-ancestors 'none'" in csp, csp
    cookies = {c["name"]: c for c in portal.context.cookies()}
    session = cookies["recoup_portal"]
    assert (session["secure"], session["httpOnly"], session["sameSite"], session["path"]) == (True, True, "Lax", "/portal")
    expect(page.get_by_text("ada@example.com")).to_be_visible()
    expect(portal.section("Bills")).to_contain_text("No bills yet.")
    expect(portal.card("visa ending 0341")).to_contain_text("Default")
    expect(page.get_by_role("button", name="Make the visa card ending 0341 the default")).to_have_count(0)
    expect(portal.balance()).to_have_text("none yet")

    # "Add a card": the card form, in the session (its cookie and CSRF token, no bearer
    # token), on the sandbox's card fields. Not made the default.
    page.click("a#add-card")
    page.wait_for_url(f"{sandbox}/portal/card-form")
    expect(page.locator("form[data-ready=true]")).to_have_count(1)
    page.fill("#number", "5555 5555 5555 4444")
    page.fill("#exp", "12/31")
    page.fill("#cvc", "123")
    expect(page.locator("#set-default")).not_to_be_checked()
    with page.expect_response(lambda r: r.url.endswith("/portal/card-form/payment-methods")) as registered:
        page.click("#submit")
    assert registered.value.status == 201
    assert "authorization" not in registered.value.request.headers
    assert registered.value.request.headers.get("x-recoup-csrf")
    expect(page.locator("#message")).to_have_text("Saved: Mastercard ending in 4444.")
    expect(page.locator("#card-form")).to_have_attribute("data-saved", registered.value.json()["id"])
    page.get_by_role("link", name="Back to your billing page").click()
    page.wait_for_url(f"{sandbox}/portal")
    expect(portal.card("mastercard ending 4444")).to_be_visible()
    expect(portal.card("mastercard ending 4444")).not_to_contain_text("Default")
    expect(portal.card("visa ending 0341")).to_contain_text("Default")

    # A bill, charged at once to the failing default card: "Payment failed".
    bill = issue_invoice(sandbox, customer, 2500, "Team plan, March")
    portal.reload()
    expect(portal.bill("Team plan, March")).to_contain_text("$25.00")
    expect(portal.bill("Team plan, March").locator(".badge")).to_have_text("Payment failed")
    pay = page.get_by_role("button", name="Pay $25.00 now")
    expect(pay).to_have_count(1)

    # The default card cannot go while another card is saved.
    page.get_by_role("button", name="Remove the visa card ending 0341").click()
    expect(portal.notice()).to_have_text(DEFAULT_NOT_REMOVABLE)
    expect(portal.card("visa ending 0341")).to_be_visible()

    # "Pay now" with the failing card: declined, said so, still owed.
    pay.click()
    expect(portal.notice()).to_contain_text("The payment did not go through.")
    expect(portal.bill("Team plan, March").locator(".badge")).to_have_text("Payment failed")

    # The new card made the default, then "Pay now": paid.
    page.get_by_role("button", name="Make the mastercard card ending 4444 the default").click()
    expect(portal.notice()).to_have_text("Your default card has been changed.")
    expect(portal.card("mastercard ending 4444")).to_contain_text("Default")
    expect(portal.card("visa ending 0341")).not_to_contain_text("Default")
    assert invoice(sandbox, bill["id"])["status"] != "paid", "the new card paid nothing by itself"
    page.get_by_role("button", name="Pay $25.00 now").click()
    expect(portal.notice()).to_have_text("Thank you: the bill is paid.")
    expect(portal.bill("Team plan, March").locator(".badge")).to_have_text("Paid")
    expect(page.get_by_role("button", name="Pay $25.00 now")).to_have_count(0)
    assert invoice(sandbox, bill["id"])["status"] == "paid"

    # Refills the page refuses, charging nothing.
    for amount in ["0", "-5", "abc"]:
        portal.refill(amount)
        expect(portal.notice()).to_have_text(INVALID_AMOUNT)
    portal.refill("5000")
    expect(portal.notice()).to_have_text(ABOVE_MAXIMUM)
    # The failing card, picked by hand: declined, nothing credited.
    portal.refill("25.00", card="visa ending 0341")
    expect(portal.notice()).to_contain_text("The refill did not go through.")
    assert balance(sandbox, owner) == 0

    # With the keyboard alone: Tab to the amount, type, Tab past the card (the default is
    # chosen) to the button, Enter.
    portal.reload()
    for _ in range(60):
        if page.evaluate("document.activeElement && document.activeElement.id") == "refill-amount":
            break
        page.keyboard.press("Tab")
    expect(page.locator("#refill-amount")).to_be_focused()
    page.keyboard.type("25.00")
    page.keyboard.press("Tab")
    expect(page.locator("#refill-card")).to_be_focused()
    expect(page.locator("#refill-card option:checked")).to_have_text("mastercard ending 4444 (default)")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Refill", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(portal.notice()).to_have_text(REFILLED)
    expect(portal.balance()).to_have_text("$25.00")
    assert balance(sandbox, owner) == 2500

    # A double click while the first submission is on its way: the first answer is held
    # back until the second submission has gone, so both reach the server, with the same
    # page's refill key. One charge; the page says refilled.
    refills_before = {i["id"] for i in invoices(sandbox, customer) if i["description"] == "Wallet refill"}
    portal.reload()
    page.fill("#refill-amount", "10.00")
    fields = page.locator("form[action$='portal/wallet/refill']").evaluate("f => Object.fromEntries(new FormData(f))")
    answers, sent, held = [], [], []

    def in_flight(route):
        sent.append(route.request.post_data)
        answers.append(route.fetch(max_redirects=0))
        if len(answers) == 1:
            held.append(route)
        else:
            route.fulfill(response=answers[-1])

    page.route("**/portal/wallet/refill", in_flight)
    button = page.get_by_role("button", name="Refill", exact=True)
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(x, y)
    for _ in range(100):
        if answers:
            break
        page.wait_for_timeout(50)
    assert len(answers) == 1, answers
    page.mouse.click(x, y)
    expect(portal.notice()).to_have_text(REFILLED)
    try:
        held[0].fulfill(response=answers[0])  # the browser has given up on it
    except Error:
        pass
    page.unroute("**/portal/wallet/refill")
    assert [(a.status, a.headers["location"]) for a in answers] == [(303, "../../portal?notice=refilled")] * 2
    assert sent[0] == sent[1] and "key=" in sent[0], sent
    # And once more, the same page sent again after its answer: still the one refill.
    again = portal.context.request.post(f"{sandbox}/portal/wallet/refill", form=fields, max_redirects=0)
    assert (again.status, again.headers["location"]) == (303, "../../portal?notice=refilled"), again.headers
    # Another session's CSRF token (here, none valid) is refused, charging nothing.
    forged = portal.context.request.post(
        f"{sandbox}/portal/wallet/refill", form={**fields, "key": "forged", "csrf": "0" * 64}, max_redirects=0
    )
    assert forged.status == 403 and "This form has expired" in forged.text(), forged.text()
    portal.reload()
    expect(portal.balance()).to_have_text("$35.00")
    assert balance(sandbox, owner) == 3500
    new = [i for i in invoices(sandbox, customer) if i["description"] == "Wallet refill" and i["id"] not in refills_before]
    assert [(i["amount"], i["status"]) for i in new] == [(1000, "paid")], new

    # Automatic refill: refused when the refill would not lift the balance over the
    # threshold, then saved.
    page.check("#auto-enabled")
    page.fill("#auto-threshold", "30.00")
    page.fill("#auto-amount", "20.00")
    page.get_by_role("button", name="Save automatic refill").click()
    expect(portal.notice()).to_contain_text("Automatic refill needs a threshold of 0 or more")
    page.check("#auto-enabled")
    page.fill("#auto-threshold", "5.00")
    page.fill("#auto-amount", "20.00")
    page.get_by_role("button", name="Save automatic refill").click()
    expect(portal.notice()).to_have_text("Your automatic refill settings are saved.")
    expect(page.locator("#auto-enabled")).to_be_checked()
    expect(page.locator("#auto-threshold")).to_have_value("5.00")
    expect(page.locator("#auto-amount")).to_have_value("20.00")
    status, wallets = api(sandbox, "GET", "/v1/wallet", owner)
    assert status == 200, wallets
    settings = wallets["data"][0]["auto_refill"]
    assert (settings["enabled"], settings["threshold"], settings["amount"]) == (True, 500, 2000), settings

    # The failing card, no longer the default, can go.
    page.get_by_role("button", name="Remove the visa card ending 0341").click()
    expect(portal.notice()).to_have_text("The card has been removed.")
    expect(portal.card("visa ending 0341")).to_have_count(0)
    assert [c["last4"] for c in cards(sandbox, owner)] == ["4444"]
    assert failing["id"] not in {c["id"] for c in cards(sandbox, owner)}

    portal.reload()
    expect(portal.bill("Team plan, March").locator(".badge")).to_have_text("Paid")
    expect(portal.balance()).to_have_text("$35.00")
    screenshot(page, "portal-owner.png")
    assert portal.problems == [], portal.problems
    portal.close()


def test_a_team_member_sees_the_bills_and_nothing_to_pay_with(browser, sandbox):
    customer, owner = new_owner(sandbox, "team@example.com")
    add_card(sandbox, owner, "pm_card_visa", True)
    issue_invoice(sandbox, customer, 4900, "Team plan, April")
    add_card(sandbox, owner, "pm_card_chargeCustomerFail", True)
    issue_invoice(sandbox, customer, 4900, "Team plan, May")
    portal = Portal(browser, sandbox)
    page = portal.page
    portal.open(portal_link(sandbox, customer, role="member"))
    expect(portal.bill("Team plan, April").locator(".badge")).to_have_text("Paid")
    expect(portal.bill("Team plan, April")).to_contain_text("$49.00")
    # A failed bill, and nothing to pay it with.
    expect(portal.bill("Team plan, May").locator(".badge")).to_have_text("Payment failed")
    expect(page.get_by_role("button")).to_have_count(0)
    for hidden in ["Payment methods", "Wallet"]:
        expect(page.get_by_role("heading", name=hidden)).to_have_count(0)
    expect(page.locator("form")).to_have_count(0)
    expect(page.locator("a#add-card")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("4242")
    expect(page.locator("body")).not_to_contain_text("0341")
    screenshot(page, "portal-member.png")
    assert portal.problems == [], portal.problems

    # Nor can a member open the card form.
    refused = page.goto(f"{sandbox}/portal/card-form")
    assert refused.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Refused")
    expect(page.locator("body")).to_contain_text("Only the account's owner manages payments.")
    portal.close()


def test_the_page_fits_a_phone(browser, sandbox):
    customer, owner = new_owner(sandbox, "a.very.long.address.for.a.phone@example.com")
    add_card(sandbox, owner, "pm_card_mastercard", False)
    add_card(sandbox, owner, "pm_card_chargeCustomerFail", True)
    issue_invoice(sandbox, customer, 123456, "Team plan with twelve seats, annual")
    mastercard = next(c["id"] for c in cards(sandbox, owner) if c["last4"] == "4444")
    status, refill = api(
        sandbox, "POST", "/v1/wallet/refills", owner, {"amount": 2500, "currency": "usd", "payment_method": mastercard}
    )
    assert status in (200, 201) and refill["status"] == "succeeded", refill
    portal = Portal(browser, sandbox, viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    page = portal.page
    portal.open(portal_link(sandbox, customer))
    expect(page.get_by_role("button", name="Pay $1,234.56 now")).to_be_visible()
    expect(portal.section("Wallet")).to_be_visible()
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]}px wide in a {widths[1]}px window"
    screenshot(page, "portal-phone.png")
    assert portal.problems == [], portal.problems
    portal.close()


def test_a_forged_or_altered_link_is_refused(browser, sandbox):
    customer, _ = new_owner(sandbox)
    link = portal_link(sandbox, customer, role="member")
    portal = Portal(browser, sandbox)
    page = portal.page

    def refused(token, reason):
        response = page.goto(f"{sandbox}/portal/session?token={urllib.parse.quote(token)}")
        assert response.status == 401, response.status
        expect(page.get_by_role("heading", level=1)).to_have_text("This link is not valid")
        expect(page.locator("body")).to_contain_text(reason)
        assert "recoup_portal" not in {c["name"] for c in portal.context.cookies()}

    refused("not-a-token", "the link is not one Recoup made")
    # A member's link made an owner's: the signature no longer matches.
    payload, tag = link_token(link).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["role"] == "member"
    claims["role"] = "owner"
    altered = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode().rstrip("=")
    refused(f"{altered}.{tag}", "the link is not one Recoup made")
    # One changed character in the signature.
    refused(f"{payload}.{tag[:-1]}{'0' if tag[-1] != '0' else '1'}", "the link is not one Recoup made")
    # A session's cookie is signed too, but it is not a link.
    page.goto(link)
    session = next(c["value"] for c in portal.context.cookies() if c["name"] == "recoup_portal")
    portal.context.clear_cookies()
    refused(session, "not a portal link")
    # The billing page without a session.
    response = page.goto(f"{sandbox}/portal")
    assert response.status == 401
    expect(page.get_by_role("heading", level=1)).to_have_text("This link is not valid")
    expect(page.locator("body")).to_contain_text("You are not signed in")
    # The pages' only complaints are their own 401s.
    assert all("status of 401" in p for p in portal.problems), portal.problems
    portal.close()


def test_pay_now_and_a_refill_complete_3d_secure_in_the_browser(browser, stripe):
    """On Stripe (localstripe and its stand-in Stripe.js): a card that asks for 3-D Secure on
    every payment, added from the billing page; a bill it could not pay off-session is paid
    with "Pay now" once the cardholder confirms; a refill whose confirmation fails credits
    nothing and owes nothing."""
    customer, owner = new_owner(stripe, "sca@example.com")
    portal = Portal(browser, stripe)
    portal.open(portal_link(stripe, customer))
    page = portal.page
    page.click("#add-card")
    expect(page.locator("form[data-ready=true]")).to_have_count(1)
    fill_card_element(portal, "4000002760003184")
    page.click("#submit")
    page.get_by_role("button", name="Complete authentication").click()
    expect(page.locator("#message")).to_contain_text("ending in 3184")

    issue_invoice(stripe, customer, 4200, "Pro plan, confirmed by the bank")
    portal.reload()
    bill = portal.bill("Pro plan, confirmed by the bank")
    expect(bill).to_contain_text("Payment failed")
    bill.get_by_role("button", name="Pay $42.00 now").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your payment")
    assert "cs=" not in page.url, "the client secret leaves the address bar"
    page.get_by_role("button", name="Confirm with my bank").click()
    page.get_by_role("button", name="Complete authentication").click()
    expect(portal.notice()).to_have_text("Thank you: the bill is paid.")
    expect(portal.bill("Pro plan, confirmed by the bank")).to_contain_text("Paid")

    portal.refill("10.00")
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your payment")
    page.get_by_role("button", name="Confirm with my bank").click()
    page.get_by_role("button", name="Fail authentication").click()
    expect(portal.notice()).to_contain_text("The refill did not go through.")
    assert balance(stripe, owner) in (None, 0)
    refills = [i for i in invoices(stripe, customer) if i["description"] == "Wallet refill"]
    assert [i["status"] for i in refills] == ["void"], refills
    assert portal.problems == [], portal.problems
    portal.close()
