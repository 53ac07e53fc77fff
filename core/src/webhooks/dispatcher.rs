//! The dispatcher: claims due deliveries from the outbox, runs their attempts (`attempt.rs`)
//! outside any transaction, and settles each as delivered, retried later, dead or expired.
//!
//! Invariants:
//! - Every attempt runs in a task of this dispatcher's `JoinSet`; stopping waits for them (up to
//!   the attempt timeout) and hands every unsettled claim back to the outbox.
//! - A claim is only made while this dispatcher holds its advisory lock (its listener is
//!   connected), so other processes can tell its claims from a dead process's.
//! - At most `max_in_flight` attempts run at once, and at most `max_in_flight_per_endpoint` per
//!   endpoint; claims beyond an endpoint's share wait here, not in flight.
//! - A claim that skips saturated endpoints and comes back short is not repeated while they stay
//!   saturated, until the outbox names another endpoint or `poll_interval` passes: it would scan
//!   their whole backlog again to find nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use uuid::Uuid;

use super::attempt::{Settled, attempt};
use super::client::delivery_client;
use super::{WebhookConfig, WebhookError};
use crate::metrics::Metrics;
use crate::store::{ClaimedDelivery, DeliveryOutcome, OutboxListener, OutboxWake, Store};

/// How often orphaned claims are released, expired deliveries retired and old events purged.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);
/// Settled attempts are written in batches of this many, or after [`SETTLE_DELAY`].
const SETTLE_BATCH: usize = 128;
/// How long a settled attempt may wait for its batch.
const SETTLE_DELAY: Duration = Duration::from_millis(20);
/// The most deliveries one claim takes.
const CLAIM_BATCH: usize = 256;

