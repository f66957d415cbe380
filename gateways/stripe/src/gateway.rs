//! The payment-gateway port over Stripe.
//!
//! - A Stripe customer per Recoup customer, created on first need (with an idempotency key
//!   derived from the customer, so two racing requests create one) and its id kept in
//!   Recoup's table under the adapter's own keys.
//! - Registration is a SetupIntent for off-session use: Stripe's verification of the card,
//!   which attaches it to the customer. What Stripe says about the card is kept.
//! - Charges are PaymentIntents confirmed at once, `off_session` for scheduled and merchant
//!   charges. The attempt's idempotency key is Stripe's `Idempotency-Key` and goes in the
//!   metadata too, with the invoice and attempt number.
//! - An unanswered charge is looked up by that metadata (Stripe's search); if Stripe has no
//!   such PaymentIntent the engine sends the identical request again with the same key.

use async_trait::async_trait;
use recoup_shared::domain::card::{CardBrand, CardExpiry, Fingerprint, Funding, country_code};
use recoup_shared::domain::decline::{Decline, ErrorType, decline_for_network_code};
use recoup_shared::domain::invoice::AttemptOutcome;
use recoup_shared::domain::payment_method::VerifiedCard;
use recoup_shared::ids::{CustomerId, InvoiceId};
use recoup_shared::ports::gateway::{CardSetup, ChargeRequest, GatewayError, PaymentGateway};
use recoup_shared::store::repo::{Entity, Repo, Tx, Versioned};
use recoup_shared::store::{Key, StoreError, keys};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, CallError, Customer, Page, PaymentIntent, PaymentMethod, SetupIntent, StripeClient};

/// The metadata key holding the attempt's idempotency key.
pub const METADATA_KEY: &str = "recoup_idempotency_key";

/// The Stripe customer of a Recoup customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StripeCustomer {
    customer_id: CustomerId,
    stripe_customer_id: String,
}

impl Entity for StripeCustomer {
    const KIND: &'static str = "stripe_customer";
    fn key(&self) -> Key {
        keys::psp("STRIPE_CUSTOMER", self.customer_id.as_str())
    }
}

pub struct StripeGateway {
    client: StripeClient,
    repo: Repo,
    /// Stripe customer ids already looked up. The mapping never changes once recorded, so
    /// a warm function charges without reading it again.
    known_customers: std::sync::Mutex<std::collections::HashMap<CustomerId, String>>,
}

/// Stripe customer ids kept in memory before the cache starts over.
const KNOWN_CUSTOMERS_MAX: usize = 10_000;

/// The decline Stripe's error object describes, in Recoup's taxonomy: the decline code
/// (or the error code when there is none: `expired_card`, `incorrect_cvc`,
/// `authentication_required`), the network's response code and its advice code.
pub fn decline_of(error: &ApiError) -> Decline {
    let code = error.decline_code.as_deref().or(error.code.as_deref()).unwrap_or("generic_decline");
    let code = match code {
        "payment_intent_authentication_failure" => "authentication_required",
        c => c,
    };
    let mut decline = Decline::from_decline_code(code);
    if let Some(network) = error.network_decline_code.as_deref().filter(|c| !c.is_empty()) {
        decline.network_decline_code = Some(network.to_owned());
        if decline.error_type == ErrorType::Unknown {
            let (_, from_network) = decline_for_network_code(network);
            decline.error_type = from_network;
        }
    }
    if let Some(advice) = error.network_advice_code.as_deref().filter(|c| !c.is_empty()) {
        decline.advice_code = Some(advice.to_owned());
    }
    decline
}

