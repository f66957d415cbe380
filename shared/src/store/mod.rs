//! The store adapters of the item-store port ([`crate::ports::store`], re-exported here):
//! the embedded database (`embedded`), DynamoDB (`dynamodb`, with large bodies stored
//! [`deflated`]), memory for simulations (`memory`), a metering wrapper (`metered`), the
//! entity mapping written once above them ([`repo`]) and the key layout
//! ([`keys`]). See `docs/data-model.md` for the single-table design.

pub use crate::ports::store::*;

pub mod deflated;
pub mod keys;
pub mod metered;

#[cfg(feature = "memory")]
pub mod memory;
pub mod repo;

#[cfg(feature = "embedded")]
pub mod embedded;

#[cfg(feature = "aws")]
pub mod dynamodb;

#[cfg(feature = "testing")]
pub mod contract;
