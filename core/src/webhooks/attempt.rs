//! One delivery attempt: the signed request (Standard Webhooks headers and
//! `X-Hub-Signature-256`), the endpoint's answer, and what becomes of the delivery
//! (`Delivered`, `Failed { retry_at }`, `Dead`, `Expired`). When attempts run and how their
//! outcomes are written is the dispatcher's business.

use std::error::Error as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{StatusCode, Url};
use uuid::Uuid;

use super::signature::{hub_signature, standard_signature};
use super::{RetrySchedule, check_literal};
use crate::store::{ClaimedDelivery, DeliveryOutcome};

/// The longest wait a `Retry-After` header can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How much of an error answer's body the delivery log keeps.
const ERROR_BODY_LIMIT: usize = 256;

/// How one attempt ended, ready to be written.
pub(super) struct Settled {
    /// The delivery attempted.
    pub delivery: Uuid,
    /// Its endpoint, whose share of attempts in flight this one frees.
    pub endpoint: Uuid,
    /// When the attempt started.
    pub at: DateTime<Utc>,
    /// How long it took, answer or error (for the metrics).
    pub took: Duration,
    /// What becomes of the delivery.
    pub outcome: DeliveryOutcome,
}

/// Sends one delivery and decides what becomes of it.
#[tracing::instrument(
    name = "delivery",
    skip_all,
    fields(
        delivery = %delivery.id,
        endpoint = %delivery.endpoint_id,
        event = %delivery.event_id,
        attempt = delivery.attempts + 1,
    )
)]
pub(super) async fn attempt(
    client: &reqwest::Client,
    delivery: ClaimedDelivery,
    schedule: &RetrySchedule,
    refuse_private: bool,
) -> Settled {
    let at = Utc::now();
    let started = std::time::Instant::now();
    let result = send(client, &delivery, at.timestamp(), refuse_private).await;
    let took = started.elapsed();
    let outcome = judge(&delivery, result, schedule, at);
    tracing::debug!(?outcome, "delivery attempted");
    Settled {
        delivery: delivery.id,
        endpoint: delivery.endpoint_id,
        at,
        took,
        outcome,
    }
}

/// What an attempt got back: a status (with `Retry-After` and the start of the body), or an
/// error that kept it from getting one.
type Answer = Result<(StatusCode, Option<Duration>, String), String>;

async fn send(
    client: &reqwest::Client,
    delivery: &ClaimedDelivery,
    timestamp: i64,
    refuse_private: bool,
) -> Answer {
    let url = Url::parse(&delivery.url).map_err(|e| format!("the endpoint url is invalid: {e}"))?;
    if refuse_private {
        check_literal(&url)?;
    }
    let id = delivery.event_id.to_string();
    let body = delivery.body.as_bytes();
    let mut request = client
        .post(url)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, concat!("wagate/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            standard_signature(&delivery.secrets, &id, timestamp, body),
        );
    for secret in &delivery.secrets {
        request = request.header("x-hub-signature-256", hub_signature(secret, body));
    }
    let mut response = request
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // Reading the body lets the connection be reused; only its start is kept, for the log.
    let mut start = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if start.len() < ERROR_BODY_LIMIT {
            start.extend_from_slice(&chunk[..chunk.len().min(ERROR_BODY_LIMIT - start.len())]);
        }
    }
    Ok((
        status,
        retry_after,
        String::from_utf8_lossy(&start).into_owned(),
    ))
}

