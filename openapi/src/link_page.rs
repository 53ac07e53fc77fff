//! The link page, `/link/{token}`: what a customer opens to link their phone to one device,
//! with no credential but the token in the link (`crate::link_tokens` makes it). The page, and
//! its calls below the same path (the QR login, the pairing-code login, the device's events),
//! reach the token's device and nothing else: no parameter names a device or a tenant.
//!
//! A token works until it expires, is revoked, or is used: its device logged in (the store
//! marks it in the transaction that records the login; a token endpoint that finds the device
//! logged in marks it too). The event stream also opens for a used token that has not expired,
//! so an open page follows its device to `logged_in` and EventSource may reconnect meanwhile.
//!
//! The page's HTML, script and style are files of `openapi/assets/link/`, built in.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem::endpoint::make_sync;
use poem::web::Data;
use poem::{Response, Route};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{EventStream, Html, Json};
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;
use wagate_core::domain::DeviceState;
use wagate_core::engine::LoginError;
use wagate_core::store::{LinkToken, StoreError};

use crate::error::ErrorCode;
use crate::login::{
    LOGIN_OUTCOMES, PairCodeResponse, QrLoginResponse, pair_code_answer, qr_answer,
};
use crate::request_span::{record_device, record_tenant};
use crate::spec::OperationErrors;
use crate::streams::{StreamMessage, device_items, sse};
use crate::{ApiError, ApiState, ApiTags};

/// The page that links a device: it reads its token from its own path.
const PAGE: &str = include_str!("../assets/link/page.html");
/// The page of a link that no longer works, with `{{title}}`, `{{message}}` and `{{reason}}`.
const GONE: &str = include_str!("../assets/link/gone.html");
const SCRIPT: &str = include_str!("../assets/link/link.js");
const STYLE: &str = include_str!("../assets/link/link.css");

/// Where the pages' script and style are served (`serve` nests [`assets`] here).
pub(crate) const ASSETS_PATH: &str = "/statics/link";

/// The pages load only their own script and style, connect only back to the gateway, and may
/// not be framed (a framed page could be overlaid to make someone scan a code).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";
/// The token is in the URL: no request the page makes may carry it elsewhere.
const REFERRER_POLICY: &str = "no-referrer";
/// Nothing keeps a copy of a page whose URL is a credential.
const CACHE_CONTROL: &str = "no-store";

/// The path of the link page of `token`.
pub(crate) fn page_path(token: &str) -> String {
    format!("/link/{token}")
}

/// `path` as it may be logged: a link page's token is a credential, so it is left out.
pub(crate) fn loggable_path(path: &str) -> Cow<'_, str> {
    match path.strip_prefix("/link/") {
        Some(rest) => {
            let after_token = rest.find('/').map_or("", |i| &rest[i..]);
            Cow::Owned(format!("/link/…{after_token}"))
        }
        None => Cow::Borrowed(path),
    }
}

/// The script and style of the link pages, as plain routes: no credential, not cached across
/// deployments (`no-cache`: revalidated every time), never sniffed as another type.
pub(crate) fn assets() -> Route {
    let asset = |content_type: &'static str, body: &'static str| {
        make_sync(move |_| {
            Response::builder()
                .content_type(content_type)
                .header("Cache-Control", "no-cache")
                .header("X-Content-Type-Options", "nosniff")
                .body(body)
        })
    };
    Route::new()
        .at(
            "/link.js",
            asset("application/javascript; charset=utf-8", SCRIPT),
        )
        .at("/link.css", asset("text/css; charset=utf-8", STYLE))
}

/// Why a token no longer opens its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// No link has this token.
    Unknown,
    /// It expired.
    Expired,
    /// Its device logged in.
    Used,
    /// The operator revoked it.
    Revoked,
}

impl Closed {
    /// The gone page's `data-reason`.
    fn reason(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Used => "used",
            Self::Revoked => "revoked",
        }
    }

    /// The gone page's title and message.
    fn wording(self) -> (&'static str, &'static str) {
        match self {
            Self::Unknown => (
                "This link does not work",
                "There is no link like this one. Check that you opened the whole link.",
            ),
            Self::Expired => ("This link expired", "This link is no longer valid."),
            Self::Used => (
                "This link was already used",
                "A phone was linked with this link; it cannot be used again.",
            ),
            Self::Revoked => (
                "This link was cancelled",
                "Whoever sent this link cancelled it.",
            ),
        }
    }

    /// The answer of a token-scoped JSON call.
    fn error(self) -> ApiError {
        match self {
            Self::Unknown => ApiError::not_found(
                ErrorCode::NotFound,
                "no link has this token: check that the whole link was opened, or ask for a new \
                 one",
            ),
            Self::Expired | Self::Used | Self::Revoked => ApiError::link_expired(),
        }
    }
}

