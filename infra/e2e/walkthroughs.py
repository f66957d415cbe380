"""The README's walkthroughs, through the deployed HTTP API.

Nothing here reaches into the functions: requests go to the API Gateway URL with bearer
tokens from the local identity provider, and the dunning runs on the deployed schedules,
bus rules and SQS event-source mappings. The AWS APIs are read only to observe what a
customer cannot see over HTTP: the emails the notifier recorded, and the queues.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Callable

from boto3.dynamodb.types import TypeDeserializer

from idp import IdentityProvider
from stack import Stack


def item_body(item: dict) -> dict:
    """A table item's body: a map in `data`, or, where that saved write units, raw DEFLATE
    of its JSON in `deflated` (see shared/src/store/deflated.rs)."""
    if "data" in item:
        return TypeDeserializer().deserialize(item["data"])
    return json.loads(zlib.decompress(item["deflated"]["B"], -zlib.MAX_WBITS))

POLL_SECONDS = 5


class WalkthroughFailed(AssertionError):
    """What the deployed stack did differs from what the walkthrough expects."""


def check(condition: bool, message: str, detail: object = None) -> None:
    """Fails the walkthrough with ``message`` (and what was seen) unless ``condition``."""
    if not condition:
        raise WalkthroughFailed(f"{message}: {detail!r}" if detail is not None else message)


def wait_for(what: str, probe: Callable[[], tuple[bool, str]], timeout: float) -> None:
    """Polls ``probe`` until it says done, printing its progress when it changes.

    ``probe`` returns (done, progress); the walkthrough fails after ``timeout`` seconds
    with the last progress seen.
    """
    started = time.monotonic()
    last = None
    while True:
        done, progress = probe()
        elapsed = time.monotonic() - started
        if progress != last:
            print(f"    [{elapsed:5.0f}s] {what}: {progress}", flush=True)
            last = progress
        if done:
            return
        if elapsed > timeout:
            raise WalkthroughFailed(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {progress}")
        time.sleep(POLL_SECONDS)


@dataclass
class Reply:
    """An HTTP answer: status and JSON body (the text when it is not JSON)."""

    status: int
    body: object


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A browser's first step: see the redirect and its cookie, do not follow it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401, ANN001
        return None


def page(url: str, cookie: str | None = None, form: bytes | None = None) -> tuple[int, dict, str]:
    """GET a page (or POST a form) without following redirects: status, headers, body."""
    request = urllib.request.Request(url, data=form, method="POST" if form is not None else "GET")
    if form is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if cookie:
        request.add_header("Cookie", cookie)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode("utf-8", errors="replace")


class Api:
    """A client of the deployed HTTP API."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def call(self, method: str, path: str, token: str | None = None, body: dict | None = None) -> Reply:
        """Sends one request; any status is an answer, not an exception."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            return Reply(status, json.loads(text) if text else None)
        except json.JSONDecodeError:
            return Reply(status, text)

    def expect(self, status: int, method: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
        """Sends one request and fails unless it answers ``status``; returns the body."""
        reply = self.call(method, path, token, body)
        check(reply.status == status, f"{method} {path} answered {reply.status}, expected {status}", reply.body)
        return reply.body


class Walkthroughs:
    """The scenarios, sharing one deployed stack and one identity provider."""

    def __init__(self, stack: Stack, idp: IdentityProvider, retry_offsets: int, sweep_seconds: int):
        self.stack = stack
        self.idp = idp
        self.api = Api(stack.api_url)
        self.merchant = idp.token("merchant", subject="ops@merchant.example")
        # Every retry is one sweep of the retry scheduler; the first may be a whole period away.
        self.dunning_timeout = (retry_offsets + 1) * sweep_seconds + 120
        self._dynamodb = stack.emulator.client("dynamodb")
        self._sqs = stack.emulator.client("sqs")

    def customer(self, email: str) -> tuple[str, str]:
        """A new customer created by the merchant, and a token for its owner."""
        cus = self.api.expect(201, "POST", "/v1/customers", self.merchant, {"email": email})["id"]
        return cus, self.idp.token("owner", customer_id=cus)

    # -- the authorizer ---------------------------------------------------------------------

    def the_authorizer_lets_only_valid_tokens_through(self) -> None:
        """Missing, foreign-signed, expired and wrong-audience tokens get 401; a good one 200."""
        now = int(time.time())
        refused = {
            "no token": None,
            "signed by an unknown key": self.idp.foreign_token("merchant"),
            "expired": self.idp.token("merchant", exp=now - 60, iat=now - 3600, nbf=now - 3600),
            "another audience": self.idp.token("merchant", aud="someone-else"),
            "another issuer": self.idp.token("merchant", iss="https://issuer.invalid"),
        }
        for case, token in refused.items():
            reply = self.api.call("GET", "/v1/customers", token)
            check(reply.status == 401, f"a token {case} was not refused by the authorizer", (reply.status, reply.body))
        self.api.expect(200, "GET", "/v1/customers", self.merchant)
        fetched = set(self.idp.requests_served)
        check(
            {"/.well-known/openid-configuration", "/.well-known/jwks.json"} <= fetched,
            "the authorizer did not fetch the issuer's discovery document and keys",
            sorted(fetched),
        )
        # Routes without the authorizer: the card form, and Stripe's webhooks (refused by
        # the function itself, not by the authorizer, when unsigned).
        page = self.api.call("GET", "/portal/card-form")
        check(page.status == 200, "the card form is not served without a token", (page.status, page.body))
        hook = self.api.call("POST", "/v1/webhooks/stripe", None, {"type": "ping"})
        check(isinstance(hook.body, dict) and "code" in hook.body,
              "the webhook route did not reach its function", (hook.status, hook.body))
        print("  the JWT authorizer refuses 5 kinds of bad token, lets a good one through, "
              "and leaves the card form and webhooks open", flush=True)

    # -- merchant webhooks on the deployed stack --------------------------------------------

    def a_webhook_endpoint_is_registered_and_private_addresses_are_refused(self) -> str:
        """The deployed product refuses endpoints on this machine or the metadata service,
        and takes a public https one. Returns its id (events after now reach it)."""
        for url in ("https://127.0.0.1:9/hook", "https://169.254.169.254/latest", "http://hooks.example.com/x"):
            reply = self.api.call("POST", "/v1/webhook-endpoints", self.merchant,
                                  {"url": url, "enabled_events": ["invoice.paid"]})
            check(reply.status == 400 and reply.body.get("code") in ("url_forbidden_address", "url_not_https"),
                  f"the endpoint {url} was not refused", (reply.status, reply.body))
        # A public name that resolves nowhere (.invalid): every attempt fails and is retried.
        endpoint = self.api.expect(201, "POST", "/v1/webhook-endpoints", self.merchant,
                                   {"url": "https://hooks.recoup.invalid/recoup", "enabled_events": ["invoice.paid"]})
        check(endpoint["secret"].startswith("whsec_"), "the signing secret, shown once", endpoint)
        return endpoint["id"]

    def the_dispatcher_attempts_the_delivery_and_schedules_the_next(self, endpoint: str) -> None:
        """The bus rule feeds the webhooks queue, the dispatcher function records the
        attempt (the name does not resolve) and puts the next on the queue, delayed."""
        path = f"/v1/webhook-endpoints/{endpoint}/deliveries"

        # Walkthrough 1 pays three invoices: Ada's bill and her two wallet refills.
        def attempted() -> tuple[bool, str]:
            log = self.api.expect(200, "GET", path, self.merchant)["data"]
            done = len(log) >= 3 and all(d["attempts"] >= 1 and d["last_error"] is not None for d in log)
            return done, f"{len(log)} deliveries: {log[:1]}"

        wait_for("the first webhook attempts", attempted, 180)
        log = self.api.expect(200, "GET", path, self.merchant)["data"]
        check(all(d["event_type"] == "invoice.paid" and d["status"] == "pending"
                  and isinstance(d["next_attempt_at"], str) for d in log), "the deliveries after a failed attempt", log)
        # Deleted: its next attempt (a delayed message) finds no endpoint and ends.
        self.api.expect(204, "DELETE", f"/v1/webhook-endpoints/{endpoint}", self.merchant)
        print(f"  webhooks: private and plain-http endpoints refused; the dispatcher tried {endpoint} "
              f"({log[0]['last_error'][:60]}), next attempt at {log[0]['next_attempt_at']}", flush=True)

    # -- walkthrough 1: a card, a paid invoice, a declined one ------------------------------

    def a_card_pays_an_invoice_and_a_decline_is_explained(self) -> str:
        """README walkthrough 1. Returns the declined invoice (retried by the sweep later)."""
        cus, owner = self.customer("ada@example.com")
        card = self.api.expect(201, "POST", "/v1/payment-methods", owner, {"payment_method": "pm_card_visa"})
        check((card["brand"], card["last4"], card["status"], card["is_default"]) == ("visa", "4242", "valid", True),
              "the registered card", card)
        inv = self.api.expect(201, "POST", "/v1/invoices", self.merchant,
                              {"customer_id": cus, "amount": 2500, "currency": "usd", "description": "Pro plan"})
        check(inv["status"] == "paid" and inv["transactions"][0]["status"] == "succeeded", "Ada's invoice", inv)

        refused = self.api.call("POST", "/v1/payment-methods", owner, {"payment_method": "4242424242424242"})
        check(refused.status == 400 and refused.body.get("code") == "raw_card_data_refused",
              "a card number sent to the API", (refused.status, refused.body))

        bob, bob_owner = self.customer("bob@example.com")
        self.api.expect(201, "POST", "/v1/payment-methods", bob_owner, {"payment_method": "pm_card_chargeCustomerFail"})
        declined = self.api.expect(201, "POST", "/v1/invoices", self.merchant,
                                   {"customer_id": bob, "amount": 500, "currency": "jpy"})
        check(declined["status"] == "open" and declined["transactions"][0]["error_type"] == "declined"
              and isinstance(declined.get("next_attempt_at"), str), "Bob's declined invoice", declined)

        # The wallet: Ada's owner refills it with her card through the deployed API.
        refill = self.api.expect(201, "POST", "/v1/wallet/refills", owner, {"amount": 1000, "currency": "usd"})
        check(refill["status"] == "succeeded" and refill["wallet"]["balance"] == 1000, "Ada's wallet refill", refill)

        # The billing portal: a merchant's link opens a session; the page shows the bill.
        # Under the API's stage, the browser resolves the page's relative links and
        # redirects against its own address.
        session = self.api.expect(201, "POST", "/v1/portal-sessions", self.merchant, {"customer_id": cus})
        token = session["url"].split("token=", 1)[1]
        opened = f"{self.api.base_url}/portal/session?token={token}"
        status, headers, _ = page(opened)
        cookie = headers.get("Set-Cookie") or headers.get("set-cookie") or ""
        location = urllib.parse.urljoin(opened, headers.get("Location") or headers.get("location") or "")
        check(status == 303 and "HttpOnly" in cookie and "Path=" not in cookie
              and location == f"{self.api.base_url}/portal", "the portal link did not open a session", (status, headers))
        status, _, body = page(location, cookie.split(";", 1)[0])
        check(status == 200 and "$25.00" in body and "Paid" in body and "$10.00" in body,
              "the billing page (the bill, the wallet's balance)", (status, body[:500]))
        # The page's refill form posts under the stage, and refills.
        action = re.search(r'action="([^"]*portal/wallet/refill)"', body)
        csrf = re.search(r'name="csrf" value="([^"]+)"', body)
        key = re.search(r'name="key" value="([^"]+)"', body)
        target = urllib.parse.urljoin(location, action.group(1)) if action else ""
        check(bool(csrf and key) and target == f"{self.api.base_url}/portal/wallet/refill",
              "the billing page's refill form", body[:2000])
        form = urllib.parse.urlencode({"csrf": csrf.group(1), "key": key.group(1), "currency": "USD", "amount": "5.00"})
        status, headers, _ = page(target, cookie.split(";", 1)[0], form.encode())
        location = urllib.parse.urljoin(target, headers.get("Location") or headers.get("location") or "")
        check(status == 303 and location == f"{self.api.base_url}/portal?notice=refilled", "the portal refill",
              (status, headers))
        wallets = self.api.expect(200, "GET", "/v1/wallet", owner)["data"]
        check(wallets and wallets[0]["balance"] == 1500, "the wallet after the portal refill", wallets)
        altered = token[:-1] + ("a" if token[-1] != "a" else "b")
        status, _, _ = page(f"{self.api.base_url}/portal/session?token={altered}")
        check(status == 401, "an altered portal link was not refused", status)
        print(f"  portal: a session under {self.api.base_url}, the page, a refill by its form; wallet at $15.00",
              flush=True)

        # Each caller sees only its own customer's data.
        other = self.api.call("GET", f"/v1/invoices/{declined['id']}", owner)
        check(other.status in (403, 404), "Ada's owner reading Bob's invoice", (other.status, other.body))
        print(f"  walkthrough 1: {inv['id']} paid by a Visa; {declined['id']} declined, "
              f"next attempt at {declined['next_attempt_at']}", flush=True)
        return declined["id"]

    # -- walkthrough 2: dunning on the deployed schedules -----------------------------------

    def dunning_errors_the_subscription_and_a_new_card_recovers_it(self, declined_invoice: str) -> None:
        """README walkthrough 2, on real time: the retry sweep every few minutes, the charge
        queue, the bus rules to the subscription updater and the notifier."""
        carol, carol_owner = self.customer("carol@example.com")
        self.api.expect(201, "POST", "/v1/payment-methods", carol_owner, {"payment_method": "pm_sandbox_visa_51"})
        sub = self.api.expect(201, "POST", "/v1/subscriptions", self.merchant,
                              {"customer_id": carol, "amount": 4900, "currency": "usd", "interval": "month",
                               "description": "Team plan"})
        check(sub["first_payment"]["outcome"] == "declined", "Carol's first payment", sub)
        sub_id, inv_id = sub["id"], sub["first_payment"]["invoice_id"]

        # A charge the provider does not answer: pending, then reconciled by the same sweep.
        dave, dave_owner = self.customer("dave@example.com")
        self.api.expect(201, "POST", "/v1/payment-methods", dave_owner, {"payment_method": "pm_sandbox_visa_timeout"})
        pending = self.api.expect(201, "POST", "/v1/invoices", self.merchant,
                                  {"customer_id": dave, "amount": 700, "currency": "usd"})
        check(pending["status"] == "open" and pending["transactions"][0]["status"] == "pending",
              "Dave's unanswered charge", pending)

        def invoice_progress(invoice_id: str) -> Callable[[], tuple[bool, str]]:
            def probe() -> tuple[bool, str]:
                inv = self.api.expect(200, "GET", f"/v1/invoices/{invoice_id}", self.merchant)
                return inv["status"] in ("error", "paid"), f"{inv['status']}, {inv['attempt_count']} attempt(s)"
            return probe

        print(f"  walkthrough 2: waiting for the retry sweeps (up to {self.dunning_timeout}s)", flush=True)
        wait_for(f"Carol's invoice {inv_id}", invoice_progress(inv_id), self.dunning_timeout)
        inv = self.api.expect(200, "GET", f"/v1/invoices/{inv_id}", self.merchant)
        check(inv["status"] == "error", "Carol's invoice after the last retry", inv)
        txns = inv["transactions"]
        check(all(t["status"] == "failed" and t["error_type"] == "payment_method_declined" for t in txns)
              and all(t["trigger"] == "retry" for t in txns[1:]) and len(txns) >= 2,
              "every attempt declined, every retry by the schedule", txns)

        wait_for(f"Dave's invoice {pending['id']}", invoice_progress(pending["id"]), 2 * 60)
        settled = self.api.expect(200, "GET", f"/v1/invoices/{pending['id']}", self.merchant)
        check(settled["status"] == "paid" and settled["attempt_count"] == 1,
              "the unanswered charge reconciled by its idempotency key, not charged again", settled)

        wait_for(f"Bob's invoice {declined_invoice}", invoice_progress(declined_invoice), self.dunning_timeout)
        check(self.api.expect(200, "GET", f"/v1/invoices/{declined_invoice}", self.merchant)["status"] == "error",
              "Bob's invoice after the last retry")

        def subscription_status(want: str) -> Callable[[], tuple[bool, str]]:
            def probe() -> tuple[bool, str]:
                s = self.api.expect(200, "GET", f"/v1/subscriptions/{sub_id}", self.merchant)
                return s["status"] == want, f"{s['status']}, has_failed_payments={s['has_failed_payments']}"
            return probe

        wait_for(f"subscription {sub_id} errored", subscription_status("errored"), 90)
        failed = self.api.expect(200, "GET", "/v1/subscriptions?has_failed_payments=true", self.merchant)
        check(sub_id in [s["id"] for s in failed["data"]], "the errored subscription among those with failed payments",
              failed)

        def carol_emails() -> tuple[bool, str]:
            subjects = [e["subject"] for e in self.emails_to(carol)]
            return any("unpaid" in s for s in subjects), f"{len(subjects)} email(s): {subjects}"

        wait_for("the notifier's emails to Carol", carol_emails, 90)
        check(any(self.stack.parameters["PortalUrl"] in e["body"] for e in self.emails_to(carol)),
              "the dunning email links the portal", self.emails_to(carol))

        card = self.api.expect(201, "POST", "/v1/payment-methods", carol_owner,
                               {"payment_method": "pm_card_mastercard", "set_default": True})
        recovered = card["recovered_invoices"]
        check(recovered and recovered[0]["invoice_id"] == inv_id and recovered[0]["outcome"] == "paid",
              "the new card pays the outstanding invoice at once", recovered)
        paid = self.api.expect(200, "GET", f"/v1/invoices/{inv_id}", carol_owner)
        check(paid["status"] == "paid" and paid["transactions"][-1]["trigger"] == "new_payment_method",
              "Carol's invoice after the new card", paid)
        wait_for(f"subscription {sub_id} active again", subscription_status("active"), 90)
        detail = self.api.expect(200, "GET", f"/v1/subscriptions/{sub_id}", self.merchant)
        check(detail["has_failed_payments"] == 0, "the recovered subscription", detail)
        print(f"  walkthrough 2: {inv_id} errored after {len(txns)} attempts, {sub_id} errored, "
              f"Carol emailed, then paid by a new card and {sub_id} active again", flush=True)

    # -- what the queues hold --------------------------------------------------------------

    def emails_to(self, customer: str) -> list[dict]:
        """The emails the notifier recorded for a customer (the table's email listing). The
        index projects keys only, so the emails are then read from the table by key."""
        table = self.stack.resources["Table"]
        entries = self._dynamodb.query(
            TableName=table,
            IndexName="GSI1",
            KeyConditionExpression="GSI1PK = :emails",
            ExpressionAttributeValues={":emails": {"S": "EMAILS"}},
        )["Items"]
        items = []
        keys = [{"PK": e["PK"], "SK": e["SK"]} for e in entries]
        for start in range(0, len(keys), 100):
            pending = {table: {"Keys": keys[start:start + 100], "ConsistentRead": True}}
            while pending:
                out = self._dynamodb.batch_get_item(RequestItems=pending)
                items.extend(out["Responses"].get(table, []))
                pending = out.get("UnprocessedKeys") or {}
        emails = [item_body(item) for item in items]
        return [e for e in emails if e["customer_id"] == customer]

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """Each queue of the stack (logical id) with its visible and in-flight messages."""
        depths = {}
        for logical_id, resource in self.stack.template["Resources"].items():
            if resource["Type"] != "AWS::SQS::Queue":
                continue
            attrs = self._sqs.get_queue_attributes(
                QueueUrl=self.stack.resources[logical_id],
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            depths[logical_id] = (int(attrs["ApproximateNumberOfMessages"]),
                                  int(attrs["ApproximateNumberOfMessagesNotVisible"]))
        return depths

    def every_queue_drains_and_no_dead_letter_remains(self) -> None:
        """The work queues empty out, and the dead-letter queues never received anything."""
        def probe() -> tuple[bool, str]:
            depths = self.queue_depths()
            busy = {q: d for q, d in depths.items() if d != (0, 0)}
            return not busy, f"busy: {busy}" if busy else f"{len(depths)} queues empty"

        wait_for("the queues to drain", probe, 120)
        print("  every queue drained; no dead letters", flush=True)
