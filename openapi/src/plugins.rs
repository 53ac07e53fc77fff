//! The plugins the gateway loaded and how they fare.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{Object, OpenApi};
use wagate_core::plugins::PluginStats;

use crate::auth::TenantAuth;
use crate::envelope::envelope;
use crate::spec::OperationErrors;
use crate::{ApiError, ApiState, ApiTags};

/// One loaded plugin and its counters since start.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PluginInfo {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its library's file name.
    pub file: String,
    /// Events its queue holds at most.
    pub queue: u64,
    /// Events it handled.
    pub delivered: u64,
    /// Events it reported failing.
    pub failed: u64,
    /// Events it panicked on (the gateway caught the panic and carried on).
    pub panicked: u64,
    /// Events dropped because its queue was full (a slow plugin never slows the engine).
    pub dropped: u64,
}

impl From<PluginStats> for PluginInfo {
    fn from(s: PluginStats) -> Self {
        Self {
            name: s.name,
            version: s.version,
            // The directory is the operator's business, not the tenants'.
            file: s
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            queue: s.queue as u64,
            delivered: s.delivered,
            failed: s.failed,
            panicked: s.panicked,
            dropped: s.dropped,
        }
    }
}

impl Example for PluginInfo {
    fn example() -> Self {
        Self {
            name: "nats".into(),
            version: "0.1.0".into(),
            file: "libwagate_nats.so".into(),
            queue: 1024,
            delivered: 1520,
            failed: 0,
            panicked: 0,
            dropped: 0,
        }
    }
}

envelope!(
    /// The loaded plugins.
    PluginListResponse,
    [PluginInfo],
    "List plugins"
);

/// The error answers of the plugin operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[OperationErrors {
    operation: "listPlugins",
    answers: &[],
}];

/// Plugins.
pub struct PluginsApi;

#[OpenApi(tag = "ApiTags::Plugins")]
impl PluginsApi {
    /// List plugins
    ///
    /// The plugins loaded at start, in configuration order, with what they did with the events
    /// handed to them.
    #[oai(path = "/plugins", method = "get", operation_id = "listPlugins")]
    async fn list(
        &self,
        _auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<Json<PluginListResponse>, ApiError> {
        Ok(PluginListResponse::success(
            "List plugins",
            state
                .plugins
                .stats()
                .into_iter()
                .map(PluginInfo::from)
                .collect(),
        ))
    }
}