/// What a PaymentIntent's state means for the attempt. `cardholder_present`: the customer
/// is paying on-session and can complete 3-D Secure, so a PaymentIntent that requires
/// action keeps the attempt pending with its client secret; otherwise it is a decline the
/// customer must act on.
pub fn outcome_of(pi: &PaymentIntent, cardholder_present: bool) -> AttemptOutcome {
    match pi.status.as_str() {
        "succeeded" => AttemptOutcome::Succeeded { charge_id: pi.id.clone() },
        "requires_payment_method" => AttemptOutcome::Declined(
            pi.last_payment_error.as_deref().map_or_else(|| Decline::from_decline_code("generic_decline"), decline_of),
        ),
        "requires_action" => match (&pi.client_secret, cardholder_present) {
            (Some(secret), true) => {
                AttemptOutcome::RequiresAction { charge_id: pi.id.clone(), client_secret: secret.clone() }
            }
            // Off-session, or found later by reconciliation: the cardholder did not
            // authenticate, and must come back to pay.
            (_, _) => AttemptOutcome::Declined(Decline::from_decline_code("authentication_required")),
        },
        "canceled" => {
            AttemptOutcome::Declined(Decline::new(ErrorType::ProviderError, "the PaymentIntent was canceled at Stripe"))
        }
        // `processing` (settled later, by webhook or lookup) and anything unforeseen.
        _ => AttemptOutcome::Unknown,
    }
}

fn unavailable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Unavailable(e.to_string())
}

/// Stripe's search query language quotes with `'`; the keys Recoup makes never hold one,
/// and anything else is refused rather than escaped.
fn searchable(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':')
}

impl StripeGateway {
    pub fn new(client: StripeClient, repo: Repo) -> Self {
        StripeGateway { client, repo, known_customers: Default::default() }
    }

    /// The Stripe customer for `customer`: from memory, else from the store, else created
    /// (on first need).
    async fn stripe_customer(&self, customer: &CustomerId) -> Result<String, GatewayError> {
        let cached =
            self.known_customers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(customer).cloned();
        if let Some(id) = cached {
            return Ok(id);
        }
        let id = self.look_up_or_create_customer(customer).await?;
        let mut known = self.known_customers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= KNOWN_CUSTOMERS_MAX {
            known.clear();
        }
        known.insert(customer.clone(), id.clone());
        Ok(id)
    }