/// A running dispatcher; [`Dispatcher::shutdown`] stops it cleanly, dropping it aborts it.
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Dispatcher {
    /// Starts delivering the outbox of `store`, counting attempts in `metrics`; fails when the
    /// outbox listener cannot connect.
    pub async fn start(
        store: Store,
        config: WebhookConfig,
        metrics: Metrics,
    ) -> Result<Dispatcher, WebhookError> {
        let client = delivery_client(&config)?;
        // Positive, so it reads back unchanged from pg_locks' unsigned objid.
        let owner = rand::random_range(1..i32::MAX);
        let listener = store.listen_outbox(owner).await?;
        let (stop, stopped) = watch::channel(false);
        let run = Run {
            store,
            config,
            client,
            owner,
            listener: Some(listener),
            in_flight: JoinSet::new(),
            per_endpoint: HashMap::new(),
            waiting: HashMap::new(),
            settled: Vec::new(),
            oldest_settled: None,
            gone: Vec::new(),
            blocked: None,
            metrics,
        };
        let task = tokio::spawn(run.run(stopped));
        tracing::info!(owner, "webhook dispatcher started");
        Ok(Dispatcher {
            stop,
            task: Some(task),
        })
    }

    /// A handle that tells whether this dispatcher still runs, for readiness checks.
    pub fn probe(&self) -> DispatcherProbe {
        DispatcherProbe(self.task.as_ref().map(JoinHandle::abort_handle))
    }

    /// Stops claiming, lets attempts in flight finish (up to the attempt timeout), records them
    /// and hands every other claim back to the outbox.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Whether a [`Dispatcher`] still runs: its task has not ended (it ends only at shutdown, or
/// when it panicked). Cheap to clone; it cannot stop the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherProbe(Option<tokio::task::AbortHandle>);

impl DispatcherProbe {
    /// Whether the dispatcher's task is still running.
    pub fn is_running(&self) -> bool {
        self.0.as_ref().is_some_and(|task| !task.is_finished())
    }
}

struct Run {
    store: Store,
    config: WebhookConfig,
    client: reqwest::Client,
    owner: i32,
    listener: Option<OutboxListener>,
    in_flight: JoinSet<Settled>,
    per_endpoint: HashMap<Uuid, usize>,
    /// Claimed deliveries waiting for their endpoint's share of attempts.
    waiting: HashMap<Uuid, VecDeque<ClaimedDelivery>>,
    settled: Vec<(Uuid, DateTime<Utc>, DeliveryOutcome)>,
    oldest_settled: Option<Instant>,
    /// Endpoints that answered 410 since the last write.
    gone: Vec<Uuid>,
    /// The saturated endpoints the last claim skipped when it came back short, and when: nothing
    /// else was due then.
    blocked: Option<(HashSet<Uuid>, Instant)>,
    /// Where attempts are counted as they settle, and those in flight shown.
    metrics: Metrics,
}

impl Run {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut next_maintenance = Instant::now();
        let mut due: Option<Instant> = None;
        let mut wanted = true;
        while !*stop.borrow() {
            let now = Instant::now();
            if now >= next_maintenance {
                self.maintain().await;
                next_maintenance = now + MAINTENANCE_EVERY;
                self.blocked = None;
                wanted = true;
            }
            if self.listener.is_none() {
                self.reconnect().await;
            }
            if due.is_some_and(|d| d <= now) {
                wanted = true;
            }
            // Settled first: a retry's new due time must be stored before the next is looked up.
            if self.settled.len() >= SETTLE_BATCH
                || self.oldest_settled.is_some_and(|t| t + SETTLE_DELAY <= now)
                || (self.in_flight.is_empty() && !self.settled.is_empty())
            {
                self.flush().await;
            }
            let free = self
                .config
                .max_in_flight
                .saturating_sub(self.in_flight.len());
            let worth_it =
                free >= (self.config.max_in_flight / 4).max(1) || self.in_flight.is_empty();
            if wanted && worth_it && free > 0 && self.listener.is_some() {
                wanted = false;
                match self.fill(free).await {
                    Ok(Filled::More) => wanted = true,
                    Ok(Filled::Drained) => due = self.next_due().await,
                    // The saturated endpoints' own backlog is due: their attempts wake this.
                    Ok(Filled::Blocked) => due = None,
                    Err(e) => tracing::error!("webhook deliveries not claimed: {e}"),
                }
            }
            let mut wake = (now + self.config.poll_interval).min(next_maintenance);
            if let Some(due) = due {
                wake = wake.min(due);
            }
            if let Some(oldest) = self.oldest_settled {
                wake = wake.min(oldest + SETTLE_DELAY);
            }
            if wanted && free > 0 {
                wake = now;
            }
            tokio::select! {
                _ = stop.changed() => {}
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.finished(done);
                    while let Some(done) = self.in_flight.try_join_next() {
                        self.finished(done);
                    }
                    wanted = true;
                }
                heard = notified(&mut self.listener) => {
                    if let Some(wake) = heard {
                        if self.blocked.as_ref().is_some_and(|(skipped, _)| wake.beyond(skipped)) {
                            self.blocked = None;
                        }
                        wanted = true;
                    } else {
                        tracing::warn!("webhook outbox listener lost; claiming pauses until it is back");
                        self.listener = None;
                    }
                }
                // The polling fallback, a retry coming due, or a batch of results to write.
                _ = tokio::time::sleep_until(wake) => wanted = true,
            }
        }
        self.drain().await;
    }

    /// Claims up to `free` due deliveries and starts them.
    async fn fill(&mut self, free: usize) -> Result<Filled, WebhookError> {
        let asked = free.min(CLAIM_BATCH);
        let limit = self.config.max_in_flight_per_endpoint;
        let saturated: Vec<Uuid> = self
            .per_endpoint
            .iter()
            .filter(|(_, n)| **n >= limit)
            .map(|(id, _)| *id)
            .collect();
        if let Some((skipped, since)) = &self.blocked {
            let still = skipped.iter().all(|id| saturated.contains(id));
            if still && since.elapsed() < self.config.poll_interval {
                return Ok(Filled::Blocked);
            }
            self.blocked = None;
        }
        let claimed = self
            .store
            .claim_deliveries(self.owner, self.config.lease, asked, &saturated)
            .await?;
        let filled = if claimed.len() == asked {
            Filled::More
        } else if saturated.is_empty() {
            Filled::Drained
        } else {
            self.blocked = Some((saturated.into_iter().collect(), Instant::now()));
            Filled::Blocked
        };
        for delivery in claimed {
            self.start(delivery);
        }
        Ok(filled)
    }

    /// Starts an attempt now, or queues it behind its endpoint's share.
    fn start(&mut self, delivery: ClaimedDelivery) {
        let count = self.per_endpoint.entry(delivery.endpoint_id).or_default();
        if *count >= self.config.max_in_flight_per_endpoint {
            self.waiting
                .entry(delivery.endpoint_id)
                .or_default()
                .push_back(delivery);
            return;
        }
        *count += 1;
        let client = self.client.clone();
        let schedule = self.config.retry_schedule.clone();
        let check = !self.config.allow_private;
        self.in_flight
            .spawn(async move { attempt(&client, delivery, &schedule, check).await });
        self.metrics.webhook_in_flight(self.in_flight.len());
    }

    fn finished(&mut self, done: Result<Settled, tokio::task::JoinError>) {
        self.metrics.webhook_in_flight(self.in_flight.len());
        let settled = match done {
            Ok(settled) => settled,
            // An aborted or panicked attempt keeps its lease and comes back when it runs out.
            Err(e) => {
                tracing::error!("a webhook attempt did not finish: {e}");
                return;
            }
        };
        if let Some(count) = self.per_endpoint.get_mut(&settled.endpoint) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_endpoint.remove(&settled.endpoint);
            }
        }
        if let DeliveryOutcome::Dead { gone: true, .. } = settled.outcome {
            self.gone.push(settled.endpoint);
            // Nothing more goes to an endpoint that is gone; its waiting claims go back.
            self.waiting.remove(&settled.endpoint);
        } else if let Some(next) = self
            .waiting
            .get_mut(&settled.endpoint)
            .and_then(VecDeque::pop_front)
        {
            self.start(next);
        }
        self.waiting.retain(|_, queue| !queue.is_empty());
        self.metrics.webhook_attempt(&settled.outcome, settled.took);
        self.settled
            .push((settled.delivery, settled.at, settled.outcome));
        self.oldest_settled.get_or_insert_with(Instant::now);
    }

    async fn flush(&mut self) {
        let settled = std::mem::take(&mut self.settled);
        let gone = std::mem::take(&mut self.gone);
        self.oldest_settled = None;
        if let Err(e) = self
            .store
            .settle_deliveries(self.owner, &settled, &gone)
            .await
        {
            // The claims stay leased and come back when the lease runs out: at least once.
            tracing::error!(count = settled.len(), "webhook attempts not recorded: {e}");
        }
    }

    async fn next_due(&self) -> Option<Instant> {
        match self.store.next_due_delivery().await {
            Ok(Some(at)) => {
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                Some(Instant::now() + wait.max(Duration::from_millis(5)))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!("next webhook delivery not found: {e}");
                None
            }
        }
    }

    async fn maintain(&self) {
        match self.store.release_orphaned_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "released webhook claims of a stopped gateway"),
            Err(e) => tracing::error!("orphaned webhook claims not released: {e}"),
        }
        match self.store.expire_deliveries().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "expired undelivered QR code events"),
            Err(e) => tracing::error!("expired webhook deliveries not retired: {e}"),
        }
        match self.store.purge_events(self.config.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "purged events past their retention"),
            Err(e) => tracing::error!("old events not purged: {e}"),
        }
    }

    async fn reconnect(&mut self) {
        match self.store.listen_outbox(self.owner).await {
            Ok(listener) => {
                tracing::info!("webhook outbox listener reconnected");
                self.listener = Some(listener);
            }
            Err(e) => {
                tracing::error!("webhook outbox listener not reconnected: {e}");
                tokio::time::sleep(self.config.poll_interval).await;
            }
        }
    }

    /// Lets attempts in flight finish, records them and hands every other claim back.
    async fn drain(mut self) {
        self.waiting.clear();
        let deadline = Instant::now() + self.config.timeout + Duration::from_secs(1);
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.join_next()).await {
                Ok(Some(done)) => self.finished(done),
                Ok(None) => break,
                Err(_) => {
                    self.in_flight.abort_all();
                    break;
                }
            }
        }
        // Aborted attempts keep their lease and run no more.
        self.metrics.webhook_in_flight(0);
        self.waiting.clear();
        self.flush().await;
        if let Err(e) = self.store.release_claims_of(self.owner).await {
            tracing::error!("webhook claims not handed back: {e}");
        }
        tracing::info!(owner = self.owner, "webhook dispatcher stopped");
    }
}

/// What a claim found.
enum Filled {
    /// As many as asked: the outbox may hold more.
    More,
    /// Fewer: nothing else is due.
    Drained,
    /// Fewer, with saturated endpoints skipped: nothing else is due but their backlog.
    Blocked,
}

async fn notified(listener: &mut Option<OutboxListener>) -> Option<OutboxWake> {
    match listener {
        Some(listener) => listener.notified().await,
        None => std::future::pending().await,
    }
}
