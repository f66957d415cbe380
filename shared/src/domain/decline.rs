//! Why a payment failed, and whether the card networks let us try again.
//!
//! Every failure is reported with one of eleven `error_type`s (the taxonomy merchants see
//! on transactions). Whether a retry is allowed depends on more than the type: the PSP's
//! decline code, the card network's response code (Visa decline categories) and
//! Mastercard's Merchant Advice Code all speak to it. [`classify`] combines them.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use crate::domain::card::Network;

/// The failure taxonomy shown on a failed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The issuer wants the cardholder to authenticate (3-D Secure).
    AuthenticationRequired,
    /// No authorization could be created: issuer unreachable, PIN required, ...
    PaymentMethodAuthorizationError,
    /// Declined by the issuer: insufficient funds, limit reached, lost or stolen, ...
    PaymentMethodDeclined,
    PaymentMethodExpired,
    /// Incorrect details: number, CVC, expiry, postal code.
    PaymentMethodInvalid,
    /// The card cannot be used for this purchase (currency, online use, ...).
    PaymentMethodNotSupported,
    /// Declined for other reasons: security violation, transaction not allowed, ...
    Declined,
    /// Blocked as suspected fraud. Never shown to the customer as such.
    Fraud,
    ProcessingError,
    /// Recoup could not reach the payment provider to start the transaction.
    ProviderError,
    Unknown,
}

impl ErrorType {
    pub const ALL: [ErrorType; 11] = [
        ErrorType::AuthenticationRequired,
        ErrorType::PaymentMethodAuthorizationError,
        ErrorType::PaymentMethodDeclined,
        ErrorType::PaymentMethodExpired,
        ErrorType::PaymentMethodInvalid,
        ErrorType::PaymentMethodNotSupported,
        ErrorType::Declined,
        ErrorType::Fraud,
        ErrorType::ProcessingError,
        ErrorType::ProviderError,
        ErrorType::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::AuthenticationRequired => "authentication_required",
            ErrorType::PaymentMethodAuthorizationError => "payment_method_authorization_error",
            ErrorType::PaymentMethodDeclined => "payment_method_declined",
            ErrorType::PaymentMethodExpired => "payment_method_expired",
            ErrorType::PaymentMethodInvalid => "payment_method_invalid",
            ErrorType::PaymentMethodNotSupported => "payment_method_not_supported",
            ErrorType::Declined => "declined",
            ErrorType::Fraud => "fraud",
            ErrorType::ProcessingError => "processing_error",
            ErrorType::ProviderError => "provider_error",
            ErrorType::Unknown => "unknown",
        }
    }

    /// What the paying customer may be told. Fraud details stay with the merchant: the
    /// customer sees a generic decline.
    pub fn for_customer(self) -> ErrorType {
        match self {
            ErrorType::Fraud => ErrorType::Declined,
            other => other,
        }
    }

    /// A sentence the customer can act on, for emails and the portal.
    pub fn customer_advice(self) -> &'static str {
        match self.for_customer() {
            ErrorType::AuthenticationRequired => {
                "Your bank asks you to confirm this payment. Open your billing page to authenticate it."
            }
            ErrorType::PaymentMethodExpired => "Your card has expired. Add a new card on your billing page.",
            ErrorType::PaymentMethodInvalid => {
                "Your card details were not accepted. Add the card again, or another card, on your billing page."
            }
            ErrorType::PaymentMethodDeclined => {
                "Your card was declined, for example for insufficient funds or a limit. Check with your bank or add another card."
            }
            ErrorType::PaymentMethodNotSupported => {
                "Your card cannot be used for this payment. Add another card on your billing page."
            }
            ErrorType::PaymentMethodAuthorizationError
            | ErrorType::Declined
            | ErrorType::Fraud
            | ErrorType::ProcessingError
            | ErrorType::ProviderError
            | ErrorType::Unknown => {
                "Your payment could not be completed. Contact your bank, or add another card on your billing page."
            }
        }
    }
}

/// A failed attempt as the PSP and the card network reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    pub error_type: ErrorType,
    /// The PSP's decline code (`insufficient_funds`, `lost_card`, ...), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    /// The network's own response code (`51`, `05`, `14`, ...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_decline_code: Option<String>,
    /// Mastercard's Merchant Advice Code (`03`, `21`, `24`...`30`), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice_code: Option<String>,
    /// A short, card-data-free explanation for the merchant.
    pub message: String,
}