    async fn look_up_or_create_customer(&self, customer: &CustomerId) -> Result<String, GatewayError> {
        let key = keys::psp("STRIPE_CUSTOMER", customer.as_str());
        if let Some(known) = self.repo.load::<StripeCustomer>(&key).await.map_err(unavailable)? {
            return Ok(known.into_inner().stripe_customer_id);
        }
        let form = vec![("metadata[recoup_customer_id]".to_owned(), customer.as_str().to_owned())];
        let created: Customer = self
            .client
            .post("/v1/customers", &form, &format!("recoup-customer-{}", customer.as_str()))
            .await
            .map_err(unavailable)?;
        let record = StripeCustomer { customer_id: customer.clone(), stripe_customer_id: created.id.clone() };
        let mut tx = Tx::new();
        tx.save(&Versioned::new(record)).map_err(unavailable)?;
        match self.repo.commit(tx).await {
            Ok(_) => Ok(created.id),
            // Another request recorded it first: theirs is the customer to use.
            Err(StoreError::ConditionFailed { .. }) => self
                .repo
                .load::<StripeCustomer>(&key)
                .await
                .map_err(unavailable)?
                .map(|r| r.into_inner().stripe_customer_id)
                .ok_or_else(|| unavailable("the Stripe customer record vanished")),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The parameters of a SetupIntent for off-session use by `customer`'s Stripe customer,
    /// labelled with the Recoup customer (and, for the card form, as the form's: its
    /// `setup_intent.succeeded` event then saves the card if the browser did not).
    async fn setup_intent_form(
        &self,
        customer: &CustomerId,
        card_form: bool,
    ) -> Result<Vec<(String, String)>, GatewayError> {
        let mut form = vec![
            ("customer".to_owned(), self.stripe_customer(customer).await?),
            ("usage".to_owned(), "off_session".to_owned()),
            ("payment_method_types[]".to_owned(), "card".to_owned()),
            ("metadata[recoup_customer_id]".to_owned(), customer.as_str().to_owned()),
        ];
        if card_form {
            form.push(("metadata[recoup_card_form]".to_owned(), "true".to_owned()));
        }
        Ok(form)
    }

    /// The attached card as Stripe describes it, labelled with its Recoup customer (in the
    /// PaymentMethod's metadata, so that Stripe's later events about it can be placed).
    async fn card_of(&self, payment_method: &str, customer: &CustomerId) -> Result<VerifiedCard, GatewayError> {
        let form = vec![("metadata[recoup_customer_id]".to_owned(), customer.as_str().to_owned())];
        let pm: PaymentMethod = self
            .client
            .post(&format!("/v1/payment_methods/{payment_method}"), &form, &format!("recoup-label-{payment_method}"))
            .await
            .map_err(unavailable)?;
        verified_card(&pm).ok_or_else(|| {
            GatewayError::Declined(Decline::new(
                ErrorType::PaymentMethodNotSupported,
                "the payment method is not a card",
            ))
        })
    }
}

/// What may be stored about a card PaymentMethod (none for other types, or an expiry that
/// cannot be read).
pub fn verified_card(pm: &PaymentMethod) -> Option<VerifiedCard> {
    let card = pm.card.as_ref()?;
    let expiry = CardExpiry::new(card.exp_month, card.exp_year).ok()?;
    Some(VerifiedCard {
        psp_token: pm.id.clone(),
        brand: CardBrand::parse(&card.brand),
        last4: card.last4.clone(),
        expiry,
        // Stripe's fingerprint identifies the card number across customers; without one,
        // the PaymentMethod itself is the identity.
        fingerprint: Fingerprint::new(
            card.fingerprint.as_ref().map_or_else(|| format!("pm:{}", pm.id), |f| format!("stripe:{f}")),
        ),
        funding: card.funding.as_deref().map(Funding::parse),
        country: card.country.as_deref().and_then(country_code),
    })
}

fn invalid_token(error: &CallError) -> bool {
    match error {
        CallError::Api { status: 404, .. } => true,
        CallError::Api { error, .. } => {
            error.code.as_deref() == Some("resource_missing")
                && error.param.as_deref().is_none_or(|p| p.contains("payment_method"))
        }
        CallError::NoAnswer(_) => false,
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    async fn verify(&self, psp_token: &str, customer: &CustomerId) -> Result<VerifiedCard, GatewayError> {
        let create = self.setup_intent_form(customer, false).await?;
        let key = format!("recoup-setup-{}-{psp_token}", customer.as_str());
        let si: SetupIntent = self.client.post("/v1/setup_intents", &create, &key).await.map_err(unavailable)?;
        let confirm = vec![("payment_method".to_owned(), psp_token.to_owned())];
        let confirmed: Result<SetupIntent, CallError> = self
            .client
            .post(&format!("/v1/setup_intents/{}/confirm", si.id), &confirm, &format!("{key}-confirm"))
            .await;
        let si = match confirmed {
            Ok(si) => si,
            Err(e) if invalid_token(&e) => return Err(GatewayError::InvalidToken),
            Err(CallError::Api { status: 402, error }) => return Err(GatewayError::Declined(decline_of(&error))),
            Err(e) => return Err(unavailable(e)),
        };
        match si.status.as_str() {
            "succeeded" => {
                let pm = si.payment_method.as_ref().map(|p| p.id().to_owned()).unwrap_or_else(|| psp_token.to_owned());
                self.card_of(&pm, customer).await
            }
            "requires_action" => {
                Err(GatewayError::Declined(Decline::from_decline_code("authentication_required").with_message(
                    "the bank asks the cardholder to authenticate this card: add it through the card form",
                )))
            }
            _ => Err(GatewayError::Declined(
                si.last_setup_error
                    .as_deref()
                    .map_or_else(|| Decline::from_decline_code("generic_decline"), decline_of),
            )),
        }
    }

    async fn begin_setup(&self, customer: &CustomerId) -> Result<CardSetup, GatewayError> {
        let create = self.setup_intent_form(customer, true).await?;
        // Each form load is a new setup: a fresh key.
        let key = format!("recoup-setup-form-{}", recoup_shared::ids::EventId::generate().as_str());
        let si: SetupIntent = self.client.post("/v1/setup_intents", &create, &key).await.map_err(unavailable)?;
        let client_secret =
            si.client_secret.ok_or_else(|| unavailable("Stripe returned a SetupIntent without a client secret"))?;
        Ok(CardSetup { id: si.id, client_secret })
    }

    async fn verify_setup(
        &self,
        setup_id: &str,
        psp_token: &str,
        customer: &CustomerId,
    ) -> Result<VerifiedCard, GatewayError> {
        if !setup_id.starts_with("seti_") || !searchable(setup_id) {
            return Err(GatewayError::SetupMismatch("not a SetupIntent id"));
        }
        let si: SetupIntent = match self.client.get(&format!("/v1/setup_intents/{setup_id}"), &[]).await {
            Ok(si) => si,
            Err(CallError::Api { status: 400 | 404, .. }) => {
                return Err(GatewayError::SetupMismatch("Stripe has no such SetupIntent"));
            }
            Err(e) => return Err(unavailable(e)),
        };
        // Only the customer's own setup counts, whoever holds its id.
        let ours = self.stripe_customer(customer).await?;
        if si.customer.as_deref() != Some(ours.as_str())
            || si.metadata.get("recoup_customer_id").map(String::as_str) != Some(customer.as_str())
        {
            return Err(GatewayError::SetupMismatch("the SetupIntent is not this customer's"));
        }
        if si.payment_method.as_ref().map(|p| p.id()) != Some(psp_token) {
            return Err(GatewayError::SetupMismatch("the SetupIntent did not set up this payment method"));
        }
        match si.status.as_str() {
            "succeeded" => self.card_of(psp_token, customer).await,
            "requires_action" => Err(GatewayError::Declined(
                Decline::from_decline_code("authentication_required")
                    .with_message("the cardholder has not completed authentication"),
            )),
            _ => Err(GatewayError::Declined(
                si.last_setup_error
                    .as_deref()
                    .map_or_else(|| Decline::from_decline_code("generic_decline"), decline_of),
            )),
        }
    }

    async fn charge(&self, request: &ChargeRequest) -> AttemptOutcome {
        let stripe_customer = match self.stripe_customer(&request.customer_id).await {
            Ok(c) => c,
            // Nothing was charged; the attempt is reconciled by its key like any other.
            Err(e) => {
                tracing::warn!(error = %e, "Stripe customer unavailable; the attempt stays pending");
                return AttemptOutcome::Unknown;
            }
        };
        let mut form = vec![
            ("amount".to_owned(), request.amount.amount().to_string()),
            ("currency".to_owned(), request.amount.currency().code().to_ascii_lowercase()),
            ("customer".to_owned(), stripe_customer),
            ("payment_method".to_owned(), request.psp_token.clone()),
            ("payment_method_types[]".to_owned(), "card".to_owned()),
            ("confirm".to_owned(), "true".to_owned()),
            (format!("metadata[{METADATA_KEY}]"), request.idempotency_key.clone()),
            ("metadata[recoup_invoice_id]".to_owned(), request.invoice_id.as_str().to_owned()),
            ("metadata[recoup_attempt]".to_owned(), request.attempt.to_string()),
            ("metadata[recoup_customer_id]".to_owned(), request.customer_id.as_str().to_owned()),
            ("metadata[recoup_description]".to_owned(), request.description.clone()),
        ];
        if request.off_session {
            form.push(("off_session".to_owned(), "true".to_owned()));
        }
        match self.client.post::<PaymentIntent>("/v1/payment_intents", &form, &request.idempotency_key).await {
            Ok(pi) => outcome_of(&pi, !request.off_session),
            Err(CallError::Api { status: 402, error }) => AttemptOutcome::Declined(decline_of(&error)),
            Err(CallError::Api { error, .. }) if error.kind.as_deref() == Some("idempotency_error") => {
                AttemptOutcome::Declined(Decline::new(
                    ErrorType::ProviderError,
                    "idempotency key reused with different parameters",
                ))
            }
            Err(e) if invalid_token(&e) => AttemptOutcome::Declined(
                Decline::new(ErrorType::PaymentMethodInvalid, "no such payment method")
                    .with_decline_code("invalid_number"),
            ),
            // A bad key or a request in progress with the same key: nothing was charged, and
            // the customer's retries must not be spent on it. Reconciled later.
            Err(CallError::Api { status: 401 | 403 | 409, ref error }) => {
                tracing::error!(code = ?error.code, "Stripe refused the request; the attempt stays pending");
                AttemptOutcome::Unknown
            }
            Err(CallError::Api { status, error }) => {
                tracing::error!(status, code = ?error.code, "Stripe refused the charge request");
                AttemptOutcome::Declined(Decline::new(
                    ErrorType::ProviderError,
                    format!(
                        "the payment provider refused the request ({})",
                        error.code.as_deref().unwrap_or("no code")
                    ),
                ))
            }
            Err(CallError::NoAnswer(why)) => {
                tracing::warn!(why = %why, "no answer from Stripe; the attempt stays pending");
                AttemptOutcome::Unknown
            }
        }
    }

    async fn detach(&self, psp_token: &str) -> Result<(), GatewayError> {
        let detached: Result<PaymentMethod, CallError> = self
            .client
            .post(&format!("/v1/payment_methods/{psp_token}/detach"), &[], &format!("recoup-detach-{psp_token}"))
            .await;
        match detached {
            Ok(_) => Ok(()),
            // Gone already, or no longer attached: the end state is the one wanted.
            Err(CallError::Api { status: 400 | 404, .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn lookup(&self, idempotency_key: &str) -> Result<Option<AttemptOutcome>, GatewayError> {
        if !searchable(idempotency_key) {
            return Err(unavailable("the idempotency key cannot be searched for"));
        }
        let query = format!("metadata['{METADATA_KEY}']:'{idempotency_key}'");
        let page: Page<PaymentIntent> = self
            .client
            .get("/v1/payment_intents/search", &[("query", &query), ("limit", "10")])
            .await
            .map_err(unavailable)?;
        // With several (a replay after the idempotency window), a success wins.
        // Reconciliation comes after the cardholder had their chance: a PaymentIntent still
        // waiting for them counts as not authenticated.
        let outcomes: Vec<AttemptOutcome> = page.data.iter().map(|pi| outcome_of(pi, false)).collect();
        Ok(outcomes
            .iter()
            .find(|o| matches!(o, AttemptOutcome::Succeeded { .. }))
            .or_else(|| outcomes.first())
            .cloned())
    }

    async fn payment_outcome(&self, payment_id: &str) -> Result<Option<AttemptOutcome>, GatewayError> {
        if !payment_id.starts_with("pi_") || !searchable(payment_id) {
            return Ok(None);
        }
        match self.client.get::<PaymentIntent>(&format!("/v1/payment_intents/{payment_id}"), &[]).await {
            // The cardholder has had their chance: one still waiting for them did not authenticate.
            Ok(pi) => Ok(Some(outcome_of(&pi, false))),
            Err(CallError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn payment_owner(&self, payment_id: &str) -> Result<Option<(InvoiceId, CustomerId)>, GatewayError> {
        if !payment_id.starts_with("pi_") || !searchable(payment_id) {
            return Ok(None);
        }
        let pi: PaymentIntent = match self.client.get(&format!("/v1/payment_intents/{payment_id}"), &[]).await {
            Ok(pi) => pi,
            Err(CallError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let invoice = pi.metadata.get("recoup_invoice_id").and_then(|i| InvoiceId::parse(i));
        let customer = pi.metadata.get("recoup_customer_id").and_then(|c| CustomerId::parse(c));
        Ok(invoice.zip(customer))
    }

    fn name(&self) -> &'static str {
        "stripe"
    }
}
