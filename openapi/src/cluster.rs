//! `GET /cluster`: the nodes serving this gateway from one database, for the operator. It takes
//! the admin credential; while the admin API is off, the `default` tenant's credential (the one
//! `WAGATE_BASIC_AUTH` makes), so a single-tenant deployment can look at its nodes too.

use std::sync::Arc;

use poem::web::Data;
use poem::{Request, RequestBody};
use poem_openapi::auth::{Basic, BasicAuthorization};
use poem_openapi::payload::Json;
use poem_openapi::registry::Registry;
use poem_openapi::types::Example;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, Object, OpenApi};
use wagate_core::store::NodeRecord;

use crate::admin::{AdminAuth, operator};
use crate::auth::{TenantAuth, verify};
use crate::devices::example_time;
use crate::envelope::envelope;
use crate::spec::OperationErrors;
use crate::timestamp::Timestamp;
use crate::{ApiError, ApiState, ApiTags};

/// The name of the tenant `WAGATE_BASIC_AUTH` makes.
const DEFAULT_TENANT: &str = "default";

/// The operator, signed in for `GET /cluster` (the username, for the log): with the admin
/// credential, or while the admin API is off with the `default` tenant's. The spec lists both
/// schemes (`adminAuth`, `basicAuth`).
// Not a derived `SecurityScheme`: one credential is checked against one of two schemes, chosen
// by the configuration, so a failure is counted once and the answer says which credential to
// send.
pub struct ClusterAuth(pub String);

impl<'a> ApiExtractor<'a> for ClusterAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <AdminAuth as ApiExtractor>::register(registry);
        <TenantAuth as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut schemes = <AdminAuth as ApiExtractor>::security_schemes();
        schemes.extend(<TenantAuth as ApiExtractor>::security_schemes());
        schemes
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = req
            .data::<Arc<ApiState>>()
            .ok_or_else(|| ApiError::internal("api state missing from request"))?;
        let admin_on = state.admin.is_some();
        let refused = || {
            if admin_on {
                ApiError::admin_unauthorized()
            } else {
                ApiError::unauthorized_because(
                    "missing or wrong credentials: send HTTP Basic auth with a credential of the \
                     `default` tenant (WAGATE_BASIC_AUTH), or turn the admin API on \
                     (WAGATE_ADMIN_AUTH) and send its credential",
                )
            }
        };
        let basic = <Basic as BasicAuthorization>::from_request(req).map_err(|_| refused())?;
        if admin_on {
            return operator(req, basic).await.map(Self);
        }
        match verify(req, &basic).await {
            Ok(tenant) if tenant.name == DEFAULT_TENANT => {
                crate::request_span::record_tenant(tenant.id);
                Ok(Self(basic.username))
            }
            Ok(_) | Err(ApiError::Unauthorized(..)) => Err(refused().into()),
            Err(other) => Err(other.into()),
        }
    }
}

/// A node of the cluster.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct NodeInfo {
    /// Its id, unique while it is registered; a node that restarts gets a new one.
    pub id: i32,
    /// Where the other nodes forward requests for its devices (`WAGATE_NODE_ADDRESS`); null when
    /// it gave none.
    pub address: Option<String>,
    /// The base of the links it hands out.
    pub public_url: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub heartbeat_at: Timestamp,
    /// It is handing its devices to the other nodes, as it stops.
    pub draining: bool,
    /// It runs: it holds its database lock and its heartbeat is fresh.
    pub alive: bool,
    /// The devices it runs (whose lease it holds).
    pub devices: u64,
}

impl From<NodeRecord> for NodeInfo {
    fn from(n: NodeRecord) -> Self {
        Self {
            id: n.id,
            address: n.address,
            public_url: n.public_url,
            started_at: n.started_at.into(),
            heartbeat_at: n.heartbeat_at.into(),
            draining: n.draining,
            alive: n.alive,
            devices: u64::try_from(n.devices).unwrap_or_default(),
        }
    }
}

impl Example for NodeInfo {
    fn example() -> Self {
        Self {
            id: 3,
            address: Some("http://10.0.0.5:3000".into()),
            public_url: "https://wa.example.com".into(),
            started_at: example_time().into(),
            heartbeat_at: example_time().into(),
            draining: false,
            alive: true,
            devices: 120,
        }
    }
}

/// The nodes on this gateway's database, and which of them answered.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ClusterInfo {
    /// The node that answered.
    pub node_id: i32,
    /// Every registered node, alive or not, by id.
    pub nodes: Vec<NodeInfo>,
}

impl Example for ClusterInfo {
    fn example() -> Self {
        Self {
            node_id: 3,
            nodes: vec![NodeInfo::example()],
        }
    }
}

envelope!(
    /// The cluster's nodes.
    ClusterResponse,
    ClusterInfo,
    "Cluster nodes"
);

/// The error answers of the cluster operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[OperationErrors {
    operation: "getCluster",
    answers: &[],
}];

/// The nodes of the cluster.
pub struct ClusterApi;

#[OpenApi(tag = "ApiTags::Cluster")]
impl ClusterApi {
    /// List the cluster's nodes
    ///
    /// Every node registered on this gateway's database, with its addresses, heartbeat and how
    /// many devices it runs, and the id of the node that answered. Takes the admin credential,
    /// or while the admin API is off the `default` tenant's (`WAGATE_BASIC_AUTH`).
    #[oai(path = "/cluster", method = "get", operation_id = "getCluster")]
    async fn get(
        &self,
        auth: ClusterAuth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<Json<ClusterResponse>, ApiError> {
        let nodes = state.manager.nodes().await?;
        tracing::debug!(operator = %auth.0, nodes = nodes.len(), "listed the cluster's nodes");
        Ok(ClusterResponse::success(
            "Cluster nodes",
            ClusterInfo {
                node_id: state.manager.node_id(),
                nodes: nodes.into_iter().map(NodeInfo::from).collect(),
            },
        ))
    }
}
