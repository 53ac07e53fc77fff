//! Device slots, always addressed as (tenant, device id) through [`TenantStore`].

use tokio_postgres::Row;

use super::{StoreError, TenantStore, is_missing_reference, violates};
use crate::domain::{Device, DeviceId, DeviceState, TenantId};

/// The columns [`device`] reads, in order.
const COLUMNS: &str = "device_id, display_name, state, jid, created_at";

/// A device id as stored, checked again: one that does not parse was written by hand.
pub(super) fn stored_id(tenant: TenantId, raw: &str) -> Result<DeviceId, StoreError> {
    DeviceId::parse_stored(raw).map_err(|e| {
        StoreError::Corrupt(format!(
            "a device of tenant {tenant} has an invalid id: {e}"
        ))
    })
}

/// A device state as stored.
pub(super) fn stored_state(
    tenant: TenantId,
    id: &DeviceId,
    raw: &str,
) -> Result<DeviceState, StoreError> {
    DeviceState::parse(raw).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "device `{id}` of tenant {tenant} has an unknown state `{raw}`"
        ))
    })
}

fn device(tenant: TenantId, row: &Row) -> Result<Device, StoreError> {
    let id = stored_id(tenant, row.get(0))?;
    let state = stored_state(tenant, &id, row.get(2))?;
    Ok(Device {
        tenant,
        id,
        display_name: row.get(1),
        state,
        jid: row.get(3),
        created_at: row.get(4),
    })
}

/// What a [`DeviceChange`] does to the device's link to a WhatsApp account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Link<'a> {
    /// The link stays as it is: a device that drops its socket stays linked.
    #[default]
    Keep,
    /// The device is linked to this JID (a login, or a reconnect that reports it).
    Set(&'a str),
    /// The link ended (logout, unlink): the JID is cleared and every key row of the device is
    /// deleted, so the next login starts from a fresh identity.
    End,
}

/// What one step of the engine changes on a device row; recorded with the events it causes by
/// [`TenantStore::record_events`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceChange<'a> {
    /// The new login state, if it changes.
    pub state: Option<DeviceState>,
    /// What happens to the link.
    pub link: Link<'a>,
    /// Apply only while the device is in this state; otherwise nothing is recorded and the
    /// device counts as not found (someone else moved it meanwhile).
    pub only_from: Option<DeviceState>,
    /// Apply only while the device is this lease's row under its epoch (the session's own);
    /// otherwise nothing is recorded and the answer is [`StoreError::LeaseLost`] (another node
    /// owns the device now) or, when the row is gone, [`StoreError::DeviceNotFound`].
    ///
    /// [`StoreError::LeaseLost`]: super::StoreError::LeaseLost
    /// [`StoreError::DeviceNotFound`]: super::StoreError::DeviceNotFound
    pub fence: Option<super::Lease>,
}

impl TenantStore<'_> {
    /// Creates a device slot, disconnected and unlinked.
    pub async fn create_device(
        &self,
        id: &DeviceId,
        display_name: Option<&str>,
    ) -> Result<Device, StoreError> {
        let tenant = self.tenant;
        let row = self
            .store
            .query_one(
                &format!("create device `{id}` in tenant {tenant}"),
                &format!(
                    "INSERT INTO devices (tenant_id, device_id, display_name) VALUES ($1, $2, $3)
                     RETURNING {COLUMNS}"
                ),
                &[&tenant.0, &id.as_str(), &display_name],
            )
            .await
            .map_err(|e| {
                e.refine(|e| {
                    if violates(e, "devices_tenant_device_unique") {
                        Some(StoreError::DeviceExists {
                            tenant,
                            device_id: id.clone(),
                        })
                    } else {
                        is_missing_reference(e).then_some(StoreError::TenantNotFound(tenant))
                    }
                })
            })?;
        device(tenant, &row)
    }

    /// The tenant's devices, oldest first.
    pub async fn list_devices(&self) -> Result<Vec<Device>, StoreError> {
        let tenant = self.tenant;
        self.store
            .query(
                &format!("list the devices of tenant {tenant}"),
                &format!(
                    "SELECT {COLUMNS} FROM devices WHERE tenant_id = $1
                     ORDER BY created_at, device_id"
                ),
                &[&tenant.0],
            )
            .await?
            .iter()
            .map(|row| device(tenant, row))
            .collect()
    }

    /// The tenant's device `id`, if it has one.
    ///
    /// Served from the rows kept in memory when [`Store::keep_device_rows`] runs.
    ///
    /// [`Store::keep_device_rows`]: super::Store::keep_device_rows
    pub async fn find_device(&self, id: &DeviceId) -> Result<Option<Device>, StoreError> {
        let tenant = self.tenant;
        let cache = &self.store.devices;
        if let Some(kept) = cache.get(tenant, id) {
            return Ok(Some(kept));
        }
        let begun = cache.begin_read();
        let found = self
            .store
            .query_opt(
                &format!("look up device `{id}` of tenant {tenant}"),
                &format!("SELECT {COLUMNS} FROM devices WHERE tenant_id = $1 AND device_id = $2"),
                &[&tenant.0, &id.as_str()],
            )
            .await?
            .map(|row| device(tenant, &row))
            .transpose()?;
        if let Some(found) = &found {
            cache.keep(begun, found);
        }
        Ok(found)
    }

    /// Deletes the tenant's device `id` and everything hanging off it; false if there was none.
    pub async fn delete_device(&self, id: &DeviceId) -> Result<bool, StoreError> {
        let tenant = self.tenant;
        let _forget = self.store.devices.forget_after(tenant, id);
        let deleted = self
            .store
            .execute(
                &format!("delete device `{id}` of tenant {tenant}"),
                "DELETE FROM devices WHERE tenant_id = $1 AND device_id = $2",
                &[&tenant.0, &id.as_str()],
            )
            .await?;
        Ok(deleted > 0)
    }

    /// The row id other tables use to refer to the tenant's device `id`.
    pub async fn device_internal_id(&self, id: &DeviceId) -> Result<Option<i64>, StoreError> {
        let tenant = self.tenant;
        Ok(self
            .store
            .query_opt(
                &format!("look up device `{id}` of tenant {tenant}"),
                "SELECT internal_id FROM devices WHERE tenant_id = $1 AND device_id = $2",
                &[&tenant.0, &id.as_str()],
            )
            .await?
            .map(|row| row.get(0)))
    }
}
