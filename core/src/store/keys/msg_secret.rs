//! [`MsgSecretStore`]: the secrets of sent and received messages, for add-on decryption.

use async_trait::async_trait;
use whatsapp_rust::wacore::store::traits::{
    MsgSecretEntry, MsgSecretStore, merge_msg_secret_expiry, merge_msg_secret_message_ts,
};

use super::{PgBackend, WaResult, deleted_count, merge_duplicates};

#[async_trait]
impl MsgSecretStore for PgBackend {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> WaResult<usize> {
        let stored = entries.len();
        // Repeats within the batch merge exactly as a repeat across batches does: the last
        // secret, the later deadline (0 = never wins), the later known parent time.
        let rows = merge_duplicates(
            entries.iter().map(|e| {
                (
                    (e.chat.as_ref(), e.sender.as_ref(), e.msg_id.as_ref()),
                    (e.secret.as_slice(), e.expires_at, e.message_ts),
                )
            }),
            |(_, expires_a, ts_a), (secret, expires_b, ts_b)| {
                (
                    secret,
                    merge_msg_secret_expiry(expires_a, expires_b),
                    merge_msg_secret_message_ts(ts_a, ts_b),
                )
            },
        );
        if rows.is_empty() {
            return Ok(stored);
        }
        let chats: Vec<&str> = rows.iter().map(|((c, _, _), _)| *c).collect();
        let senders: Vec<&str> = rows.iter().map(|((_, s, _), _)| *s).collect();
        let ids: Vec<&str> = rows.iter().map(|((_, _, i), _)| *i).collect();
        let secrets: Vec<&[u8]> = rows.iter().map(|(_, (s, _, _))| *s).collect();
        let expiries: Vec<i64> = rows.iter().map(|(_, (_, e, _))| *e).collect();
        let times: Vec<i64> = rows.iter().map(|(_, (_, _, t))| *t).collect();
        // The same merge against the stored row, in SQL, so that the upsert stays atomic.
        self.execute(
            "store message secrets",
            "INSERT INTO wa_msg_secrets
                 (device_internal_id, chat_jid, sender_jid, message_id, secret, expires_at,
                  message_ts)
             SELECT $1, c, s, i, k, e, t
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bytea[], $6::bigint[],
                         $7::bigint[]) AS u (c, s, i, k, e, t)
             ON CONFLICT (device_internal_id, chat_jid, sender_jid, message_id) DO UPDATE SET
                 secret = EXCLUDED.secret,
                 expires_at = CASE
                     WHEN wa_msg_secrets.expires_at = 0 OR EXCLUDED.expires_at = 0 THEN 0
                     ELSE GREATEST(wa_msg_secrets.expires_at, EXCLUDED.expires_at)
                 END,
                 message_ts = GREATEST(wa_msg_secrets.message_ts, EXCLUDED.message_ts)",
            &[
                &self.device,
                &chats,
                &senders,
                &ids,
                &secrets,
                &expiries,
                &times,
            ],
        )
        .await?;
        Ok(stored)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> WaResult<Option<(Vec<u8>, i64)>> {
        Ok(self
            .query_opt(
                "load a message secret",
                "SELECT secret, message_ts FROM wa_msg_secrets
                 WHERE device_internal_id = $1 AND chat_jid = $2 AND sender_jid = $3
                   AND message_id = $4",
                &[&self.device, &chat, &sender, &msg_id],
            )
            .await?
            .map(|row| (row.get(0), row.get(1))))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        let deleted = self
            .execute(
                "delete expired message secrets",
                "DELETE FROM wa_msg_secrets
                 WHERE device_internal_id = $1 AND expires_at <> 0 AND expires_at <= $2",
                &[&self.device, &cutoff_timestamp],
            )
            .await?;
        Ok(deleted_count(deleted))
    }
}