/// What a call needs of its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A login: the token must be unused.
    Login,
    /// Following the device's events: a used token will do until it expires, so the page sees
    /// the login it was used for.
    Follow,
}

/// The token's link, if it opens what `need` asks for; why not, otherwise. A token whose device
/// is found logged in is marked used here (the store marks it at the login too; this covers a
/// login recorded before the token was made).
async fn admit(
    state: &ApiState,
    token: &str,
    need: Need,
) -> Result<Result<LinkToken, Closed>, StoreError> {
    let store = state.manager.store();
    let Some(link) = store.link_token(token).await? else {
        return Ok(Err(Closed::Unknown));
    };
    record_tenant(link.tenant);
    record_device(&link.device);
    let expired = link.expires_at <= Utc::now();
    let used = link.used_at.is_some() || link.state == DeviceState::LoggedIn;
    if link.used_at.is_none() && link.state == DeviceState::LoggedIn {
        store.mark_link_token_used(token).await?;
    }
    Ok(if link.revoked_at.is_some() {
        Err(Closed::Revoked)
    } else if used && (need == Need::Login || expired) {
        Err(Closed::Used)
    } else if expired {
        Err(Closed::Expired)
    } else {
        Ok(link)
    })
}

/// The token's link for a JSON call, or that call's error answer.
async fn admitted(state: &ApiState, token: &str, need: Need) -> Result<LinkToken, ApiError> {
    admit(state, token, need).await?.map_err(Closed::error)
}

/// A login error of a token's device, as the token's caller gets it: the device logged in
/// meanwhile spends the token; the device deleted meanwhile took the token with it.
async fn login_refused(state: &ApiState, token: &str, error: LoginError) -> ApiError {
    match error {
        LoginError::AlreadyLoggedIn(_) => {
            if let Err(e) = state.manager.store().mark_link_token_used(token).await {
                return e.into();
            }
            Closed::Used.error()
        }
        LoginError::DeviceNotFound(_) => Closed::Unknown.error(),
        other => other.into(),
    }
}

/// Replaces `<`, `>`, `&`, `"` and `'`, so `text` is only text in an element or attribute.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The gone page with `title`, `message` and `reason` filled in.
fn gone_page(title: &str, message: &str, reason: &str) -> String {
    // One pass over the template, so a value that holds a placeholder is not filled in again.
    let mut page = String::with_capacity(GONE.len() + 256);
    let mut rest = GONE;
    while let Some(start) = rest.find("{{") {
        page.push_str(&rest[..start]);
        let after = &rest[start..];
        let filled = [
            ("{{title}}", title),
            ("{{message}}", message),
            ("{{reason}}", reason),
        ]
        .into_iter()
        .find(|(placeholder, _)| after.starts_with(placeholder));
        match filled {
            Some((placeholder, value)) => {
                page.push_str(&escape_html(value));
                rest = &after[placeholder.len()..];
            }
            None => {
                page.push_str("{{");
                rest = &after[2..];
            }
        }
    }
    page.push_str(rest);
    page
}

/// The link page, or the page that says why the link does not work.
#[derive(ApiResponse)]
pub enum LinkPageResponse {
    /// The link page: it shows a QR code (or a pairing code for a phone number) for the link's
    /// device and follows the device to `logged_in`.
    #[oai(status = 200)]
    Page(
        Html<String>,
        #[oai(header = "Content-Security-Policy")] String,
        #[oai(header = "Referrer-Policy")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "X-Content-Type-Options")] String,
    ),
    /// No link has this token: the gone page, `data-reason="unknown"`.
    #[oai(status = 404)]
    Unknown(
        Html<String>,
        #[oai(header = "Content-Security-Policy")] String,
        #[oai(header = "Referrer-Policy")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "X-Content-Type-Options")] String,
    ),
    /// The link expired, was used or was revoked: the gone page, `data-reason` saying which.
    #[oai(status = 410)]
    Gone(
        Html<String>,
        #[oai(header = "Content-Security-Policy")] String,
        #[oai(header = "Referrer-Policy")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "X-Content-Type-Options")] String,
    ),
    /// The gateway could not check the link (logged): the gone page, `data-reason="error"`.
    #[oai(status = 500)]
    Failed(
        Html<String>,
        #[oai(header = "Content-Security-Policy")] String,
        #[oai(header = "Referrer-Policy")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "X-Content-Type-Options")] String,
    ),
}

