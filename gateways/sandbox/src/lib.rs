//! The sandbox payment provider: a deterministic PSP for local runs, demos and tests that
//! understands Stripe's documented test cards and `pm_card_*` test tokens, so the same
//! scenarios run unchanged against Stripe's test mode. It keeps its own records (tokens,
//! charges by idempotency key) in the store, under `PSP#` keys, so it behaves the same in
//! the local product and in a Lambda deployment in sandbox mode.
//!
//! Card numbers reach only [`SandboxGateway::tokenize`] (the stand-in for the PSP's card
//! form). The vault keeps what a PSP would show a merchant — brand, last four, expiry,
//! fingerprint, and which test behaviour applies — never the number itself.
//!
//! Beyond Stripe's cards, `pm_sandbox_…` tokens script network-level outcomes (see
//! `docs/sandbox.md`): `pm_sandbox_mastercard_51_advice24`, `pm_sandbox_visa_04`,
//! `pm_sandbox_visa_51_recover3`, `pm_sandbox_visa_timeout`, `pm_sandbox_visa_exp0130`.

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use recoup_shared::domain::card::{CardBrand, CardExpiry, Fingerprint, Funding, luhn_valid};
use recoup_shared::domain::decline::{Decline, ErrorType, RetryClass, classify, decline_for_network_code};
use recoup_shared::domain::invoice::AttemptOutcome;
use recoup_shared::domain::payment_method::VerifiedCard;
use recoup_shared::ids::{CustomerId, InvoiceId};
use recoup_shared::ports::gateway::{CardSetup, ChargeRequest, GatewayError, PaymentGateway};
use recoup_shared::store::repo::{Entity, Repo, Tx, Versioned};
use recoup_shared::store::{Key, StoreError, keys};
use recoup_shared::time::Clock;

/// How a test card behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Behavior {
    Succeed,
    /// Attaching fails (Stripe checks the card when it is attached to a customer).
    RefuseAttach {
        decline_code: String,
    },
    /// Attaches; every charge is declined, or the first `recover_after` charges are.
    DeclineCharges {
        decline_code: String,
        #[serde(default)]
        network_code: Option<String>,
        #[serde(default)]
        advice_code: Option<String>,
        #[serde(default)]
        recover_after: Option<u32>,
    },
    /// Authentication was done at setup; off-session charges still need the cardholder.
    AuthenticateOffSession,
    /// The charge succeeds at the PSP but the first answer for each idempotency key is
    /// lost, as after a timeout.
    LoseFirstResponse,
}

struct TestCard {
    number: &'static str,
    behavior: fn() -> Behavior,
}

fn succeed() -> Behavior {
    Behavior::Succeed
}

macro_rules! refuse {
    ($code:literal) => {
        (|| Behavior::RefuseAttach { decline_code: $code.into() }) as fn() -> Behavior
    };
}

/// Stripe's documented test card numbers.
const TEST_CARDS: &[TestCard] = &[
    TestCard { number: "4242424242424242", behavior: succeed },
    TestCard { number: "4000056655665556", behavior: succeed },
    TestCard { number: "5555555555554444", behavior: succeed },
    TestCard { number: "2223003122003222", behavior: succeed },
    TestCard { number: "5200828282828210", behavior: succeed },
    TestCard { number: "5105105105105100", behavior: succeed },
    TestCard { number: "378282246310005", behavior: succeed },
    TestCard { number: "6011111111111117", behavior: succeed },
    TestCard { number: "3056930009020004", behavior: succeed },
    TestCard { number: "3566002020360505", behavior: succeed },
    TestCard { number: "6200000000000005", behavior: succeed },
    TestCard { number: "4000000000000002", behavior: refuse!("generic_decline") },
    TestCard { number: "4000000000009995", behavior: refuse!("insufficient_funds") },
    TestCard { number: "4000000000009987", behavior: refuse!("lost_card") },
    TestCard { number: "4000000000009979", behavior: refuse!("stolen_card") },
    TestCard { number: "4000000000000069", behavior: refuse!("expired_card") },
    TestCard { number: "4000000000000127", behavior: refuse!("incorrect_cvc") },
    TestCard { number: "4000000000000119", behavior: refuse!("processing_error") },
    TestCard { number: "4000000000006975", behavior: refuse!("card_velocity_exceeded") },
    TestCard { number: "4100000000000019", behavior: refuse!("fraudulent") },
    TestCard {
        number: "4000000000000341",
        behavior: || Behavior::DeclineCharges {
            decline_code: "card_declined".into(),
            network_code: None,
            advice_code: None,
            recover_after: None,
        },
    },
    TestCard { number: "4000002760003184", behavior: || Behavior::AuthenticateOffSession },
    TestCard { number: "4000000000003220", behavior: || Behavior::AuthenticateOffSession },
    TestCard { number: "4000002500003155", behavior: succeed },
];

