//! [`ProtocolStore`]: sender-key distribution status, LID ↔ phone-number mappings, retry base
//! keys, device lists, group metadata, trusted-contact tokens, sent messages, and the pending
//! inbound buffer.

use async_trait::async_trait;
use tokio_postgres::Row;
use whatsapp_rust::wacore::store::error::StoreError as WaStoreError;
use whatsapp_rust::wacore::store::traits::{
    DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow, ProtocolStore,
    TcTokenEntry,
};

use super::{PgBackend, WaResult, deleted_count, last_wins};

/// The columns [`lid_mapping`] reads, in order.
const LID_COLUMNS: &str = "lid, phone_number, created_at, updated_at, learning_source";

fn lid_mapping(row: &Row) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: row.get(0),
        phone_number: row.get(1),
        created_at: row.get(2),
        updated_at: row.get(3),
        learning_source: row.get(4),
    }
}

/// The current time in Unix seconds, for rows the library ages out by insertion time.
fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

impl PgBackend {
    /// Upserts LID mappings, one row per LID, in one statement.
    async fn put_lid_rows(&self, doing: &str, entries: &[&LidPnMappingEntry]) -> WaResult<()> {
        let rows = last_wins(entries.iter().map(|e| (e.lid.as_str(), *e)));
        if rows.is_empty() {
            return Ok(());
        }
        let lids: Vec<&str> = rows.iter().map(|(lid, _)| *lid).collect();
        let phones: Vec<&str> = rows.iter().map(|(_, e)| e.phone_number.as_str()).collect();
        let created: Vec<i64> = rows.iter().map(|(_, e)| e.created_at).collect();
        let updated: Vec<i64> = rows.iter().map(|(_, e)| e.updated_at).collect();
        let sources: Vec<&str> = rows
            .iter()
            .map(|(_, e)| e.learning_source.as_str())
            .collect();
        // The whole entry is replaced, as in the reference backend; `written` orders writes for
        // "the most recent LID of a phone number".
        self.execute(
            doing,
            "INSERT INTO wa_lid_mappings
                 (device_internal_id, lid, phone_number, created_at, updated_at, learning_source)
             SELECT $1, l, p, c, u, s
             FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[])
                 AS t (l, p, c, u, s)
             ON CONFLICT (device_internal_id, lid) DO UPDATE SET
                 phone_number = EXCLUDED.phone_number,
                 created_at = EXCLUDED.created_at,
                 updated_at = EXCLUDED.updated_at,
                 learning_source = EXCLUDED.learning_source,
                 written = nextval('wa_write_seq')",
            &[&self.device, &lids, &phones, &created, &updated, &sources],
        )
        .await?;
        Ok(())
    }

    /// Upserts device-list records, one row per user, in one statement.
    async fn put_device_list_rows(
        &self,
        doing: &str,
        records: &[DeviceListRecord],
    ) -> WaResult<()> {
        let mut encoded = Vec::with_capacity(records.len());
        for record in records {
            let bytes =
                serde_json::to_vec(record).map_err(|e| WaStoreError::Serialization(Box::new(e)))?;
            encoded.push((record.user.as_str(), bytes));
        }
        let rows = last_wins(encoded);
        if rows.is_empty() {
            return Ok(());
        }
        let users: Vec<&str> = rows.iter().map(|(user, _)| *user).collect();
        let blobs: Vec<&[u8]> = rows.iter().map(|(_, blob)| blob.as_slice()).collect();
        self.execute(
            doing,
            "INSERT INTO wa_device_lists (device_internal_id, user_id, record)
             SELECT $1, u, r FROM UNNEST($2::text[], $3::bytea[]) AS t (u, r)
             ON CONFLICT (device_internal_id, user_id) DO UPDATE SET record = EXCLUDED.record",
            &[&self.device, &users, &blobs],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl ProtocolStore for PgBackend {
    async fn get_sender_key_devices(&self, group_jid: &str) -> WaResult<Vec<(String, bool)>> {
        Ok(self
            .query(
                "load the sender-key status of a group",
                "SELECT device_jid, has_key FROM wa_sender_key_devices
                 WHERE device_internal_id = $1 AND group_jid = $2 ORDER BY device_jid",
                &[&self.device, &group_jid],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    async fn set_sender_key_status(
        &self,
        group_jid: &str,
        entries: &[(&str, bool)],
    ) -> WaResult<()> {
        let rows = last_wins(entries.iter().copied());
        if rows.is_empty() {
            return Ok(());
        }
        let (jids, has_key): (Vec<&str>, Vec<bool>) = rows.into_iter().unzip();
        self.execute(
            "set the sender-key status of group members",
            "INSERT INTO wa_sender_key_devices (device_internal_id, group_jid, device_jid, has_key)
             SELECT $1, $2, d, h FROM UNNEST($3::text[], $4::bool[]) AS t (d, h)
             ON CONFLICT (device_internal_id, group_jid, device_jid)
             DO UPDATE SET has_key = EXCLUDED.has_key",
            &[&self.device, &group_jid, &jids, &has_key],
        )
        .await?;
        Ok(())
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> WaResult<()> {
        self.execute(
            "clear the sender-key status of a group",
            "DELETE FROM wa_sender_key_devices WHERE device_internal_id = $1 AND group_jid = $2",
            &[&self.device, &group_jid],
        )
        .await?;
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> WaResult<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        self.execute(
            "delete the sender-key status of devices",
            "DELETE FROM wa_sender_key_devices
             WHERE device_internal_id = $1 AND device_jid = ANY($2::text[])",
            &[&self.device, &device_jids],
        )
        .await?;
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> WaResult<()> {
        self.execute(
            "clear the sender-key status of every group",
            "DELETE FROM wa_sender_key_devices WHERE device_internal_id = $1",
            &[&self.device],
        )
        .await?;
        Ok(())
    }

    async fn get_lid_mapping(&self, lid: &str) -> WaResult<Option<LidPnMappingEntry>> {
        Ok(self
            .query_opt(
                "load a LID mapping",
                &format!(
                    "SELECT {LID_COLUMNS} FROM wa_lid_mappings
                     WHERE device_internal_id = $1 AND lid = $2"
                ),
                &[&self.device, &lid],
            )
            .await?
            .as_ref()
            .map(lid_mapping))
    }

    async fn get_pn_mapping(&self, phone: &str) -> WaResult<Option<LidPnMappingEntry>> {
        // Several LIDs may name one phone number: the most recently updated wins, and among
        // equals the one written last, which is what the reference's reverse index yields.
        Ok(self
            .query_opt(
                "load the LID mapping of a phone number",
                &format!(
                    "SELECT {LID_COLUMNS} FROM wa_lid_mappings
                     WHERE device_internal_id = $1 AND phone_number = $2
                     ORDER BY updated_at DESC, written DESC LIMIT 1"
                ),
                &[&self.device, &phone],
            )
            .await?
            .as_ref()
            .map(lid_mapping))
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> WaResult<()> {
        self.put_lid_rows("store a LID mapping", &[entry]).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> WaResult<()> {
        let entries: Vec<&LidPnMappingEntry> = entries.iter().collect();
        self.put_lid_rows("store a batch of LID mappings", &entries)
            .await
    }

    async fn get_all_lid_mappings(&self) -> WaResult<Vec<LidPnMappingEntry>> {
        Ok(self
            .query(
                "load every LID mapping",
                &format!(
                    "SELECT {LID_COLUMNS} FROM wa_lid_mappings WHERE device_internal_id = $1
                     ORDER BY lid"
                ),
                &[&self.device],
            )
            .await?
            .iter()
            .map(lid_mapping)
            .collect())
    }

    async fn save_base_key(
        &self,
        address: &str,
        message_id: &str,
        base_key: &[u8],
    ) -> WaResult<()> {
        self.execute(
            "save a retry base key",
            "INSERT INTO wa_base_keys (device_internal_id, address, message_id, base_key)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (device_internal_id, address, message_id)
             DO UPDATE SET base_key = EXCLUDED.base_key",
            &[&self.device, &address, &message_id, &base_key],
        )
        .await?;
        Ok(())
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> WaResult<bool> {
        let row = self
            .query_opt(
                "compare a retry base key",
                "SELECT 1 FROM wa_base_keys
                 WHERE device_internal_id = $1 AND address = $2 AND message_id = $3
                   AND base_key = $4",
                &[&self.device, &address, &message_id, &current_base_key],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> WaResult<()> {
        self.execute(
            "delete a retry base key",
            "DELETE FROM wa_base_keys
             WHERE device_internal_id = $1 AND address = $2 AND message_id = $3",
            &[&self.device, &address, &message_id],
        )
        .await?;
        Ok(())
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> WaResult<()> {
        self.put_device_list_rows("store a device list", std::slice::from_ref(&record))
            .await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> WaResult<()> {
        self.put_device_list_rows("store a batch of device lists", &records)
            .await
    }

    async fn get_devices(&self, user: &str) -> WaResult<Option<DeviceListRecord>> {
        let Some(row) = self
            .query_opt(
                "load a device list",
                "SELECT record FROM wa_device_lists WHERE device_internal_id = $1 AND user_id = $2",
                &[&self.device, &user],
            )
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_slice(row.get(0))
            .map(Some)
            .map_err(|e| self.corrupt("a device list", e))
    }

    async fn delete_devices(&self, user: &str) -> WaResult<()> {
        self.execute(
            "delete a device list",
            "DELETE FROM wa_device_lists WHERE device_internal_id = $1 AND user_id = $2",
            &[&self.device, &user],
        )
        .await?;
        Ok(())
    }

    async fn get_group_metadata(&self, group_jid: &str) -> WaResult<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "load group metadata",
                "SELECT metadata FROM wa_group_metadata
                 WHERE device_internal_id = $1 AND group_jid = $2",
                &[&self.device, &group_jid],
            )
            .await?
            .map(|row| row.get(0)))
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> WaResult<()> {
        self.execute(
            "store group metadata",
            "INSERT INTO wa_group_metadata (device_internal_id, group_jid, metadata)
             VALUES ($1, $2, $3)
             ON CONFLICT (device_internal_id, group_jid) DO UPDATE SET metadata = EXCLUDED.metadata",
            &[&self.device, &group_jid, &blob],
        )
        .await?;
        Ok(())
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> WaResult<()> {
        self.execute(
            "delete group metadata",
            "DELETE FROM wa_group_metadata WHERE device_internal_id = $1 AND group_jid = $2",
            &[&self.device, &group_jid],
        )
        .await?;
        Ok(())
    }

    async fn get_tc_token(&self, jid: &str) -> WaResult<Option<TcTokenEntry>> {
        Ok(self
            .query_opt(
                "load a trusted-contact token",
                "SELECT token, token_timestamp, sender_timestamp FROM wa_tc_tokens
                 WHERE device_internal_id = $1 AND jid = $2",
                &[&self.device, &jid],
            )
            .await?
            .map(|row| TcTokenEntry {
                token: row.get(0),
                token_timestamp: row.get(1),
                sender_timestamp: row.get(2),
            }))
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> WaResult<()> {
        self.execute(
            "store a trusted-contact token",
            "INSERT INTO wa_tc_tokens
                 (device_internal_id, jid, token, token_timestamp, sender_timestamp)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_internal_id, jid) DO UPDATE SET
                 token = EXCLUDED.token,
                 token_timestamp = EXCLUDED.token_timestamp,
                 sender_timestamp = EXCLUDED.sender_timestamp",
            &[
                &self.device,
                &jid,
                &entry.token,
                &entry.token_timestamp,
                &entry.sender_timestamp,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_tc_token(&self, jid: &str) -> WaResult<()> {
        self.execute(
            "delete a trusted-contact token",
            "DELETE FROM wa_tc_tokens WHERE device_internal_id = $1 AND jid = $2",
            &[&self.device, &jid],
        )
        .await?;
        Ok(())
    }

    async fn get_all_tc_token_jids(&self) -> WaResult<Vec<String>> {
        Ok(self
            .query(
                "list the trusted-contact tokens",
                "SELECT jid FROM wa_tc_tokens WHERE device_internal_id = $1 ORDER BY jid",
                &[&self.device],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    async fn delete_expired_tc_tokens(
        &self,
        token_cutoff: i64,
        sender_cutoff: i64,
    ) -> WaResult<u32> {
        // A row stays while either its received token or its sender bucket is still live.
        let deleted = self
            .execute(
                "delete expired trusted-contact tokens",
                "DELETE FROM wa_tc_tokens
                 WHERE device_internal_id = $1
                   AND NOT (length(token) > 0 AND token_timestamp >= $2)
                   AND NOT COALESCE(sender_timestamp >= $3, false)",
                &[&self.device, &token_cutoff, &sender_cutoff],
            )
            .await?;
        Ok(deleted_count(deleted))
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> WaResult<()> {
        // One atomic upsert: a byte-less placeholder when absent, otherwise only the sender
        // bucket moves, and only forward (GREATEST ignores a NULL bucket).
        self.execute(
            "advance the sender timestamp of a trusted-contact token",
            "INSERT INTO wa_tc_tokens
                 (device_internal_id, jid, token, token_timestamp, sender_timestamp)
             VALUES ($1, $2, ''::bytea, $3, $3)
             ON CONFLICT (device_internal_id, jid) DO UPDATE SET
                 sender_timestamp = GREATEST(wa_tc_tokens.sender_timestamp, EXCLUDED.sender_timestamp)",
            &[&self.device, &jid, &sender_timestamp],
        )
        .await?;
        Ok(())
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> WaResult<()> {
        // One atomic upsert, newer-wins: a stored real token is replaced only by one at least as
        // new; a placeholder always yields. The sender bucket is never touched here.
        self.execute(
            "store a received trusted-contact token",
            "INSERT INTO wa_tc_tokens
                 (device_internal_id, jid, token, token_timestamp, sender_timestamp)
             VALUES ($1, $2, $3, $4, NULL)
             ON CONFLICT (device_internal_id, jid) DO UPDATE SET
                 token = EXCLUDED.token,
                 token_timestamp = EXCLUDED.token_timestamp
             WHERE length(wa_tc_tokens.token) = 0
                OR EXCLUDED.token_timestamp >= wa_tc_tokens.token_timestamp",
            &[&self.device, &jid, &token, &token_timestamp],
        )
        .await?;
        Ok(())
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> WaResult<()> {
        self.execute(
            "store a sent message",
            "INSERT INTO wa_sent_messages
                 (device_internal_id, chat_jid, message_id, payload, stored_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_internal_id, chat_jid, message_id)
             DO UPDATE SET payload = EXCLUDED.payload, stored_at = EXCLUDED.stored_at",
            &[&self.device, &chat_jid, &message_id, &payload, &now_secs()],
        )
        .await?;
        Ok(())
    }

    async fn take_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        // DELETE … RETURNING takes it atomically: two retry receipts cannot both get it.
        Ok(self
            .query_opt(
                "take a sent message",
                "DELETE FROM wa_sent_messages
                 WHERE device_internal_id = $1 AND chat_jid = $2 AND message_id = $3
                 RETURNING payload",
                &[&self.device, &chat_jid, &message_id],
            )
            .await?
            .map(|row| row.get(0)))
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        let deleted = self
            .execute(
                "delete expired sent messages",
                "DELETE FROM wa_sent_messages WHERE device_internal_id = $1 AND stored_at < $2",
                &[&self.device, &cutoff_timestamp],
            )
            .await?;
        Ok(deleted_count(deleted))
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> WaResult<()> {
        self.store_pending_inbound_batch(&[PendingInboundRow {
            chat,
            sender,
            id,
            message,
        }])
        .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "load a pending inbound message",
                "SELECT message FROM wa_pending_inbound
                 WHERE device_internal_id = $1 AND chat_jid = $2 AND sender_jid = $3
                   AND message_id = $4",
                &[&self.device, &chat, &sender, &id],
            )
            .await?
            .map(|row| row.get(0)))
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> WaResult<()> {
        self.delete_pending_inbound_batch(&[PendingInboundKey { chat, sender, id }])
            .await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        let deleted = self
            .execute(
                "delete expired pending inbound messages",
                "DELETE FROM wa_pending_inbound WHERE device_internal_id = $1 AND stored_at < $2",
                &[&self.device, &cutoff_timestamp],
            )
            .await?;
        Ok(deleted_count(deleted))
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> WaResult<()> {
        let rows = last_wins(rows.iter().map(|r| ((r.chat, r.sender, r.id), r.message)));
        if rows.is_empty() {
            return Ok(());
        }
        let chats: Vec<&str> = rows.iter().map(|((c, _, _), _)| *c).collect();
        let senders: Vec<&str> = rows.iter().map(|((_, s, _), _)| *s).collect();
        let ids: Vec<&str> = rows.iter().map(|((_, _, i), _)| *i).collect();
        let messages: Vec<&[u8]> = rows.iter().map(|(_, m)| *m).collect();
        self.execute(
            "store pending inbound messages",
            "INSERT INTO wa_pending_inbound
                 (device_internal_id, chat_jid, sender_jid, message_id, message, stored_at)
             SELECT $1, c, s, i, m, $6
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bytea[]) AS t (c, s, i, m)
             ON CONFLICT (device_internal_id, chat_jid, sender_jid, message_id)
             DO UPDATE SET message = EXCLUDED.message, stored_at = EXCLUDED.stored_at",
            &[&self.device, &chats, &senders, &ids, &messages, &now_secs()],
        )
        .await?;
        Ok(())
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> WaResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let chats: Vec<&str> = keys.iter().map(|k| k.chat).collect();
        let senders: Vec<&str> = keys.iter().map(|k| k.sender).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.id).collect();
        self.execute(
            "delete pending inbound messages",
            "DELETE FROM wa_pending_inbound p
             USING UNNEST($2::text[], $3::text[], $4::text[]) AS t (c, s, i)
             WHERE p.device_internal_id = $1
               AND p.chat_jid = t.c AND p.sender_jid = t.s AND p.message_id = t.i",
            &[&self.device, &chats, &senders, &ids],
        )
        .await?;
        Ok(())
    }
}
