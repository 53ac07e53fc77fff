//! The login engine: one actor per live device drives one whatsapp-rust client, so everything
//! that happens to a device is serialised and concurrent logins never start two sessions.

mod client;
mod http;
mod membership;
mod passkey;
mod phone;
mod placement;
mod qr_image;
mod restore;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::domain::{Device, DeviceId, DeviceState, TenantId};
use crate::events::EventBus;
use crate::store::{Store, StoreError};

pub use http::ReqwestHttp;
pub use passkey::{InvalidPasskeyAssertion, PasskeyAssertion};
pub use phone::{InvalidPhone, PhoneNumber};
pub use placement::{NodeConfig, Peer, Placement};
pub use qr_image::{QR_IMAGE_SIZE, QrFetchError, QrImageError, qr_png, render_png};
pub use restore::RestoreProgress;

use placement::NodeState;
use restore::RestoreTracker;
use session::{Command, Session};

/// Where the engine's clients find WhatsApp.
#[derive(Debug, Clone, Default)]
pub enum WhatsAppEndpoint {
    /// The real service.
    #[default]
    Production,
    /// A wagate sandbox on loopback; clients run their timers `time_scale` times faster.
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// `ws://127.0.0.1:PORT/ws/chat`.
        url: String,
        /// See `wagate_sandbox::ScaledRuntime`.
        time_scale: u32,
    },
}

impl WhatsAppEndpoint {
    /// How much faster than real time the clients' timers run.
    pub fn time_scale(&self) -> u32 {
        match self {
            Self::Production => 1,
            #[cfg(feature = "sandbox")]
            Self::Sandbox { time_scale, .. } => (*time_scale).max(1),
        }
    }
}

/// Where a QR code's image is served. The HTTP edge owns its route and the public base URL;
/// the engine asks once per code, so the login answer and the `qr_refreshed` event carry the
/// same link.
pub trait QrLinks: std::fmt::Debug + Send + Sync {
    /// The public URL of QR image `image`.
    fn qr_link(&self, image: Uuid) -> String;
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where WhatsApp is.
    pub endpoint: WhatsAppEndpoint,
    /// How long a login call waits for WhatsApp before answering with a timeout.
    pub login_timeout: Duration,
    /// The name linked devices announce.
    pub push_name: String,
    /// The links of QR images, for login answers and events.
    pub qr_links: Arc<dyn QrLinks>,
    /// Where sessions count logins and WhatsApp connections.
    pub metrics: crate::metrics::Metrics,
    /// How this node takes part in a cluster.
    pub node: NodeConfig,
}

impl EngineConfig {
    /// The name linked devices announce unless told otherwise.
    pub const PUSH_NAME: &str = "wagate";
}

/// A login call that did not produce a code.
#[derive(Debug, Error)]
pub enum LoginError {
    /// No such device for this tenant.
    #[error("device `{0}` not found")]
    DeviceNotFound(DeviceId),
    /// The device is already linked.
    #[error("you are already logged in.")]
    AlreadyLoggedIn(DeviceId),
    /// The phone number is not acceptable.
    #[error(transparent)]
    InvalidPhone(#[from] InvalidPhone),
    /// WhatsApp did not answer within the login timeout.
    #[error(
        "whatsapp did not answer within {waited:?} for device `{device}`: the device is disconnected, try again"
    )]
    Timeout {
        /// The device.
        device: DeviceId,
        /// How long the call waited.
        waited: Duration,
    },
    /// WhatsApp asked the device to slow down.
    #[error("whatsapp is rate limiting the logins of device `{device}`: retry later")]
    RateLimited {
        /// The device.
        device: DeviceId,
        /// How long WhatsApp asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// WhatsApp refused the request.
    #[error("whatsapp refused the login of device `{device}`: {reason}")]
    Refused {
        /// The device.
        device: DeviceId,
        /// What WhatsApp or the client said.
        reason: String,
    },
    /// The account confirms links with a passkey: the login waits for its assertion.
    #[error(
        "the account linking device `{device}` confirms links with a passkey: get an assertion \
         for `passkey_request_options` (navigator.credentials.get) and post it to \
         POST /devices/{device}/login/passkey"
    )]
    PasskeyRequired {
        /// The device.
        device: DeviceId,
        /// The WebAuthn request options to get the assertion for.
        request_options: serde_json::Value,
    },
    /// A passkey assertion was posted for a device that is not waiting for one.
    #[error(
        "device `{0}` is not waiting for a passkey: post an assertion only while its state is \
         `passkey_required`"
    )]
    NoPasskeyRequested(DeviceId),
    /// The posted passkey assertion is malformed.
    #[error(transparent)]
    InvalidPasskeyAssertion(#[from] InvalidPasskeyAssertion),
    /// The login was cancelled by a logout, reconnect or deletion of the device.
    #[error("the login of device `{0}` was cancelled by a logout, reconnect or deletion")]
    Cancelled(DeviceId),
    /// Another node owns the device: it is moving between nodes (one joined, left or
    /// restarts), or this node was paused and lost it.
    #[error("device `{0}` is moving to another gateway node: retry in a second")]
    OwnedElsewhere(DeviceId),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something inside the engine failed.
    #[error("login of device `{device}` failed inside the gateway: {detail}")]
    Internal {
        /// The device.
        device: DeviceId,
        /// What failed.
        detail: String,
    },
}

