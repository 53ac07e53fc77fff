//! The PNGs behind `qr_link`: written by the engine under the tenant's device, read publicly by
//! unguessable id until they expire (that read and the purge are in `cross_tenant.rs`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{StoreError, TenantStore};
use crate::domain::DeviceId;

impl TenantStore<'_> {
    /// Stores the QR code `code` of the tenant's device `id`, served as an image until
    /// `expires_at`; returns the image's id. The image is rendered when it is first fetched.
    pub async fn put_qr_image(
        &self,
        id: &DeviceId,
        code: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Uuid, StoreError> {
        let tenant = self.tenant;
        let image = Uuid::new_v4();
        let inserted = self
            .store
            .execute(
                &format!("store a QR image of device `{id}` of tenant {tenant}"),
                "INSERT INTO qr_images (id, device_internal_id, code, expires_at)
                 SELECT $1, internal_id, $4, $5 FROM devices
                 WHERE tenant_id = $2 AND device_id = $3",
                &[&image, &tenant.0, &id.as_str(), &code, &expires_at],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::DeviceNotFound {
                tenant,
                device_id: id.clone(),
            });
        }
        Ok(image)
    }
}

/// A stored QR image, as [`Store::qr_image`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QrImage {
    /// Rendered already: the PNG.
    Png(Vec<u8>),
    /// Not rendered yet: the code it shows. Render it and keep the PNG with
    /// [`Store::keep_qr_png`].
    Code(String),
}
