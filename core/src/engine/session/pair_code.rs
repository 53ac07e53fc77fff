//! The pairing-code login: a code is asked for one phone number at a time, in a task off the
//! actor's loop, and handed to the callers waiting for that number.
//!
//! What it shares with the QR login (the client, the device's state and events, the login
//! deadline, failing every waiter) is the session's, in `session.rs`.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::wacore::pair_code::PairCodeUtils;

use super::{REUSE_MARGIN, Reply, Session};
use crate::domain::{DeviceId, DeviceState};
use crate::engine::{LoginError, PairCodeLogin, PhoneNumber};
use crate::events::{EngineEventKind, LoginFailure};
use crate::metrics::LoginMethod;
use crate::store::Link;

/// The code showing, for one phone number.
struct PendingCode {
    phone: PhoneNumber,
    login: PairCodeLogin,
    until: Instant,
}

/// The outcome of a pairing-code request made off the actor's loop.
pub(super) struct CodeOutcome {
    generation: u64,
    phone: PhoneNumber,
    result: Result<String, LoginError>,
}

/// A session's pairing-code login: the code showing, the callers waiting (each for a number),
/// and the request in flight, whose outcome comes back on a channel the session's loop reads.
pub(super) struct PairCodeFlow {
    pending: Option<PendingCode>,
    waiters: Vec<(PhoneNumber, Reply<PairCodeLogin>)>,
    task: Option<(PhoneNumber, JoinHandle<()>)>,
    outcomes_tx: mpsc::Sender<CodeOutcome>,
    outcomes: mpsc::Receiver<CodeOutcome>,
}

impl PairCodeFlow {
    /// No code, no caller, no request.
    pub(super) fn new() -> Self {
        let (outcomes_tx, outcomes) = mpsc::channel(4);
        Self {
            pending: None,
            waiters: Vec::new(),
            task: None,
            outcomes_tx,
            outcomes,
        }
    }

    /// The next outcome of a request, for the session's loop.
    pub(super) async fn outcome(&mut self) -> Option<CodeOutcome> {
        self.outcomes.recv().await
    }

    /// Whether callers wait for a code.
    pub(super) fn is_awaited(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// The callers waiting, who are no longer this flow's to answer.
    pub(super) fn take_waiters(&mut self) -> Vec<Reply<PairCodeLogin>> {
        std::mem::take(&mut self.waiters)
            .into_iter()
            .map(|(_, reply)| reply)
            .collect()
    }

    /// Answers every waiting caller with `error()`.
    pub(super) fn fail_waiters(&mut self, error: impl Fn() -> LoginError) {
        for reply in self.take_waiters() {
            let _ = reply.send(Err(error()));
        }
    }

    /// Forgets the code showing: WhatsApp refused or renewed it, or the device got linked.
    pub(super) fn forget(&mut self) {
        self.pending = None;
    }

    /// Ends the request in flight and forgets the code: both die with the client being stopped.
    pub(super) fn stop(&mut self) {
        if let Some((_, task)) = self.task.take() {
            task.abort();
        }
        self.pending = None;
    }
}

impl Session {
    /// Answers `reply` with the code showing for `phone`, or with the one WhatsApp gives next.
    pub(super) async fn want_code(&mut self, phone: PhoneNumber, reply: Reply<PairCodeLogin>) {
        if let Some(blocked) = self.login_blocked() {
            let _ = reply.send(Err(blocked));
            return;
        }
        if let Some(code) = &self.code.pending
            && code.phone == phone
            && code.until > Instant::now() + self.scaled(REUSE_MARGIN)
        {
            let _ = reply.send(Ok(code.login.clone()));
            return;
        }
        let in_flight_for = self.code.task.as_ref().map(|(p, _)| p.clone());
        self.code.waiters.push((phone.clone(), reply));
        self.arm_deadline();
        if in_flight_for.as_ref() == Some(&phone) {
            return;
        }
        // A code for another number is outstanding (or was just asked for): WhatsApp allows one
        // per connection, so the connection is renewed for the new number.
        if in_flight_for.is_some() || self.code.pending.is_some() {
            self.stop_client().await;
        }
        self.begin_login(LoginMethod::PairCode);
        if self.ensure_client().await {
            self.request_code(phone);
        }
    }

