//! The portal's markup, written out in Rust: a template engine would cost the portal's
//! Lambda package more than its budget allows. Every value from the customer's data goes
//! through [`esc`].

use serde_json::Value;

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text(v: &Value) -> String {
    esc(v.as_str().unwrap_or_default())
}

const STYLE: &str = "
body { margin: 0; font: 16px/1.5 -apple-system, \"Segoe UI\", Helvetica, Arial, sans-serif; color: #1a1a1a; background: #f6f7f9; }
main { max-width: 860px; margin: 0 auto; padding: 16px; }
section { background: #fff; border-radius: 8px; padding: 16px; margin: 16px 0; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 0; }
table { width: 100%; border-collapse: collapse; } th, td { text-align: left; padding: 8px 4px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 13px; background: #e5e7eb; }
.paid, .valid, .active { background: #d1fae5; } .payment_failed, .expiring { background: #fef3c7; } .error, .invalid, .expired, .errored { background: #fee2e2; }
.banner { background: #fee2e2; border-left: 4px solid #b91c1c; padding: 12px; border-radius: 4px; }
.notice { background: #e0f2fe; border-left: 4px solid #0369a1; padding: 12px; border-radius: 4px; }
.reason { color: #555; font-size: 14px; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
form { display: inline; } button { font: inherit; padding: 4px 10px; margin: 2px 0; cursor: pointer; }
form.stack { display: block; max-width: 360px; } form.stack label { display: block; margin: 8px 0 4px; }
form.stack input:not([type=checkbox]), form.stack select { font: inherit; width: 100%; box-sizing: border-box; padding: 6px; }
form.stack button { margin-top: 12px; } form.stack label.check { display: flex; gap: 8px; align-items: center; }
h3 { font-size: 16px; margin: 20px 0 0; }
details.attempts { font-size: 14px; color: #444; margin-top: 4px; } details.attempts ol { margin: 4px 0; padding-left: 20px; }
:focus-visible { outline: 3px solid #1d4ed8; outline-offset: 2px; }
@media (max-width: 600px) { th.wide, td.wide { display: none; } }
";

fn form(action: &str, csrf: &str, label: &str, button: &str) -> String {
    format!(
        r#"<form method="post" action="{}"><input type="hidden" name="csrf" value="{}"><button type="submit" aria-label="{}">{}</button></form>"#,
        esc(action),
        esc(csrf),
        esc(label),
        esc(button)
    )
}

fn document(title: &str, nonce: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style nonce=\"{}\">{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        esc(title),
        esc(nonce)
    )
}

/// The billing page for the values `pages::page_values` gathers.
pub fn portal(v: &Value, nonce: &str) -> String {
    let owner = v["owner"].as_bool().unwrap_or(false);
    let csrf = v["csrf"].as_str().unwrap_or_default();
    let base = v["base"].as_str().unwrap_or_default();
    let list = |key: &str| v[key].as_array().cloned().unwrap_or_default();
    let mut b = String::new();
    b.push_str("<h1>Billing &amp; Plans</h1>\n");
    b.push_str(&format!("<p>{}</p>\n", text(&v["email"])));
    if let Some(notice) = v["notice"].as_str() {
        b.push_str(&format!("<p class=\"notice\" role=\"status\">{}</p>\n", esc(notice)));
    }
    for s in list("subscriptions").iter().filter(|s| s["status"] == "errored") {
        let fix = if owner {
            "Update your card below: what is owed is charged at once and the subscription resumes."
        } else {
            "Ask your account's owner to update the card."
        };
        b.push_str(&format!(
            "<p class=\"banner\" role=\"alert\">Your subscription {} is suspended because a payment failed. {fix}</p>\n",
            text(&s["description"])
        ));
    }

    b.push_str("<section aria-labelledby=\"bills\">\n<h2 id=\"bills\">Bills</h2>\n");
    let invoices = list("invoices");
    if invoices.is_empty() {
        b.push_str("<p>No bills yet.</p>\n");
    } else {
        b.push_str("<table>\n<thead><tr><th scope=\"col\">Date</th><th scope=\"col\" class=\"wide\">Description</th><th scope=\"col\">Amount</th><th scope=\"col\">Status</th>");
        if owner {
            b.push_str("<th scope=\"col\"><span class=\"sr\">Action</span></th>");
        }
        b.push_str("</tr></thead>\n<tbody>\n");
        for i in &invoices {
            b.push_str(&format!(
                "<tr><td>{}</td><td class=\"wide\">{}</td><td>{}</td><td><span class=\"badge {}\">{}</span>",
                text(&i["date"]),
                text(&i["description"]),
                text(&i["amount"]),
                text(&i["status_class"]),
                text(&i["status"])
            ));
            if let Some(reason) = i["reason"].as_str() {
                b.push_str(&format!("<div class=\"reason\">{}</div>", esc(reason)));
            }
            let attempts = i["attempts"].as_array().cloned().unwrap_or_default();
            if attempts.len() > 1 || attempts.iter().any(|a| a["reason"].is_string()) {
                b.push_str(&format!("<details class=\"attempts\"><summary>Attempts ({})</summary><ol>", attempts.len()));
                for a in &attempts {
                    b.push_str(&format!("<li>{}: {}", text(&a["date"]), text(&a["result"])));
                    if let Some(reason) = a["reason"].as_str() {
                        b.push_str(&format!(". {}", esc(reason)));
                    }
                    b.push_str("</li>");
                }
                b.push_str("</ol></details>");
            }
            b.push_str("</td>");
            if owner {
                b.push_str("<td>");
                if i["payable"].as_bool().unwrap_or(false) {
                    let action = format!("{base}portal/invoices/{}/pay", i["id"].as_str().unwrap_or_default());
                    let label = format!("Pay {} now", i["amount"].as_str().unwrap_or_default());
                    b.push_str(&form(&action, csrf, &label, "Pay now"));
                }
                b.push_str("</td>");
            }
            b.push_str("</tr>\n");
        }
        b.push_str("</tbody>\n</table>\n");
    }
    b.push_str("</section>\n");

    if owner {
        b.push_str("<section aria-labelledby=\"cards\">\n<h2 id=\"cards\">Payment methods</h2>\n");
        let cards = list("cards");
        if cards.is_empty() {
            b.push_str("<p>No card saved.</p>\n");
        } else {
            b.push_str("<table>\n<thead><tr><th scope=\"col\">Card</th><th scope=\"col\">Expires</th><th scope=\"col\">Status</th><th scope=\"col\"><span class=\"sr\">Actions</span></th></tr></thead>\n<tbody>\n");
            for c in &cards {
                let (brand, last4, id) = (
                    c["brand"].as_str().unwrap_or_default(),
                    c["last4"].as_str().unwrap_or_default(),
                    c["id"].as_str().unwrap_or_default(),
                );
                let is_default = c["is_default"].as_bool().unwrap_or(false);
                b.push_str(&format!(
                    "<tr><td>{} ending {}{}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>",
                    esc(brand),
                    esc(last4),
                    if is_default { " <span class=\"badge\">Default</span>" } else { "" },
                    text(&c["expiry"]),
                    text(&c["status"]),
                    text(&c["status_label"])
                ));
                if !is_default {
                    let label = format!("Make the {brand} card ending {last4} the default");
                    b.push_str(&form(&format!("{base}portal/payment-methods/{id}/default"), csrf, &label, "Make default"));
                }
                let label = format!("Remove the {brand} card ending {last4}");
                b.push_str(&form(&format!("{base}portal/payment-methods/{id}/remove"), csrf, &label, "Remove"));
                b.push_str("</td></tr>\n");
            }
            b.push_str("</tbody>\n</table>\n");
        }
        b.push_str(&format!("<p><a id=\"add-card\" href=\"{}portal/card-form\">Add a card</a></p>\n", esc(base)));
        b.push_str("</section>\n");
    }

    if owner {
        b.push_str(&wallet(v, base, csrf));
    }

    let subscriptions = list("subscriptions");
    if !subscriptions.is_empty() {
        b.push_str("<section aria-labelledby=\"subscriptions\">\n<h2 id=\"subscriptions\">Subscriptions</h2>\n<table>\n<thead><tr><th scope=\"col\">Plan</th><th scope=\"col\">Status</th><th scope=\"col\">Renews</th></tr></thead>\n<tbody>\n");
        for s in &subscriptions {
            b.push_str(&format!(
                "<tr><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{}</td></tr>\n",
                text(&s["description"]),
                text(&s["status"]),
                text(&s["status"]),
                text(&s["renews"])
            ));
        }
        b.push_str("</tbody>\n</table>\n</section>\n");
    }
    document("Billing & Plans", nonce, &b)
}

/// The wallet: balances, a refill with a chosen card, and automatic refill.
fn wallet(v: &Value, base: &str, csrf: &str) -> String {
    let wallets = v["wallets"].as_array().cloned().unwrap_or_default();
    let cards = v["cards"].as_array().cloned().unwrap_or_default();
    let currency = v["currency"].as_str().unwrap_or("USD");
    let hidden = |name: &str, value: &str| format!(r#"<input type="hidden" name="{}" value="{}">"#, esc(name), esc(value));
    let mut b = String::from("<section aria-labelledby=\"wallet\">\n<h2 id=\"wallet\">Wallet</h2>\n");
    if wallets.is_empty() {
        b.push_str(&format!("<p>Balance: <strong class=\"balance\" data-currency=\"{}\">none yet</strong></p>\n", esc(currency)));
    }
    for w in &wallets {
        b.push_str(&format!(
            "<p>Balance: <strong class=\"balance\" data-currency=\"{}\">{}</strong>{}</p>\n",
            text(&w["currency"]),
            text(&w["balance"]),
            if w["refill_in_progress"].as_bool().unwrap_or(false) { " <span class=\"badge\">Refill in progress</span>" } else { "" }
        ));
    }
    if cards.is_empty() {
        b.push_str("<p>Add a card to refill your wallet.</p>\n");
    } else {
        b.push_str(&format!(r#"<form class="stack" method="post" action="{}portal/wallet/refill">"#, esc(base)));
        b.push_str(&hidden("csrf", csrf));
        b.push_str(&hidden("key", v["refill_key"].as_str().unwrap_or_default()));
        b.push_str(&hidden("currency", currency));
        b.push_str(&format!(
            "<label for=\"refill-amount\">Amount ({})</label><input id=\"refill-amount\" name=\"amount\" inputmode=\"decimal\" autocomplete=\"off\" required>",
            esc(currency)
        ));
        b.push_str("<label for=\"refill-card\">Card</label><select id=\"refill-card\" name=\"payment_method\">");
        for c in &cards {
            let label = format!(
                "{} ending {}{}",
                c["brand"].as_str().unwrap_or_default(),
                c["last4"].as_str().unwrap_or_default(),
                if c["is_default"].as_bool().unwrap_or(false) { " (default)" } else { "" }
            );
            let selected = if c["is_default"].as_bool().unwrap_or(false) { " selected" } else { "" };
            b.push_str(&format!("<option value=\"{}\"{selected}>{}</option>", text(&c["id"]), esc(&label)));
        }
        b.push_str("</select><button type=\"submit\">Refill</button></form>\n");
    }
    let auto = wallets.iter().find(|w| w["currency"] == currency).map(|w| w["auto_refill"].clone()).unwrap_or(Value::Null);
    let enabled = auto["enabled"].as_bool().unwrap_or(false);
    if auto["disabled"].as_bool().unwrap_or(false) && !enabled {
        b.push_str("<p class=\"banner\" role=\"alert\">Automatic refill was turned off because the card was declined. Update your card and turn it back on.</p>\n");
    }
    b.push_str(&format!(
        "<h3>Automatic refill</h3>\n<form class=\"stack\" method=\"post\" action=\"{}portal/wallet/auto-refill\">",
        esc(base)
    ));
    b.push_str(&hidden("csrf", csrf));
    b.push_str(&hidden("currency", currency));
    b.push_str(&format!(
        "<label class=\"check\"><input type=\"checkbox\" id=\"auto-enabled\" name=\"enabled\"{}> Refill automatically from my default card</label>",
        if enabled { " checked" } else { "" }
    ));
    b.push_str(&format!(
        "<label for=\"auto-threshold\">When the balance falls under ({})</label><input id=\"auto-threshold\" name=\"threshold\" inputmode=\"decimal\" value=\"{}\">",
        esc(currency),
        text(&auto["threshold"])
    ));
    b.push_str(&format!(
        "<label for=\"auto-amount\">Add ({})</label><input id=\"auto-amount\" name=\"amount\" inputmode=\"decimal\" value=\"{}\">",
        esc(currency),
        text(&auto["amount"])
    ));
    b.push_str("<button type=\"submit\">Save automatic refill</button></form>\n</section>\n");
    b
}

/// The 3-D Secure page: Stripe.js confirms the payment with the client secret from the
/// fragment, then the page asks the portal to record the bank's answer and goes back.
pub fn authenticate(amount: &str, config: &Value, stripe_js: &str, nonce: &str) -> String {
    let back = config["back_url"].as_str().unwrap_or_default().to_owned();
    let config = config.to_string().replace('<', "\\u003c");
    let body = format!(
        "<h1>Confirm your payment</h1>\n<section>\n<p>Your bank asks you to confirm the payment of <strong>{amount}</strong>.</p>\n\
         <button type=\"button\" id=\"confirm\">Confirm with my bank</button>\n\
         <p id=\"message\" role=\"status\" aria-live=\"polite\"></p>\n\
         <p><a id=\"back\" href=\"{back}\">Back to your billing page</a></p>\n</section>\n\
         <script type=\"application/json\" id=\"recoup-config\">{config}</script>\n\
         <script nonce=\"{nonce}\" src=\"{js}\"></script>\n<script nonce=\"{nonce}\">{script}</script>\n",
        amount = esc(amount),
        back = esc(&back),
        nonce = esc(nonce),
        js = esc(stripe_js),
        script = AUTHENTICATE_SCRIPT,
    );
    document("Confirm your payment", nonce, &body)
}

const AUTHENTICATE_SCRIPT: &str = r#"
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("recoup-config").textContent);
  const secret = new URLSearchParams(window.location.hash.slice(1)).get("cs");
  history.replaceState(null, "", window.location.pathname + window.location.search);
  const button = document.getElementById("confirm");
  const message = document.getElementById("message");
  if (!secret) {
    message.textContent = "Start the payment again from your billing page.";
    button.disabled = true;
    return;
  }
  button.addEventListener("click", async function () {
    button.disabled = true;
    message.textContent = "Waiting for your bank…";
    await window.Stripe(config.publishable_key).confirmCardPayment(secret).catch(() => ({}));
    // Whatever the bank said, Recoup asks Stripe and records it.
    const response = await fetch(config.reconcile_url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-recoup-csrf": config.csrf },
    });
    const answer = await response.json().catch(() => ({}));
    window.location.assign(answer.location || config.back_url);
  });
})();
"#;

/// The page that says why there is no billing page for this request.
pub fn denied(reason: &str, nonce: &str) -> String {
    document(
        "Link not valid",
        nonce,
        &format!(
            "<h1>This link is not valid</h1>\n<p>{}. Open your billing page again from the latest email, or ask for a new link.</p>\n",
            esc(reason)
        ),
    )
}

/// A refusal of a form.
pub fn refused(message: &str, nonce: &str) -> String {
    document("Refused", nonce, &format!("<h1>Refused</h1>\n<p>{}</p>\n", esc(message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_escaped_and_members_see_no_cards_or_forms() {
        let values = json!({
            "email": "<b>ada</b>@example.com", "owner": false, "csrf": "c",
            "invoices": [{"id": "in_1", "payable": true, "date": "2030-01-01", "description": "<script>x()</script>",
                          "amount": "$1.00", "status": "Open", "status_class": "open", "reason": null}],
            "cards": [{"id": "pmt_1", "brand": "visa", "last4": "4242", "expiry": "01/2030", "is_default": true,
                       "status": "valid", "status_label": "Valid"}],
            "subscriptions": [],
        });
        let page = portal(&values, "n");
        assert!(page.contains("&lt;b&gt;ada&lt;/b&gt;") && page.contains("&lt;script&gt;x()&lt;/script&gt;"));
        assert!(!page.contains("<script") && !page.contains("4242") && !page.contains("<form"));
        assert!(page.contains(r#"<style nonce="n">"#));
    }
}
