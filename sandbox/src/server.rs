//! The sandbox process: one HTTP listener that serves WhatsApp's websocket at `/ws/chat` and a
//! small JSON control API for the simulated phone.

use std::net::SocketAddr;
use std::sync::Arc;

use poem::http::StatusCode;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::web::websocket::WebSocket;
use poem::web::{Data, Json};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{EndpointExt, IntoResponse, Response, Route, Server, get, handler, post};
use serde::Deserialize;
use serde_json::json;
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::accounts::{AccountInfo, AccountKind, ClientInfo, ClientState};
use crate::config::SandboxConfig;
use crate::conn::lock;
use crate::history::ConnectionRecord;
use crate::phone::{self, Linked, PhoneError};
use crate::shared::Shared;
use crate::{connection, incidents, pair_code};

/// The sandbox could not start.
#[derive(Debug, Error)]
#[error("sandbox could not listen on {addr}: {source}")]
pub struct StartError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// A running WhatsApp server simulator.
///
/// Dropping it stops the listener; connected clients see their sockets close.
pub struct Sandbox {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Sandbox {
    /// Starts a sandbox with default settings on a free loopback port.
    pub async fn start() -> Result<Self, StartError> {
        Self::start_with(SandboxConfig::default()).await
    }

    /// Starts a sandbox with `config`.
    pub async fn start_with(config: SandboxConfig) -> Result<Self, StartError> {
        let listen = config.listen;
        let acceptor = TcpListener::bind(listen)
            .into_acceptor()
            .await
            .map(NoDelay)
            .map_err(|source| StartError {
                addr: listen,
                source,
            })?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .unwrap_or(listen);
        let shared = Arc::new(Shared::new(config));
        let app = routes().data(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(e) = Server::new_with_acceptor(acceptor).run(app).await {
                tracing::error!("sandbox server stopped: {e}");
            }
        });
        Ok(Self {
            shared,
            addr,
            server,
        })
    }

    /// The address the sandbox listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The websocket URL a whatsapp-rust client connects to.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// The base URL of the control API.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings this sandbox runs with.
    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// A new phone scans `qr` (the string of a `PairingQrCode` event) and links the client.
    pub async fn scan_qr(&self, qr: &str) -> Result<Linked, PhoneError> {
        phone::scan_qr(&self.shared, None, qr).await
    }

    /// The phone with number `phone` scans `qr` and links the client to its account.
    pub async fn scan_qr_as(&self, phone: &str, qr: &str) -> Result<Linked, PhoneError> {
        phone::scan_qr(&self.shared, Some(phone), qr).await
    }

    /// The phone `phone` enters the pairing code a client showed for it.
    pub async fn enter_pair_code(&self, phone: &str, code: &str) -> Result<Linked, PhoneError> {
        pair_code::enter_pair_code(&self.shared, phone, code).await
    }

    /// The phone `phone`'s passkey signs an assertion for the WebAuthn request options
    /// `options_json` (a companion's `PairPasskeyRequest`), as its password manager would after
    /// verifying its user. Returns the assertion JSON in WhatsApp Web's shape:
    /// `{"id","rawId","type":"public-key","response":{"clientDataJSON","authenticatorData",
    /// "signature","userHandle"}}`, binary fields base64url without padding.
    pub fn passkey_assertion(&self, phone: &str, options_json: &str) -> Result<String, PhoneError> {
        phone::passkey_assertion(&self.shared, phone, options_json)
    }

    /// Makes the account of `phone` one of `kind` (personal, business, hosted, passkey): what
    /// the companions it links from now on see in `pair-success`; a passkey account also gets
    /// its passkey, and its companions must prove it before `pair-success`.
    pub fn set_account(&self, phone: &str, kind: AccountKind) -> Result<(), PhoneError> {
        phone::set_account(&self.shared, phone, kind)
    }

    /// The server retires the registration of the client showing `qr` (`companion_reg_refresh`):
    /// the client shows the same ref again under a new ADV secret. Returns the ref.
    pub async fn refresh_registration(&self, qr: &str) -> Result<String, PhoneError> {
        incidents::refresh_registration(&self.shared, qr).await
    }

    /// While `on`, new registrations are refused with a 429 stream error (rate limited).
    pub fn set_rate_limited(&self, on: bool) {
        incidents::set_rate_limited(&self.shared, on);
    }

    /// While `on`, every connection is refused with `<failure reason="405"/>`: the client's
    /// version is too old for WhatsApp.
    pub fn set_client_outdated(&self, on: bool) {
        incidents::set_client_outdated(&self.shared, on);
    }

    /// The next app-state sync a companion of `phone` asks for is refused for `critical_block`,
    /// which the client takes as final and connects without.
    pub fn refuse_next_app_state_sync(&self, phone: &str) -> Result<(), PhoneError> {
        incidents::refuse_next_app_state_sync(&self.shared, phone)
    }

    /// Tells the online companion `jid` that its client version expires at `at` (seconds since
    /// the Unix epoch).
    pub async fn announce_client_expiration(&self, jid: &str, at: u64) -> Result<(), PhoneError> {
        incidents::announce_client_expiration(&self.shared, jid, at).await
    }

