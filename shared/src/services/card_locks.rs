//! One claim or settle at a time per card, for one `Services` (a process wires one). Every claim and every settle writes
//! the card's ledger (the network-rule counts), conditioned on its version; when many
//! customers share one card, optimistic writers would lose to each other round after
//! round. Queueing them on a per-card lock before they read the ledger turns those lost
//! rounds into a short wait: each claim or settle then commits at its first try unless
//! another process wrote the ledger meanwhile (the version condition still guards that,
//! and the jittered retry handles it). The lock is never held across a call to the PSP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::domain::card::Fingerprint;

type Locks = HashMap<String, Arc<tokio::sync::Mutex<()>>>;

/// Locks kept before unused ones are dropped.
const PRUNE_ABOVE: usize = 4096;

/// The cards' turns of one [`super::Services`] (clones share them).
#[derive(Clone, Default)]
pub struct CardTurns {
    locks: Arc<Mutex<Locks>>,
}

impl CardTurns {
    /// Waits for the card's turn; the turn ends when the guard is dropped.
    pub(crate) async fn lock(&self, fingerprint: &Fingerprint) -> OwnedMutexGuard<()> {
        self.entry(fingerprint).lock_owned().await
    }

    /// The card's turn, and whether it had to wait for it (whatever was read about the card
    /// before a wait may have changed during it).
    pub(crate) async fn turn(&self, fingerprint: &Fingerprint) -> (OwnedMutexGuard<()>, bool) {
        let lock = self.entry(fingerprint);
        match lock.clone().try_lock_owned() {
            Ok(guard) => (guard, false),
            Err(_) => (lock.lock_owned().await, true),
        }
    }

    fn entry(&self, fingerprint: &Fingerprint) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if locks.len() > PRUNE_ABOVE {
            // Only the map holds an unused lock.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(fingerprint.as_str().to_owned()).or_default().clone()
    }
}

impl std::fmt::Debug for CardTurns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardTurns").finish_non_exhaustive()
    }
}
