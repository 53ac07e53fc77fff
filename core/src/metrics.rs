//! Every metric wagate exposes at `GET /metrics`, and the one place they are defined: the
//! families recorded as things happen (logins, WhatsApp connections, webhook attempts, HTTP
//! requests) live in [`Metrics`]; the ones read at scrape time (devices by state, pending
//! deliveries, the database pool, plugins, the restore) are gathered by [`Metrics::render`].
//!
//! Invariants:
//! - Label sets are bounded and carry no secret: states, methods, reasons and outcomes are
//!   fixed sets; routes are the spec's path templates; endpoints and plugins are bounded by the
//!   ones that exist; tenant ids appear only behind the operator's opt-in
//!   (`--metrics-per-tenant`). Every series also carries `node`, this node's id in the
//!   cluster.
//! - Recording is an atomic add (a read lock on a family's label map at most); nothing on a
//!   request's or a session's path waits for a scrape. A scrape's database look-ups run before
//!   anything is encoded, each within [`SCRAPE_QUERY_TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::DeviceState;
use crate::engine::DeviceManager;
use crate::events::EngineEventKind;
use crate::plugins::PluginCounters;
use crate::store::{DeliveryOutcome, PendingDeliveries};

/// How long one of a scrape's database look-ups may take; a slower one leaves its families
/// out of that scrape rather than holding the scraper (whose own timeout is often 10 s).
pub const SCRAPE_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Buckets of the login histograms: a first QR code comes within a fraction of a second, a
/// scan takes a person tens of seconds, and a login gives up after the login timeout.
const LOGIN_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
/// Buckets of webhook attempts: a local receiver answers in milliseconds, the attempt timeout
/// is 10 s by default.
const WEBHOOK_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of HTTP answers: most are a database round trip; a login call waits for WhatsApp
/// up to the login timeout (20 s by default).
const HTTP_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `outcome` labels of `wagate_webhook_deliveries_total`.
const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "failed", "dead", "expired"];

/// Failed database statements of this process. Counted where the store maps a tokio-postgres
/// error (`StoreError::db`), which has no store at hand, so this one counter is per process
/// rather than per [`Metrics`].
static DB_QUERY_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts one failed database statement (see [`DB_QUERY_ERRORS`]).
pub(crate) fn count_db_query_error() {
    DB_QUERY_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// How a login links the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginMethod {
    /// A QR code scanned by the phone.
    Qr,
    /// A pairing code entered on the phone.
    PairCode,
}

impl LoginMethod {
    fn as_str(self) -> &'static str {
        match self {
            Self::Qr => "qr",
            Self::PairCode => "pair_code",
        }
    }
}

/// A login attempt in progress on one device, as far as the metrics follow it: when the call
/// that began it came, and whether its first QR code has been seen.
#[derive(Debug)]
pub(crate) struct LoginAttempt {
    method: LoginMethod,
    started: Instant,
    first_qr_seen: bool,
}

/// One label, `name="value"`, with a value from a fixed set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantStateLabels {
    tenant_id: String,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabel {
    endpoint_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpRouteLabels {
    route: String,
    method: &'static str,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// The families recorded as things happen. Each field's comment says what it counts; the
/// names are a contract (alert rules and dashboards use them), listed in the README.
#[derive(Debug)]
struct Recorded {
    /// `wagate_logins_started_total{method}`: login attempts begun, by `qr` or `pair_code`;
    /// the call that starts one counts, a repeat call answered with the pending code does not.
    logins_started: Family<MethodLabel, Counter>,
    /// `wagate_qr_codes_issued_total`: `qr_refreshed` events recorded.
    qr_codes_issued: Counter,
    /// `wagate_pair_codes_issued_total`: `pair_code_issued` events recorded.
    pair_codes_issued: Counter,
    /// `wagate_logins_succeeded_total`: `logged_in` events recorded (new links only; a
    /// restart's reconnect is none).
    logins_succeeded: Counter,
    /// `wagate_logins_failed_total{reason}`: `login_failed` events recorded, by their wire
    /// reason.
    logins_failed: Family<ReasonLabel, Counter>,
    /// `wagate_login_duration_seconds`: from the call that started a login to its `logged_in`.
    login_duration: Histogram,
    /// `wagate_login_first_qr_seconds`: from the call that started a QR login to its first
    /// QR code.
    login_first_qr: Histogram,
    /// `wagate_whatsapp_connections`: clients whose connection WhatsApp accepted (logged in)
    /// and that have not dropped it since.
    whatsapp_connections: Gauge,
    /// `wagate_whatsapp_reconnects_total`: connections of already linked devices accepted by
    /// WhatsApp: after a drop, a `POST …/reconnect` or a start's restore.
    whatsapp_reconnects: Counter,
    /// `wagate_webhook_deliveries_total{outcome}`: webhook attempts settled by the
    /// dispatcher, by outcome (`delivered`, `failed` and retried, `dead`, `expired`).
    webhook_deliveries: Family<OutcomeLabel, Counter>,
    /// `wagate_webhook_attempt_duration_seconds`: how long webhook attempts took, answer or
    /// error.
    webhook_attempt_duration: Histogram,
    /// `wagate_webhook_in_flight`: webhook attempts running now.
    webhook_in_flight: Gauge,
    /// `wagate_http_requests_total{route, method, status}`: HTTP answers, by the route's
    /// path template (`other` for paths no route serves).
    http_requests: Family<HttpLabels, Counter>,
    /// `wagate_http_request_duration_seconds{route, method}`: time to an answer's head (an
    /// event stream's body goes on after it).
    http_request_duration: HistogramFamily<HttpRouteLabels>,
}

/// wagate's metrics: cheap to clone (every clone records into the same families). Made once
/// by `wagate::start` and handed to the engine, the webhook dispatcher and the HTTP edge.
#[derive(Clone, Debug)]
pub struct Metrics {
    recorded: Arc<Recorded>,
    per_tenant: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(false)
    }
}

/// The text format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0, which Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for every other client (`curl`, `promtool`).
    Prometheus,
}