impl LoginError {
    /// A copy for another waiter on the same outcome (the store error is not clonable, so it is
    /// carried as its message).
    pub(crate) fn clone_for_waiter(&self, device: &DeviceId) -> LoginError {
        match self {
            Self::DeviceNotFound(d) => Self::DeviceNotFound(d.clone()),
            Self::AlreadyLoggedIn(d) => Self::AlreadyLoggedIn(d.clone()),
            Self::InvalidPhone(p) => Self::InvalidPhone(p.clone()),
            Self::Timeout { device, waited } => Self::Timeout {
                device: device.clone(),
                waited: *waited,
            },
            Self::RateLimited {
                device,
                retry_after,
            } => Self::RateLimited {
                device: device.clone(),
                retry_after: *retry_after,
            },
            Self::Refused { device, reason } => Self::Refused {
                device: device.clone(),
                reason: reason.clone(),
            },
            Self::PasskeyRequired {
                device,
                request_options,
            } => Self::PasskeyRequired {
                device: device.clone(),
                request_options: request_options.clone(),
            },
            Self::NoPasskeyRequested(d) => Self::NoPasskeyRequested(d.clone()),
            Self::InvalidPasskeyAssertion(e) => Self::InvalidPasskeyAssertion(e.clone()),
            Self::Cancelled(d) => Self::Cancelled(d.clone()),
            Self::OwnedElsewhere(d) => Self::OwnedElsewhere(d.clone()),
            Self::Store(e) => Self::Internal {
                device: device.clone(),
                detail: e.to_string(),
            },
            Self::Internal { device, detail } => Self::Internal {
                device: device.clone(),
                detail: detail.clone(),
            },
        }
    }
}

/// A QR code ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrLogin {
    /// The QR string (what the image encodes).
    pub qr_code: String,
    /// The public link to the code's PNG.
    pub link: String,
    /// When the code stops being scannable.
    pub expires_at: DateTime<Utc>,
}

impl QrLogin {
    /// Seconds left on the code, rounded up (a code with half a second left is not "0 seconds"
    /// while it is still handed out), capped at 30: the code lives no longer, and clients size their countdowns by it.
    pub fn duration_secs(&self) -> u64 {
        let left_ms = (self.expires_at - Utc::now()).num_milliseconds().max(0) as u64;
        left_ms.div_ceil(1000).min(30)
    }
}

/// A pairing code ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairCodeLogin {
    /// `XXXX-XXXX`.
    pub pair_code: String,
    /// When it stops being usable.
    pub expires_at: DateTime<Utc>,
}

/// Where a device's login stands right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStatus {
    /// A socket to WhatsApp is up.
    pub is_connected: bool,
    /// The device is linked and usable.
    pub is_logged_in: bool,
}

/// The device a session is for: a device id names a device only within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DeviceKey {
    tenant: TenantId,
    device: DeviceId,
}

/// What every session shares.
pub(crate) struct EngineContext {
    pub store: Store,
    pub bus: EventBus,
    pub config: EngineConfig,
    pub http: reqwest::Client,
    pub node: NodeState,
}

/// The lease a session runs under and since when, shared with its handle: the manager stops a
/// session whose lease the node's heartbeat no longer finds, and releases the lease of a
/// session it stopped under that very lease.
#[derive(Debug, Default)]
pub(crate) struct LeaseCell(Mutex<Option<(crate::store::Lease, tokio::time::Instant)>>);

impl LeaseCell {
    fn with(lease: crate::store::Lease) -> Arc<Self> {
        let cell = Arc::new(Self::default());
        cell.set(lease);
        cell
    }