    /// Asks the running client for a code for `phone`, in a task of its own: WhatsApp may take
    /// the whole login timeout, and the session keeps serving meanwhile.
    fn request_code(&mut self, phone: PhoneNumber) {
        let Some(running) = &self.running else { return };
        let client = Arc::clone(&running.client.client);
        let generation = running.generation;
        let wait = self.ctx.config.login_timeout;
        let device = self.device().clone();
        let tx = self.code.outcomes_tx.clone();
        let for_phone = phone.clone();
        let task = tokio::spawn(
            async move {
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
            }
            .in_current_span(),
        );
        self.code.task = Some((phone, task));
    }

    /// Hands a requested code to the callers waiting for its number, or its failure to all of
    /// them; an outcome of a client that was stopped since is ignored.
    pub(super) async fn on_code(&mut self, outcome: CodeOutcome) {
        if self.running.as_ref().map(|r| r.generation) != Some(outcome.generation) {
            return;
        }
        self.code.task = None;
        match outcome.result {
            Ok(raw) => {
                let pair_code = if raw.len() == 8 {
                    format!("{}-{}", &raw[..4], &raw[4..])
                } else {
                    raw
                };
                // The client's own figure for how long WhatsApp honours a code, so a client
                // update that changes it changes ours.
                let validity = self.scaled(PairCodeUtils::code_validity());
                let login = PairCodeLogin {
                    pair_code: pair_code.clone(),
                    expires_at: Utc::now() + validity,
                };
                self.code.pending = Some(PendingCode {
                    phone: outcome.phone.clone(),
                    login: login.clone(),
                    until: Instant::now() + validity,
                });
                self.record(
                    Some(DeviceState::Connected),
                    Link::Keep,
                    vec![EngineEventKind::PairCodeIssued {
                        pair_code,
                        expires_at: login.expires_at,
                    }],
                )
                .await;
                let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.code.waiters)
                    .into_iter()
                    .partition(|(p, _)| *p == outcome.phone);
                self.code.waiters = others;
                for (_, reply) in mine {
                    let _ = reply.send(Ok(login.clone()));
                }
            }
            Err(error) => {
                let waiters = std::mem::take(&mut self.code.waiters);
                // A timed-out device is disconnected before anyone hears of the timeout.
                if matches!(error, LoginError::Timeout { .. }) {
                    self.end_login(LoginFailure::Timeout, Link::Keep).await;
                } else {
                    self.emit(EngineEventKind::LoginFailed {
                        reason: LoginFailure::PairCodeRejected,
                    })
                    .await;
                }
                for (_, reply) in waiters {
                    let _ = reply.send(Err(error.clone_for_waiter(&self.key.device)));
                }
            }
        }
        self.settle_deadline();
    }

    /// The code showing and the phone it is for, unless it expired (for sandbox phones).
    pub(super) fn current_pair_code(&self) -> Option<(PhoneNumber, String)> {
        self.code
            .pending
            .as_ref()
            .filter(|c| c.until > Instant::now())
            .map(|c| (c.phone.clone(), c.login.pair_code.replace('-', "")))
    }

    /// Tells the callers waiting for a code that it will not come (a reconnect dropped the
    /// client asking for it).
    pub(super) fn cancel_code_waiters(&mut self) {
        let device = self.device().clone();
        self.code
            .fail_waiters(|| LoginError::Cancelled(device.clone()));
        self.settle_deadline();
    }
}

/// What a failed code request tells its callers: WhatsApp's back-off when it asked for one.
fn refusal(device: &DeviceId, error: &whatsapp_rust::pair_code::PairError) -> LoginError {
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
