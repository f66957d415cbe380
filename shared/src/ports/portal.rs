//! The port that makes billing portal links for emails. Adapter:
//! `recoup_lambda::app::SignedPortalLinks` (signed with the portal's secret).

use async_trait::async_trait;

use crate::ids::CustomerId;

#[async_trait]
pub trait PortalLinks: Send + Sync {
    /// A link that opens the customer's billing page as its owner, good for days (an
    /// email is read later); `None` when none can be made now (the plain portal URL
    /// serves instead).
    async fn link_for(&self, customer: &CustomerId) -> Option<String>;
}