/// One of [`LinkPageResponse`]'s variants.
type PageVariant = fn(Html<String>, String, String, String, String) -> LinkPageResponse;

impl LinkPageResponse {
    /// `html` as `variant`, with the headers every link page carries.
    fn of(variant: PageVariant, html: String) -> Self {
        variant(
            Html(html),
            CONTENT_SECURITY_POLICY.to_string(),
            REFERRER_POLICY.to_string(),
            CACHE_CONTROL.to_string(),
            "nosniff".to_string(),
        )
    }

    fn closed(closed: Closed) -> Self {
        let (title, message) = closed.wording();
        let page = gone_page(title, message, closed.reason());
        let variant: PageVariant = match closed {
            Closed::Unknown => Self::Unknown,
            Closed::Expired | Closed::Used | Closed::Revoked => Self::Gone,
        };
        Self::of(variant, page)
    }
}

/// The error answers of the link page's operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "openLinkPage",
        answers: &[&[
            (
                404,
                "No link has this token: the \"gone\" page (HTML), `data-reason=\"unknown\"`.",
            ),
            (
                410,
                "The link expired, was used (its device logged in) or was revoked: the \"gone\" \
                 page (HTML), `data-reason` `expired`, `used` or `revoked`.",
            ),
        ]],
    },
    OperationErrors {
        operation: "linkLogin",
        answers: &[&BAD_TOKEN, &LOGIN_OUTCOMES],
    },
    OperationErrors {
        operation: "linkLoginWithCode",
        answers: &[
            &[(
                400,
                "`VALIDATION_ERROR`: the phone number is malformed (7–15 digits with the country \
                 code, not starting with 0).",
            )],
            &BAD_TOKEN,
            &LOGIN_OUTCOMES,
        ],
    },
    OperationErrors {
        operation: "streamLinkEvents",
        answers: &[
            &[(
                400,
                "`VALIDATION_ERROR`: `Last-Event-ID` is not an event id.",
            )],
            &[
                BAD_TOKEN[0],
                (
                    410,
                    "`LINK_EXPIRED`: the link expired or was revoked; ask whoever sent it for a \
                     new one. A used link still follows its device until it expires.",
                ),
                crate::devices::MOVING,
            ],
        ],
    },
];

/// A token that opens nothing, for the token-scoped JSON calls.
const BAD_TOKEN: [(u16, &str); 2] = [
    (
        404,
        "`NOT_FOUND`: no link has this token; check that the whole link was opened.",
    ),
    (
        410,
        "`LINK_EXPIRED`: the link expired, was revoked, or was used (its device logged in); \
         ask whoever sent it for a new one.",
    ),
];

/// The link page and its token-scoped calls: no credential but the token.
pub struct LinkPageApi;

#[OpenApi(tag = "ApiTags::Login")]
impl LinkPageApi {
    /// Open a link page
    ///
    /// The page `createLinkToken`'s `link_url` points at, for a browser: it shows a QR code to
    /// scan (or a pairing code for a phone number) for the link's device, and follows the device
    /// to `logged_in`. No authentication: the token is the credential. A link that no longer
    /// works answers a page saying why (404 unknown; 410 expired, used or revoked).
    #[oai(path = "/link/:token", method = "get", operation_id = "openLinkPage")]
    async fn page(
        &self,
        state: Data<&Arc<ApiState>>,
        /// The link's token, as `link_url` ends.
        token: Path<String>,
    ) -> LinkPageResponse {
        match admit(&state, &token, Need::Login).await {
            Ok(Ok(_)) => LinkPageResponse::of(LinkPageResponse::Page, PAGE.to_string()),
            Ok(Err(closed)) => LinkPageResponse::closed(closed),
            Err(e) => {
                tracing::error!("the link page could not check its token: {e}");
                let page = gone_page(
                    "Something went wrong",
                    "This link could not be checked. Try again in a moment.",
                    "error",
                );
                LinkPageResponse::of(LinkPageResponse::Failed, page)
            }
        }
    }