impl Decline {
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        Decline {
            error_type,
            decline_code: None,
            network_decline_code: None,
            advice_code: None,
            message: message.into(),
        }
    }

    /// The decline a PSP reports with this decline code (`insufficient_funds`,
    /// `fraudulent`...), with a card-data-free message for the merchant. Every provider
    /// adapter words declines the same way.
    pub fn from_decline_code(decline_code: &str) -> Self {
        let error_type = error_type_for_decline_code(decline_code);
        let message = match error_type {
            ErrorType::Fraud => "the payment was blocked as suspected fraud".to_owned(),
            _ => format!("the card was declined ({decline_code})"),
        };
        Decline::new(error_type, message).with_decline_code(decline_code)
    }

    pub fn with_decline_code(mut self, code: &str) -> Self {
        self.decline_code = Some(code.to_owned());
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn with_network_code(mut self, code: &str) -> Self {
        self.network_decline_code = Some(code.to_owned());
        self
    }

    pub fn with_advice_code(mut self, code: &str) -> Self {
        self.advice_code = Some(code.to_owned());
        self
    }
}

/// Why a decline may not be retried on the same card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HardReason {
    Expired,
    InvalidDetails,
    NotSupported,
    Fraud,
    LostOrStolen,
    /// The issuer said never to try again (`do_not_try_again`, revoked authorization).
    DoNotTryAgain,
    /// Visa category 1: the issuer will never approve.
    VisaCategory1,
    /// Mastercard Merchant Advice Code 01 (new account information), 03 or 21.
    MastercardAdvice,
}

impl HardReason {
    /// Whether the decline condemns the card itself rather than this payment: the card is
    /// then blocked by fingerprint, for every customer, until it changes.
    pub fn blocks_card(self) -> bool {
        match self {
            HardReason::LostOrStolen
            | HardReason::DoNotTryAgain
            | HardReason::VisaCategory1
            | HardReason::MastercardAdvice => true,
            HardReason::Expired | HardReason::InvalidDetails | HardReason::NotSupported | HardReason::Fraud => false,
        }
    }
}

/// What the decline means for retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum RetryClass {
    /// May be retried on the schedule, within network limits.
    Soft,
    /// Never retried automatically on the same card: wait for a new card or a person.
    Hard { reason: HardReason },
    /// The cardholder must authenticate on-session; no automatic retry.
    NeedsCustomer,
}

impl RetryClass {
    pub fn is_soft(self) -> bool {
        matches!(self, RetryClass::Soft)
    }
}

/// Visa's decline categories (Visa excessive-reattempt rules, 2021).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisaCategory {
    /// Issuer will never approve: never reattempt.
    NeverApprove,
    /// Issuer cannot approve at this time: reattempt within limits.
    CannotApproveNow,
    /// Data quality: reattempt only with corrected data, within limits.
    DataQuality,
    /// Everything else: within limits.
    Generic,
}

pub fn visa_category(response_code: &str) -> VisaCategory {
    match response_code {
        "04" | "07" | "12" | "15" | "41" | "43" | "46" | "57" | "R0" | "R1" | "R3" => VisaCategory::NeverApprove,
        "03" | "19" | "39" | "51" | "52" | "53" | "59" | "61" | "62" | "65" | "75" | "78" | "86" | "91" | "93"
        | "96" | "N3" | "N4" => VisaCategory::CannotApproveNow,
        "14" | "54" | "55" | "70" | "82" | "1A" | "6P" | "N7" => VisaCategory::DataQuality,
        _ => VisaCategory::Generic,
    }
}

/// Mastercard Merchant Advice Codes 24-30: the earliest a declined payment may be retried.
pub fn mastercard_retry_after(advice_code: &str) -> Option<TimeDelta> {
    match advice_code {
        "24" => Some(TimeDelta::hours(1)),
        "25" => Some(TimeDelta::hours(24)),
        "26" => Some(TimeDelta::days(2)),
        "27" => Some(TimeDelta::days(4)),
        "28" => Some(TimeDelta::days(6)),
        "29" => Some(TimeDelta::days(8)),
        "30" => Some(TimeDelta::days(10)),
        _ => None,
    }
}

