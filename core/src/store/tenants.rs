//! Tenants and the API credentials that authenticate as them: what one tenant's
//! [`TenantStore`] does with its own credentials. Creating, listing and deleting tenants and
//! authenticating are not scoped to a tenant the caller holds: they are in `cross_tenant.rs`.

use std::fmt;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{StoreError, TenantStore, is_missing_reference, secrets, violates};
use crate::domain::{Tenant, TenantId};

/// A freshly generated API credential. The secret is shown once: only its hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `wg_` and 16 letters or digits.
    pub username: String,
    /// 32 letters or digits.
    pub secret: String,
}

impl Credential {
    pub(super) fn generate() -> Self {
        Self {
            username: format!("wg_{}", secrets::random_alphanumeric(16)),
            secret: secrets::random_alphanumeric(32),
        }
    }
}

/// Keeps the secret out of logs.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A tenant as an operator sees it: when it was created and how much it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSummary {
    /// The tenant.
    pub tenant: Tenant,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its device slots.
    pub devices: i64,
    /// Its API credentials.
    pub credentials: i64,
}

/// The query [`summary`] reads, without its `WHERE` and `ORDER BY`.
pub(super) const SUMMARY: &str = "SELECT t.id, t.name, t.created_at,
        (SELECT count(*) FROM devices d WHERE d.tenant_id = t.id),
        (SELECT count(*) FROM credentials c WHERE c.tenant_id = t.id)
     FROM tenants t";

pub(super) fn summary(row: &Row) -> TenantSummary {
    TenantSummary {
        tenant: Tenant {
            id: TenantId(row.get(0)),
            name: row.get(1),
        },
        created_at: row.get(2),
        devices: row.get(3),
        credentials: row.get(4),
    }
}

/// `secret`'s hash, computed on a blocking thread.
pub(super) async fn hash(secret: &str) -> Result<String, StoreError> {
    let secret = secret.to_string();
    tokio::task::spawn_blocking(move || secrets::hash(&secret))
        .await
        .map_err(StoreError::Hashing)
}

/// Whether `secret` matches `stored`, checked on a blocking thread.
pub(super) async fn verify(secret: &str, stored: Option<String>) -> Result<bool, StoreError> {
    let secret = secret.to_string();
    tokio::task::spawn_blocking(move || secrets::verify(&secret, stored.as_deref()))
        .await
        .map_err(StoreError::Hashing)
}

impl TenantStore<'_> {
    /// The tenant with its counts, if it exists.
    pub async fn summary(&self) -> Result<Option<TenantSummary>, StoreError> {
        let tenant = self.tenant;
        Ok(self
            .store
            .query_opt(
                &format!("look up tenant {tenant}"),
                &format!("{SUMMARY} WHERE t.id = $1"),
                &[&tenant.0],
            )
            .await?
            .as_ref()
            .map(summary))
    }

    /// Gives the tenant one more fresh credential, returned in clear this one time; its other
    /// credentials keep working. [`StoreError::TenantNotFound`] when there is no such tenant.
    pub async fn add_credential(&self) -> Result<Credential, StoreError> {
        let tenant = self.tenant;
        let credential = Credential::generate();
        let secret_hash = hash(&credential.secret).await?;
        self.store
            .execute(
                &format!("add a credential to tenant {tenant}"),
                "INSERT INTO credentials (username, tenant_id, secret_hash) VALUES ($1, $2, $3)",
                &[&credential.username, &tenant.0, &secret_hash],
            )
            .await
            .map_err(|e| {
                e.refine(|e| {
                    if is_missing_reference(e) {
                        Some(StoreError::TenantNotFound(tenant))
                    } else {
                        violates(e, "credentials_username_unique")
                            .then(|| StoreError::UsernameTaken(credential.username.clone()))
                    }
                })
            })?;
        Ok(credential)
    }

    /// Revokes the tenant's credential `username`: the next request that presents it is
    /// refused, in this process at once (it is dropped from the recently verified ones).
    /// [`StoreError::CredentialNotFound`] when the tenant has no such credential,
    /// [`StoreError::TenantNotFound`] when there is no such tenant.
    pub async fn revoke_credential(&self, username: &str) -> Result<(), StoreError> {
        let tenant = self.tenant;
        let deleted = self
            .store
            .execute(
                &format!("revoke credential `{username}` of tenant {tenant}"),
                "DELETE FROM credentials WHERE tenant_id = $1 AND username = $2",
                &[&tenant.0, &username],
            )
            .await?;
        self.store.verified.forget(username);
        if deleted > 0 {
            return Ok(());
        }
        match self.summary().await? {
            Some(_) => Err(StoreError::CredentialNotFound {
                tenant,
                username: username.to_string(),
            }),
            None => Err(StoreError::TenantNotFound(tenant)),
        }
    }

    /// Revokes every credential of the tenant and returns how many there were; its requests
    /// are refused from now on, in this process at once.
    pub async fn revoke_credentials(&self) -> Result<u64, StoreError> {
        let tenant = self.tenant;
        let deleted = self
            .store
            .execute(
                &format!("revoke the credentials of tenant {tenant}"),
                "DELETE FROM credentials WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await?;
        self.store.verified.forget_tenant(tenant);
        Ok(deleted)
    }
}
