//! The login engine: one actor per live device drives one whatsapp-rust client, so everything
//! that happens to a device is serialised and concurrent logins never start two sessions.

mod client;
mod http;
mod phone;
mod qr_image;
mod session;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;
use whatsapp_rust::wacore::store::traits::Backend;

use crate::domain::{Device, DeviceId, DeviceState, TenantId};
use crate::events::{EngineEventKind, EventBus, LoginFailure, NewEvent};
use crate::store::{DeviceChange, Store, StoreError};

pub use http::ReqwestHttp;
pub use phone::{InvalidPhone, PhoneNumber};
pub use qr_image::{QR_IMAGE_SIZE, QrImageError, render_png};

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

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where WhatsApp is.
    pub endpoint: WhatsAppEndpoint,
    /// How long a login call waits for WhatsApp before answering with a timeout.
    pub login_timeout: Duration,
    /// The name linked devices announce.
    pub push_name: String,
    /// Base of the links inside events (`qr_link`), e.g. `https://wa.example.com`.
    pub public_url: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            endpoint: WhatsAppEndpoint::default(),
            login_timeout: Duration::from_secs(20),
            push_name: "wagate".to_string(),
            public_url: "http://localhost:3000".to_string(),
        }
    }
}

/// A login call that did not produce a code.
#[derive(Debug, Error)]
pub enum LoginError {
    /// No such device for this tenant.
    #[error("device `{0}` not found: create it first with POST /devices")]
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
    #[error("whatsapp is rate limiting pairing codes for device `{device}`: retry later")]
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
    /// The login was cancelled by a logout, reconnect or deletion of the device.
    #[error("the login of device `{0}` was cancelled by a logout, reconnect or deletion")]
    Cancelled(DeviceId),
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

/// A QR code ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrLogin {
    /// The QR string (what the image encodes).
    pub qr_code: String,
    /// The id of the PNG behind `qr_link`.
    pub image: Uuid,
    /// When the code stops being scannable.
    pub expires_at: DateTime<Utc>,
}

impl QrLogin {
    /// Seconds left on the code, rounded up (a code with half a second left is not "0 seconds"
    /// while it is still handed out), capped at 30 as the Go gateway's clients expect.
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

type Key = (TenantId, DeviceId);

/// What every session shares.
pub(crate) struct EngineContext {
    pub store: Store,
    pub bus: EventBus,
    pub config: EngineConfig,
    pub http: reqwest::Client,
}

impl EngineContext {
    /// The device's key store in PostgreSQL.
    pub async fn backend(&self, key: &Key) -> Result<Arc<dyn Backend>, LoginError> {
        let store = self
            .store
            .key_store(key.0, &key.1)
            .await?
            .ok_or_else(|| LoginError::DeviceNotFound(key.1.clone()))?;
        Ok(Arc::new(store))
    }

