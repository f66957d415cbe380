"use strict";
(function () {
  const config = JSON.parse(document.getElementById("recoup-config").textContent);
  // The owner's bearer token rides in the fragment, which is never sent to a server; it
  // is taken out of the address bar at once.
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  history.replaceState(null, "", window.location.pathname + window.location.search);

  const form = document.getElementById("card-form");
  const submit = document.getElementById("submit");
  const message = document.getElementById("message");
  let setup = null;
  let stripe = null;
  let card = null;

  function say(text, kind) {
    message.textContent = text;
    message.className = kind || "";
  }

  // From the billing page, the session cookie and the page's CSRF token authenticate the
  // calls; from the merchant's app, the owner's bearer token.
  async function api(url, body) {
    const headers = { "content-type": "application/json" };
    if (config.csrf) {
      headers["x-recoup-csrf"] = config.csrf;
    } else {
      headers["authorization"] = "Bearer " + token;
    }
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: headers,
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(answer.message || ("the request failed (" + response.status + ")"));
    }
    return answer;
  }

  function notifyOpener(saved) {
    const detail = { type: "recoup.payment_method.saved", payment_method: saved.id, brand: saved.brand, last4: saved.last4 };
    if (window.parent !== window) {
      window.parent.postMessage(detail, "*");
    }
    document.dispatchEvent(new CustomEvent("recoup:saved", { detail }));
  }

  async function register(paymentMethod, setupIntent) {
    const saved = await api(config.register_url, {
      payment_method: paymentMethod,
      setup_intent: setupIntent,
      set_default: document.getElementById("set-default").checked,
    });
    const brand = saved.brand.charAt(0).toUpperCase() + saved.brand.slice(1);
    say("Saved: " + brand + " ending in " + saved.last4 + (saved.is_default ? " (default)" : "") + ".", "ok");
    form.dataset.saved = saved.id;
    notifyOpener(saved);
  }

  async function sandboxToken() {
    if (!config.sandbox_tokenize_url) {
      return document.getElementById("test-card").value;
    }
    const [month, year] = document.getElementById("exp").value.split("/").map((s) => parseInt(s.trim(), 10));
    // The sandbox stands in for the PSP: the card details go to its endpoint, not to Recoup's API.
    const response = await fetch(config.sandbox_tokenize_url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ card: {
        number: document.getElementById("number").value,
        exp_month: month || 0,
        exp_year: year < 100 ? 2000 + year : (year || 0),
        cvc: document.getElementById("cvc").value,
      } }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(answer.message || "the card details were refused");
    }
    return answer.id;
  }

  async function onSubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    say("Saving…");
    try {
      if (config.provider === "stripe") {
        const result = await stripe.confirmCardSetup(setup.client_secret, { payment_method: { card: card } });
        if (result.error) {
          throw new Error(result.error.message || "the card was declined");
        }
        const pm = result.setupIntent.payment_method;
        await register(typeof pm === "string" ? pm : pm.id, result.setupIntent.id);
      } else {
        await register(await sandboxToken(), setup.id);
      }
    } catch (error) {
      say(error.message, "error");
      // A failed or refused setup cannot be confirmed again: begin a new one.
      try { await begin(); } catch (e) { say(e.message, "error"); return; }
    }
    submit.disabled = false;
  }

  async function begin() {
    setup = await api(config.setup_url, {});
  }

  async function start() {
    if (!token && !config.csrf) {
      say("This page needs a token: open it from your account.", "error");
      return;
    }
    try {
      await begin();
    } catch (error) {
      say(error.message, "error");
      return;
    }
    if (config.provider === "stripe") {
      stripe = window.Stripe(setup.publishable_key || config.publishable_key);
      card = stripe.elements().create("card");
      card.mount("#card-element");
      document.getElementById("stripe-fields").hidden = false;
    } else if (config.sandbox_tokenize_url) {
      document.getElementById("sandbox-fields").hidden = false;
    } else {
      document.getElementById("sandbox-tokens").hidden = false;
    }
    form.addEventListener("submit", onSubmit);
    submit.disabled = false;
    form.dataset.ready = "true";
  }

  start();
})();