    /// The phone unlinks the companion `jid`; an online client is logged out at once.
    pub async fn unlink(&self, jid: &str) -> Result<(), PhoneError> {
        phone::unlink(&self.shared, jid).await
    }

    /// Every companion the sandbox has linked, and whether each is online.
    pub fn accounts(&self) -> Vec<AccountInfo> {
        lock(&self.shared.registry).account_infos()
    }

    /// Every client connected right now.
    pub fn clients(&self) -> Vec<ClientInfo> {
        client_infos(&self.shared)
    }

    /// How many client connections it has accepted since it started, those that closed
    /// included: a client that connected and dropped does not show in [`Sandbox::clients`].
    pub fn connections_made(&self) -> u64 {
        lock(&self.shared.registry).connections_made()
    }

    /// The records of the latest connections (up to 100,000), oldest first: when each opened,
    /// logged in as which device and closed, and whether a newer login replaced it. A socket
    /// that never finished the Noise handshake was given no number and has no record.
    pub fn history(&self) -> Vec<ConnectionRecord> {
        lock(&self.shared.registry).history.records()
    }

    /// How many connections the sandbox has closed with `<conflict type="replaced"/>` because
    /// another connection logged in as the same device.
    pub fn replaced_total(&self) -> u64 {
        lock(&self.shared.registry).history.replaced_total()
    }

    /// Plays an outage: `true` drops every socket and refuses new ones; `false` comes back.
    pub fn set_outage(&self, down: bool) {
        self.shared.outage.send_replace(down);
    }

    /// Stops the listener and every connection.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Connections watch the outage flag; raising it ends them with the listener.
        self.shared.outage.send_replace(true);
        self.server.abort();
    }
}

/// Accepts connections with Nagle's algorithm off. The server writes small stanzas back to back
/// (an answer, then the offline marker, then the phone's messages); with Nagle on, each waits
/// for the client's delayed ACK of the one before, about 40 ms on Linux, which a login would
/// spend waiting on the sandbox instead of measuring the client and wagate.
struct NoDelay(TcpAcceptor);

impl Acceptor for NoDelay {
    type Io = tokio::net::TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        if let Err(e) = io.set_nodelay(true) {
            tracing::warn!("sandbox could not turn Nagle's algorithm off for {remote}: {e}");
        }
        Ok((io, local, remote, scheme))
    }
}

fn client_infos(shared: &Shared) -> Vec<ClientInfo> {
    let registry = lock(&shared.registry);
    let mut out: Vec<ClientInfo> = registry
        .connections
        .values()
        .map(|c| ClientInfo {
            connection: c.id,
            state: if c.jid.is_some() {
                ClientState::LoggedIn
            } else {
                ClientState::Registering
            },
            jid: c.jid.clone(),
        })
        .collect();
    out.sort_by_key(|c| c.connection);
    out
}

fn routes() -> Route {
    Route::new()
        .at("/ws/chat", get(ws_chat))
        .at("/phone/scan", post(phone_scan))
        .at("/phone/pair-code", post(phone_pair_code))
        .at("/phone/unlink", post(phone_unlink))
        .at("/phone/passkey/assert", post(phone_passkey_assert))
        .at("/accounts", get(list_accounts))
        .at("/clients", get(list_clients))
        .at("/history", get(list_history))
        .at("/stats", get(stats))
        .at("/outage", post(set_outage))
        .at("/rate-limit", post(set_rate_limit))
        .at("/server/client-outdated", post(server_client_outdated))
        .at(
            "/phone/refuse-app-state-sync",
            post(phone_refuse_app_state_sync),
        )
        .at(
            "/server/refresh-registration",
            post(server_refresh_registration),
        )
        .at("/server/client-expiration", post(server_client_expiration))
}

#[handler]
fn ws_chat(ws: WebSocket, Data(shared): Data<&Arc<Shared>>) -> Response {
    if *shared.outage.borrow() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the sandbox is playing an outage",
        );
    }
    let shared = Arc::clone(shared);
    ws.on_upgrade(move |socket| connection::serve(shared, socket))
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Parses a JSON body into `T`, or says what was wrong with it.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("request body is not the expected JSON: {e}"))
}

fn phone_error(e: PhoneError) -> Response {
    let status = match &e {
        PhoneError::MalformedQr(_)
        | PhoneError::InvalidPhone(_)
        | PhoneError::MalformedCode(_)
        | PhoneError::ForeignQr(_)
        | PhoneError::WrongCode(_) => StatusCode::BAD_REQUEST,
        PhoneError::UnknownQrRef(_) | PhoneError::NoPendingCode(_) | PhoneError::NotLinked(_) => {
            StatusCode::NOT_FOUND
        }
        PhoneError::Offline(_) => StatusCode::CONFLICT,
        PhoneError::InvalidPasskeyOptions(_) => StatusCode::BAD_REQUEST,
        PhoneError::NotPasskeyAccount(_) => StatusCode::NOT_FOUND,
        // The phone understood the link and refuses it: the companion did not prove the passkey.
        PhoneError::PasskeyRejected(_) => StatusCode::FORBIDDEN,
        PhoneError::PasskeyTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        PhoneError::Refused { .. } | PhoneError::CompanionGone(_) => StatusCode::BAD_GATEWAY,
    };
    error(status, e.to_string())
}