/// Stripe's `pm_card_*` test tokens and the card each stands for.
const TEST_TOKENS: &[(&str, &str)] = &[
    ("pm_card_visa", "4242424242424242"),
    ("pm_card_visa_debit", "4000056655665556"),
    ("pm_card_mastercard", "5555555555554444"),
    ("pm_card_mastercard_debit", "5200828282828210"),
    ("pm_card_mastercard_prepaid", "5105105105105100"),
    ("pm_card_amex", "378282246310005"),
    ("pm_card_discover", "6011111111111117"),
    ("pm_card_diners", "3056930009020004"),
    ("pm_card_jcb", "3566002020360505"),
    ("pm_card_unionpay", "6200000000000005"),
    // Stripe's decline tokens, by the exact names Stripe's test mode knows.
    ("pm_card_visa_chargeDeclined", "4000000000000002"),
    ("pm_card_visa_chargeDeclinedInsufficientFunds", "4000000000009995"),
    ("pm_card_visa_chargeDeclinedLostCard", "4000000000009987"),
    ("pm_card_visa_chargeDeclinedStolenCard", "4000000000009979"),
    ("pm_card_chargeDeclinedExpiredCard", "4000000000000069"),
    ("pm_card_chargeDeclinedIncorrectCvc", "4000000000000127"),
    ("pm_card_chargeDeclinedProcessingError", "4000000000000119"),
    ("pm_card_visa_chargeDeclinedVelocityLimitExceeded", "4000000000006975"),
    ("pm_card_radarBlock", "4100000000000019"),
    // Earlier sandbox spellings, kept as aliases.
    ("pm_card_chargeDeclined", "4000000000000002"),
    ("pm_card_chargeDeclinedInsufficientFunds", "4000000000009995"),
    ("pm_card_chargeDeclinedLostCard", "4000000000009987"),
    ("pm_card_chargeDeclinedStolenCard", "4000000000009979"),
    ("pm_card_chargeDeclinedVelocityLimitExceeded", "4000000000006975"),
    ("pm_card_chargeDeclinedFraudulent", "4100000000000019"),
    ("pm_card_chargeCustomerFail", "4000000000000341"),
    ("pm_card_authenticationRequired", "4000002760003184"),
    ("pm_card_threeDSecure2Required", "4000000000003220"),
    ("pm_card_authenticationRequiredOnSetup", "4000002500003155"),
];

/// Card brand from the number's issuer prefix.
pub fn brand_of(number: &str) -> CardBrand {
    let p = |n: usize| number.get(..n).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    match () {
        _ if number.starts_with('4') => CardBrand::Visa,
        _ if (51..=55).contains(&p(2)) || (2221..=2720).contains(&p(4)) => CardBrand::Mastercard,
        _ if p(2) == 34 || p(2) == 37 => CardBrand::Amex,
        _ if p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) => CardBrand::Discover,
        _ if p(2) == 36 || p(2) == 38 || (300..=305).contains(&p(3)) => CardBrand::Diners,
        _ if p(2) == 35 => CardBrand::Jcb,
        _ if p(2) == 62 => CardBrand::Unionpay,
        _ => CardBrand::Unknown,
    }
}

