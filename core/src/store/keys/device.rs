//! [`DeviceStore`]: the device's own state (identity, keys, account, counters) as one blob.

use async_trait::async_trait;
use whatsapp_rust::wacore::stats::StorageResourceReport;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::StoreError as WaStoreError;
use whatsapp_rust::wacore::store::traits::DeviceStore;

use super::{PgBackend, WaResult};

impl PgBackend {
    /// Writes the device blob; `only_if_absent` keeps an existing one.
    async fn write_device(&self, device: &Device, only_if_absent: bool) -> WaResult<()> {
        // JSON: the library's own serde derive defines the format, so fields it adds with
        // `#[serde(default)]` in later versions still load.
        let data =
            serde_json::to_vec(device).map_err(|e| WaStoreError::Serialization(Box::new(e)))?;
        let (doing, sql) = if only_if_absent {
            (
                "create the device record",
                "INSERT INTO wa_device (device_internal_id, data) VALUES ($1, $2)
                 ON CONFLICT (device_internal_id) DO NOTHING",
            )
        } else {
            (
                "save the device record",
                "INSERT INTO wa_device (device_internal_id, data) VALUES ($1, $2)
                 ON CONFLICT (device_internal_id)
                 DO UPDATE SET data = EXCLUDED.data, updated_at = now()",
            )
        };
        self.execute(doing, sql, &[&self.device, &data]).await?;
        Ok(())
    }
}

#[async_trait]
impl DeviceStore for PgBackend {
    async fn save(&self, device: &Device) -> WaResult<()> {
        self.write_device(device, false).await
    }

    async fn load(&self) -> WaResult<Option<Device>> {
        let Some(row) = self
            .query_opt(
                "load the device record",
                "SELECT data FROM wa_device WHERE device_internal_id = $1",
                &[&self.device],
            )
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_slice(row.get(0))
            .map(Some)
            .map_err(|e| self.corrupt("the device record", e))
    }

    async fn exists(&self) -> WaResult<bool> {
        let row = self
            .query_opt(
                "check for the device record",
                "SELECT 1 FROM wa_device WHERE device_internal_id = $1",
                &[&self.device],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn create(&self) -> WaResult<i32> {
        // Like the reference backend, materialise a fresh device so that `exists` holds
        // afterwards; an existing record is kept, never replaced by new keys.
        self.write_device(&Device::new(), true).await?;
        // The "generated id" is the device slot's own id: the backend is bound to it.
        i32::try_from(self.device).map_err(|_| {
            WaStoreError::InvalidConfig(format!(
                "device internal id {} does not fit the library's i32 device id",
                self.device
            ))
        })
    }

    async fn resource_report(&self) -> StorageResourceReport {
        // The data lives in PostgreSQL, not in this process.
        StorageResourceReport {
            memory_bytes: Some(0),
            ..StorageResourceReport::default()
        }
    }
}
