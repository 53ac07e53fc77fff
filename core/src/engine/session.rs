//! The actor that owns one device: its client, its pending QR code or pairing code, and the
//! callers waiting for them.
//!
//! What both logins share is here: the client, the device's state and the events that record
//! it, the login deadline, the device being deleted underneath; so is the QR login, whose codes
//! come as client events. The pairing-code login, a request per phone number made off the
//! actor's loop, is in `pair_code`.
//!
//! Invariant: at most one client runs per device, and only this task starts or stops it.

mod pair_code;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;
use whatsapp_rust::types::events::Event;

use super::client::{self, RunningClient, WireNotice};
use super::{
    DeviceKey, EngineContext, LeaseCell, LoginError, PairCodeLogin, PasskeyAssertion, PhoneNumber,
    QrLogin,
};
use crate::domain::DeviceState;
use crate::events::{EngineEventKind, LoginFailure, NewEvent};
use crate::metrics::{ConnectionMark, LoginAttempt, LoginMethod};
use crate::store::keys::PgBackend;
use crate::store::{DeviceChange, Lease, LeaseHolder, Link, StoreError, TenantStore};
use pair_code::PairCodeFlow;

type Reply<T> = oneshot::Sender<Result<T, LoginError>>;

/// What callers ask of a session.
pub(crate) enum Command {
    Qr(Reply<QrLogin>),
    PairCode {
        phone: PhoneNumber,
        reply: Reply<PairCodeLogin>,
    },
    Logout(Reply<()>),
    Reconnect(Reply<()>),
    CurrentQr(Reply<Option<String>>),
    /// Reconnects a linked device from its stored keys (start-up restore); answered with the
    /// state the device settles in (logged in or disconnected), or dropped if the session ends
    /// first.
    Resume(oneshot::Sender<DeviceState>),
    CurrentPairCode(Reply<Option<(PhoneNumber, String)>>),
    /// The account's passkey assertion, for a device in `passkey_required`.
    Passkey {
        assertion: PasskeyAssertion,
        reply: Reply<()>,
    },
    /// Ends the session; the device stays linked.
    Stop(oneshot::Sender<()>),
    /// Logs the device out (unlinking a linked one), then ends the session.
    LogOutAndStop(oneshot::Sender<()>),
    /// Ends the session, leaving the device linked, if no login is under way: the device moves
    /// to another node. Answered with whether it ended.
    Release(oneshot::Sender<bool>),
}

impl Command {
    /// Answers a command the session will not carry out with `error` (the ones that cannot fail
    /// are simply acknowledged or dropped).
    fn refuse(self, error: impl Fn() -> LoginError) {
        match self {
            Self::Qr(reply) => drop(reply.send(Err(error()))),
            Self::PairCode { reply, .. } => drop(reply.send(Err(error()))),
            Self::Logout(reply) | Self::Reconnect(reply) | Self::Passkey { reply, .. } => {
                drop(reply.send(Err(error())))
            }
            Self::CurrentQr(reply) => drop(reply.send(Err(error()))),
            Self::CurrentPairCode(reply) => drop(reply.send(Err(error()))),
            Self::Resume(_) => {}
            Self::Stop(reply) | Self::LogOutAndStop(reply) => drop(reply.send(())),
            Self::Release(reply) => drop(reply.send(true)),
        }
    }
}

/// A code this close to expiry is not handed out again. Scaled with the sandbox's time scale like
/// the codes' lifetimes, or at a high scale every code would count as expired from the start.
const REUSE_MARGIN: Duration = Duration::from_secs(2);
/// How long a client gets to shut down before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long logins of a device are refused after WhatsApp rate-limited one: what whatsapp-rust
/// itself waits before reconnecting after a 429 (its sixth Fibonacci back-off step).
const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(8);
/// How long the passkey step may take when WhatsApp's request options name no timeout.
const PASSKEY_TIMEOUT: Duration = Duration::from_secs(300);

struct PendingQr {
    login: QrLogin,
    until: Instant,
}

struct Running {
    client: RunningClient,
    /// The client's key store, closed when the client stops (see `PgBackend::close`).
    keys: Arc<PgBackend>,
    generation: u64,
    /// `PairSuccess` was seen: the next `Connected` is a new login, not a reconnect.
    paired: Option<Paired>,
}

/// What `PairSuccess` said about the account, for the `logged_in` that follows it.
struct Paired {
    /// The phone's platform.
    platform: String,
    /// The business's name; empty for a personal account.
    business_name: String,
}

