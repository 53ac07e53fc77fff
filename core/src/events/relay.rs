//! The events other nodes record, on this node's bus: a tenant's stream spans devices on every
//! node, and each node's bus carries only what it published itself. Every commit that records
//! events notifies which (the `wagate_events` trigger); the relay reads those of devices whose
//! session does not run here back from the store and publishes them marked `relayed`.
//!
//! A range published here too reaches the bus twice at most (the notification can come before
//! the session's own publish); streams drop an event numbered at or below the last one of its
//! device they sent, and plugins skip relayed events, so no consumer sees one twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::EventBus;
use crate::domain::TenantId;
use crate::store::Store;

/// Notifications waiting to be relayed before more are dropped.
const BACKLOG: usize = 4096;

/// How long the relay waits before listening again after its connection was lost.
const RECONNECT: Duration = Duration::from_secs(1);

/// Whether the events of a device are published on this node by its own session.
pub type PublishedHere = Arc<dyn Fn(TenantId, &str) -> bool + Send + Sync>;

/// The relay's task; aborted when dropped.
pub struct EventRelay {
    task: JoinHandle<()>,
}

impl Drop for EventRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventRelay {
    /// Starts relaying to `bus` the events recorded for devices `published_here` says are not.
    pub fn start(store: Store, bus: EventBus, published_here: PublishedHere) -> Self {
        let task = tokio::spawn(async move {
            loop {
                match store.listen_recorded_events(BACKLOG).await {
                    Ok((mut ranges, driver, _client)) => {
                        while let Some(range) = ranges.recv().await {
                            if published_here(range.tenant, &range.device) {
                                continue;
                            }
                            match store
                                .tenant(range.tenant)
                                .events_between(&range.device, range.first, range.last)
                                .await
                            {
                                Ok(events) => {
                                    for mut event in events {
                                        event.relayed = true;
                                        bus.publish(event);
                                    }
                                }
                                Err(e) => tracing::warn!(
                                    device = %range.device,
                                    "events recorded by another node not relayed to this node's streams: {e}"
                                ),
                            }
                        }
                        driver.abort();
                    }
                    Err(e) => tracing::warn!("the event relay cannot listen: {e}"),
                }
                tokio::time::sleep(RECONNECT).await;
            }
        });
        Self { task }
    }
}