impl Format {
    /// The `Content-Type` of a scrape in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it names it, else 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }
}

/// What a scrape reads besides the recorded families: the engine (and through it the store
/// and the restore's progress) and the plugins' counters.
#[derive(Clone, Copy)]
pub struct ScrapeSources<'a> {
    /// The engine.
    pub manager: &'a DeviceManager,
    /// The loaded plugins' counters.
    pub plugins: &'a PluginCounters,
}

/// What a scrape read at its start; a look-up that failed or timed out is `None`, and its
/// families are left out of that scrape.
struct Snapshot {
    /// This node's id: every series carries it as `node`, so the nodes of a cluster that a
    /// Prometheus scrapes side by side stay apart.
    node: i32,
    devices: Option<Vec<(DeviceState, i64)>>,
    tenant_devices: Option<Vec<(String, DeviceState, i64)>>,
    pending: Option<Vec<PendingDeliveries>>,
    pool: crate::store::PoolStatus,
    restore: crate::engine::RestoreProgress,
    plugins: Vec<crate::plugins::PluginStats>,
}

impl Metrics {
    /// Empty families; `per_tenant` adds `wagate_tenant_devices{tenant_id, state}` to every
    /// scrape (the operator's opt-in: tenant ids are labels nowhere else).
    pub fn new(per_tenant: bool) -> Self {
        let recorded = Recorded {
            logins_started: Family::default(),
            qr_codes_issued: Counter::default(),
            pair_codes_issued: Counter::default(),
            logins_succeeded: Counter::default(),
            logins_failed: Family::default(),
            login_duration: Histogram::new(LOGIN_BUCKETS),
            login_first_qr: Histogram::new(LOGIN_BUCKETS),
            whatsapp_connections: Gauge::default(),
            whatsapp_reconnects: Counter::default(),
            webhook_deliveries: Family::default(),
            webhook_attempt_duration: Histogram::new(WEBHOOK_BUCKETS),
            webhook_in_flight: Gauge::default(),
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(http_histogram),
        };
        // The fixed label sets are there from the start, at 0, so a rate or an alert sees a
        // series before the first count.
        for method in [LoginMethod::Qr, LoginMethod::PairCode] {
            let _ = recorded.logins_started.get_or_create(&MethodLabel {
                method: method.as_str(),
            });
        }
        for outcome in WEBHOOK_OUTCOMES {
            let _ = recorded
                .webhook_deliveries
                .get_or_create(&OutcomeLabel { outcome });
        }
        Self {
            per_tenant,
            recorded: Arc::new(recorded),
        }
    }

    /// A login attempt begins with the call that starts it.
    pub(crate) fn login_started(&self, method: LoginMethod) -> LoginAttempt {
        self.recorded
            .logins_started
            .get_or_create(&MethodLabel {
                method: method.as_str(),
            })
            .inc();
        LoginAttempt {
            method,
            started: Instant::now(),
            first_qr_seen: false,
        }
    }