/// The actor of one device; [`Session::run`] is its loop.
pub(crate) struct Session {
    ctx: Arc<EngineContext>,
    key: DeviceKey,
    state: DeviceState,
    running: Option<Running>,
    /// The device was deleted under this session (a store write found no row): the session
    /// ends after the step that found it, and the manager starts a fresh one if the id is
    /// created again.
    gone: bool,
    /// The device's lease this session holds; every write is fenced by it. `None` until
    /// acquired, which the session does before anything else.
    leased: Option<Lease>,
    /// Where the manager reads the lease, to stop this session once another node took it.
    lease: Arc<LeaseCell>,
    /// Another node took the device (a fenced write was refused): the session ends after the
    /// step that found it, writing nothing more.
    lost: bool,
    /// Why the last write of the device's state or events failed, when the database refused it
    /// (a deletion or another node's lease are `gone` and `lost`); cleared by the next write
    /// that lands.
    unrecorded: Option<String>,
    /// The row the running client's keys belong to: a device deleted and created again under
    /// the same id is another row, and a client failing on the old one means this session's
    /// device is gone.
    row: Option<i64>,
    generation: u64,
    qr: Option<PendingQr>,
    qr_index: u32,
    /// The ref of the last code of the series: the client shows a ref again, under a new
    /// secret, when WhatsApp rotates the registration, and that is not a new position.
    qr_ref: Option<String>,
    /// WhatsApp's passkey request options, while the device is in `passkey_required`.
    passkey: Option<serde_json::Value>,
    /// Logins are refused until then: WhatsApp rate-limited the last one.
    rate_limited_until: Option<Instant>,
    qr_waiters: Vec<Reply<QrLogin>>,
    /// The pairing-code login (`pair_code`).
    code: PairCodeFlow,
    /// When the callers waiting now get a timeout.
    deadline: Option<Instant>,
    /// Restores waiting for the device to be logged in or disconnected.
    resumes: Vec<oneshot::Sender<DeviceState>>,
    /// The login attempt in progress, for the metrics: begun by the call that started it,
    /// ended by its `logged_in` or `login_failed` (or a logout).
    login: Option<LoginAttempt>,
    /// This device's client in `wagate_whatsapp_connections` while WhatsApp has accepted it.
    connection: ConnectionMark,
}

impl Session {
    /// A session for `key`, whose device the store last saw in `state`; no client runs yet. With
    /// `epoch` it runs under that lease (acquired by the caller, and noted in `lease`);
    /// without, it acquires one first.
    pub fn new(
        ctx: Arc<EngineContext>,
        key: DeviceKey,
        state: DeviceState,
        leased: Option<Lease>,
        lease: Arc<LeaseCell>,
    ) -> Self {
        let connection = ctx.config.metrics.connection();
        Self {
            ctx,
            key,
            // A state left over from a previous process means nothing without a client.
            state: if state == DeviceState::LoggedIn {
                DeviceState::LoggedIn
            } else {
                DeviceState::Disconnected
            },
            running: None,
            gone: false,
            leased,
            lease,
            lost: false,
            unrecorded: None,
            row: None,
            generation: 0,
            qr: None,
            qr_index: 0,
            qr_ref: None,
            passkey: None,
            rate_limited_until: None,
            qr_waiters: Vec::new(),
            code: PairCodeFlow::new(),
            deadline: None,
            resumes: Vec::new(),
            login: None,
            connection,
        }
    }