/// Decides whether a decline may be retried on the same card.
pub fn classify(decline: &Decline, network: Network) -> RetryClass {
    let hard = |reason| RetryClass::Hard { reason };
    match decline.error_type {
        ErrorType::AuthenticationRequired => return RetryClass::NeedsCustomer,
        ErrorType::PaymentMethodExpired => return hard(HardReason::Expired),
        ErrorType::PaymentMethodInvalid => return hard(HardReason::InvalidDetails),
        ErrorType::PaymentMethodNotSupported => return hard(HardReason::NotSupported),
        ErrorType::Fraud => return hard(HardReason::Fraud),
        ErrorType::PaymentMethodAuthorizationError
        | ErrorType::PaymentMethodDeclined
        | ErrorType::Declined
        | ErrorType::ProcessingError
        | ErrorType::ProviderError
        | ErrorType::Unknown => {}
    }
    match decline.decline_code.as_deref() {
        Some("lost_card" | "stolen_card" | "pickup_card") => return hard(HardReason::LostOrStolen),
        Some(
            "do_not_try_again"
            | "revocation_of_authorization"
            | "revocation_of_all_authorizations"
            | "stop_payment_order",
        ) => return hard(HardReason::DoNotTryAgain),
        _ => {}
    }
    match network {
        Network::Visa => {
            if let Some(code) = decline.network_decline_code.as_deref()
                && visa_category(code) == VisaCategory::NeverApprove
            {
                return hard(HardReason::VisaCategory1);
            }
        }
        Network::Mastercard => {
            if let Some("01" | "03" | "21") = decline.advice_code.as_deref() {
                return hard(HardReason::MastercardAdvice);
            }
        }
        Network::Other => {}
    }
    RetryClass::Soft
}

/// Maps a PSP (Stripe) decline code to the taxonomy.
pub fn error_type_for_decline_code(code: &str) -> ErrorType {
    match code {
        "authentication_required" => ErrorType::AuthenticationRequired,
        "issuer_not_available"
        | "try_again_later"
        | "reenter_transaction"
        | "offline_pin_required"
        | "online_or_offline_pin_required"
        | "pin_try_exceeded"
        | "incorrect_pin"
        | "approve_with_id" => ErrorType::PaymentMethodAuthorizationError,
        "insufficient_funds"
        | "card_velocity_exceeded"
        | "withdrawal_count_limit_exceeded"
        | "lost_card"
        | "stolen_card"
        | "pickup_card"
        | "restricted_card"
        | "new_account_information_available" => ErrorType::PaymentMethodDeclined,
        "expired_card" => ErrorType::PaymentMethodExpired,
        "incorrect_number"
        | "invalid_number"
        | "incorrect_cvc"
        | "invalid_cvc"
        | "invalid_expiry_month"
        | "invalid_expiry_year"
        | "incorrect_zip"
        | "invalid_account" => ErrorType::PaymentMethodInvalid,
        "card_not_supported" | "currency_not_supported" => ErrorType::PaymentMethodNotSupported,
        "generic_decline"
        | "card_declined"
        | "do_not_honor"
        | "do_not_try_again"
        | "security_violation"
        | "service_not_allowed"
        | "transaction_not_allowed"
        | "not_permitted"
        | "no_action_taken"
        | "call_issuer"
        | "revocation_of_authorization"
        | "revocation_of_all_authorizations"
        | "stop_payment_order" => ErrorType::Declined,
        "fraudulent" | "merchant_blacklist" | "highest_risk_level" => ErrorType::Fraud,
        "processing_error" => ErrorType::ProcessingError,
        _ => ErrorType::Unknown,
    }
}