    /// The session acquired `lease` now.
    pub(crate) fn set(&self, lease: crate::store::Lease) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((lease, tokio::time::Instant::now()));
    }

    /// The lease, if acquired.
    fn lease(&self) -> Option<crate::store::Lease> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(lease, _)| lease)
    }

    /// The lease, if acquired before `before`.
    fn acquired_before(&self, before: tokio::time::Instant) -> Option<crate::store::Lease> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter(|(_, at)| *at < before)
            .map(|(lease, _)| lease)
    }
}

struct SessionHandle {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    lease: Arc<LeaseCell>,
}

impl SessionHandle {
    /// Ends the session and waits for it, leaving the device linked (a process shutdown).
    async fn stop(self) {
        self.end(Command::Stop).await;
    }

    /// Logs the device out (a linked one is unlinked on WhatsApp; its keys and JID go), then
    /// ends the session and waits for it.
    async fn log_out_and_stop(self) {
        self.end(Command::LogOutAndStop).await;
    }

    async fn end(self, command: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(command(reply)).await.is_ok() {
            let _ = done.await;
        }
        let _ = self.task.await;
    }
}

/// Commands queued per device before callers wait.
const COMMAND_QUEUE: usize = 64;

/// Devices reconnected at once by a start-up restore (and logged out at once by a tenant delete).
const RESTORE_IN_FLIGHT: usize = 32;

/// How often expired QR images are deleted.
const QR_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Owns every device session of this node.
pub struct DeviceManager {
    ctx: Arc<EngineContext>,
    sessions: Mutex<HashMap<DeviceKey, SessionHandle>>,
    housekeeping: JoinHandle<()>,
    restoring: RestoreTracker,
    membership: membership::MembershipHandle,
}

impl DeviceManager {
    /// A manager with no live sessions, for the node registered as `link`. Must be created
    /// inside a tokio runtime: it starts the task that deletes expired QR images and the
    /// node's membership (heartbeat, leases, failover, balance).
    pub fn new(
        store: Store,
        bus: EventBus,
        config: EngineConfig,
        http: reqwest::Client,
        link: crate::store::NodeLink,
        public_url: String,
    ) -> Arc<Self> {
        let purging = store.clone();
        let housekeeping = tokio::spawn(async move {
            let mut every = tokio::time::interval(QR_PURGE_INTERVAL);
            loop {
                every.tick().await;
                if let Err(e) = purging.purge_expired_qr_images().await {
                    tracing::warn!("expired qr images not purged: {e}");
                }
            }
        });
        let node = NodeState::new(config.node.clone());
        node.set_id(link.id());
        let manager = Arc::new(Self {
            housekeeping,
            ctx: Arc::new(EngineContext {
                store,
                bus,
                config,
                http,
                node,
            }),
            sessions: Mutex::new(HashMap::new()),
            restoring: RestoreTracker::default(),
            membership: membership::MembershipHandle::new(),
        });
        manager
            .membership
            .start(Arc::downgrade(&manager), link, public_url);
        manager
    }

    /// The store the manager works on.
    pub fn store(&self) -> &Store {
        &self.ctx.store
    }

    /// The bus engine events are published on.
    pub fn events(&self) -> &EventBus {
        &self.ctx.bus
    }

    async fn existing(&self, tenant: TenantId, device: &DeviceId) -> Result<Device, LoginError> {
        self.ctx
            .store
            .tenant(tenant)
            .find_device(device)
            .await?
            .ok_or_else(|| LoginError::DeviceNotFound(device.clone()))
    }