    /// Serves `commands` and the client's events until told to stop, the channel closes or the
    /// device turns out deleted.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        if self.leased.is_none()
            && let Err(refusal) = self.acquire().await
        {
            // Whatever is queued gets the reason; the manager starts a new session for the
            // next caller, which tries again.
            commands.close();
            let device = self.device().clone();
            while let Some(command) = commands.recv().await {
                command.refuse(|| refusal.clone_for_waiter(&device));
            }
            return;
        }
        loop {
            let deadline = self.deadline;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop(reply)) => {
                        self.stop().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(Command::LogOutAndStop(reply)) => {
                        self.log_out().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(Command::Release(reply)) => {
                        if self.idle() {
                            self.stop().await;
                            let _ = reply.send(true);
                            return;
                        }
                        let _ = reply.send(false);
                    }
                    Some(command) => self.on_command(command).await,
                    None => {
                        self.stop().await;
                        return;
                    }
                },
                event = next_event(&mut self.running) => match event {
                    Some(event) => self.on_event(&event).await,
                    None => self.on_client_gone().await,
                },
                Some(outcome) = self.code.outcome() => self.on_code(outcome).await,
                _ = sleep_until(deadline) => self.on_deadline().await,
            }
            if self.gone {
                self.stop_client().await;
                let device = self.device().clone();
                self.fail_waiters(|| LoginError::DeviceNotFound(device.clone()));
                return;
            }
            if self.lost {
                self.stop_client().await;
                let superseded = self.superseded().await;
                let device = self.device().clone();
                self.fail_waiters(|| superseded.clone_for_waiter(&device));
                return;
            }
        }
    }

    fn device(&self) -> &crate::domain::DeviceId {
        &self.key.device
    }

    /// The store, scoped to the device's tenant.
    fn store(&self) -> TenantStore<'_> {
        self.ctx.store.tenant(self.key.tenant)
    }

    fn scaled(&self, d: Duration) -> Duration {
        d / self.ctx.config.endpoint.time_scale()
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Qr(reply) => self.want_qr(reply).await,
            Command::PairCode { phone, reply } => self.want_code(phone, reply).await,
            Command::Logout(reply) => {
                self.log_out().await;
                let outcome = self.write_outcome().await;
                let _ = reply.send(outcome);
            }
            Command::Reconnect(reply) => {
                let resume = self.running.is_some() || self.state == DeviceState::LoggedIn;
                self.stop_client().await;
                // The pairing code being requested died with the client; a QR login carries on
                // with the new client's codes.
                self.cancel_code_waiters();
                let result = if resume {
                    self.start_client().await
                } else {
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::Resume(settled) => {
                if self.running.is_none() {
                    self.set_state(DeviceState::Connecting).await;
                    if let Err(e) = self.start_client().await {
                        tracing::error!(device = %self.device(), "not restored: {e}");
                        self.set_state(DeviceState::Disconnected).await;
                    }
                }
                self.resumes.push(settled);
                self.settle_resumes();
            }
            Command::CurrentQr(reply) => {
                let qr = self.live_qr().map(|q| q.qr_code.clone());
                let _ = reply.send(Ok(qr));
            }
            Command::CurrentPairCode(reply) => {
                let _ = reply.send(Ok(self.current_pair_code()));
            }
            Command::Passkey { assertion, reply } => {
                let result = self.use_passkey(assertion).await;
                let _ = reply.send(result);
            }
            Command::Stop(_) | Command::LogOutAndStop(_) | Command::Release(_) => {
                unreachable!("handled by the loop")
            }
        }
    }

    fn live_qr(&self) -> Option<&QrLogin> {
        let margin = self.scaled(REUSE_MARGIN);
        self.qr
            .as_ref()
            .filter(|q| q.until > Instant::now() + margin)
            .map(|q| &q.login)
    }

    /// Why a new login call cannot wait for a code now, if it cannot: the device is linked,
    /// WhatsApp waits for its passkey, or WhatsApp rate-limited its last login.
    fn login_blocked(&self) -> Option<LoginError> {
        let device = self.device().clone();
        if self.state == DeviceState::LoggedIn {
            return Some(LoginError::AlreadyLoggedIn(device));
        }
        if let Some(request_options) = &self.passkey {
            return Some(LoginError::PasskeyRequired {
                device,
                request_options: request_options.clone(),
            });
        }
        let left = self
            .rate_limited_until
            .map(|until| until.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())?;
        Some(LoginError::RateLimited {
            device,
            retry_after: Some(left),
        })
    }

    async fn want_qr(&mut self, reply: Reply<QrLogin>) {
        if let Some(blocked) = self.login_blocked() {
            let _ = reply.send(Err(blocked));
            return;
        }
        if let Some(qr) = self.live_qr() {
            let _ = reply.send(Ok(qr.clone()));
            return;
        }
        self.begin_login(LoginMethod::Qr);
        self.qr_waiters.push(reply);
        self.arm_deadline();
        self.ensure_client().await;
    }

    async fn on_event(&mut self, event: &Event) {
        if matches!(event, Event::Disconnected(_)) {
            self.connection.set(false);
        }
        match event {
            Event::PairingQrCode(qr) => self.on_qr(&qr.code, qr.timeout).await,
            Event::PairSuccess(success) => {
                // Linked: a passkey step, if there was one, is over.
                if self.passkey.take().is_some() {
                    self.deadline = None;
                }
                if let Some(running) = &mut self.running {
                    running.paired = Some(Paired {
                        platform: success.platform.clone(),
                        business_name: success.business_name.clone(),
                    });
                }
            }
            Event::Connected(_) => self.on_connected().await,
            Event::PairingQrCodesExhausted(x) => {
                self.qr = None;
                if x.disconnected {
                    self.end_login(LoginFailure::QrExhausted, Link::Keep).await;
                    // Someone asked while the last code ran out: give them a new series, a new
                    // attempt.
                    if !self.qr_waiters.is_empty() {
                        self.begin_login(LoginMethod::Qr);
                        if let Err(e) = self.start_client().await {
                            let device = self.device().clone();
                            self.fail_waiters(|| e.clone_for_waiter(&device));
                        }
                    }
                }
            }
            Event::PairError(refused) if is_signature_mismatch(&refused.error) => {
                // The phone is fine and a scan will not help: this client cannot verify the
                // account's signature. Start the next attempt from a fresh identity.
                self.end_login(LoginFailure::PairingSignatureMismatch, Link::End)
                    .await;
            }
            Event::PairingCodeError(_) | Event::PairError(_) => {
                self.code.forget();
                self.emit(EngineEventKind::LoginFailed {
                    reason: LoginFailure::PairCodeRejected,
                })
                .await;
            }
            Event::PairingCodeRefresh(_) => {
                self.code.forget();
            }
            Event::LoggedOut(out) => {
                let reason = if out.on_connect {
                    "session_rejected"
                } else {
                    "unlinked_from_phone"
                };
                self.stop_client().await;
                self.forget_link(reason).await;
            }
            Event::StreamReplaced(_) => {
                self.stop_client().await;
                self.set_state(DeviceState::Disconnected).await;
            }
            Event::ClientOutdated(_) => {
                self.stop_client().await;
                self.record(
                    Some(DeviceState::Disconnected),
                    Link::Keep,
                    vec![EngineEventKind::LoginFailed {
                        reason: LoginFailure::ClientOutdated,
                    }],
                )
                .await;
                // Waiting longer cannot help them: no client of this version gets in.
                let device = self.device().clone();
                self.fail_waiters(|| LoginError::Refused {
                    device: device.clone(),
                    reason: "whatsapp no longer accepts this client version (405): update wagate"
                        .to_string(),
                });
            }
            Event::PairPasskeyRequest(request) => {
                self.on_passkey_request(&request.request_options_json).await;
            }
            Event::PairPasskeyConfirmation(confirmation) => {
                self.on_passkey_confirmation(&confirmation.code, confirmation.skip_handoff_ux)
                    .await;
            }
            Event::PairPasskeyError(failure) => {
                tracing::warn!(device = %self.device(), continuation = failure.continuation,
                    "passkey link failed: {}", failure.error);
                if self.state != DeviceState::LoggedIn {
                    self.end_login(LoginFailure::PasskeyFailed, Link::End).await;
                }
            }
            Event::AppStateSyncFailed(failed) => {
                self.emit(EngineEventKind::AppStateSyncFailed {
                    fatal: failed.fatal.clone(),
                    retryable: failed.retryable.clone(),
                    connected: failed.connected,
                })
                .await;
            }
            Event::RawNode(node) => match WireNotice::of(node) {
                Some(WireNotice::RateLimited) => self.on_rate_limited().await,
                Some(WireNotice::ClientExpiring(expires_at)) => {
                    self.emit(EngineEventKind::ClientExpiring { expires_at })
                        .await;
                }
                None => {}
            },
            Event::Disconnected(_) if self.passkey.is_some() => {
                // The passkey handshake lives on the socket that just closed; the client comes
                // back as a new registration, so this login cannot finish.
                self.end_login(LoginFailure::PasskeyFailed, Link::End).await;
            }
            Event::Disconnected(_) => {
                self.qr = None;
                if self.state != DeviceState::Disconnected {
                    self.set_state(DeviceState::Connecting).await;
                }
            }
            _ => {}
        }
    }

    async fn on_qr(&mut self, code: &str, timeout: Duration) {
        // The client's QR rotation runs on while WhatsApp waits for the passkey; those codes
        // can no longer link anything.
        if self.passkey.is_some() {
            return;
        }
        let lifetime = self.scaled(timeout);
        let expires_at = Utc::now() + lifetime;
        let image = match self.store_image(code, expires_at).await {
            Ok(id) => id,
            Err(e) => {
                let e = self.unless_gone(e).await;
                if !self.gone {
                    tracing::error!(device = %self.device(), "qr image not stored: {e}");
                }
                let device = self.device().clone();
                self.fail_waiters(|| e.clone_for_waiter(&device));
                return;
            }
        };
        let login = QrLogin {
            qr_code: code.to_string(),
            link: self.ctx.config.qr_links.qr_link(image),
            expires_at,
        };
        self.qr = Some(PendingQr {
            login: login.clone(),
            until: Instant::now() + lifetime,
        });
        let reference = code.split(',').next().map(str::to_string);
        let refreshed = reference.is_some() && reference == self.qr_ref;
        let index = if refreshed {
            self.qr_index.saturating_sub(1)
        } else {
            self.qr_index += 1;
            self.qr_index - 1
        };
        self.qr_ref = reference;
        self.record(
            Some(DeviceState::Connected),
            Link::Keep,
            vec![EngineEventKind::QrRefreshed {
                qr_code: code.to_string(),
                link: login.link.clone(),
                expires_at,
                index,
                refreshed,
            }],
        )
        .await;
        for reply in std::mem::take(&mut self.qr_waiters) {
            let _ = reply.send(Ok(login.clone()));
        }
        self.settle_deadline();
    }

    async fn store_image(&self, code: &str, expires_at: DateTime<Utc>) -> Result<Uuid, LoginError> {
        Ok(self
            .store()
            .put_qr_image(&self.key.device, code, expires_at)
            .await?)
    }

    async fn on_connected(&mut self) {
        let Some(running) = &mut self.running else {
            return;
        };
        // Taken: only the first `Connected` after a pairing is a new login.
        let paired = running.paired.take();
        self.connection.set(true);
        if paired.is_none() {
            self.ctx.config.metrics.whatsapp_reconnected();
        }
        let client = &running.client.client;
        let jid = client.pn().map(|j| j.to_string());
        let lid = client.lid().map(|j| j.to_string());
        let push_name = Some(client.push_name()).filter(|n| !n.is_empty());
        self.qr = None;
        self.code.forget();
        self.qr_index = 0;
        self.qr_ref = None;
        self.passkey = None;
        self.deadline = None;
        let events = match paired {
            Some(paired) => vec![EngineEventKind::LoggedIn {
                jid: jid.clone().unwrap_or_default(),
                lid,
                push_name,
                platform: Some(paired.platform).filter(|p| !p.is_empty()),
                business_name: Some(paired.business_name).filter(|n| !n.is_empty()),
            }],
            None => Vec::new(),
        };
        // The JID, the state and the login are one fact: recorded together or not at all.
        self.record(
            Some(DeviceState::LoggedIn),
            jid.as_deref().map_or(Link::Keep, Link::Set),
            events,
        )
        .await;
        // Anyone still waiting for a code learns the device got linked meanwhile.
        let device = self.device().clone();
        self.fail_waiters(|| LoginError::AlreadyLoggedIn(device.clone()));
    }

    async fn on_client_gone(&mut self) {
        self.running = None;
        self.connection.set(false);
        self.qr = None;
        if self.state != DeviceState::Disconnected && self.state != DeviceState::LoggedIn {
            self.set_state(DeviceState::Disconnected).await;
        }
    }

    async fn on_deadline(&mut self) {
        self.deadline = None;
        if self.passkey.is_some() {
            // Nobody posted the assertion in time.
            self.end_login(LoginFailure::Timeout, Link::End).await;
            return;
        }
        if self.qr_waiters.is_empty() && !self.code.is_awaited() {
            return;
        }
        let qr_waiters = std::mem::take(&mut self.qr_waiters);
        let code_waiters = self.code.take_waiters();
        // The device is disconnected before anyone hears of the timeout.
        self.end_login(LoginFailure::Timeout, Link::Keep).await;
        let timeout = || LoginError::Timeout {
            device: self.key.device.clone(),
            waited: self.ctx.config.login_timeout,
        };
        for reply in qr_waiters {
            let _ = reply.send(Err(timeout()));
        }
        for reply in code_waiters {
            let _ = reply.send(Err(timeout()));
        }
    }

    /// Ends a login attempt that cannot go on: the client stops, the device is disconnected,
    /// and `login_failed` says why; `link` says whether what the attempt left (the keys of a
    /// half-done pairing) goes with it.
    async fn end_login(&mut self, reason: LoginFailure, link: Link<'_>) {
        self.code.forget();
        self.stop_client().await;
        let to = (self.state != DeviceState::LoggedIn).then_some(DeviceState::Disconnected);
        self.record(to, link, vec![EngineEventKind::LoginFailed { reason }])
            .await;
    }

    /// WhatsApp asks the account's passkey to confirm the link: the device waits in
    /// `passkey_required`, and every caller waiting for a code learns what to do instead.
    async fn on_passkey_request(&mut self, options_json: &str) {
        let request_options = serde_json::from_str::<serde_json::Value>(options_json)
            .unwrap_or_else(|_| serde_json::Value::String(options_json.to_string()));
        // WhatsApp's own timeout for the ceremony, when it names one.
        let timeout = request_options
            .get("timeout")
            .and_then(serde_json::Value::as_u64)
            .map_or(PASSKEY_TIMEOUT, Duration::from_millis);
        self.qr = None;
        self.passkey = Some(request_options.clone());
        self.record(
            Some(DeviceState::PasskeyRequired),
            Link::Keep,
            vec![EngineEventKind::PasskeyRequested {
                request_options: request_options.clone(),
            }],
        )
        .await;
        let device = self.device().clone();
        self.fail_waiters(|| LoginError::PasskeyRequired {
            device: device.clone(),
            request_options: request_options.clone(),
        });
        self.deadline = Some(Instant::now() + self.scaled(timeout));
    }

    /// Hands the posted assertion to the client, which opens the passkey handshake with it;
    /// WhatsApp refusing it ends the login.
    async fn use_passkey(&mut self, assertion: PasskeyAssertion) -> Result<(), LoginError> {
        let device = self.device().clone();
        let client = match (&self.passkey, &self.running) {
            (Some(_), Some(running)) => Arc::clone(&running.client.client),
            _ => return Err(LoginError::NoPasskeyRequested(device)),
        };
        let assertion = whatsapp_rust::passkey::Assertion {
            assertion_json: assertion.json,
            credential_id: assertion.credential_id,
        };
        match client.send_passkey_response(assertion).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.end_login(LoginFailure::PasskeyFailed, Link::End).await;
                Err(LoginError::Refused {
                    device,
                    reason: format!(
                        "the passkey assertion was not accepted ({e}); start a new login"
                    ),
                })
            }
        }
    }

    /// The passkey was accepted and both sides derived the verification code: the user is
    /// shown it (unless continuity was proven), and the client finishes the link.
    async fn on_passkey_confirmation(&mut self, code: &str, handoff_proven: bool) {
        self.emit(EngineEventKind::PasskeyConfirmation {
            code: code.to_string(),
            show_code: !handoff_proven,
        })
        .await;
        let Some(running) = &self.running else {
            return;
        };
        let client = Arc::clone(&running.client.client);
        if let Err(e) = client.send_passkey_confirmation().await {
            tracing::warn!(device = %self.device(), "passkey link not confirmed: {e}");
            self.end_login(LoginFailure::PasskeyFailed, Link::End).await;
        }
    }

    /// WhatsApp ended the socket with a 429. A login stops and is refused for a while (the
    /// client would otherwise reconnect and ask again); a linked device's client reconnects on
    /// its own, after its back-off.
    async fn on_rate_limited(&mut self) {
        if self.state == DeviceState::LoggedIn {
            tracing::warn!(device = %self.device(), "whatsapp rate-limited the connection; the client reconnects after its back-off");
            return;
        }
        let pause = self.scaled(RATE_LIMIT_PAUSE);
        self.rate_limited_until = Some(Instant::now() + pause);
        self.end_login(LoginFailure::RateLimited, Link::Keep).await;
        let device = self.device().clone();
        self.fail_waiters(|| LoginError::RateLimited {
            device: device.clone(),
            retry_after: Some(pause),
        });
    }

    /// A call is about to wait for a code: unless an attempt is already under way on the
    /// running client, this call begins one (repeat and parallel calls join it).
    fn begin_login(&mut self, method: LoginMethod) {
        if self.login.is_some() && self.running.is_some() {
            return;
        }
        self.login = Some(self.ctx.config.metrics.login_started(method));
    }

    fn arm_deadline(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.ctx.config.login_timeout);
        }
    }

    fn settle_deadline(&mut self) {
        if self.qr_waiters.is_empty() && !self.code.is_awaited() {
            self.deadline = None;
        }
    }

    fn fail_waiters(&mut self, error: impl Fn() -> LoginError) {
        for reply in std::mem::take(&mut self.qr_waiters) {
            let _ = reply.send(Err(error()));
        }
        self.code.fail_waiters(error);
        self.deadline = None;
    }

    /// Starts the client unless one runs; when it cannot start, every waiting caller is told
    /// why. Whether a client runs now.
    async fn ensure_client(&mut self) -> bool {
        if self.running.is_some() {
            return true;
        }
        match self.start_client().await {
            Ok(()) => true,
            Err(e) => {
                let device = self.device().clone();
                self.fail_waiters(|| e.clone_for_waiter(&device));
                false
            }
        }
    }

    async fn start_client(&mut self) -> Result<(), LoginError> {
        // The key store is bound to the device's row: one look-up gives both.
        let backend = match self.store().key_store(&self.key.device, self.leased).await {
            Ok(Some(backend)) => backend,
            Ok(None) => {
                let e = LoginError::DeviceNotFound(self.device().clone());
                return Err(self.unless_gone(e).await);
            }
            Err(e) => return Err(self.unless_gone(e.into()).await),
        };
        self.row = Some(backend.device_internal_id());
        let keys = Arc::new(backend);
        let client = match client::start(&self.ctx, keys.clone()).await {
            Ok(client) => client,
            Err(detail) => {
                let e = self.internal(detail);
                return Err(self.unless_gone(e).await);
            }
        };
        self.generation += 1;
        self.running = Some(Running {
            client,
            keys,
            generation: self.generation,
            paired: None,
        });
        if self.state != DeviceState::LoggedIn {
            self.set_state(DeviceState::Connecting).await;
        }
        Ok(())
    }

    async fn stop_client(&mut self) {
        self.code.stop();
        self.qr = None;
        self.qr_ref = None;
        self.passkey = None;
        self.connection.set(false);
        if let Some(running) = self.running.take() {
            // A shutdown that overruns is dropped, and dropping the handle aborts the client.
            let _ = tokio::time::timeout(STOP_GRACE, running.client.handle.shutdown()).await;
            // Whatever the client left running writes nothing from here on, so a link ended
            // after this leaves no key rows behind.
            running.keys.close(STOP_GRACE).await;
        }
    }

    /// Ends the session's client; the device stays linked.
    async fn stop(&mut self) {
        let device = self.device().clone();
        self.fail_waiters(|| LoginError::Cancelled(device.clone()));
        self.stop_client().await;
    }

    /// Ends the session's client and the device's link: a linked device is unlinked on
    /// WhatsApp; its keys and JID go, the slot stays.
    async fn log_out(&mut self) {
        let device = self.device().clone();
        self.fail_waiters(|| LoginError::Cancelled(device.clone()));
        // A login in progress ends with no event of its own.
        self.login = None;
        let was_linked = self.state == DeviceState::LoggedIn;
        if was_linked && !self.still_leased().await {
            // Another node runs the device now: unlinking it on WhatsApp from here would log
            // out the session it runs, and this node could not record it anyway.
            self.lost = true;
            return;
        }
        if was_linked && let Some(running) = &self.running {
            // Tells WhatsApp to remove this companion; errors leave it to expire there.
            let client = Arc::clone(&running.client.client);
            let _ = tokio::time::timeout(STOP_GRACE, client.logout()).await;
        }
        self.stop_client().await;
        if was_linked {
            self.forget_link("logout").await;
        } else {
            // Nothing was logged in, so no `logged_out`; whatever a half-done pairing or an
            // interrupted reconnect left (keys, a JID) goes with the move to disconnected.
            self.record(Some(DeviceState::Disconnected), Link::End, Vec::new())
                .await;
        }
    }

    /// The device is no longer linked: keys and JID go with the `logged_out` event, the slot
    /// stays.
    async fn forget_link(&mut self, reason: &str) {
        self.record(
            Some(DeviceState::Disconnected),
            Link::End,
            vec![EngineEventKind::LoggedOut {
                reason: reason.to_string(),
            }],
        )
        .await;
    }

    /// Answers the restores waiting for this device once it is logged in or disconnected: the
    /// session's own view, which a failed write does not hold back.
    fn settle_resumes(&mut self) {
        if matches!(
            self.state,
            DeviceState::LoggedIn | DeviceState::Disconnected
        ) {
            for settled in self.resumes.drain(..) {
                let _ = settled.send(self.state);
            }
        }
    }

    async fn set_state(&mut self, to: DeviceState) {
        self.record(Some(to), Link::Keep, Vec::new()).await;
    }

    async fn emit(&mut self, kind: EngineEventKind) {
        self.record(None, Link::Keep, vec![kind]).await;
    }

    /// Records a move to state `to`, what happens to the `link` (an ended one takes the keys
    /// with it) and the events they cause in one transaction, with the outbox rows of the
    /// webhooks they go to, then hands the recorded events to in-process subscribers.
    ///
    /// A failed write is logged and the session carries on from its own view: WhatsApp's
    /// socket does not wait for the database.
    async fn record(
        &mut self,
        to: Option<DeviceState>,
        link: Link<'_>,
        mut kinds: Vec<EngineEventKind>,
    ) {
        let from = self.state;
        let state = to.filter(|to| *to != from);
        if let Some(to) = state {
            self.state = to;
            kinds.insert(0, EngineEventKind::StateChanged { from, to });
        }
        if kinds.is_empty() && link == Link::Keep {
            return;
        }
        let events = kinds.iter().map(NewEvent::from_kind).collect();
        let change = DeviceChange {
            state,
            link,
            only_from: None,
            fence: self.leased,
        };
        match self
            .store()
            .record_events(&self.key.device, change, events)
            .await
        {
            Ok(recorded) => {
                self.unrecorded = None;
                self.ctx.config.metrics.recorded(&kinds, &mut self.login);
                for event in recorded {
                    self.ctx.bus.publish(event);
                }
            }
            // Deleted meanwhile: nothing to record, and nothing left for this session to do.
            Err(StoreError::DeviceNotFound { .. }) => self.gone = true,
            Err(StoreError::LeaseLost { .. }) => self.lost = true,
            Err(e) => {
                tracing::error!(device = %self.device(), "events not recorded: {e}");
                self.unrecorded = Some(e.to_string());
            }
        }
        // After the write, so a restore hears of a state once it is stored (or failed to be).
        self.settle_resumes();
    }

    /// What a caller is told of the last write: a command whose change was not stored (the
    /// device deleted, taken by another node, or the database failing) must not be answered
    /// as done, or the caller would believe in a change that never happened.
    async fn write_outcome(&self) -> Result<(), LoginError> {
        let device = self.device();
        if self.gone {
            Err(LoginError::DeviceNotFound(device.clone()))
        } else if self.lost {
            Err(self.superseded().await)
        } else if let Some(detail) = &self.unrecorded {
            Err(LoginError::Internal {
                device: device.clone(),
                detail: format!("its change was not stored: {detail}"),
            })
        } else {
            Ok(())
        }
    }

    /// Acquires the device's lease for this node, unless another node that is alive holds it.
    async fn acquire(&mut self) -> Result<(), LoginError> {
        let node = &self.ctx.node;
        // A miss is told apart by a look-up: no device, or a live node holding it. A device
        // deleted and created again between the two is simply tried again.
        for _ in 0..3 {
            let leased = self
                .store()
                .acquire_lease(node.id(), &self.key.device, node.config.lease_expiry)
                .await?;
            if let Some(leased) = leased {
                self.leased = Some(leased);
                self.lease.set(leased);
                return Ok(());
            }
            match self.store().lease(&self.key.device).await? {
                None => return Err(LoginError::DeviceNotFound(self.device().clone())),
                Some(holder) if holder.node.is_some_and(|n| n != node.id()) => {
                    return Err(LoginError::OwnedElsewhere(self.device().clone()));
                }
                Some(_) => {}
            }
        }
        Err(LoginError::Cancelled(self.device().clone()))
    }

    /// Whether no login is under way: nothing waits and the device is linked and connected or
    /// not connecting at all, so it can move to another node without a caller noticing.
    fn idle(&self) -> bool {
        matches!(
            self.state,
            DeviceState::LoggedIn | DeviceState::Disconnected
        ) && self.qr_waiters.is_empty()
            && self.deadline.is_none()
            && self.passkey.is_none()
    }

    /// `e`, or `DeviceNotFound` when the failure was the device being deleted meanwhile (which
    /// also ends the session).
    async fn unless_gone(&mut self, e: LoginError) -> LoginError {
        let said_not_found = matches!(
            e,
            LoginError::DeviceNotFound(_) | LoginError::Store(StoreError::DeviceNotFound { .. })
        );
        // Only an error that does not say so already costs a look-up.
        let gone = said_not_found || {
            let now = self.current_row().await;
            now.is_none() || now != self.row
        };
        if gone {
            self.gone = true;
            return LoginError::DeviceNotFound(self.device().clone());
        }
        // A failure of the key store under a lease that moved on (its writes were fenced).
        if let Some(leased) = self.leased {
            let holder = self.lease_holder().await;
            if holder.is_some_and(|h| h.epoch != leased.epoch) {
                self.lost = true;
                return self.superseded_by(holder);
            }
        }
        e
    }

    /// Who holds the device's lease now; `None` when the device is gone or the look-up failed.
    async fn lease_holder(&self) -> Option<LeaseHolder> {
        self.store().lease(&self.key.device).await.ok().flatten()
    }

    /// Whether this session's lease is still the device's, as the database has it now. A
    /// device gone or a failed look-up counts as held: the write after it finds the deletion,
    /// or is fenced, all the same.
    async fn still_leased(&self) -> bool {
        let Some(leased) = self.leased else {
            return true;
        };
        let Some(holder) = self.lease_holder().await else {
            return true;
        };
        holder.internal_id == leased.row
            && holder.epoch == leased.epoch
            && holder.node.is_none_or(|node| node == self.ctx.node.id())
    }

    /// Why this session's callers are turned away once its lease moved on.
    async fn superseded(&self) -> LoginError {
        let holder = self.lease_holder().await;
        self.superseded_by(holder)
    }

    /// Why, given the lease's `holder` now: a newer session of the device on this node (one
    /// started while a deletion stopped this one) cancelled the login; another node owning the
    /// device means it moved.
    fn superseded_by(&self, holder: Option<LeaseHolder>) -> LoginError {
        let here = holder
            .and_then(|h| h.node)
            .is_none_or(|n| n == self.ctx.node.id());
        if here {
            tracing::debug!("a newer session of this device took its lease; this one stops");
            LoginError::Cancelled(self.device().clone())
        } else {
            tracing::warn!(
                "another node took this device over; its session here stops and writes nothing more"
            );
            LoginError::OwnedElsewhere(self.device().clone())
        }
    }

    /// The device's row now; `None` when it is deleted (or the look-up failed, which the
    /// caller's own error then reports).
    async fn current_row(&self) -> Option<i64> {
        self.store()
            .device_internal_id(&self.key.device)
            .await
            .ok()
            .flatten()
    }

    fn internal(&self, detail: String) -> LoginError {
        LoginError::Internal {
            device: self.device().clone(),
            detail,
        }
    }
}

async fn next_event(running: &mut Option<Running>) -> Option<Arc<Event>> {
    match running {
        Some(r) => r.client.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a pairing error is whatsapp-rust refusing the account's ADV signature (its
/// `PairCryptoError` text), which for a hosted account is whatsapp-rust 0.7.0's prefix bug.
fn is_signature_mismatch(error: &str) -> bool {
    error.contains(": signature-mismatch")
}