fn fingerprint(material: &str) -> Fingerprint {
    // Keyed, so a fingerprint cannot be reversed by hashing every possible card number.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"recoup-sandbox-fingerprint").expect("any key length works");
    mac.update(material.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Fingerprint::new(format!("fp_{hex}"))
}

fn decline_for(decline_code: &str) -> Decline {
    Decline::from_decline_code(decline_code)
}

/// What the vault knows about a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxCard {
    pub token: String,
    pub brand: CardBrand,
    pub last4: String,
    pub expiry: CardExpiry,
    pub fingerprint: Fingerprint,
    /// How the test card is funded (Stripe's debit test cards are debit, the rest credit).
    #[serde(default = "credit")]
    pub funding: Funding,
    pub behavior: Behavior,
}

fn credit() -> Funding {
    Funding::Credit
}

/// Stripe's debit and prepaid test cards; every other test card is credit.
fn funding_of(number: &str) -> Funding {
    match number {
        "4000056655665556" | "5200828282828210" => Funding::Debit,
        "5105105105105100" => Funding::Prepaid,
        _ => Funding::Credit,
    }
}

impl Entity for SandboxCard {
    const KIND: &'static str = "sandbox_card";
    fn key(&self) -> Key {
        keys::psp("TOKEN", &self.token)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum StoredOutcome {
    Succeeded { charge_id: String },
    Declined { decline: Decline },
}

impl StoredOutcome {
    fn to_attempt(&self) -> AttemptOutcome {
        match self {
            StoredOutcome::Succeeded { charge_id } => AttemptOutcome::Succeeded { charge_id: charge_id.clone() },
            StoredOutcome::Declined { decline } => AttemptOutcome::Declined(decline.clone()),
        }
    }
}

/// A charge the sandbox made, by idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SandboxCharge {
    idempotency_key: String,
    psp_token: String,
    amount: i64,
    currency: String,
    outcome: StoredOutcome,
    created_at: recoup_shared::time::Timestamp,
}

impl Entity for SandboxCharge {
    const KIND: &'static str = "sandbox_charge";
    fn key(&self) -> Key {
        keys::psp("CHARGE", &self.idempotency_key)
    }
}

/// Charges seen per token, for cards that recover after a number of declines; and the
/// decline that condemned the card (lost, stolen, pick-up...), after which the issuer
/// refuses its verification too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SandboxCardState {
    token: String,
    charges: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    condemned: Option<Decline>,
}

impl Entity for SandboxCardState {
    const KIND: &'static str = "sandbox_card_state";
    fn key(&self) -> Key {
        keys::psp("CARDSTATE", &self.token)
    }
}

/// A card setup begun for the card form, bound to its customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SandboxSetup {
    id: String,
    customer_id: CustomerId,
    created_at: recoup_shared::time::Timestamp,
}

impl Entity for SandboxSetup {
    const KIND: &'static str = "sandbox_setup";
    fn key(&self) -> Key {
        keys::psp("SETUP", &self.id)
    }
    fn expires_at(&self) -> Option<i64> {
        Some((self.created_at + chrono::TimeDelta::days(1)).timestamp())
    }
}

/// Why tokenization refused card details (the PSP's card form errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TokenizeError {
    pub code: &'static str,
    pub message: &'static str,
}

pub struct SandboxGateway {
    repo: Repo,
    clock: Arc<dyn Clock>,
}

impl SandboxGateway {
    pub fn new(repo: Repo, clock: Arc<dyn Clock>) -> Self {
        SandboxGateway { repo, clock }
    }