    /// The live session of a device, started if there is none: under lease `epoch` when the
    /// caller acquired it, else the session acquires one first.
    fn session(
        &self,
        tenant: TenantId,
        device: &DeviceId,
        state: DeviceState,
        leased: Option<crate::store::Lease>,
    ) -> mpsc::Sender<Command> {
        let key = DeviceKey {
            tenant,
            device: device.clone(),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = sessions.get(&key)
            && !handle.task.is_finished()
        {
            return handle.commands.clone();
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let lease = leased.map(LeaseCell::with).unwrap_or_default();
        let session = Session::new(
            Arc::clone(&self.ctx),
            key.clone(),
            state,
            leased,
            Arc::clone(&lease),
        );
        // Every log line of the session, whichever task it runs on, names its device. The
        // session outlives the request that may have started it: it is no child of its span.
        let span = tracing::info_span!(
            parent: None,
            "session",
            tenant = %key.tenant,
            device = %key.device
        );
        let task = tokio::spawn(session.run(rx).instrument(span));
        sessions.insert(
            key,
            SessionHandle {
                commands: tx.clone(),
                task,
                lease,
            },
        );
        tx
    }

    async fn ask<T>(
        &self,
        tenant: TenantId,
        device: &DeviceId,
        command: impl FnOnce(oneshot::Sender<Result<T, LoginError>>) -> Command,
    ) -> Result<T, LoginError> {
        let stored = self.existing(tenant, device).await?;
        let session = self.session(tenant, device, stored.state, None);
        let (tx, rx) = oneshot::channel();
        let gone = || LoginError::Cancelled(device.clone());
        session.send(command(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Starts (or continues) a QR login and returns the code showing now.
    pub async fn login_qr(
        &self,
        tenant: TenantId,
        device: &DeviceId,
    ) -> Result<QrLogin, LoginError> {
        self.ask(tenant, device, Command::Qr).await
    }

    /// Starts (or continues) a pairing-code login for `phone`.
    pub async fn login_code(
        &self,
        tenant: TenantId,
        device: &DeviceId,
        phone: &str,
    ) -> Result<PairCodeLogin, LoginError> {
        // Bad input changes nothing: validate before the device or a session is touched.
        let phone = PhoneNumber::parse(phone)?;
        self.ask(tenant, device, |reply| Command::PairCode { phone, reply })
            .await
    }

    /// Hands the passkey assertion `assertion` (a WebAuthn `PublicKeyCredential` as JSON) to
    /// the login of a device in `passkey_required`; answers once WhatsApp has accepted it.
    pub async fn login_passkey(
        &self,
        tenant: TenantId,
        device: &DeviceId,
        assertion: &serde_json::Value,
    ) -> Result<(), LoginError> {
        // Bad input changes nothing: checked before the device or a session is touched.
        let assertion = PasskeyAssertion::parse(assertion)?;
        self.ask(tenant, device, |reply| Command::Passkey {
            assertion,
            reply,
        })
        .await
    }

    /// Logs the device out of WhatsApp and forgets its keys; the slot stays.
    pub async fn logout(&self, tenant: TenantId, device: &DeviceId) -> Result<(), LoginError> {
        self.ask(tenant, device, Command::Logout).await
    }

    /// Drops and reopens the device's connection; a linked device logs back in.
    pub async fn reconnect(&self, tenant: TenantId, device: &DeviceId) -> Result<(), LoginError> {
        self.ask(tenant, device, Command::Reconnect).await
    }

    /// Whether the device is connected and logged in.
    pub async fn status(
        &self,
        tenant: TenantId,
        device: &DeviceId,
    ) -> Result<DeviceStatus, LoginError> {
        let stored = self.existing(tenant, device).await?;
        Ok(DeviceStatus {
            is_connected: stored.state.is_connected(),
            is_logged_in: stored.state == DeviceState::LoggedIn,
        })
    }

    /// Logs the device out, stops its session and removes the slot with everything under it.
    pub async fn delete(&self, tenant: TenantId, device: &DeviceId) -> Result<(), LoginError> {
        self.existing(tenant, device).await?;
        let key = DeviceKey {
            tenant,
            device: device.clone(),
        };
        let handle = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(handle) = handle {
            handle.log_out_and_stop().await;
        }
        // The device's keys go with it (the key tables cascade).
        if !self.ctx.store.tenant(tenant).delete_device(device).await? {
            return Err(LoginError::DeviceNotFound(device.clone()));
        }
        Ok(())
    }

    /// Removes `tenant` with everything it has. Its credentials are revoked first, so it starts
    /// nothing new meanwhile; then each of its devices is logged out, its session stopped and
    /// its slot removed, as [`DeviceManager::delete`] does; then the tenant row goes, and with
    /// it (the foreign keys cascade) its webhook endpoints, events and deliveries.
    /// [`StoreError::TenantNotFound`] when there is no such tenant.
    pub async fn delete_tenant(&self, tenant: TenantId) -> Result<(), LoginError> {
        let store = self.ctx.store.tenant(tenant);
        if store.summary().await?.is_none() {
            return Err(StoreError::TenantNotFound(tenant).into());
        }
        store.revoke_credentials().await?;
        let devices = store.list_devices().await?;
        let mut deletions = futures_util::stream::iter(devices)
            .map(|device| async move {
                match self.delete(tenant, &device.id).await {
                    // Deleted meanwhile by a request that was already under way.
                    Ok(()) | Err(LoginError::DeviceNotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(RESTORE_IN_FLIGHT);
        while let Some(deleted) = deletions.next().await {
            deleted?;
        }
        // Sessions whose device such a request deleted or created meanwhile.
        let leftovers: Vec<SessionHandle> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<DeviceKey> = sessions
                .keys()
                .filter(|k| k.tenant == tenant)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| sessions.remove(k)).collect()
        };
        for handle in leftovers {
            handle.log_out_and_stop().await;
        }
        Ok(self.ctx.store.delete_tenant(tenant).await?)
    }

    /// Reconnects every linked device no live node owns that belongs on this node (every one,
    /// for a node alone) from its stored keys, a few at a time so a gateway with thousands of
    /// devices comes up smoothly, and ends the logins a dead node left pending; returns how
    /// many devices it started. At most [`RESTORE_IN_FLIGHT`] are under way at once; each is
    /// through once it is logged in, has failed, or its login timeout passed. The API
    /// serves meanwhile: run this in its own task, and follow it with
    /// [`DeviceManager::restore_progress`].
    ///
    /// It fails only before it starts any device (the store did not answer), so it may simply be
    /// called again; [`DeviceManager::restore_failure`] keeps the error until then.
    pub async fn restore(&self) -> Result<usize, StoreError> {
        self.restoring.begin();
        let restored = self.restore_all().await;
        match &restored {
            Ok(_) => self.restoring.finish(),
            Err(e) => self.restoring.fail(e),
        }
        restored
    }

    /// Where the start-up restore stands; `finished` is false until [`DeviceManager::restore`]
    /// returned `Ok`.
    pub fn restore_progress(&self) -> RestoreProgress {
        self.restoring.progress()
    }

    /// Why the last [`DeviceManager::restore`] failed, until it is called again.
    pub fn restore_failure(&self) -> Option<String> {
        self.restoring.failure()
    }

    async fn restore_all(&self) -> Result<usize, StoreError> {
        // Who else is alive decides which of the devices without a live owner are this node's.
        self.refresh_view().await?;
        let devices = self.acquire_orphans(None).await?;
        self.restoring.found(devices.len());
        let mut logged_in = 0;
        // A window, not batches: the next device starts as soon as one settles, so one slow
        // login holds back no other.
        let mut waiting = devices.iter();
        let mut settling = futures_util::stream::FuturesUnordered::new();
        loop {
            while settling.len() < RESTORE_IN_FLIGHT
                && let Some(device) = waiting.next()
            {
                let (settled, state) = oneshot::channel();
                if self.resume_under(&device.lease, settled).await {
                    // Those the timeout leaves connecting carry on by themselves; the restore
                    // is through with them.
                    let deadline = tokio::time::Instant::now() + self.ctx.config.login_timeout;
                    settling.push(tokio::time::timeout_at(deadline, state));
                } else {
                    self.restoring.settled(1);
                }
            }
            // A session that ended without answering (its device was deleted) has settled too.
            let Some(state) = settling.next().await else {
                break;
            };
            logged_in += usize::from(matches!(state, Ok(Ok(DeviceState::LoggedIn))));
            self.restoring.settled(1);
        }
        // The caller reports how many were started; how many got back in is told here.
        tracing::debug!(linked = devices.len(), logged_in, "linked devices settled");
        Ok(devices.len())
    }

    /// Stops every session without logging anything out, as a process shutdown does.
    pub async fn shutdown(&self) {
        let handles: Vec<SessionHandle> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for handle in handles {
            handle.stop().await;
        }
    }

    /// The QR string a device shows right now, if any (for sandbox phones).
    pub async fn current_qr(
        &self,
        tenant: TenantId,
        device: &DeviceId,
    ) -> Result<Option<String>, LoginError> {
        self.ask(tenant, device, Command::CurrentQr).await
    }

    /// The pairing code a device shows right now and the phone it is for, if any.
    pub async fn current_pair_code(
        &self,
        tenant: TenantId,
        device: &DeviceId,
    ) -> Result<Option<(PhoneNumber, String)>, LoginError> {
        self.ask(tenant, device, Command::CurrentPairCode).await
    }
}

impl Drop for DeviceManager {
    fn drop(&mut self) {
        self.housekeeping.abort();
        self.membership.abort();
        for (_, handle) in self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            handle.task.abort();
        }
    }
}