    /// Counts the events of a device just recorded, and follows the device's login `attempt`
    /// (none for events recorded outside a session): its first QR code and its end.
    pub(crate) fn recorded(&self, kinds: &[EngineEventKind], attempt: &mut Option<LoginAttempt>) {
        let r = &self.recorded;
        for kind in kinds {
            match kind {
                EngineEventKind::QrRefreshed { .. } => {
                    r.qr_codes_issued.inc();
                    if let Some(a) = attempt.as_mut()
                        && a.method == LoginMethod::Qr
                        && !a.first_qr_seen
                    {
                        a.first_qr_seen = true;
                        r.login_first_qr.observe(a.started.elapsed().as_secs_f64());
                    }
                }
                EngineEventKind::PairCodeIssued { .. } => {
                    r.pair_codes_issued.inc();
                }
                EngineEventKind::LoggedIn { .. } => {
                    r.logins_succeeded.inc();
                    if let Some(a) = attempt.take() {
                        r.login_duration.observe(a.started.elapsed().as_secs_f64());
                    }
                }
                EngineEventKind::LoginFailed { reason } => {
                    r.logins_failed
                        .get_or_create(&ReasonLabel {
                            reason: reason.as_str(),
                        })
                        .inc();
                    *attempt = None;
                }
                _ => {}
            }
        }
    }

    /// A mark that counts one client in `wagate_whatsapp_connections` while it is up.
    pub(crate) fn connection(&self) -> ConnectionMark {
        ConnectionMark {
            gauge: self.recorded.whatsapp_connections.clone(),
            up: false,
        }
    }

    /// A linked device's client was accepted by WhatsApp again.
    pub(crate) fn whatsapp_reconnected(&self) {
        self.recorded.whatsapp_reconnects.inc();
    }

    /// A webhook attempt ended with `outcome` after `took`.
    pub(crate) fn webhook_attempt(&self, outcome: &DeliveryOutcome, took: Duration) {
        let [delivered, failed, dead, expired] = WEBHOOK_OUTCOMES;
        let outcome = match outcome {
            DeliveryOutcome::Delivered { .. } => delivered,
            DeliveryOutcome::Failed { .. } => failed,
            DeliveryOutcome::Dead { .. } => dead,
            DeliveryOutcome::Expired { .. } => expired,
        };
        let r = &self.recorded;
        r.webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        r.webhook_attempt_duration.observe(took.as_secs_f64());
    }