    /// Login through a link page
    ///
    /// The QR login of the link's device: the same answer as `GET /devices/{device_id}/login`,
    /// with the token as the only credential.
    #[oai(
        path = "/link/:token/login",
        method = "get",
        operation_id = "linkLogin"
    )]
    async fn login(
        &self,
        state: Data<&Arc<ApiState>>,
        /// The link's token, as `link_url` ends.
        token: Path<String>,
    ) -> Result<Json<QrLoginResponse>, ApiError> {
        let link = admitted(&state, &token, Need::Login).await?;
        let qr = match state.manager.login_qr(link.tenant, &link.device).await {
            Ok(qr) => qr,
            Err(e) => return Err(login_refused(&state, &token, e).await),
        };
        Ok(qr_answer(qr, &link.device))
    }

    /// Login with a pairing code through a link page
    ///
    /// The pairing-code login of the link's device: the same answer as
    /// `POST /devices/{device_id}/login/code`, with the token as the only credential.
    #[oai(
        path = "/link/:token/login/code",
        method = "post",
        operation_id = "linkLoginWithCode"
    )]
    async fn login_code(
        &self,
        state: Data<&Arc<ApiState>>,
        /// The link's token, as `link_url` ends.
        token: Path<String>,
        /// Phone number to pair with: country code and number, digits only (a leading + is
        /// allowed), e.g. 628912344551.
        #[oai(validator(pattern = r"^\+?[1-9][0-9]{6,14}$"))]
        phone: Query<String>,
    ) -> Result<Json<PairCodeResponse>, ApiError> {
        let link = admitted(&state, &token, Need::Login).await?;
        let code = match state
            .manager
            .login_code(link.tenant, &link.device, &phone)
            .await
        {
            Ok(code) => code,
            Err(e) => return Err(login_refused(&state, &token, e).await),
        };
        Ok(pair_code_answer(code, &link.device))
    }

    /// Stream the events of a link page's device
    ///
    /// The same stream as `GET /devices/{device_id}/login/events` for the link's device, with
    /// the token as the only credential. It also opens for a used link that has not expired, so
    /// a page that linked its device sees it to `logged_in`, reconnecting if it must.
    #[oai(
        path = "/link/:token/events",
        method = "get",
        operation_id = "streamLinkEvents"
    )]
    async fn events(
        &self,
        state: Data<&Arc<ApiState>>,
        /// The link's token, as `link_url` ends.
        token: Path<String>,
        /// The id of the last event received: the events after it are sent first.
        #[oai(name = "Last-Event-ID")]
        last_event_id_header: Header<Option<Uuid>>,
        /// The same as the `Last-Event-ID` header, for clients that cannot set headers; the
        /// header wins when both are given.
        last_event_id: Query<Option<Uuid>>,
    ) -> Result<EventStream<BoxStream<'static, StreamMessage>>, ApiError> {
        let link = admitted(&state, &token, Need::Follow).await?;
        let after = last_event_id_header.0.or(last_event_id.0);
        let items = device_items(&state, link.tenant, &link.device, after)
            .await
            .map_err(|e| match e {
                // The device went (and its tokens with it) since the token was found.
                ApiError::NotFound(_) => Closed::Unknown.error(),
                other => other,
            })?;
        // The token is the stream's only credential: the stream ends when the token does, and
        // a reconnect after that is refused.
        let left = (link.expires_at - Utc::now()).to_std().unwrap_or_default();
        Ok(sse(items.take_until(tokio::time::sleep(left)).boxed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_text_is_escaped_and_filled_once() {
        let page = gone_page("<b>{{message}}</b>", "a & b", "x\" onload=\"y");
        assert!(page.contains("&lt;b&gt;{{message}}&lt;/b&gt;"), "{page}");
        assert!(page.contains("a &amp; b"), "{page}");
        assert!(page.contains("x&quot; onload=&quot;y"), "{page}");
        assert!(!page.contains("{{title}}") && !page.contains("{{reason}}"));
    }

    #[test]
    fn every_reason_fills_the_gone_page() {
        for closed in [
            Closed::Unknown,
            Closed::Expired,
            Closed::Used,
            Closed::Revoked,
        ] {
            let (title, _) = closed.wording();
            let page = gone_page(title, "m", closed.reason());
            assert!(
                page.contains(&format!("data-reason=\"{}\"", closed.reason())),
                "{page}"
            );
        }
    }

    #[test]
    fn a_token_is_not_logged() {
        assert_eq!(loggable_path("/link/abc"), "/link/…");
        assert_eq!(loggable_path("/link/abc/login/code"), "/link/…/login/code");
        assert_eq!(loggable_path("/devices/d1/link"), "/devices/d1/link");
    }
}