fn judge(
    delivery: &ClaimedDelivery,
    answer: Answer,
    schedule: &RetrySchedule,
    at: DateTime<Utc>,
) -> DeliveryOutcome {
    let (status_code, error, retry_after) = match answer {
        Ok((status, _, _)) if status.is_success() => {
            return DeliveryOutcome::Delivered {
                status_code: status.as_u16(),
            };
        }
        Ok((StatusCode::GONE, _, _)) => {
            return DeliveryOutcome::Dead {
                status_code: Some(410),
                error: "the endpoint answered 410 Gone: it is disabled".to_string(),
                gone: true,
            };
        }
        Ok((status, retry_after, body)) => {
            let error = if body.trim().is_empty() {
                format!("the endpoint answered {status}")
            } else {
                format!("the endpoint answered {status}: {}", body.trim())
            };
            (Some(status.as_u16()), error, retry_after)
        }
        Err(error) => (None, error, None),
    };
    let attempts = delivery.attempts as usize + 1;
    let Some(delay) = schedule.delay_after(attempts) else {
        return DeliveryOutcome::Dead {
            status_code,
            error: format!(
                "{error} (attempt {attempts} of {}, the last)",
                schedule.attempts()
            ),
            gone: false,
        };
    };
    // An endpoint may ask for a longer wait, never a shorter one: `Retry-After: 0` would
    // otherwise spend the whole schedule at once.
    let delay = match retry_after {
        Some(asked) => asked.min(MAX_RETRY_AFTER).max(delay),
        None => delay,
    };
    let retry_at = at + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
    if delivery.expires_at.is_some_and(|expiry| retry_at >= expiry) {
        return DeliveryOutcome::Expired { status_code, error };
    }
    DeliveryOutcome::Failed {
        status_code,
        error,
        retry_at,
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// reqwest's own message names only the kind of failure; the cause is in its sources.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "the endpoint did not answer in time"
    } else if e.is_connect() {
        "could not connect to the endpoint"
    } else {
        "the request failed"
    };
    let mut message = kind.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(attempts: i32, expires_at: Option<DateTime<Utc>>) -> ClaimedDelivery {
        ClaimedDelivery {
            id: Uuid::new_v4(),
            endpoint_id: Uuid::new_v4(),
            attempts,
            expires_at,
            event_id: Uuid::new_v4(),
            event_type: "logged_in".into(),
            body: "{}".into(),
            url: "http://example.com".into(),
            secrets: vec![],
        }
    }

    fn answer(status: u16, retry_after: Option<u64>) -> Answer {
        Ok((
            StatusCode::from_u16(status).unwrap(),
            retry_after.map(Duration::from_secs),
            String::new(),
        ))
    }

    #[test]
    fn a_failure_is_retried_on_schedule_until_the_last_attempt() {
        let schedule = RetrySchedule::parse("10s,20s").unwrap();
        let at = Utc::now();
        match judge(&delivery(0, None), answer(500, None), &schedule, at) {
            DeliveryOutcome::Failed {
                retry_at,
                status_code,
                ..
            } => {
                assert_eq!(status_code, Some(500));
                let wait = (retry_at - at).num_milliseconds();
                assert!((9000..=11000).contains(&wait), "{wait}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(&delivery(2, None), answer(500, None), &schedule, at),
            DeliveryOutcome::Dead { gone: false, .. }
        ));
    }

    #[test]
    fn retry_after_is_honoured() {
        let schedule = RetrySchedule::parse("10s").unwrap();
        let at = Utc::now();
        match judge(&delivery(0, None), answer(429, Some(120)), &schedule, at) {
            DeliveryOutcome::Failed { retry_at, .. } => {
                assert_eq!((retry_at - at).num_seconds(), 120)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_never_shortens_the_scheduled_delay() {
        let schedule = RetrySchedule::parse("10s,20s").unwrap();
        let at = Utc::now();
        for asked in [0, 3] {
            match judge(&delivery(0, None), answer(503, Some(asked)), &schedule, at) {
                DeliveryOutcome::Failed { retry_at, .. } => {
                    let wait = (retry_at - at).num_milliseconds();
                    assert!(wait >= 9000, "Retry-After: {asked} gave {wait} ms");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_is_capped_at_a_day() {
        let schedule = RetrySchedule::parse("10s").unwrap();
        let at = Utc::now();
        match judge(
            &delivery(0, None),
            answer(429, Some(10 * 24 * 3600)),
            &schedule,
            at,
        ) {
            DeliveryOutcome::Failed { retry_at, .. } => {
                assert_eq!((retry_at - at).num_hours(), 24)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gone_is_dead_at_once_and_success_is_delivered() {
        let schedule = RetrySchedule::default();
        let at = Utc::now();
        assert!(matches!(
            judge(&delivery(0, None), answer(410, None), &schedule, at),
            DeliveryOutcome::Dead { gone: true, .. }
        ));
        assert_eq!(
            judge(&delivery(0, None), answer(204, None), &schedule, at),
            DeliveryOutcome::Delivered { status_code: 204 }
        );
    }

    #[test]
    fn a_qr_event_that_would_be_retried_after_its_code_expired_is_expired() {
        let schedule = RetrySchedule::parse("30s").unwrap();
        let at = Utc::now();
        let expiry = at + chrono::Duration::seconds(10);
        assert!(matches!(
            judge(
                &delivery(0, Some(expiry)),
                Err("refused".into()),
                &schedule,
                at
            ),
            DeliveryOutcome::Expired { .. }
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
