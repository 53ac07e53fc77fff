//! The actor that owns one device: its client, its pending QR code or pairing code, and the
//! callers waiting for them.
//!
//! Invariant: at most one client runs per device, and only this task starts or stops it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::types::events::Event;

use super::client::{self, RunningClient};
use super::{EngineContext, Key, LoginError, PairCodeLogin, PhoneNumber, QrLogin, render_png};
use crate::domain::DeviceState;
use crate::events::{EngineEventKind, LoginFailure, NewEvent};
use crate::store::{DeviceChange, StoreError};

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
    /// Reconnects a linked device from its stored keys (start-up restore).
    Resume,
    CurrentPairCode(Reply<Option<(PhoneNumber, String)>>),
    /// Ends the session; `logout` also unlinks a logged-in device first.
    Stop {
        logout: bool,
        reply: oneshot::Sender<()>,
    },
}

/// How long WhatsApp keeps a pairing code valid.
const PAIR_CODE_VALIDITY: Duration = Duration::from_secs(180);
/// A code this close to expiry is not handed out again. Scaled with the sandbox's time scale like
/// the codes' lifetimes, or at a high scale every code would count as expired from the start.
const REUSE_MARGIN: Duration = Duration::from_secs(2);
/// How long a client gets to shut down before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct PendingQr {
    login: QrLogin,
    until: Instant,
}

struct PendingCode {
    phone: PhoneNumber,
    login: PairCodeLogin,
    until: Instant,
}

struct Running {
    client: RunningClient,
    generation: u64,
    /// `PairSuccess` was seen (with the phone's platform): the next `Connected` is a new login,
    /// not a reconnect.
    paired: Option<String>,
}

/// The outcome of a pairing-code request made off the actor's loop.
struct CodeOutcome {
    generation: u64,
    phone: PhoneNumber,
    result: Result<String, LoginError>,
}

pub(crate) struct Session {
    ctx: Arc<EngineContext>,
    key: Key,
    state: DeviceState,
    running: Option<Running>,
    /// The device was deleted under this session (a store write found no row): the session
    /// ends after the step that found it, and the manager starts a fresh one if the id is
    /// created again.
    gone: bool,
    /// The row the running client's keys belong to: a device deleted and created again under
    /// the same id is another row, and a client failing on the old one means this session's
    /// device is gone.
    row: Option<i64>,
    generation: u64,
    qr: Option<PendingQr>,
    qr_index: u32,
    qr_waiters: Vec<Reply<QrLogin>>,
    code: Option<PendingCode>,
    code_waiters: Vec<(PhoneNumber, Reply<PairCodeLogin>)>,
    code_task: Option<(PhoneNumber, JoinHandle<()>)>,
    code_tx: mpsc::Sender<CodeOutcome>,
    code_rx: mpsc::Receiver<CodeOutcome>,
    /// When the callers waiting now get a timeout.
    deadline: Option<Instant>,
}