    /// Forgets the device's keys: it must be linked again.
    pub async fn wipe_backend(&self, key: &Key) {
        if let Err(e) = self.store.wipe_keys(key.0, &key.1).await {
            tracing::error!(device = %key.1, "keys not wiped: {e}");
        }
    }
}

struct SessionHandle {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Ends the session and waits for it; `logout` unlinks a logged-in device first.
    async fn stop(self, logout: bool) {
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(Command::Stop { logout, reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        let _ = self.task.await;
    }
}

/// Commands queued per device before callers wait.
const COMMAND_QUEUE: usize = 64;

/// Devices reconnected at once by a start-up restore.
const RESTORE_BATCH: usize = 32;

/// How often expired QR images are deleted.
const QR_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Owns every device session.
pub struct DeviceManager {
    ctx: Arc<EngineContext>,
    sessions: Mutex<HashMap<Key, SessionHandle>>,
    housekeeping: JoinHandle<()>,
}

impl DeviceManager {
    /// A manager with no live sessions. Must be created inside a tokio runtime: it starts the
    /// task that deletes expired QR images.
    pub fn new(store: Store, bus: EventBus, config: EngineConfig, http: reqwest::Client) -> Self {
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
        Self {
            housekeeping,
            ctx: Arc::new(EngineContext {
                store,
                bus,
                config,
                http,
            }),
            sessions: Mutex::new(HashMap::new()),
        }
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
            .find_device(tenant, device)
            .await?
            .ok_or_else(|| LoginError::DeviceNotFound(device.clone()))
    }

    fn session(
        &self,
        tenant: TenantId,
        device: &DeviceId,
        state: DeviceState,
    ) -> mpsc::Sender<Command> {
        let key = (tenant, device.clone());
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = sessions.get(&key)
            && !handle.task.is_finished()
        {
            return handle.commands.clone();
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let session = Session::new(Arc::clone(&self.ctx), key.clone(), state);
        let task = tokio::spawn(session.run(rx));
        sessions.insert(
            key,
            SessionHandle {
                commands: tx.clone(),
                task,
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
        let session = self.session(tenant, device, stored.state);
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
        let key = (tenant, device.clone());
        let handle = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(handle) = handle {
            handle.stop(true).await;
        }
        // The device's keys go with it (the key tables cascade).
        if !self.ctx.store.delete_device(tenant, device).await? {
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
        if self.ctx.store.tenant(tenant).await?.is_none() {
            return Err(StoreError::TenantNotFound(tenant).into());
        }
        self.ctx.store.revoke_credentials(tenant).await?;
        let devices = self.ctx.store.list_devices(tenant).await?;
        let mut deletions = futures_util::stream::iter(devices)
            .map(|device| async move {
                match self.delete(tenant, &device.id).await {
                    // Deleted meanwhile by a request that was already under way.
                    Ok(()) | Err(LoginError::DeviceNotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(RESTORE_BATCH);
        while let Some(deleted) = deletions.next().await {
            deleted?;
        }
        // Sessions whose device such a request deleted or created meanwhile.
        let leftovers: Vec<SessionHandle> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<Key> = sessions.keys().filter(|k| k.0 == tenant).cloned().collect();
            keys.iter().filter_map(|k| sessions.remove(k)).collect()
        };
        for handle in leftovers {
            handle.stop(true).await;
        }
        Ok(self.ctx.store.delete_tenant(tenant).await?)
    }

    /// Reconnects every linked device from its stored keys, a batch at a time so a gateway with
    /// thousands of devices comes up smoothly; returns how many devices it started. Each batch
    /// waits until its devices are logged in, have failed, or the login timeout passed. The API
    /// serves meanwhile: run this in its own task.
    pub async fn restore(&self) -> Result<usize, StoreError> {
        self.fail_interrupted_logins().await?;
        let devices = self.ctx.store.linked_devices().await?;
        let mut events = self.ctx.bus.subscribe();
        for batch in devices.chunks(RESTORE_BATCH) {
            let mut pending: HashSet<Key> = batch.iter().cloned().collect();
            for (tenant, id) in batch {
                let session = self.session(*tenant, id, DeviceState::LoggedIn);
                let _ = session.send(Command::Resume).await;
            }
            let deadline = tokio::time::Instant::now() + self.ctx.config.login_timeout;
            while !pending.is_empty() {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Ok(event)) => {
                        let settled = event.event_type == "state_changed"
                            && matches!(
                                event.data["to"].as_str(),
                                Some("logged_in" | "disconnected")
                            );
                        if let (true, Some(Ok(device))) =
                            (settled, event.device_id.as_deref().map(DeviceId::parse))
                        {
                            pending.remove(&(TenantId(event.tenant), device));
                        }
                    }
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                    Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
                }
            }
        }
        Ok(devices.len())
    }

    /// Ends the logins a process that died left pending (its unlinked devices still connecting
    /// or connected): each gets `login_failed` (`interrupted`) and its `state_changed` to
    /// `disconnected`, through the outbox like every event, so no consumer is left waiting. A
    /// device that a new login moved meanwhile is left alone.
    async fn fail_interrupted_logins(&self) -> Result<(), StoreError> {
        for (tenant, id, from) in self.ctx.store.interrupted_logins().await? {
            let events = [
                EngineEventKind::LoginFailed {
                    reason: LoginFailure::Interrupted,
                },
                EngineEventKind::StateChanged {
                    from,
                    to: DeviceState::Disconnected,
                },
            ]
            .iter()
            .map(|kind| NewEvent::from_kind(kind, &self.ctx.config.public_url))
            .collect();
            let change = DeviceChange {
                state: Some(DeviceState::Disconnected),
                only_from: Some(from),
                ..DeviceChange::default()
            };
            match self
                .ctx
                .store
                .record_events(tenant, &id, change, events)
                .await
            {
                Ok(recorded) => {
                    for event in recorded {
                        self.ctx.bus.publish(event);
                    }
                }
                Err(StoreError::DeviceNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
            handle.stop(false).await;
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