    /// `n` webhook attempts run now.
    pub(crate) fn webhook_in_flight(&self, n: usize) {
        self.recorded
            .webhook_in_flight
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// An HTTP request on `route` (a path template or `other`) was answered with `status`
    /// after `took`. `method` is an HTTP method's name, or `other`: both from fixed sets.
    pub fn http_request(&self, route: &str, method: &'static str, status: u16, took: Duration) {
        let r = &self.recorded;
        r.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method,
                status: status.to_string(),
            })
            .inc();
        r.http_request_duration
            .get_or_create(&HttpRouteLabels {
                route: route.to_string(),
                method,
            })
            .observe(took.as_secs_f64());
    }

    /// Every metric in `format`: the recorded families as they stand, and the ones read now
    /// from `sources` (the database look-ups first, each within [`SCRAPE_QUERY_TIMEOUT`]).
    pub async fn render(&self, sources: ScrapeSources<'_>, format: Format) -> String {
        let snapshot = self.snapshot(sources).await;
        let registry = self.registry(&snapshot);
        let mut out = String::new();
        let encoded = match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
        };
        // Writing to a String does not fail; were an encoder to refuse a value, the scrape
        // still answers with what was encoded.
        if let Err(e) = encoded {
            tracing::error!("metrics not fully encoded: {e}");
        }
        out
    }

    async fn snapshot(&self, sources: ScrapeSources<'_>) -> Snapshot {
        let store = sources.manager.store();
        let (devices, tenant_devices, pending) = tokio::join!(
            async {
                if self.per_tenant {
                    None
                } else {
                    bounded("count devices by state", store.device_states()).await
                }
            },
            async {
                if self.per_tenant {
                    bounded(
                        "count devices by tenant and state",
                        store.tenant_device_states(),
                    )
                    .await
                } else {
                    None
                }
            },
            bounded(
                "count pending webhook deliveries",
                store.pending_deliveries()
            ),
        );
        // With per-tenant counts on, the totals are their sums: one query either way.
        let devices = devices.or_else(|| {
            let tenant_devices = tenant_devices.as_ref()?;
            let mut totals: BTreeMap<&'static str, (DeviceState, i64)> = BTreeMap::new();
            for (_, state, n) in tenant_devices {
                totals.entry(state.as_str()).or_insert((*state, 0)).1 += n;
            }
            Some(totals.into_values().collect())
        });
        Snapshot {
            node: sources.manager.node_id(),
            devices,
            tenant_devices: tenant_devices.map(|rows| {
                rows.into_iter()
                    .map(|(tenant, state, n)| (tenant.to_string(), state, n))
                    .collect()
            }),
            pending,
            pool: store.pool_status(),
            restore: sources.manager.restore_progress(),
            plugins: sources.plugins.stats(),
        }
    }

    /// The registry of one scrape: the recorded families (shared, not copied) and the
    /// families of `snapshot`. Built per scrape, so concurrent scrapes share no state and a
    /// gone endpoint or tenant leaves no stale series behind.
    fn registry(&self, snapshot: &Snapshot) -> Registry {
        let r = &self.recorded;
        let node = (
            std::borrow::Cow::Borrowed("node"),
            std::borrow::Cow::Owned(snapshot.node.to_string()),
        );
        let mut reg = Registry::with_labels(std::iter::once(node));

        let build: Family<VersionLabel, Gauge> = Family::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        reg.register(
            "wagate_build_info",
            "Always 1; the version label is the running wagate's",
            build,
        );

        if let Some(devices) = &snapshot.devices {
            let family: Family<StateLabel, Gauge> = Family::default();
            // Every state is present, 0 when no device is in it, so rates and alerts see
            // a series from the start.
            for state in DeviceState::ALL {
                family
                    .get_or_create(&StateLabel {
                        state: state.as_str(),
                    })
                    .set(0);
            }
            for (state, n) in devices {
                family
                    .get_or_create(&StateLabel {
                        state: state.as_str(),
                    })
                    .set(*n);
            }
            reg.register(
                "wagate_devices",
                "Devices of every tenant, by state, read at scrape time",
                family,
            );
        }
        if let Some(rows) = &snapshot.tenant_devices {
            let family: Family<TenantStateLabels, Gauge> = Family::default();
            let tenants: std::collections::BTreeSet<&String> = rows.iter().map(|r| &r.0).collect();
            for tenant in tenants {
                for state in DeviceState::ALL {
                    family
                        .get_or_create(&TenantStateLabels {
                            tenant_id: tenant.clone(),
                            state: state.as_str(),
                        })
                        .set(0);
                }
            }
            for (tenant, state, n) in rows {
                family
                    .get_or_create(&TenantStateLabels {
                        tenant_id: tenant.clone(),
                        state: state.as_str(),
                    })
                    .set(*n);
            }
            reg.register(
                "wagate_tenant_devices",
                "Devices by tenant and state, read at scrape time (only with --metrics-per-tenant)",
                family,
            );
        }

        reg.register(
            "wagate_logins_started",
            "Login attempts begun, by method (qr, pair_code)",
            r.logins_started.clone(),
        );
        reg.register(
            "wagate_qr_codes_issued",
            "QR codes issued (qr_refreshed events)",
            r.qr_codes_issued.clone(),
        );
        reg.register(
            "wagate_pair_codes_issued",
            "Pairing codes issued (pair_code_issued events)",
            r.pair_codes_issued.clone(),
        );
        reg.register(
            "wagate_logins_succeeded",
            "Devices newly linked (logged_in events)",
            r.logins_succeeded.clone(),
        );
        reg.register(
            "wagate_logins_failed",
            "Login attempts that ended without a link (login_failed events), by reason",
            r.logins_failed.clone(),
        );
        reg.register(
            "wagate_login_duration_seconds",
            "Seconds from the call that started a login to its logged_in",
            r.login_duration.clone(),
        );
        reg.register(
            "wagate_login_first_qr_seconds",
            "Seconds from the call that started a QR login to its first QR code",
            r.login_first_qr.clone(),
        );
        reg.register(
            "wagate_whatsapp_connections",
            "Clients connected to WhatsApp now (their connection accepted)",
            r.whatsapp_connections.clone(),
        );
        reg.register(
            "wagate_whatsapp_reconnects",
            "Connections of already linked devices accepted again (after a drop, a reconnect or a restore)",
            r.whatsapp_reconnects.clone(),
        );

        let restore = &snapshot.restore;
        let stages: Family<StageLabel, Gauge> = Family::default();
        for (stage, n) in [("total", restore.total), ("done", restore.done)] {
            stages
                .get_or_create(&StageLabel { stage })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        reg.register(
            "wagate_restore_devices",
            "Linked devices the start-up restore reconnects (total) and has settled (done)",
            stages,
        );
        let finished: Gauge = Gauge::default();
        finished.set(i64::from(restore.finished));
        reg.register(
            "wagate_restore_finished",
            "1 once the start-up restore has settled every linked device, else 0",
            finished,
        );

        reg.register(
            "wagate_webhook_deliveries",
            "Webhook delivery attempts settled, by outcome (delivered, failed, dead, expired)",
            r.webhook_deliveries.clone(),
        );
        reg.register(
            "wagate_webhook_attempt_duration_seconds",
            "Seconds one webhook delivery attempt took",
            r.webhook_attempt_duration.clone(),
        );
        reg.register(
            "wagate_webhook_in_flight",
            "Webhook delivery attempts running now",
            r.webhook_in_flight.clone(),
        );
        if let Some(pending) = &snapshot.pending {
            let counts: Family<EndpointLabel, Gauge> = Family::default();
            let ages: Family<EndpointLabel, Gauge<f64, AtomicU64>> = Family::default();
            for p in pending {
                let label = EndpointLabel {
                    endpoint_id: p.endpoint_id.to_string(),
                };
                counts.get_or_create(&label).set(p.count);
                ages.get_or_create(&label).set(p.oldest_age_seconds);
            }
            reg.register(
                "wagate_webhook_pending",
                "Webhook deliveries pending (due or awaiting a retry), by endpoint, read at scrape time",
                counts,
            );
            reg.register(
                "wagate_webhook_oldest_pending_age_seconds",
                "Age of each endpoint's oldest pending webhook delivery, read at scrape time",
                ages,
            );
        }

        let plugins: Family<PluginLabels, Counter> = Family::default();
        for stats in &snapshot.plugins {
            for (outcome, n) in [
                ("delivered", stats.delivered),
                ("failed", stats.failed),
                ("panicked", stats.panicked),
                ("dropped", stats.dropped),
            ] {
                // Two plugins of one name add up rather than clash.
                plugins
                    .get_or_create(&PluginLabels {
                        plugin: stats.name.clone(),
                        outcome,
                    })
                    .inc_by(n);
            }
        }
        reg.register(
            "wagate_plugin_events",
            "Events handed to plugins, by plugin and outcome (delivered, failed, panicked, dropped for a full queue)",
            plugins,
        );

        reg.register(
            "wagate_http_requests",
            "HTTP requests answered, by route template, method and status",
            r.http_requests.clone(),
        );
        reg.register(
            "wagate_http_request_duration_seconds",
            "Seconds to the head of an HTTP answer, by route template and method",
            r.http_request_duration.clone(),
        );

        let pool = &snapshot.pool;
        let connections: Family<StateLabel, Gauge> = Family::default();
        for (state, n) in [("size", pool.size), ("available", pool.available)] {
            connections
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        reg.register(
            "wagate_db_pool_connections",
            "Database pool connections open (size) and idle (available)",
            connections,
        );
        let waiters: Gauge = Gauge::default();
        waiters.set(i64::try_from(pool.waiting).unwrap_or(i64::MAX));
        reg.register(
            "wagate_db_pool_waiters",
            "Tasks waiting for a database pool connection",
            waiters,
        );
        let errors: Counter = Counter::default();
        errors.inc_by(DB_QUERY_ERRORS.load(Ordering::Relaxed));
        reg.register(
            "wagate_db_query_errors",
            "Database statements that failed, in this process",
            errors,
        );
        reg
    }
}

/// Runs one of a scrape's look-ups within [`SCRAPE_QUERY_TIMEOUT`]; `None` (logged) when it
/// failed or took longer.
async fn bounded<T, E: std::fmt::Display>(
    doing: &str,
    lookup: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(SCRAPE_QUERY_TIMEOUT, lookup).await {
        Ok(Ok(found)) => Some(found),
        Ok(Err(e)) => {
            tracing::warn!("metrics: could not {doing}: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(
                "metrics: could not {doing} within {SCRAPE_QUERY_TIMEOUT:?}; left out of this scrape"
            );
            None
        }
    }
}

/// Counts one client in `wagate_whatsapp_connections` while it is marked up; dropping the
/// mark (its session ended, even by an abort) takes it off, so the gauge cannot drift.
#[derive(Debug)]
pub(crate) struct ConnectionMark {
    gauge: Gauge,
    up: bool,
}

impl ConnectionMark {
    /// Marks the client connected or not; only a change moves the gauge.
    pub(crate) fn set(&mut self, up: bool) {
        if up != self.up {
            self.up = up;
            if up {
                self.gauge.inc();
            } else {
                self.gauge.dec();
            }
        }
    }
}

impl Drop for ConnectionMark {
    fn drop(&mut self) {
        self.set(false);
    }
}