    /// The PSP's card form: turns card details into a token. The number is used to pick
    /// the test behaviour and is then dropped.
    pub async fn tokenize(
        &self,
        number: &str,
        exp_month: u8,
        exp_year: u16,
        cvc: &str,
    ) -> Result<Result<SandboxCard, TokenizeError>, StoreError> {
        let digits: String = number.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        if !(12..=19).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || !luhn_valid(digits.as_bytes())
        {
            return Ok(Err(TokenizeError { code: "incorrect_number", message: "the card number is incorrect" }));
        }
        let Ok(expiry) = CardExpiry::new(exp_month, exp_year) else {
            return Ok(Err(TokenizeError {
                code: "invalid_expiry_month",
                message: "the expiry month or year is invalid",
            }));
        };
        if expiry.is_expired(self.clock.now()) {
            return Ok(Err(TokenizeError {
                code: "invalid_expiry_year",
                message: "the card's expiry date is in the past",
            }));
        }
        if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Err(TokenizeError { code: "invalid_cvc", message: "the security code is invalid" }));
        }
        let behavior = TEST_CARDS.iter().find(|c| c.number == digits).map_or(Behavior::Succeed, |c| (c.behavior)());
        let card = SandboxCard {
            token: format!("pm_{}", recoup_shared::ids::EventId::generate().as_str().trim_start_matches("evt_")),
            brand: brand_of(&digits),
            last4: digits[digits.len() - 4..].to_owned(),
            expiry,
            fingerprint: fingerprint(&digits),
            funding: funding_of(&digits),
            behavior,
        };
        let mut tx = Tx::new();
        tx.save(&Versioned::new(card.clone()))?;
        self.repo.commit(tx).await?;
        Ok(Ok(card))
    }

    /// What a token stands for: a Stripe test token, a scripted sandbox token, or a card
    /// tokenized here.
    pub async fn resolve(&self, token: &str) -> Result<Option<SandboxCard>, StoreError> {
        let now = self.clock.now();
        if let Some((_, number)) = TEST_TOKENS.iter().find(|(t, _)| *t == token) {
            let behavior =
                TEST_CARDS.iter().find(|c| c.number == *number).map_or(Behavior::Succeed, |c| (c.behavior)());
            return Ok(Some(SandboxCard {
                token: token.to_owned(),
                brand: brand_of(number),
                last4: number[number.len() - 4..].to_owned(),
                expiry: CardExpiry::months_after(now, 24),
                fingerprint: fingerprint(number),
                funding: funding_of(number),
                behavior,
            }));
        }
        if let Some(spec) = token.strip_prefix("pm_sandbox_") {
            return Ok(parse_scripted(token, spec, now));
        }
        Ok(self.repo.load::<SandboxCard>(&keys::psp("TOKEN", token)).await?.map(Versioned::into_inner))
    }

    async fn record_charge(
        &self,
        request: &ChargeRequest,
        card: &SandboxCard,
    ) -> Result<(AttemptOutcome, bool), StoreError> {
        loop {
            if let Some(existing) =
                self.repo.load::<SandboxCharge>(&keys::psp("CHARGE", &request.idempotency_key)).await?
            {
                let same = existing.psp_token == request.psp_token
                    && existing.amount == request.amount.amount()
                    && existing.currency == request.amount.currency().code();
                if !same {
                    let d = Decline::new(ErrorType::ProviderError, "idempotency key reused with different parameters");
                    return Ok((AttemptOutcome::Declined(d), false));
                }
                return Ok((existing.outcome.to_attempt(), false));
            }
            let state =
                self.repo.load::<SandboxCardState>(&keys::psp("CARDSTATE", &card.token)).await?.unwrap_or_else(|| {
                    Versioned::new(SandboxCardState { token: card.token.clone(), charges: 0, condemned: None })
                });
            let now = self.clock.now();
            let charge_id =
                format!("ch_sbx_{}", recoup_shared::ids::EventId::generate().as_str().trim_start_matches("evt_"));
            let outcome = if card.expiry.is_expired(now) {
                StoredOutcome::Declined { decline: decline_for("expired_card") }
            } else {
                match &card.behavior {
                    Behavior::Succeed | Behavior::LoseFirstResponse => StoredOutcome::Succeeded { charge_id },
                    Behavior::RefuseAttach { decline_code } => {
                        StoredOutcome::Declined { decline: decline_for(decline_code) }
                    }
                    Behavior::AuthenticateOffSession if request.off_session => {
                        StoredOutcome::Declined { decline: decline_for("authentication_required") }
                    }
                    // On-session the sandbox completes the 3-D Secure challenge itself.
                    Behavior::AuthenticateOffSession => StoredOutcome::Succeeded { charge_id },
                    Behavior::DeclineCharges { recover_after: Some(k), .. } if state.charges >= *k => {
                        StoredOutcome::Succeeded { charge_id }
                    }
                    // The cardholder is present and passes the challenge.
                    Behavior::DeclineCharges { decline_code, .. }
                        if decline_code == "authentication_required" && !request.off_session =>
                    {
                        StoredOutcome::Succeeded { charge_id }
                    }
                    Behavior::DeclineCharges { decline_code, network_code, advice_code, .. } => {
                        let mut d = decline_for(decline_code);
                        d.network_decline_code = network_code.clone();
                        d.advice_code = advice_code.clone();
                        StoredOutcome::Declined { decline: d }
                    }
                }
            };
            let record = SandboxCharge {
                idempotency_key: request.idempotency_key.clone(),
                psp_token: request.psp_token.clone(),
                amount: request.amount.amount(),
                currency: request.amount.currency().code().to_owned(),
                outcome: outcome.clone(),
                created_at: now,
            };
            let mut next_state = state.clone();
            next_state.charges += 1;
            if let StoredOutcome::Declined { decline } = &outcome
                && let RetryClass::Hard { reason } = classify(decline, card.brand.network())
                && reason.blocks_card()
            {
                next_state.condemned = Some(decline.clone());
            }
            let mut tx = Tx::new();
            tx.save(&Versioned::new(record))?;
            tx.save(&next_state)?;
            match self.repo.commit(tx).await {
                Ok(_) => return Ok((outcome.to_attempt(), true)),
                // The same key raced us (op 0) or another charge on the card did (op 1):
                // read again; a raced key returns the stored outcome above.
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// `pm_sandbox_<brand>[_<segment>]*`: segments are a two-character network response code
/// (`51`, `05`, `04`, `1a`...), `advice<NN>`, `recover<K>`, `timeout`, `exp<MMYY>`, `ok`,
/// and `id<anything>` to name distinct cards.
fn parse_scripted(token: &str, spec: &str, now: recoup_shared::time::Timestamp) -> Option<SandboxCard> {
    let mut parts = spec.split('_');
    let brand = match parts.next()? {
        "visa" => CardBrand::Visa,
        "mastercard" => CardBrand::Mastercard,
        "amex" => CardBrand::Amex,
        "discover" => CardBrand::Discover,
        _ => return None,
    };
    let mut code: Option<String> = None;
    let mut advice: Option<String> = None;
    let mut recover: Option<u32> = None;
    let mut timeout = false;
    let mut expiry = CardExpiry::months_after(now, 24);
    let mut identity = vec![brand.as_str().to_owned()];
    for part in parts {
        if let Some(a) = part.strip_prefix("advice") {
            advice = Some(a.to_owned());
        } else if let Some(k) = part.strip_prefix("recover") {
            recover = Some(k.parse().ok()?);
        } else if let Some(e) = part.strip_prefix("exp") {
            let (m, y) = (e.get(..2)?.parse::<u8>().ok()?, e.get(2..4)?.parse::<u16>().ok()?);
            expiry = CardExpiry::new(m, 2000 + y).ok()?;
            continue; // a new expiry is the same card
        } else if part == "timeout" {
            timeout = true;
        } else if part == "ok" || part.starts_with("id") {
        } else if part.len() == 2 {
            code = Some(part.to_ascii_uppercase());
        } else {
            return None;
        }
        identity.push(part.to_owned());
    }
    let behavior = match (&code, timeout) {
        (_, true) => Behavior::LoseFirstResponse,
        (Some(c), false) => {
            let (decline_code, _) = decline_for_network_code(c);
            Behavior::DeclineCharges {
                decline_code: decline_code.unwrap_or("do_not_honor").to_owned(),
                network_code: Some(c.clone()),
                advice_code: advice,
                recover_after: recover,
            }
        }
        (None, false) => Behavior::Succeed,
    };
    let last4 = match brand {
        CardBrand::Visa => "4242",
        CardBrand::Mastercard => "4444",
        CardBrand::Amex => "0005",
        _ => "1117",
    };
    Some(SandboxCard {
        token: token.to_owned(),
        brand,
        last4: last4.to_owned(),
        expiry,
        fingerprint: fingerprint(&format!("sandbox:{}", identity.join("_"))),
        funding: Funding::Credit,
        behavior,
    })
}

#[async_trait]
impl PaymentGateway for SandboxGateway {
    async fn verify(&self, psp_token: &str, _customer: &CustomerId) -> Result<VerifiedCard, GatewayError> {
        let card = self
            .resolve(psp_token)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?
            .ok_or(GatewayError::InvalidToken)?;
        if card.expiry.is_expired(self.clock.now()) {
            return Err(GatewayError::Declined(decline_for("expired_card")));
        }
        if let Behavior::RefuseAttach { decline_code } = &card.behavior {
            return Err(GatewayError::Declined(decline_for(decline_code)));
        }
        let state = self
            .repo
            .load::<SandboxCardState>(&keys::psp("CARDSTATE", &card.token))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        if let Some(decline) = state.and_then(|s| s.into_inner().condemned) {
            return Err(GatewayError::Declined(decline));
        }
        Ok(VerifiedCard {
            psp_token: card.token,
            brand: card.brand,
            last4: card.last4,
            expiry: card.expiry,
            fingerprint: card.fingerprint,
            funding: Some(card.funding),
            // Stripe's default test cards are issued in the United States.
            country: Some("US".to_owned()),
        })
    }

    async fn begin_setup(&self, customer: &CustomerId) -> Result<CardSetup, GatewayError> {
        let random = || recoup_shared::ids::EventId::generate().as_str().trim_start_matches("evt_").to_owned();
        let setup = SandboxSetup {
            id: format!("seti_sbx_{}", random()),
            customer_id: customer.clone(),
            created_at: self.clock.now(),
        };
        let mut tx = Tx::new();
        tx.save(&Versioned::new(setup.clone())).map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        self.repo.commit(tx).await.map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(CardSetup { client_secret: format!("{}_secret_{}", setup.id, random()), id: setup.id })
    }

    async fn verify_setup(
        &self,
        setup_id: &str,
        psp_token: &str,
        customer: &CustomerId,
    ) -> Result<VerifiedCard, GatewayError> {
        let setup = self
            .repo
            .load::<SandboxSetup>(&keys::psp("SETUP", setup_id))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?
            .ok_or(GatewayError::SetupMismatch("the sandbox has no such setup"))?;
        if &setup.customer_id != customer {
            return Err(GatewayError::SetupMismatch("the setup is not this customer's"));
        }
        self.verify(psp_token, customer).await
    }

    async fn charge(&self, request: &ChargeRequest) -> AttemptOutcome {
        let card = match self.resolve(&request.psp_token).await {
            Ok(Some(card)) => card,
            Ok(None) => {
                return AttemptOutcome::Declined(
                    Decline::new(ErrorType::PaymentMethodInvalid, "no such payment method")
                        .with_decline_code("invalid_number"),
                );
            }
            Err(_) => return AttemptOutcome::Unknown,
        };
        match self.record_charge(request, &card).await {
            // The charge exists at the PSP, but its first answer is lost on the way back.
            Ok((_, true)) if card.behavior == Behavior::LoseFirstResponse => AttemptOutcome::Unknown,
            Ok((outcome, _)) => outcome,
            Err(_) => AttemptOutcome::Unknown,
        }
    }

    async fn detach(&self, _psp_token: &str) -> Result<(), GatewayError> {
        // Sandbox tokens carry no customer binding to undo.
        Ok(())
    }

    async fn lookup(&self, idempotency_key: &str) -> Result<Option<AttemptOutcome>, GatewayError> {
        let found = self
            .repo
            .load::<SandboxCharge>(&keys::psp("CHARGE", idempotency_key))
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(found.map(|c| c.outcome.to_attempt()))
    }

    async fn payment_owner(&self, _payment_id: &str) -> Result<Option<(InvoiceId, CustomerId)>, GatewayError> {
        // The sandbox reports no disputes, the only notices that need it.
        Ok(None)
    }

    fn name(&self) -> &'static str {
        "sandbox"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_card_number_is_luhn_valid_and_has_a_known_brand() {
        for c in TEST_CARDS {
            assert!(luhn_valid(c.number.as_bytes()), "{}", c.number);
            assert_ne!(brand_of(c.number), CardBrand::Unknown, "{}", c.number);
        }
        for (token, number) in TEST_TOKENS {
            assert!(TEST_CARDS.iter().any(|c| c.number == *number), "{token}");
        }
    }

    #[test]
    fn stripes_decline_tokens_are_known_by_stripes_own_names() {
        // The names of Stripe's "Declined payments" test tokens, and the decline each gives.
        for (token, code) in [
            ("pm_card_visa_chargeDeclined", "generic_decline"),
            ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
            ("pm_card_visa_chargeDeclinedLostCard", "lost_card"),
            ("pm_card_visa_chargeDeclinedStolenCard", "stolen_card"),
            ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
            ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc"),
            ("pm_card_chargeDeclinedProcessingError", "processing_error"),
            ("pm_card_visa_chargeDeclinedVelocityLimitExceeded", "card_velocity_exceeded"),
            ("pm_card_radarBlock", "fraudulent"),
        ] {
            let (_, number) = TEST_TOKENS.iter().find(|(t, _)| *t == token).unwrap_or_else(|| panic!("{token}"));
            let card = TEST_CARDS.iter().find(|c| c.number == *number).unwrap();
            assert_eq!((card.behavior)(), Behavior::RefuseAttach { decline_code: code.into() }, "{token}");
        }
    }

    #[test]
    fn brands_follow_the_issuer_prefix() {
        assert_eq!(brand_of("4242424242424242"), CardBrand::Visa);
        assert_eq!(brand_of("5555555555554444"), CardBrand::Mastercard);
        assert_eq!(brand_of("2223003122003222"), CardBrand::Mastercard);
        assert_eq!(brand_of("378282246310005"), CardBrand::Amex);
        assert_eq!(brand_of("6011111111111117"), CardBrand::Discover);
    }

    #[test]
    fn scripted_tokens_carry_network_codes_and_keep_their_fingerprint_across_expiries() {
        let now = recoup_shared::time::parse("2030-01-01T00:00:00Z");
        let a = parse_scripted("t", "mastercard_51_advice24_ida", now).unwrap();
        match &a.behavior {
            Behavior::DeclineCharges { decline_code, network_code, advice_code, .. } => {
                assert_eq!(decline_code, "insufficient_funds");
                assert_eq!(network_code.as_deref(), Some("51"));
                assert_eq!(advice_code.as_deref(), Some("24"));
            }
            other => panic!("{other:?}"),
        }
        let old = parse_scripted("t", "visa_ida_exp0130", now).unwrap();
        let new = parse_scripted("t", "visa_ida_exp0135", now).unwrap();
        assert_eq!(old.fingerprint, new.fingerprint);
        assert_ne!(old.expiry, new.expiry);
        assert!(parse_scripted("t", "visa_nonsense", now).is_none());
    }
}
