//! The PNGs behind `qr_link`: written by the engine under the tenant's device, read publicly by
//! unguessable id until they expire.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::domain::{DeviceId, TenantId};

impl Store {
    /// Stores a QR image of the tenant's device `id`, served until `expires_at`; returns the
    /// image's id.
    pub async fn put_qr_image(
        &self,
        tenant: TenantId,
        id: &DeviceId,
        png: Vec<u8>,
        expires_at: DateTime<Utc>,
    ) -> Result<Uuid, StoreError> {
        let image = Uuid::new_v4();
        let inserted = self
            .client()
            .await?
            .execute(
                "INSERT INTO qr_images (id, device_internal_id, png, expires_at)
                 SELECT $1, internal_id, $4, $5 FROM devices
                 WHERE tenant_id = $2 AND device_id = $3",
                &[&image, &tenant.0, &id.as_str(), &png, &expires_at],
            )
            .await
            .map_err(|e| {
                StoreError::db(
                    format!("store a QR image of device `{id}` of tenant {tenant}"),
                    e,
                )
            })?;
        if inserted == 0 {
            return Err(StoreError::DeviceNotFound {
                tenant,
                device_id: id.clone(),
            });
        }
        Ok(image)
    }

    /// The PNG with this id, unless it expired. Not tenant-scoped: the id is the secret.
    pub async fn qr_image(&self, image: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT png FROM qr_images WHERE id = $1 AND expires_at > now()",
                &[&image],
            )
            .await
            .map_err(|e| StoreError::db(format!("read QR image {image}"), e))?
            .map(|row| row.get(0)))
    }

    /// Deletes expired QR images; returns how many.
    pub async fn purge_expired_qr_images(&self) -> Result<u64, StoreError> {
        self.client()
            .await?
            .execute("DELETE FROM qr_images WHERE expires_at <= now()", &[])
            .await
            .map_err(|e| StoreError::db("delete expired QR images", e))
    }
}
