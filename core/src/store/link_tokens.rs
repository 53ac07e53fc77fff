//! Link tokens: the credential of a link page, which lets whoever holds the link log one device
//! in and nothing else. The tenant's side (create, revoke) is here on [`TenantStore`]; the
//! lookup by token, which comes before any tenant is known, is in `cross_tenant.rs`.
//!
//! Only a token's SHA-256 is stored: a copy of the database links no device.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{StoreError, TenantStore, Tx};
use crate::domain::{DeviceId, DeviceState, TenantId};

/// Random bytes in a token: 256 bits, so tokens cannot be guessed or enumerated.
const TOKEN_BYTES: usize = 32;

/// The length of a token as handed out: [`TOKEN_BYTES`] in base64url without padding.
const LINK_TOKEN_LEN: usize = 43;

/// A link token as looked up by [`Store::link_token`](super::Store::link_token): the one
/// device it reaches and whether it still may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkToken {
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
    /// The device's state now.
    pub state: DeviceState,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// When the device it links logged in, if it did.
    pub used_at: Option<DateTime<Utc>>,
    /// When the operator revoked it, if they did.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Whether `token` has the shape of a token this store hands out; anything else cannot be one,
/// and needs no lookup.
pub(super) fn is_link_token(token: &str) -> bool {
    token.len() == LINK_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What is stored for `token`.
pub(super) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Marks every token of the device with row id `device` that is not used yet as used, inside
/// the caller's transaction: the one that records the device's login, so a link works until its
/// device logs in and never again, even after a later logout.
pub(super) async fn use_up(tx: &Tx<'_>, device: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE link_tokens SET used_at = now()
         WHERE device_internal_id = $1 AND used_at IS NULL",
        &[&device],
    )
    .await?;
    Ok(())
}

impl TenantStore<'_> {
    /// A new link token for the tenant's device `id`, working until `expires_at`; returned in
    /// clear this one time (only its hash is kept). [`StoreError::DeviceNotFound`] when the
    /// tenant has no such device.
    pub async fn create_link_token(
        &self,
        id: &DeviceId,
        expires_at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let tenant = self.tenant;
        let bytes: [u8; TOKEN_BYTES] = rand::random();
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let inserted = self
            .store
            .execute(
                &format!("create a link token for device `{id}` of tenant {tenant}"),
                "INSERT INTO link_tokens (device_internal_id, tenant_id, token_hash, expires_at)
                 SELECT internal_id, tenant_id, $3, $4 FROM devices
                 WHERE tenant_id = $1 AND device_id = $2",
                &[&tenant.0, &id.as_str(), &token_hash(&token), &expires_at],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::DeviceNotFound {
                tenant,
                device_id: id.clone(),
            });
        }
        Ok(token)
    }

    /// Revokes every token of the tenant's device `id` that still opens something (not revoked
    /// and not expired, used or not: a used one still follows the device's events); returns how
    /// many. [`StoreError::DeviceNotFound`] when the tenant has no such device.
    pub async fn revoke_link_tokens(&self, id: &DeviceId) -> Result<u64, StoreError> {
        let tenant = self.tenant;
        let row = self
            .store
            .query_one(
                &format!("revoke the link tokens of device `{id}` of tenant {tenant}"),
                "WITH device AS (
                     SELECT internal_id FROM devices WHERE tenant_id = $1 AND device_id = $2
                 ), revoked AS (
                     UPDATE link_tokens t SET revoked_at = now()
                     FROM device d
                     WHERE t.device_internal_id = d.internal_id AND t.tenant_id = $1
                       AND t.revoked_at IS NULL AND t.expires_at > now()
                     RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM device), (SELECT count(*) FROM revoked)",
                &[&tenant.0, &id.as_str()],
            )
            .await?;
        if row.get::<_, i64>(0) == 0 {
            return Err(StoreError::DeviceNotFound {
                tenant,
                device_id: id.clone(),
            });
        }
        Ok(row.get::<_, i64>(1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_43_characters_of_base64url() {
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; TOKEN_BYTES]>());
        assert_eq!(token.len(), LINK_TOKEN_LEN);
        assert!(is_link_token(&token), "{token}");
    }

    #[test]
    fn other_shapes_are_not_tokens() {
        let padded = format!("{}=", "a".repeat(LINK_TOKEN_LEN - 1));
        for other in ["", "short", &"a".repeat(44), &padded, &"+".repeat(43)] {
            assert!(!is_link_token(other), "{other}");
        }
    }
}
