//! Readiness (`GET /ready`, served by `statics.rs`): whether this gateway can take traffic now.
//! It is ready when its database answers with every migration applied, webhook delivery runs,
//! and the start-up restore of linked devices has finished. `/health` is liveness: it answers
//! as long as the process serves HTTP at all.

use std::borrow::Cow;
use std::time::Duration;

use poem_openapi::Object;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{Example, ParseError, ParseFromJSON, ParseResult, ToJSON, Type};

use crate::envelope::envelope;
use crate::{ApiError, ApiState};

/// How long the database gets to answer the readiness check's statement; probes usually give
/// the whole check about a second.
pub(crate) const DATABASE_TIMEOUT: Duration = Duration::from_secs(1);

/// How far the start-up restore of linked devices has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Object)]
#[oai(example)]
pub struct RestoreProgress {
    /// The linked devices it reconnects; 0 until it has read them from the database.
    pub total: u64,
    /// Of those, the ones it is through with (logged in, disconnected, or still connecting
    /// when the login timeout ran out; those carry on by themselves).
    pub done: u64,
    /// Whether it went through every device. False before it starts, while it runs, and while
    /// it fails (the database did not answer; it is tried again).
    pub finished: bool,
}

impl Example for RestoreProgress {
    fn example() -> Self {
        Self {
            total: 50,
            done: 50,
            finished: true,
        }
    }
}

impl From<wagate_core::engine::RestoreProgress> for RestoreProgress {
    fn from(p: wagate_core::engine::RestoreProgress) -> Self {
        Self {
            total: p.total,
            done: p.done,
            finished: p.finished,
        }
    }
}

/// The error envelope's `restore`: a [`RestoreProgress`] whose schema is written inline, since
/// OpenAPI 3.0 cannot mark a reference `nullable` and the field is `null` with every code but
/// `NOT_READY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreField(pub RestoreProgress);

impl Type for RestoreField {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;

    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        RestoreProgress::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut registry = Registry::new();
        RestoreProgress::register(&mut registry);
        let mut schema = registry
            .schemas
            .remove(RestoreProgress::name().as_ref())
            .expect("RestoreProgress registers its schema");
        // Untitled, so a generator names it after the field, not after the schema of `/ready`'s
        // answer.
        schema.title = None;
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn register(_: &mut Registry) {}

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for RestoreField {
    fn to_json(&self) -> Option<serde_json::Value> {
        self.0.to_json()
    }
}

impl ParseFromJSON for RestoreField {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        RestoreProgress::parse_from_json(value)
            .map(Self)
            .map_err(ParseError::propagate)
    }
}

/// The gateway can take traffic.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ReadyResult {
    /// `ready`.
    pub status: String,
    /// The start-up restore, finished.
    pub restore: RestoreProgress,
}

impl Example for ReadyResult {
    fn example() -> Self {
        Self {
            status: "ready".into(),
            restore: RestoreProgress::example(),
        }
    }
}

envelope!(
    /// The gateway's readiness.
    ReadyResponse,
    ReadyResult,
    "ready"
);

/// Checks everything readiness depends on; the restore's progress when all is ready, else 503
/// `NOT_READY` naming each thing that is not (with the progress too). The answer needs no
/// credentials, so it names what is wrong without the database's own error text.
pub(crate) async fn check(state: &ApiState) -> Result<RestoreProgress, ApiError> {
    let restore = state.manager.restore_progress();
    let mut unready: Vec<String> = Vec::new();
    let store = state.manager.store();
    match tokio::time::timeout(DATABASE_TIMEOUT, store.missing_migrations()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(missing)) => unready.push(format!(
            "the database lacks {missing} of this wagate's migrations: restart wagate (or run \
             `wagate migrate`) to apply them"
        )),
        Ok(Err(e)) => {
            // The answer is public: the database's own words go to the log only.
            tracing::warn!("readiness: the database check failed: {e}");
            unready.push("the database check failed (see the log)".to_string());
        }
        Err(_) => unready.push(format!(
            "the database did not answer within {} ms",
            DATABASE_TIMEOUT.as_millis()
        )),
    }
    if !state.dispatcher.is_running() {
        unready.push(
            "webhook delivery is not running: the gateway is stopping, or its dispatcher \
             failed (see the log)"
                .to_string(),
        );
    }
    if !restore.finished {
        unready.push(match state.manager.restore_failure() {
            // Logged where it failed.
            Some(_) => {
                "restoring the linked devices failed (see the log); it is tried again".to_string()
            }
            None if restore.total == 0 => "the linked devices are about to be restored".to_string(),
            None => format!(
                "the linked devices are being restored: {} of {} done",
                restore.done, restore.total
            ),
        });
    }
    if unready.is_empty() {
        Ok(restore.into())
    } else {
        Err(ApiError::not_ready(
            format!("not ready: {}", unready.join("; ")),
            restore.into(),
        ))
    }
}
