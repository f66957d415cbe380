"""The hosted card form in a real browser: headless Chromium (Debian's), driven by
Playwright for Python, against recoup-local. Run by infra/scripts/browser.sh, which starts
recoup-local twice: on the sandbox (RECOUP_SANDBOX_URL) and on localstripe, whose fake
Stripe.js stands in for Stripe Elements (RECOUP_STRIPE_URL).

What a customer's owner does: open the form from the merchant's app with their token, type
a card, save it; see why a card is refused; pass or fail 3-D Secure at setup.
"""


from conftest import cards, fill_card_element, new_owner
from playwright.sync_api import expect


class Form:
    """The card form opened as the merchant's app opens it, recording what the browser
    reports: console errors (a Content-Security-Policy violation is one) and page errors."""

    def __init__(self, browser, base, owner):
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.problems = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.response = self.page.goto(f"{base}/portal/card-form#token={owner}")
        expect(self.page.locator("form[data-ready=true]")).to_have_count(1)

    def save(self):
        self.page.click("#submit")

    def message(self):
        return self.page.locator("#message")

    def close(self):
        self.context.close()


def test_the_sandbox_form_saves_a_typed_card_and_the_token_leaves_the_address_bar(browser, sandbox):
    _, owner = new_owner(sandbox)
    form = Form(browser, sandbox, owner)
    csp = form.response.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; script-src 'nonce-"), csp
    assert "token=" not in form.page.url, "the bearer token stays out of the address bar and history"
    form.page.fill("#number", "4242 4242 4242 4242")
    form.page.fill("#exp", "12/31")
    form.page.fill("#cvc", "123")
    form.page.check("#set-default")
    form.save()
    expect(form.message()).to_have_text("Saved: Visa ending in 4242 (default).")
    saved = cards(sandbox, owner)
    assert [(c["last4"], c["exp_month"], c["exp_year"], c["is_default"]) for c in saved] == [("4242", 12, 2031, True)]
    assert form.problems == [], form.problems
    form.close()


def test_the_sandbox_form_says_why_a_card_is_refused_and_saves_nothing(browser, sandbox):
    _, owner = new_owner(sandbox)
    form = Form(browser, sandbox, owner)
    form.page.fill("#number", "4242 4242 4242 4241")
    form.page.fill("#exp", "12/31")
    form.page.fill("#cvc", "123")
    form.save()
    expect(form.message()).to_have_text("the card number is incorrect")
    expect(form.message()).to_have_class("error")
    # A card the issuer declines at verification: the form stays usable for another.
    form.page.fill("#number", "4000 0000 0000 9995")
    form.save()
    expect(form.message()).to_contain_text("the card could not be verified")
    assert cards(sandbox, owner) == []
    form.page.fill("#number", "5555 5555 5555 4444")
    form.save()
    expect(form.message()).to_have_text("Saved: Mastercard ending in 4444 (default).")
    form.close()


def test_the_form_without_a_token_says_so(browser, sandbox):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{sandbox}/portal/card-form")
    expect(page.locator("#message")).to_contain_text("needs a token")
    expect(page.locator("#submit")).to_be_disabled()
    context.close()


def test_stripe_elements_saves_a_card_confirmed_in_the_browser(browser, stripe):
    _, owner = new_owner(stripe)
    form = Form(browser, stripe, owner)
    fill_card_element(form, "4242424242424242")
    form.save()
    expect(form.message()).to_have_text("Saved: Visa ending in 4242 (default).")
    saved = cards(stripe, owner)
    assert [(c["last4"], c["brand"]) for c in saved] == [("4242", "visa")]
    assert form.problems == [], form.problems
    form.close()


def test_stripe_3d_secure_at_setup_is_completed_in_the_browser(browser, stripe):
    _, owner = new_owner(stripe)
    form = Form(browser, stripe, owner)
    fill_card_element(form, "4000002760003184")
    form.save()
    form.page.get_by_role("button", name="Complete authentication").click()
    expect(form.message()).to_have_text("Saved: Visa ending in 3184 (default).")
    assert [c["last4"] for c in cards(stripe, owner)] == ["3184"]
    form.close()


def test_stripe_3d_secure_failed_at_setup_saves_nothing(browser, stripe):
    _, owner = new_owner(stripe)
    form = Form(browser, stripe, owner)
    fill_card_element(form, "4000002760003184")
    form.save()
    form.page.get_by_role("button", name="Fail authentication").click()
    expect(form.message()).to_contain_text("authentication failed")
    expect(form.message()).to_have_class("error")
    assert cards(stripe, owner) == []
    form.close()


def test_stripe_declines_at_setup_are_shown_and_nothing_is_saved(browser, stripe):
    _, owner = new_owner(stripe)
    form = Form(browser, stripe, owner)
    fill_card_element(form, "4000000000000002")
    form.save()
    expect(form.message()).to_have_class("error")
    expect(form.message()).not_to_have_text("")
    assert cards(stripe, owner) == []
    form.close()
