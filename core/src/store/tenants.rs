//! Tenants and the API credentials that authenticate as them.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Store, StoreError, is_missing_reference, secrets, violates};
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
    fn generate() -> Self {
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
const SUMMARY: &str = "SELECT t.id, t.name, t.created_at,
        (SELECT count(*) FROM devices d WHERE d.tenant_id = t.id),
        (SELECT count(*) FROM credentials c WHERE c.tenant_id = t.id)
     FROM tenants t";

fn summary(row: &Row) -> TenantSummary {
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

async fn hash(secret: &str) -> Result<String, StoreError> {
    let secret = secret.to_string();
    tokio::task::spawn_blocking(move || secrets::hash(&secret))
        .await
        .map_err(StoreError::Hashing)
}

async fn verify(secret: &str, stored: Option<String>) -> Result<bool, StoreError> {
    let secret = secret.to_string();
    tokio::task::spawn_blocking(move || secrets::verify(&secret, stored.as_deref()))
        .await
        .map_err(StoreError::Hashing)
}

impl Store {
    /// Creates tenant `name` with one fresh credential, returned in clear this one time.
    pub async fn create_tenant(&self, name: &str) -> Result<(Tenant, Credential), StoreError> {
        let credential = Credential::generate();
        let secret_hash = hash(&credential.secret).await?;
        let id = Uuid::new_v4();
        self.client()
            .await?
            .execute(
                "WITH tenant AS (INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id)
                 INSERT INTO credentials (username, tenant_id, secret_hash)
                 SELECT $3, id, $4 FROM tenant",
                &[&id, &name, &credential.username, &secret_hash],
            )
            .await
            .map_err(|e| {
                if violates(&e, "tenants_name_unique") {
                    StoreError::TenantExists(name.to_string())
                } else if violates(&e, "credentials_username_unique") {
                    StoreError::UsernameTaken(credential.username.clone())
                } else {
                    StoreError::db(format!("create tenant `{name}`"), e)
                }
            })?;
        let tenant = Tenant {
            id: TenantId(id),
            name: name.to_string(),
        };
        Ok((tenant, credential))
    }

    /// Every tenant with its counts, oldest first.
    pub async fn list_tenants(&self) -> Result<Vec<TenantSummary>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(&format!("{SUMMARY} ORDER BY t.created_at, t.name"), &[])
            .await
            .map_err(|e| StoreError::db("list the tenants", e))?
            .iter()
            .map(summary)
            .collect())
    }

    /// Tenant `tenant` with its counts, if it exists.
    pub async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantSummary>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(&format!("{SUMMARY} WHERE t.id = $1"), &[&tenant.0])
            .await
            .map_err(|e| StoreError::db(format!("look up tenant {tenant}"), e))?
            .as_ref()
            .map(summary))
    }

    /// Gives `tenant` one more fresh credential, returned in clear this one time; its other
    /// credentials keep working. [`StoreError::TenantNotFound`] when there is no such tenant.
    pub async fn add_credential(&self, tenant: TenantId) -> Result<Credential, StoreError> {
        let credential = Credential::generate();
        let secret_hash = hash(&credential.secret).await?;
        self.client()
            .await?
            .execute(
                "INSERT INTO credentials (username, tenant_id, secret_hash) VALUES ($1, $2, $3)",
                &[&credential.username, &tenant.0, &secret_hash],
            )
            .await
            .map_err(|e| {
                if is_missing_reference(&e) {
                    StoreError::TenantNotFound(tenant)
                } else if violates(&e, "credentials_username_unique") {
                    StoreError::UsernameTaken(credential.username.clone())
                } else {
                    StoreError::db(format!("add a credential to tenant {tenant}"), e)
                }
            })?;
        Ok(credential)
    }

    /// Revokes `tenant`'s credential `username`: the next request that presents it is refused,
    /// in this process at once (it is dropped from the recently verified ones).
    /// [`StoreError::CredentialNotFound`] when the tenant has no such credential,
    /// [`StoreError::TenantNotFound`] when there is no such tenant.
    pub async fn revoke_credential(
        &self,
        tenant: TenantId,
        username: &str,
    ) -> Result<(), StoreError> {
        let deleted = self
            .client()
            .await?
            .execute(
                "DELETE FROM credentials WHERE tenant_id = $1 AND username = $2",
                &[&tenant.0, &username],
            )
            .await
            .map_err(|e| {
                StoreError::db(
                    format!("revoke credential `{username}` of tenant {tenant}"),
                    e,
                )
            })?;
        self.verified.forget(username);
        if deleted > 0 {
            return Ok(());
        }
        match self.tenant(tenant).await? {
            Some(_) => Err(StoreError::CredentialNotFound {
                tenant,
                username: username.to_string(),
            }),
            None => Err(StoreError::TenantNotFound(tenant)),
        }
    }

    /// Revokes every credential of `tenant` and returns how many there were; its requests are
    /// refused from now on, in this process at once.
    pub async fn revoke_credentials(&self, tenant: TenantId) -> Result<u64, StoreError> {
        let deleted = self
            .client()
            .await?
            .execute("DELETE FROM credentials WHERE tenant_id = $1", &[&tenant.0])
            .await
            .map_err(|e| StoreError::db(format!("revoke the credentials of tenant {tenant}"), e))?;
        self.verified.forget_tenant(tenant);
        Ok(deleted)
    }

    /// Deletes `tenant` and every row it owns: credentials, devices with their keys and QR
    /// images, webhook endpoints, events and deliveries (the foreign keys cascade).
    /// [`StoreError::TenantNotFound`] when there is no such tenant.
    ///
    /// This stops no session: delete a tenant with live devices through
    /// `DeviceManager::delete_tenant`, which logs them out first.
    pub async fn delete_tenant(&self, tenant: TenantId) -> Result<(), StoreError> {
        let deleted = self
            .client()
            .await?
            .execute("DELETE FROM tenants WHERE id = $1", &[&tenant.0])
            .await
            .map_err(|e| StoreError::db(format!("delete tenant {tenant}"), e))?;
        self.verified.forget_tenant(tenant);
        if deleted == 0 {
            return Err(StoreError::TenantNotFound(tenant));
        }
        Ok(())
    }

    /// Makes tenant `name` exist with exactly these `(username, password)` pairs as its
    /// credentials: missing ones are added, changed passwords updated, unlisted ones removed.
    ///
    /// Meant for bootstrapping from configuration (`WAGATE_BASIC_AUTH`); running it again with
    /// the same pairs changes nothing. A username of another tenant is
    /// [`StoreError::UsernameTaken`], and then nothing changes.
    pub async fn ensure_tenant_with_credentials(
        &self,
        name: &str,
        pairs: &[(String, String)],
    ) -> Result<Tenant, StoreError> {
        let doing = || format!("set up the credentials of tenant `{name}`");
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        tx.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&Uuid::new_v4(), &name],
        )
        .await
        .map_err(|e| StoreError::db(doing(), e))?;
        let tenant = Tenant {
            id: TenantId(
                tx.query_one("SELECT id FROM tenants WHERE name = $1", &[&name])
                    .await
                    .map_err(|e| StoreError::db(doing(), e))?
                    .get(0),
            ),
            name: name.to_string(),
        };

        let usernames: Vec<&str> = pairs.iter().map(|(u, _)| u.as_str()).collect();
        let stored: HashMap<String, (Uuid, String)> = tx
            .query(
                "SELECT username, tenant_id, secret_hash FROM credentials
                 WHERE username = ANY($1) FOR UPDATE",
                &[&usernames],
            )
            .await
            .map_err(|e| StoreError::db(doing(), e))?
            .into_iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
        let mut changed = Vec::new();
        for (username, password) in pairs {
            let current = match stored.get(username) {
                Some((owner, _)) if *owner != tenant.id.0 => {
                    return Err(StoreError::UsernameTaken(username.clone()));
                }
                Some((_, hash)) => Some(hash.clone()),
                None => None,
            };
            if current.is_some() && verify(password, current).await? {
                continue;
            }
            // The WHERE keeps a username another tenant claimed meanwhile from being taken over.
            let written = tx
                .execute(
                    "INSERT INTO credentials (username, tenant_id, secret_hash) VALUES ($1, $2, $3)
                     ON CONFLICT (username) DO UPDATE SET secret_hash = EXCLUDED.secret_hash
                     WHERE credentials.tenant_id = EXCLUDED.tenant_id",
                    &[username, &tenant.id.0, &hash(password).await?],
                )
                .await
                .map_err(|e| StoreError::db(doing(), e))?;
            if written == 0 {
                return Err(StoreError::UsernameTaken(username.clone()));
            }
            changed.push(username.clone());
        }
        let removed = tx
            .query(
                "DELETE FROM credentials WHERE tenant_id = $1 AND NOT (username = ANY($2))
                 RETURNING username",
                &[&tenant.id.0, &usernames],
            )
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        tx.commit().await.map_err(|e| StoreError::db(doing(), e))?;

        let removed = removed.iter().map(|row| row.get::<_, String>(0));
        for username in changed.into_iter().chain(removed) {
            self.verified.forget(&username);
        }
        Ok(tenant)
    }

    /// The tenant of a credential that verified within the last minute, answered from memory
    /// without hashing; `None` when it did not (it may still be right: see `authenticate`).
    pub fn recently_verified(&self, username: &str, password: &str) -> Option<Tenant> {
        self.verified.get(username, password)
    }

    /// The tenant `username` belongs to, if `password` is its secret.
    ///
    /// Unknown usernames cost as much as wrong passwords. Recent successes are answered from
    /// memory for up to a minute.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Tenant>, StoreError> {
        if let Some(tenant) = self.verified.get(username, password) {
            return Ok(Some(tenant));
        }
        let epoch = self.verified.epoch();
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT c.secret_hash, t.id, t.name
                 FROM credentials c JOIN tenants t ON t.id = c.tenant_id
                 WHERE c.username = $1",
                &[&username],
            )
            .await
            .map_err(|e| StoreError::db(format!("look up user `{username}`"), e))?;
        let (stored, tenant): (Option<String>, Option<Tenant>) = row
            .map(|row| {
                let tenant = Tenant {
                    id: TenantId(row.get(1)),
                    name: row.get(2),
                };
                (row.get(0), tenant)
            })
            .unzip();
        let verified = verify(password, stored).await?;
        let tenant = tenant.filter(|_| verified);
        if let Some(tenant) = &tenant {
            self.verified.put(epoch, username, password, tenant.clone());
        }
        Ok(tenant)
    }
}
