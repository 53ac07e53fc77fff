//! [`AppSyncStore`]: app-state sync keys, collection versions, mutation MACs.

use std::collections::HashMap;

use async_trait::async_trait;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::traits::{AppStateSyncKey, AppSyncStore};

use super::{PgBackend, WaResult, last_wins};

#[async_trait]
impl AppSyncStore for PgBackend {
    async fn get_sync_key(&self, key_id: &[u8]) -> WaResult<Option<AppStateSyncKey>> {
        Ok(self
            .query_opt(
                "load an app-state sync key",
                "SELECT key_data, fingerprint, key_timestamp FROM wa_app_state_keys
                 WHERE device_internal_id = $1 AND key_id = $2",
                &[&self.device, &key_id],
            )
            .await?
            .map(|row| AppStateSyncKey {
                key_data: row.get(0),
                fingerprint: row.get(1),
                timestamp: row.get(2),
            }))
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> WaResult<()> {
        // `written` is renewed on every write: the latest key is the one written last, even
        // when it overwrites an existing id.
        self.execute(
            "store an app-state sync key",
            "INSERT INTO wa_app_state_keys
                 (device_internal_id, key_id, key_data, fingerprint, key_timestamp)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_internal_id, key_id) DO UPDATE SET
                 key_data = EXCLUDED.key_data,
                 fingerprint = EXCLUDED.fingerprint,
                 key_timestamp = EXCLUDED.key_timestamp,
                 written = nextval('wa_write_seq')",
            &[
                &self.device,
                &key_id,
                &key.key_data,
                &key.fingerprint,
                &key.timestamp,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_version(&self, name: &str) -> WaResult<HashState> {
        let Some(row) = self
            .query_opt(
                "load an app-state version",
                "SELECT state FROM wa_app_state_versions
                 WHERE device_internal_id = $1 AND collection = $2",
                &[&self.device, &name],
            )
            .await?
        else {
            // A collection never synced starts from the empty state, as in the reference.
            return Ok(HashState::default());
        };
        serde_json::from_slice(row.get(0)).map_err(|e| self.corrupt("an app-state version", e))
    }

    async fn set_version(&self, name: &str, state: HashState) -> WaResult<()> {
        let encoded = serde_json::to_vec(&state).map_err(|e| {
            whatsapp_rust::wacore::store::error::StoreError::Serialization(Box::new(e))
        })?;
        self.execute(
            "store an app-state version",
            "INSERT INTO wa_app_state_versions (device_internal_id, collection, state)
             VALUES ($1, $2, $3)
             ON CONFLICT (device_internal_id, collection) DO UPDATE SET state = EXCLUDED.state",
            &[&self.device, &name, &encoded],
        )
        .await?;
        Ok(())
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> WaResult<()> {
        let rows = last_wins(
            mutations
                .iter()
                .map(|m| (m.index_mac.as_slice(), m.value_mac.as_slice())),
        );
        if rows.is_empty() {
            return Ok(());
        }
        // Versions are far below i64::MAX; saturating keeps a corrupt one from failing the sync.
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        let (index_macs, value_macs): (Vec<&[u8]>, Vec<&[u8]>) = rows.into_iter().unzip();
        self.execute(
            "store app-state mutation MACs",
            "INSERT INTO wa_app_state_mutation_macs
                 (device_internal_id, collection, index_mac, value_mac, version)
             SELECT $1, $2, i, v, $5 FROM UNNEST($3::bytea[], $4::bytea[]) AS t (i, v)
             ON CONFLICT (device_internal_id, collection, index_mac)
             DO UPDATE SET value_mac = EXCLUDED.value_mac, version = EXCLUDED.version",
            &[&self.device, &name, &index_macs, &value_macs, &version],
        )
        .await?;
        Ok(())
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> WaResult<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "load an app-state mutation MAC",
                "SELECT value_mac FROM wa_app_state_mutation_macs
                 WHERE device_internal_id = $1 AND collection = $2 AND index_mac = $3",
                &[&self.device, &name, &index_mac],
            )
            .await?
            .map(|row| row.get(0)))
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> WaResult<HashMap<[u8; 32], Vec<u8>>> {
        if index_macs.is_empty() {
            return Ok(HashMap::new());
        }
        let wanted: Vec<&[u8]> = index_macs.iter().map(|m| m.as_slice()).collect();
        let rows = self
            .query(
                "load a batch of app-state mutation MACs",
                "SELECT index_mac, value_mac FROM wa_app_state_mutation_macs
                 WHERE device_internal_id = $1 AND collection = $2
                   AND index_mac = ANY($3::bytea[])",
                &[&self.device, &name, &wanted],
            )
            .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in &rows {
            // Only 32-byte index MACs were asked for, so every match has that length.
            let index_mac: Vec<u8> = row.get(0);
            let len = index_mac.len();
            let index_mac: [u8; 32] = index_mac.try_into().map_err(|_| {
                self.corrupt("an app-state index MAC", format!("{len} bytes, not 32"))
            })?;
            found.insert(index_mac, row.get(1));
        }
        Ok(found)
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> WaResult<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        let doomed: Vec<&[u8]> = index_macs.iter().map(Vec::as_slice).collect();
        self.execute(
            "delete app-state mutation MACs",
            "DELETE FROM wa_app_state_mutation_macs
             WHERE device_internal_id = $1 AND collection = $2 AND index_mac = ANY($3::bytea[])",
            &[&self.device, &name, &doomed],
        )
        .await?;
        Ok(())
    }

    async fn clear_mutation_macs(&self, name: &str) -> WaResult<()> {
        self.execute(
            "clear the app-state mutation MACs of a collection",
            "DELETE FROM wa_app_state_mutation_macs
             WHERE device_internal_id = $1 AND collection = $2",
            &[&self.device, &name],
        )
        .await?;
        Ok(())
    }

    async fn get_latest_sync_key_id(&self) -> WaResult<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "find the latest app-state sync key",
                "SELECT key_id FROM wa_app_state_keys WHERE device_internal_id = $1
                 ORDER BY written DESC LIMIT 1",
                &[&self.device],
            )
            .await?
            .map(|row| row.get(0)))
    }
}