impl Session {
    pub fn new(ctx: Arc<EngineContext>, key: Key, state: DeviceState) -> Self {
        let (code_tx, code_rx) = mpsc::channel(4);
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
            row: None,
            generation: 0,
            qr: None,
            qr_index: 0,
            qr_waiters: Vec::new(),
            code: None,
            code_waiters: Vec::new(),
            code_task: None,
            code_tx,
            code_rx,
            deadline: None,
        }
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let deadline = self.deadline;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop { logout, reply }) => {
                        self.stop(logout).await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command).await,
                    None => {
                        self.stop(false).await;
                        return;
                    }
                },
                event = next_event(&mut self.running) => match event {
                    Some(event) => self.on_event(&event).await,
                    None => self.on_client_gone().await,
                },
                Some(outcome) = self.code_rx.recv() => self.on_code(outcome).await,
                _ = sleep_until(deadline) => self.on_deadline().await,
            }
            if self.gone {
                self.stop_client().await;
                let device = self.device().clone();
                self.fail_waiters(|| LoginError::DeviceNotFound(device.clone()));
                return;
            }
        }
    }

    fn device(&self) -> &crate::domain::DeviceId {
        &self.key.1
    }

    fn scaled(&self, d: Duration) -> Duration {
        d / self.ctx.config.endpoint.time_scale()
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Qr(reply) => self.want_qr(reply).await,
            Command::PairCode { phone, reply } => self.want_code(phone, reply).await,
            Command::Logout(reply) => {
                self.stop(true).await;
                let _ = reply.send(Ok(()));
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
            Command::Resume => {
                if self.running.is_none() {
                    self.set_state(DeviceState::Connecting).await;
                    if let Err(e) = self.start_client().await {
                        tracing::error!(device = %self.device(), "not restored: {e}");
                        self.set_state(DeviceState::Disconnected).await;
                    }
                }
            }
            Command::CurrentQr(reply) => {
                let qr = self.live_qr().map(|q| q.qr_code.clone());
                let _ = reply.send(Ok(qr));
            }
            Command::CurrentPairCode(reply) => {
                let code = self
                    .code
                    .as_ref()
                    .filter(|c| c.until > Instant::now())
                    .map(|c| (c.phone.clone(), c.login.pair_code.replace('-', "")));
                let _ = reply.send(Ok(code));
            }
            Command::Stop { .. } => unreachable!("handled by the loop"),
        }
    }

    fn live_qr(&self) -> Option<&QrLogin> {
        let margin = self.scaled(REUSE_MARGIN);
        self.qr
            .as_ref()
            .filter(|q| q.until > Instant::now() + margin)
            .map(|q| &q.login)
    }

    async fn want_qr(&mut self, reply: Reply<QrLogin>) {
        if self.state == DeviceState::LoggedIn {
            let _ = reply.send(Err(LoginError::AlreadyLoggedIn(self.device().clone())));
            return;
        }
        if let Some(qr) = self.live_qr() {
            let _ = reply.send(Ok(qr.clone()));
            return;
        }
        self.qr_waiters.push(reply);
        self.arm_deadline();
        if self.running.is_none()
            && let Err(e) = self.start_client().await
        {
            let device = self.device().clone();
            self.fail_waiters(|| e.clone_for_waiter(&device));
        }
    }

    async fn want_code(&mut self, phone: PhoneNumber, reply: Reply<PairCodeLogin>) {
        if self.state == DeviceState::LoggedIn {
            let _ = reply.send(Err(LoginError::AlreadyLoggedIn(self.device().clone())));
            return;
        }
        if let Some(code) = &self.code
            && code.phone == phone
            && code.until > Instant::now() + self.scaled(REUSE_MARGIN)
        {
            let _ = reply.send(Ok(code.login.clone()));
            return;
        }
        let in_flight_for = self.code_task.as_ref().map(|(p, _)| p.clone());
        self.code_waiters.push((phone.clone(), reply));
        self.arm_deadline();
        if in_flight_for.as_ref() == Some(&phone) {
            return;
        }
        // A code for another number is outstanding (or was just asked for): WhatsApp allows one
        // per connection, so the connection is renewed for the new number.
        if in_flight_for.is_some() || self.code.is_some() {
            self.stop_client().await;
        }
        if self.running.is_none()
            && let Err(e) = self.start_client().await
        {
            let device = self.device().clone();
            self.fail_waiters(|| e.clone_for_waiter(&device));
            return;
        }
        self.request_code(phone);
    }

    fn request_code(&mut self, phone: PhoneNumber) {
        let Some(running) = &self.running else { return };
        let client = Arc::clone(&running.client.client);
        let generation = running.generation;
        let wait = self.ctx.config.login_timeout;
        let device = self.device().clone();
        let tx = self.code_tx.clone();
        let for_phone = phone.clone();
        let task = tokio::spawn(async move {
            let result = async {
                client
                    .wait_for_socket(wait)
                    .await
                    .map_err(|_| LoginError::Timeout {
                        device: device.clone(),
                        waited: wait,
                    })?;
                client
                    .pair_with_code(PairCodeOptions {
                        phone_number: for_phone.as_str().to_string(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| refusal(&device, &e))
            }
            .await;
            let _ = tx
                .send(CodeOutcome {
                    generation,
                    phone: for_phone,
                    result,
                })
                .await;
        });
        self.code_task = Some((phone, task));
    }

    async fn on_code(&mut self, outcome: CodeOutcome) {
        if self.running.as_ref().map(|r| r.generation) != Some(outcome.generation) {
            return;
        }
        self.code_task = None;
        match outcome.result {
            Ok(raw) => {
                let pair_code = if raw.len() == 8 {
                    format!("{}-{}", &raw[..4], &raw[4..])
                } else {
                    raw
                };
                let validity = self.scaled(PAIR_CODE_VALIDITY);
                let login = PairCodeLogin {
                    pair_code: pair_code.clone(),
                    expires_at: Utc::now() + validity,
                };
                self.code = Some(PendingCode {
                    phone: outcome.phone.clone(),
                    login: login.clone(),
                    until: Instant::now() + validity,
                });
                self.record(
                    Some(DeviceState::Connected),
                    None,
                    vec![EngineEventKind::PairCodeIssued {
                        pair_code,
                        expires_at: login.expires_at,
                    }],
                )
                .await;
                let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.code_waiters)
                    .into_iter()
                    .partition(|(p, _)| *p == outcome.phone);
                self.code_waiters = others;
                for (_, reply) in mine {
                    let _ = reply.send(Ok(login.clone()));
                }
            }
            Err(error) => {
                let waiters = std::mem::take(&mut self.code_waiters);
                // A timed-out device is disconnected before anyone hears of the timeout.
                if matches!(error, LoginError::Timeout { .. }) {
                    self.give_up(LoginFailure::Timeout).await;
                } else {
                    self.emit(EngineEventKind::LoginFailed {
                        reason: LoginFailure::PairCodeRejected,
                    })
                    .await;
                }
                for (_, reply) in waiters {
                    let _ = reply.send(Err(error.clone_for_waiter(&self.key.1)));
                }
            }
        }
        self.settle_deadline();
    }

    async fn on_event(&mut self, event: &Event) {
        match event {
            Event::PairingQrCode(qr) => self.on_qr(&qr.code, qr.timeout).await,
            Event::PairSuccess(success) => {
                if let Some(running) = &mut self.running {
                    running.paired = Some(success.platform.clone());
                }
            }
            Event::Connected(_) => self.on_connected().await,
            Event::PairingQrCodesExhausted(x) => {
                self.qr = None;
                if x.disconnected {
                    self.stop_client().await;
                    self.record(
                        Some(DeviceState::Disconnected),
                        None,
                        vec![EngineEventKind::LoginFailed {
                            reason: LoginFailure::QrExhausted,
                        }],
                    )
                    .await;
                    // Someone asked while the last code ran out: give them a new series.
                    if !self.qr_waiters.is_empty()
                        && let Err(e) = self.start_client().await
                    {
                        let device = self.device().clone();
                        self.fail_waiters(|| e.clone_for_waiter(&device));
                    }
                }
            }
            Event::PairingCodeError(_) | Event::PairError(_) => {
                self.code = None;
                self.emit(EngineEventKind::LoginFailed {
                    reason: LoginFailure::PairCodeRejected,
                })
                .await;
            }
            Event::PairingCodeRefresh(_) => {
                self.code = None;
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
                    None,
                    vec![EngineEventKind::LoginFailed {
                        reason: LoginFailure::ClientOutdated,
                    }],
                )
                .await;
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
            image,
            expires_at,
        };
        self.qr = Some(PendingQr {
            login: login.clone(),
            until: Instant::now() + lifetime,
        });
        let index = self.qr_index;
        self.qr_index += 1;
        self.record(
            Some(DeviceState::Connected),
            None,
            vec![EngineEventKind::QrRefreshed {
                qr_code: code.to_string(),
                image,
                expires_at,
                index,
            }],
        )
        .await;
        for reply in std::mem::take(&mut self.qr_waiters) {
            let _ = reply.send(Ok(login.clone()));
        }
        self.settle_deadline();
    }

    async fn store_image(&self, code: &str, expires_at: DateTime<Utc>) -> Result<Uuid, LoginError> {
        let text = code.to_string();
        let png = tokio::task::spawn_blocking(move || render_png(&text))
            .await
            .map_err(|e| self.internal(format!("qr rendering stopped: {e}")))?
            .map_err(|e| self.internal(e.to_string()))?;
        Ok(self
            .ctx
            .store
            .put_qr_image(self.key.0, &self.key.1, png, expires_at)
            .await?)
    }

    async fn on_connected(&mut self) {
        let Some(running) = &mut self.running else {
            return;
        };
        // Taken: only the first `Connected` after a pairing is a new login.
        let paired = running.paired.take();
        let client = &running.client.client;
        let jid = client.pn().map(|j| j.to_string());
        let lid = client.lid().map(|j| j.to_string());
        let push_name = Some(client.push_name()).filter(|n| !n.is_empty());
        self.qr = None;
        self.code = None;
        self.qr_index = 0;
        let events = match paired {
            Some(platform) => vec![EngineEventKind::LoggedIn {
                jid: jid.clone().unwrap_or_default(),
                lid,
                push_name,
                platform: Some(platform).filter(|p| !p.is_empty()),
            }],
            None => Vec::new(),
        };
        // The JID, the state and the login are one fact: recorded together or not at all.
        self.record(
            Some(DeviceState::LoggedIn),
            jid.as_deref().map(Some),
            events,
        )
        .await;
        // Anyone still waiting for a code learns the device got linked meanwhile.
        let device = self.device().clone();
        self.fail_waiters(|| LoginError::AlreadyLoggedIn(device.clone()));
    }

    async fn on_client_gone(&mut self) {
        self.running = None;
        self.qr = None;
        if self.state != DeviceState::Disconnected && self.state != DeviceState::LoggedIn {
            self.set_state(DeviceState::Disconnected).await;
        }
    }

    async fn on_deadline(&mut self) {
        self.deadline = None;
        if self.qr_waiters.is_empty() && self.code_waiters.is_empty() {
            return;
        }
        let qr_waiters = std::mem::take(&mut self.qr_waiters);
        let code_waiters = std::mem::take(&mut self.code_waiters);
        // The device is disconnected before anyone hears of the timeout.
        self.give_up(LoginFailure::Timeout).await;
        let timeout = || LoginError::Timeout {
            device: self.key.1.clone(),
            waited: self.ctx.config.login_timeout,
        };
        for reply in qr_waiters {
            let _ = reply.send(Err(timeout()));
        }
        for (_, reply) in code_waiters {
            let _ = reply.send(Err(timeout()));
        }
    }

    /// Stops the client after a failed login attempt; the device is disconnected.
    async fn give_up(&mut self, reason: LoginFailure) {
        self.stop_client().await;
        let to = (self.state != DeviceState::LoggedIn).then_some(DeviceState::Disconnected);
        self.record(to, None, vec![EngineEventKind::LoginFailed { reason }])
            .await;
    }

    fn arm_deadline(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.ctx.config.login_timeout);
        }
    }

    fn settle_deadline(&mut self) {
        if self.qr_waiters.is_empty() && self.code_waiters.is_empty() {
            self.deadline = None;
        }
    }

    fn cancel_code_waiters(&mut self) {
        let device = self.device().clone();
        self.fail_code_waiters(|| LoginError::Cancelled(device.clone()));
        self.settle_deadline();
    }

    fn fail_code_waiters(&mut self, error: impl Fn() -> LoginError) {
        for (_, reply) in std::mem::take(&mut self.code_waiters) {
            let _ = reply.send(Err(error()));
        }
    }

    fn fail_waiters(&mut self, error: impl Fn() -> LoginError) {
        for reply in std::mem::take(&mut self.qr_waiters) {
            let _ = reply.send(Err(error()));
        }
        self.fail_code_waiters(error);
        self.deadline = None;
    }

    async fn start_client(&mut self) -> Result<(), LoginError> {
        self.row = self.current_row().await;
        let backend = match self.ctx.backend(&self.key).await {
            Ok(backend) => backend,
            Err(e) => return Err(self.unless_gone(e).await),
        };
        let client = match client::start(&self.ctx, backend).await {
            Ok(client) => client,
            Err(detail) => {
                let e = self.internal(detail);
                return Err(self.unless_gone(e).await);
            }
        };
        self.generation += 1;
        self.running = Some(Running {
            client,
            generation: self.generation,
            paired: None,
        });
        if self.state != DeviceState::LoggedIn {
            self.set_state(DeviceState::Connecting).await;
        }
        Ok(())
    }

    async fn stop_client(&mut self) {
        if let Some((_, task)) = self.code_task.take() {
            task.abort();
        }
        self.code = None;
        self.qr = None;
        if let Some(running) = self.running.take() {
            // A shutdown that overruns is dropped, and dropping the handle aborts the client.
            let _ = tokio::time::timeout(STOP_GRACE, running.client.handle.shutdown()).await;
        }
    }

    /// Ends the session's client; with `logout`, a linked device is unlinked and its keys go.
    async fn stop(&mut self, logout: bool) {
        let device = self.device().clone();
        self.fail_waiters(|| LoginError::Cancelled(device.clone()));
        if logout {
            if self.state == DeviceState::LoggedIn
                && let Some(running) = &self.running
            {
                // Tells WhatsApp to remove this companion; errors leave it to expire there.
                let client = Arc::clone(&running.client.client);
                let _ = tokio::time::timeout(STOP_GRACE, client.logout()).await;
            }
            let was_linked = self.state == DeviceState::LoggedIn;
            self.stop_client().await;
            if was_linked {
                self.forget_link("logout").await;
            } else {
                self.ctx.wipe_backend(&self.key).await;
                self.set_state(DeviceState::Disconnected).await;
            }
        } else {
            self.stop_client().await;
        }
    }

    /// The device is no longer linked: keys and JID go, the slot stays.
    async fn forget_link(&mut self, reason: &str) {
        self.ctx.wipe_backend(&self.key).await;
        self.record(
            Some(DeviceState::Disconnected),
            Some(None),
            vec![EngineEventKind::LoggedOut {
                reason: reason.to_string(),
            }],
        )
        .await;
    }

    async fn set_state(&mut self, to: DeviceState) {
        self.record(Some(to), None, Vec::new()).await;
    }

    async fn emit(&mut self, kind: EngineEventKind) {
        self.record(None, None, vec![kind]).await;
    }

    /// Records a move to state `to`, a new `jid` (`Some(None)` clears it) and the events they
    /// cause in one transaction, with the outbox rows of the webhooks they go to, then hands the
    /// recorded events to in-process subscribers.
    ///
    /// A failed write is logged and the session carries on from its own view: WhatsApp's
    /// socket does not wait for the database.
    async fn record(
        &mut self,
        to: Option<DeviceState>,
        jid: Option<Option<&str>>,
        mut kinds: Vec<EngineEventKind>,
    ) {
        let from = self.state;
        let state = to.filter(|to| *to != from);
        if let Some(to) = state {
            self.state = to;
            kinds.insert(0, EngineEventKind::StateChanged { from, to });
        }
        if kinds.is_empty() && jid.is_none() {
            return;
        }
        let events = kinds
            .iter()
            .map(|kind| NewEvent::from_kind(kind, &self.ctx.config.public_url))
            .collect();
        let change = DeviceChange {
            state,
            jid,
            only_from: None,
        };
        match self
            .ctx
            .store
            .record_events(self.key.0, &self.key.1, change, events)
            .await
        {
            Ok(recorded) => {
                for event in recorded {
                    self.ctx.bus.publish(event);
                }
            }
            // Deleted meanwhile: nothing to record, and nothing left for this session to do.
            Err(StoreError::DeviceNotFound { .. }) => self.gone = true,
            Err(e) => tracing::error!(device = %self.device(), "events not recorded: {e}"),
        }
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
        e
    }

    /// The device's row now; `None` when it is deleted (or the look-up failed, which the
    /// caller's own error then reports).
    async fn current_row(&self) -> Option<i64> {
        self.ctx
            .store
            .device_internal_id(self.key.0, &self.key.1)
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

fn refusal(
    device: &crate::domain::DeviceId,
    error: &whatsapp_rust::pair_code::PairError,
) -> LoginError {
    if let Some(backoff) = error.backoff() {
        return LoginError::RateLimited {
            device: device.clone(),
            retry_after: Some(backoff),
        };
    }
    LoginError::Refused {
        device: device.clone(),
        reason: error.to_string(),
    }
}

impl LoginError {
    /// A copy for another waiter on the same outcome (the store error is not clonable, so it is
    /// carried as its message).
    pub(crate) fn clone_for_waiter(&self, device: &crate::domain::DeviceId) -> LoginError {
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
            Self::Cancelled(d) => Self::Cancelled(d.clone()),
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