fn linked(result: Result<Linked, PhoneError>) -> Response {
    match result {
        Ok(l) => Json(l).into_response(),
        Err(e) => phone_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    qr: String,
    phone: Option<String>,
    account: Option<AccountKind>,
}

#[handler]
async fn phone_scan(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: ScanBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    // The account kind belongs to a phone, so choosing one needs the phone's number.
    let number = match (&body.phone, body.account) {
        (Some(number), Some(kind)) => match phone::set_account(shared, number, kind) {
            Ok(()) => Some(number.as_str()),
            Err(e) => return phone_error(e),
        },
        (None, Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`account` chooses the kind of the phone's account: give `phone` too",
            );
        }
        (number, None) => number.as_deref(),
    };
    linked(phone::scan_qr(shared, number, &body.qr).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairCodeBody {
    phone: String,
    code: String,
    account: Option<AccountKind>,
}

#[handler]
async fn phone_pair_code(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: PairCodeBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Some(kind) = body.account
        && let Err(e) = phone::set_account(shared, &body.phone, kind)
    {
        return phone_error(e);
    }
    linked(pair_code::enter_pair_code(shared, &body.phone, &body.code).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlinkBody {
    jid: String,
}

#[handler]
async fn phone_unlink(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: UnlinkBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match phone::unlink(shared, &body.jid).await {
        Ok(()) => Json(json!({ "unlinked": body.jid })).into_response(),
        Err(e) => phone_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasskeyAssertBody {
    phone: String,
    /// The request options: the JSON object itself, or the string a client's event carries.
    options: serde_json::Value,
}

#[handler]
fn phone_passkey_assert(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: PasskeyAssertBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let options = match body.options {
        serde_json::Value::String(text) => text,
        object @ serde_json::Value::Object(_) => object.to_string(),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "`options` must be the request options, as an object or a string: got {other}"
                ),
            );
        }
    };
    match phone::passkey_assertion(shared, &body.phone, &options) {
        // Already JSON: passed on as the phone wrote it.
        Ok(assertion) => Response::builder()
            .content_type("application/json")
            .body(assertion),
        Err(e) => phone_error(e),
    }
}

#[handler]
fn list_accounts(Data(shared): Data<&Arc<Shared>>) -> Json<Vec<AccountInfo>> {
    Json(lock(&shared.registry).account_infos())
}

#[handler]
fn list_clients(Data(shared): Data<&Arc<Shared>>) -> Json<Vec<ClientInfo>> {
    Json(client_infos(shared))
}

#[handler]
fn list_history(Data(shared): Data<&Arc<Shared>>) -> Json<Vec<ConnectionRecord>> {
    Json(lock(&shared.registry).history.records())
}

#[handler]
fn stats(Data(shared): Data<&Arc<Shared>>) -> Json<serde_json::Value> {
    // Read under one lock, so the two counts describe the same moment.
    let registry = lock(&shared.registry);
    Json(json!({
        "connections_made": registry.connections_made(),
        "replaced_total": registry.history.replaced_total(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageBody {
    down: bool,
}

#[handler]
fn set_outage(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: OutageBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    shared.outage.send_replace(body.down);
    Json(json!({ "down": body.down })).into_response()
}

/// Turns a switch of the server's (`/rate-limit`, `/server/client-outdated`) on or off.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    on: bool,
}

#[handler]
fn set_rate_limit(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: SwitchBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    incidents::set_rate_limited(shared, body.on);
    Json(json!({ "on": body.on })).into_response()
}

#[handler]
fn server_client_outdated(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: SwitchBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    incidents::set_client_outdated(shared, body.on);
    Json(json!({ "on": body.on })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneBody {
    phone: String,
}

#[handler]
fn phone_refuse_app_state_sync(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: PhoneBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match incidents::refuse_next_app_state_sync(shared, &body.phone) {
        Ok(()) => Json(json!({ "refused": incidents::REFUSED_COLLECTION })).into_response(),
        Err(e) => phone_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QrBody {
    qr: String,
}

#[handler]
async fn server_refresh_registration(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: QrBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match incidents::refresh_registration(shared, &body.qr).await {
        Ok(reference) => Json(json!({ "refreshed": reference })).into_response(),
        Err(e) => phone_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpirationBody {
    jid: String,
    /// Seconds since the Unix epoch.
    at: u64,
}

#[handler]
async fn server_client_expiration(body: Vec<u8>, Data(shared): Data<&Arc<Shared>>) -> Response {
    let body: ExpirationBody = match parse(&body) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match incidents::announce_client_expiration(shared, &body.jid, body.at).await {
        Ok(()) => Json(json!({ "jid": body.jid, "at": body.at })).into_response(),
        Err(e) => phone_error(e),
    }
}
