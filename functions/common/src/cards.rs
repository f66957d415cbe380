//! Adding a card, shared by the two ways in: the payment-methods API (the owner's bearer
//! token) and the billing portal's card form (the owner's session cookie).

use crate::App;
use crate::views;
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::CustomerId;
use serde::Deserialize;
use serde_json::{Value, json};

/// Begins a card setup for the owner: what the card form needs to confirm it with the PSP.
pub async fn begin_setup(app: &App, owner: &CustomerId) -> Result<Value, Error> {
    let setup = app.services.begin_card_setup(owner).await?;
    Ok(json!({
        "id": setup.id,
        "object": "setup_intent",
        "customer_id": owner,
        "client_secret": setup.client_secret,
        "provider": app.card_form.provider,
        "publishable_key": app.card_form.publishable_key,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The PSP's token for the card (`pm_...`), from its card form.
    payment_method: String,
    #[serde(default)]
    set_default: bool,
    /// The card setup the card form confirmed (`seti_...`, from
    /// `POST /v1/payment-methods/setup-intents`): the PSP verified the card there, so it
    /// is not verified again.
    #[serde(default)]
    setup_intent: Option<String>,
}

/// Registers the card the owner's card form tokenized: the card's view, and whether it
/// replaced a card already saved (the same card again) rather than adding one.
pub async fn register(app: &App, owner: &CustomerId, body: Register) -> Result<(Value, bool), Error> {
    let s = &app.services;
    let token = body.payment_method.trim();
    if !token.starts_with("pm_") || token.len() > 255 {
        return Err(Error::new(
            Code::InvalidPaymentMethod,
            "payment_method must be a payment method token (pm_...) from the payment provider",
        )
        .with("field", "payment_method"));
    }
    if body.setup_intent.as_deref().is_some_and(|s| s.trim().is_empty() || s.len() > 255) {
        return Err(Error::new(Code::InvalidSetupIntent, "setup_intent must be a card setup id (seti_...)")
            .with("field", "setup_intent"));
    }
    let reg = match body.setup_intent.as_deref().map(str::trim) {
        Some(setup) => s.register_set_up_card(owner, setup, token, body.set_default).await?,
        None => s.register_payment_method(owner, token, body.set_default).await?,
    };
    let mut view = views::payment_method(&reg.card);
    view["replaced"] = json!(reg.replaced);
    view["recovered_invoices"] = views::recovery(&reg.recovery);
    Ok((view, reg.replaced))
}
