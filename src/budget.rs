//! The memory budget of request bodies (`max_inflight_body_bytes`): every
//! byte of a body held in memory, as received and as decoded, is covered
//! by a reservation, and all reservations together never exceed the
//! budget. A request that finds no room waits at most `inflight_wait_secs`
//! in all, reading nothing meanwhile (the kernel's socket buffer fills and
//! the sender waits), then gets 503 with `Retry-After`.
//!
//! The unit is the KiB: the budget is a semaphore of KiB permits, and a
//! reservation grows in steps of at least [`STEP`], so a body arriving in
//! many small pieces takes few steps. A reservation is released when the
//! body it covers is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::RequestError;

/// The smallest growth of a reservation, in bytes.
const STEP: u64 = 64 * 1024;

const KIB: u64 = 1024;

/// The budget all requests share.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    total_kib: u64,
    wait: Duration,
}

/// What one request holds of the budget.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Budget,
    held: Option<OwnedSemaphorePermit>,
    /// Bytes covered (a whole number of KiB).
    bytes: u64,
    deadline: Instant,
}

impl Budget {
    pub(crate) fn new(total_bytes: u64, wait: Duration) -> Budget {
        let total_kib = (total_bytes / KIB).max(1);
        let permits = usize::try_from(total_kib)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(permits)),
            total_kib,
            wait,
        }
    }

    /// An empty reservation; its waits together end `inflight_wait_secs` from now.
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: None,
            bytes: 0,
            deadline: Instant::now() + self.wait,
        }
    }

    /// Bytes reserved by all requests now.
    pub(crate) fn in_use(&self) -> u64 {
        let free = self.permits.available_permits() as u64;
        self.total_kib.saturating_sub(free) * KIB
    }
}

impl Reservation {
    /// Covers at least `bytes` in all, waiting for room until the deadline.
    pub(crate) async fn cover(&mut self, bytes: u64) -> Result<(), RequestError> {
        let Some(kib) = self.missing_kib(bytes)? else {
            return Ok(());
        };
        let acquire = self.budget.permits.clone().acquire_many_owned(kib);
        match tokio::time::timeout_at(self.deadline, acquire).await {
            Ok(Ok(permit)) => {
                self.add(permit, kib);
                Ok(())
            }
            Ok(Err(_)) | Err(_) => Err(busy()),
        }
    }

    /// Covers at least `bytes` in all if there is room now (for blocking
    /// code, which cannot wait here), else a 503.
    pub(crate) fn try_cover(&mut self, bytes: u64) -> Result<(), RequestError> {
        let Some(kib) = self.missing_kib(bytes)? else {
            return Ok(());
        };
        let permit = self
            .budget
            .permits
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| busy())?;
        self.add(permit, kib);
        Ok(())
    }

    /// The KiB to add to cover `bytes` (at least a step), `None` when covered.
    fn missing_kib(&self, bytes: u64) -> Result<Option<u32>, RequestError> {
        if bytes <= self.bytes {
            return Ok(None);
        }
        let wanted = bytes.max(self.bytes + STEP).div_ceil(KIB) * KIB;
        let wanted_kib = (wanted / KIB).min(self.budget.total_kib);
        if wanted_kib * KIB < bytes {
            // Larger than the whole budget: waiting would never help.
            return Err(busy());
        }
        let kib = wanted_kib - self.bytes / KIB;
        Ok(Some(u32::try_from(kib).map_err(|_| busy())?))
    }

    fn add(&mut self, permit: OwnedSemaphorePermit, kib: u32) {
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.bytes += u64::from(kib) * KIB;
    }
}

fn busy() -> RequestError {
    RequestError::Busy(crate::error::MEMORY_FULL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reservations_share_the_budget_wait_then_give_up() {
        let budget = Budget::new(256 * KIB, Duration::from_secs(5));
        let mut a = budget.reservation();
        a.cover(100).await.expect("room");
        assert_eq!(budget.in_use(), STEP, "at least a step");
        a.cover(200 * KIB).await.expect("room");
        assert_eq!(budget.in_use(), 200 * KIB);
        let mut b = budget.reservation();
        let waited = Instant::now();
        assert!(matches!(
            b.cover(100 * KIB).await,
            Err(RequestError::Busy(_))
        ));
        assert_eq!(waited.elapsed(), Duration::from_secs(5), "waited its time");
        assert!(
            b.try_cover(10 * KIB).is_err(),
            "a step (64 KiB) does not fit in 56"
        );
        drop(a);
        let mut c = budget.reservation();
        c.cover(100 * KIB).await.expect("released");
        assert!(
            c.try_cover(300 * KIB).is_err(),
            "more than the whole budget"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_gets_room_when_another_ends() {
        let budget = Budget::new(128 * KIB, Duration::from_secs(5));
        let mut a = budget.reservation();
        a.cover(128 * KIB).await.expect("room");
        let b = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reservation().cover(64 * KIB).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a);
        assert!(b.await.expect("join").is_ok());
    }
}
