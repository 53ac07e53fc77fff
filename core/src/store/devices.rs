//! Device slots, always addressed as (tenant, device id).

use tokio_postgres::Row;

use super::{Store, StoreError, is_missing_reference, violates};
use crate::domain::{Device, DeviceId, DeviceState, TenantId};

/// The columns [`device`] reads, in order.
const COLUMNS: &str = "device_id, display_name, state, jid, created_at";

fn stored_id(tenant: TenantId, raw: &str) -> Result<DeviceId, StoreError> {
    DeviceId::parse_stored(raw).map_err(|e| {
        StoreError::Corrupt(format!(
            "a device of tenant {tenant} has an invalid id: {e}"
        ))
    })
}

fn device(tenant: TenantId, row: &Row) -> Result<Device, StoreError> {
    let id = stored_id(tenant, row.get(0))?;
    let raw_state: &str = row.get(2);
    let state = DeviceState::parse(raw_state).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "device `{id}` of tenant {tenant} has an unknown state `{raw_state}`"
        ))
    })?;
    Ok(Device {
        tenant,
        id,
        display_name: row.get(1),
        state,
        jid: row.get(3),
        created_at: row.get(4),
    })
}

/// What one step of the engine changes on a device row; recorded with the events it causes by
/// [`Store::record_events`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceChange<'a> {
    /// The new login state, if it changes.
    pub state: Option<DeviceState>,
    /// The new JID, if it changes; `Some(None)` clears it (the link ended).
    pub jid: Option<Option<&'a str>>,
    /// Apply only while the device is in this state; otherwise nothing is recorded and the
    /// device counts as not found (someone else moved it meanwhile).
    pub only_from: Option<DeviceState>,
}