/// Maps an ISO 8583-style network response code to the PSP decline code and taxonomy.
pub fn decline_for_network_code(code: &str) -> (Option<&'static str>, ErrorType) {
    let decline_code = match code {
        "05" => "do_not_honor",
        "51" | "61" => "insufficient_funds",
        "65" => "withdrawal_count_limit_exceeded",
        "1A" => "authentication_required",
        "54" => "expired_card",
        "14" | "15" => "incorrect_number",
        "N7" | "82" => "incorrect_cvc",
        "41" => "lost_card",
        "43" => "stolen_card",
        "04" | "07" => "pickup_card",
        "46" | "R0" | "R1" | "R3" => "do_not_try_again",
        "57" | "12" | "93" => "transaction_not_allowed",
        "59" => "fraudulent",
        "62" => "restricted_card",
        "91" => "issuer_not_available",
        "55" | "75" | "86" => "incorrect_pin",
        "96" => "processing_error",
        _ => return (None, ErrorType::Declined),
    };
    (Some(decline_code), error_type_for_decline_code(decline_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decline(t: ErrorType) -> Decline {
        Decline::new(t, "test")
    }

    #[test]
    fn every_error_type_serializes_to_its_documented_name() {
        for t in ErrorType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.as_str()));
        }
    }

    #[test]
    fn fraud_is_shown_to_customers_as_a_generic_decline() {
        assert_eq!(ErrorType::Fraud.for_customer(), ErrorType::Declined);
        assert_eq!(ErrorType::PaymentMethodExpired.for_customer(), ErrorType::PaymentMethodExpired);
    }

    #[test]
    fn expired_invalid_unsupported_and_fraud_are_hard() {
        for t in [
            ErrorType::PaymentMethodExpired,
            ErrorType::PaymentMethodInvalid,
            ErrorType::PaymentMethodNotSupported,
            ErrorType::Fraud,
        ] {
            assert!(matches!(classify(&decline(t), Network::Other), RetryClass::Hard { .. }), "{t:?}");
        }
    }

    #[test]
    fn insufficient_funds_is_soft_but_lost_or_stolen_is_hard() {
        let nsf = decline(ErrorType::PaymentMethodDeclined).with_decline_code("insufficient_funds");
        assert_eq!(classify(&nsf, Network::Visa), RetryClass::Soft);
        let lost = decline(ErrorType::PaymentMethodDeclined).with_decline_code("lost_card");
        assert_eq!(classify(&lost, Network::Visa), RetryClass::Hard { reason: HardReason::LostOrStolen });
    }

    #[test]
    fn authentication_required_waits_for_the_customer() {
        assert_eq!(classify(&decline(ErrorType::AuthenticationRequired), Network::Visa), RetryClass::NeedsCustomer);
    }

    #[test]
    fn visa_category_1_codes_are_never_retried() {
        for code in ["04", "07", "12", "15", "41", "43", "46", "57", "R0", "R1", "R3"] {
            let d = decline(ErrorType::Declined).with_network_code(code);
            assert_eq!(classify(&d, Network::Visa), RetryClass::Hard { reason: HardReason::VisaCategory1 }, "{code}");
        }
        let nsf = decline(ErrorType::PaymentMethodDeclined).with_network_code("51");
        assert_eq!(classify(&nsf, Network::Visa), RetryClass::Soft);
    }

    #[test]
    fn mastercard_advice_03_and_21_forbid_retries_and_24_to_30_only_delay_them() {
        for advice in ["03", "21"] {
            let d = decline(ErrorType::Declined).with_advice_code(advice);
            assert_eq!(classify(&d, Network::Mastercard), RetryClass::Hard { reason: HardReason::MastercardAdvice });
        }
        let d = decline(ErrorType::PaymentMethodDeclined).with_advice_code("24");
        assert_eq!(classify(&d, Network::Mastercard), RetryClass::Soft);
        assert_eq!(mastercard_retry_after("24"), Some(TimeDelta::hours(1)));
        assert_eq!(mastercard_retry_after("30"), Some(TimeDelta::days(10)));
        assert_eq!(mastercard_retry_after("02"), None);
    }

    #[test]
    fn network_codes_map_to_the_taxonomy() {
        assert_eq!(decline_for_network_code("51").1, ErrorType::PaymentMethodDeclined);
        assert_eq!(decline_for_network_code("54").1, ErrorType::PaymentMethodExpired);
        assert_eq!(decline_for_network_code("59").1, ErrorType::Fraud);
        assert_eq!(decline_for_network_code("91").1, ErrorType::PaymentMethodAuthorizationError);
        assert_eq!(decline_for_network_code("96").1, ErrorType::ProcessingError);
        assert_eq!(decline_for_network_code("1A").1, ErrorType::AuthenticationRequired);
        assert_eq!(decline_for_network_code("05").1, ErrorType::Declined);
    }
}