impl Store {
    /// Creates a device slot, disconnected and unlinked.
    pub async fn create_device(
        &self,
        tenant: TenantId,
        id: &DeviceId,
        display_name: Option<&str>,
    ) -> Result<Device, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                &format!(
                    "INSERT INTO devices (tenant_id, device_id, display_name) VALUES ($1, $2, $3)
                     RETURNING {COLUMNS}"
                ),
                &[&tenant.0, &id.as_str(), &display_name],
            )
            .await
            .map_err(|e| {
                if violates(&e, "devices_tenant_device_unique") {
                    StoreError::DeviceExists {
                        tenant,
                        device_id: id.clone(),
                    }
                } else if is_missing_reference(&e) {
                    StoreError::TenantNotFound(tenant)
                } else {
                    StoreError::db(format!("create device `{id}` in tenant {tenant}"), e)
                }
            })?;
        device(tenant, &row)
    }

    /// The tenant's devices, oldest first.
    pub async fn list_devices(&self, tenant: TenantId) -> Result<Vec<Device>, StoreError> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM devices WHERE tenant_id = $1
                     ORDER BY created_at, device_id"
                ),
                &[&tenant.0],
            )
            .await
            .map_err(|e| StoreError::db(format!("list the devices of tenant {tenant}"), e))?
            .iter()
            .map(|row| device(tenant, row))
            .collect()
    }

    /// The tenant's device `id`, if it has one.
    pub async fn find_device(
        &self,
        tenant: TenantId,
        id: &DeviceId,
    ) -> Result<Option<Device>, StoreError> {
        self.client()
            .await?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM devices WHERE tenant_id = $1 AND device_id = $2"),
                &[&tenant.0, &id.as_str()],
            )
            .await
            .map_err(|e| StoreError::db(format!("look up device `{id}` of tenant {tenant}"), e))?
            .map(|row| device(tenant, &row))
            .transpose()
    }

    /// Deletes the tenant's device `id` and everything hanging off it; false if there was none.
    pub async fn delete_device(&self, tenant: TenantId, id: &DeviceId) -> Result<bool, StoreError> {
        let deleted = self
            .client()
            .await?
            .execute(
                "DELETE FROM devices WHERE tenant_id = $1 AND device_id = $2",
                &[&tenant.0, &id.as_str()],
            )
            .await
            .map_err(|e| StoreError::db(format!("delete device `{id}` of tenant {tenant}"), e))?;
        Ok(deleted > 0)
    }

    /// Records the device's login state; false if the tenant has no such device.
    ///
    /// The stored JID is left alone: a device that drops its socket stays linked. Clear it
    /// with [`Store::set_device_jid`] when the link itself ends (logout, unlink).
    pub async fn set_device_state(
        &self,
        tenant: TenantId,
        id: &DeviceId,
        state: DeviceState,
    ) -> Result<bool, StoreError> {
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE devices SET state = $3, updated_at = now()
                 WHERE tenant_id = $1 AND device_id = $2",
                &[&tenant.0, &id.as_str(), &state.as_str()],
            )
            .await
            .map_err(|e| {
                StoreError::db(
                    format!("set device `{id}` of tenant {tenant} to {state}"),
                    e,
                )
            })?;
        Ok(updated > 0)
    }

    /// Records the WhatsApp account the device is linked to, or with `None` that it is linked
    /// to none; false if the tenant has no such device.
    pub async fn set_device_jid(
        &self,
        tenant: TenantId,
        id: &DeviceId,
        jid: Option<&str>,
    ) -> Result<bool, StoreError> {
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE devices SET jid = $3, updated_at = now()
                 WHERE tenant_id = $1 AND device_id = $2",
                &[&tenant.0, &id.as_str(), &jid],
            )
            .await
            .map_err(|e| {
                StoreError::db(
                    format!("set the jid of device `{id}` of tenant {tenant}"),
                    e,
                )
            })?;
        Ok(updated > 0)
    }

    /// Every device in `state`, across tenants: at start-up, the logged-in devices to restore.
    pub async fn devices_in_state(
        &self,
        state: DeviceState,
    ) -> Result<Vec<(TenantId, DeviceId)>, StoreError> {
        self.client()
            .await?
            .query(
                "SELECT tenant_id, device_id FROM devices WHERE state = $1
                 ORDER BY tenant_id, device_id",
                &[&state.as_str()],
            )
            .await
            .map_err(|e| StoreError::db(format!("list the devices in state {state}"), e))?
            .iter()
            .map(|row| {
                let tenant = TenantId(row.get(0));
                Ok((tenant, stored_id(tenant, row.get(1))?))
            })
            .collect()
    }

    /// Every device linked to a WhatsApp account (it has a JID), across tenants: the devices a
    /// starting gateway reconnects. Logout and unlink clear the JID.
    pub async fn linked_devices(&self) -> Result<Vec<(TenantId, DeviceId)>, StoreError> {
        self.client()
            .await?
            .query(
                "SELECT tenant_id, device_id FROM devices WHERE jid IS NOT NULL
                 ORDER BY tenant_id, device_id",
                &[],
            )
            .await
            .map_err(|e| StoreError::db("list the linked devices".to_string(), e))?
            .iter()
            .map(|row| {
                let tenant = TenantId(row.get(0));
                Ok((tenant, stored_id(tenant, row.get(1))?))
            })
            .collect()
    }

    /// Every unlinked device that is not `disconnected`, with its state: at start-up these are
    /// logins a process died in the middle of. A cross-tenant read, for start-up only.
    pub async fn interrupted_logins(
        &self,
    ) -> Result<Vec<(TenantId, DeviceId, DeviceState)>, StoreError> {
        let doing = || "list the logins a stopped process left pending".to_string();
        self.client()
            .await?
            .query(
                "SELECT tenant_id, device_id, state FROM devices
                 WHERE jid IS NULL AND state <> 'disconnected'
                 ORDER BY tenant_id, device_id",
                &[],
            )
            .await
            .map_err(|e| StoreError::db(doing(), e))?
            .iter()
            .map(|row| {
                let tenant = TenantId(row.get(0));
                let state: String = row.get(2);
                let state = DeviceState::parse(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "a device of tenant {tenant} has an unknown state `{state}`"
                    ))
                })?;
                Ok((tenant, stored_id(tenant, row.get(1))?, state))
            })
            .collect()
    }

    /// The row id other tables use to refer to the tenant's device `id`.
    pub async fn device_internal_id(
        &self,
        tenant: TenantId,
        id: &DeviceId,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT internal_id FROM devices WHERE tenant_id = $1 AND device_id = $2",
                &[&tenant.0, &id.as_str()],
            )
            .await
            .map_err(|e| StoreError::db(format!("look up device `{id}` of tenant {tenant}"), e))?
            .map(|row| row.get(0)))
    }
}
