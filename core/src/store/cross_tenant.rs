//! The operations not scoped to one tenant: apart from `connect` (which migrates the schema)
//! and `tenant`, every method of [`Store`] is here, and each is deliberately unscoped.
//! Everything else on a tenant's data goes through [`Store::tenant`].
//!
//! Why each one is:
//! - Nodes and leases (`leases.rs`): which devices no live node owns (to reconnect them, or end
//!   the logins a dead node left pending), acquiring and releasing their leases, and the nodes
//!   with their counts; they return (tenant, device) pairs that the engine then works on through
//!   the tenant.
//! - Public QR images: [`Store::qr_image`] serves a PNG to whoever has its link, unauthenticated;
//!   the unguessable image id is the secret. [`Store::purge_expired_qr_images`] deletes expired
//!   ones, whoever they belong to.
//! - Link pages: [`Store::link_token`] finds the device a link token reaches, and
//!   [`Store::mark_link_token_used`] spends it, for whoever holds the link, unauthenticated:
//!   the token (256 random bits, stored as its SHA-256) is the credential, and the tenant is
//!   known only once it is found. A token reaches the one device it was made for.
//! - The operator: [`Store::create_tenant`], [`Store::list_tenants`] (counts only) and
//!   [`Store::delete_tenant`] are the admin API's; [`Store::ensure_tenant_with_credentials`]
//!   creates the configured tenant by name at start-up.
//! - Authentication: [`Store::authenticate`] and [`Store::recently_verified`] find the tenant
//!   of a username, before any tenant is known.
//! - The webhook dispatcher delivers every tenant's events: [`Store::listen_outbox`],
//!   [`Store::claim_deliveries`], [`Store::settle_deliveries`], [`Store::release_claims_of`],
//!   [`Store::release_orphaned_claims`], [`Store::expire_deliveries`], [`Store::purge_events`]
//!   and [`Store::next_due_delivery`]. A claimed delivery carries its endpoint's URL and
//!   secrets, never another tenant's.
//! - Every node relays the events other nodes record to its own live streams (a tenant's stream
//!   spans devices on every node): [`Store::listen_recorded_events`] hears which (tenant,
//!   device, numbers) every commit recorded, and the events are then read through the tenant.
//! - Metrics describe the whole gateway to its operator: [`Store::device_states`] and
//!   [`Store::tenant_device_states`] count devices by state (tenant ids only for the operator's
//!   opt-in), [`Store::pending_deliveries`] counts pending deliveries by endpoint id. They
//!   return counts and ids, never a tenant's data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::devices::{stored_id, stored_state};
use super::link_tokens::{LinkToken, is_link_token, token_hash};
use super::outbox::{
    CHANNEL, ClaimedDelivery, DeliveryOutcome, HeardWakes, LOCK_CLASS, OutboxListener,
};
use super::qr_images::QrImage;
use super::tenants::{Credential, SUMMARY, TenantSummary, hash, summary, verify};
use super::{Store, StoreError, Tx, violates};
use crate::domain::{DeviceState, Tenant, TenantId};

/// Public QR images.
impl Store {
    /// The QR image with this id, unless it expired. Not tenant-scoped: the id is the secret.
    pub async fn qr_image(&self, image: Uuid) -> Result<Option<QrImage>, StoreError> {
        let row = self
            .query_opt(
                &format!("read QR image {image}"),
                "SELECT png, code FROM qr_images WHERE id = $1 AND expires_at > now()",
                &[&image],
            )
            .await?;
        Ok(row.and_then(|row| match row.get::<_, Option<Vec<u8>>>(0) {
            Some(png) => Some(QrImage::Png(png)),
            None => row.get::<_, Option<String>>(1).map(QrImage::Code),
        }))
    }

    /// Keeps the rendering `png` of QR image `image`, so that later fetches, on any node,
    /// serve it without rendering again. A rendering kept already stays.
    pub async fn keep_qr_png(&self, image: Uuid, png: &[u8]) -> Result<(), StoreError> {
        self.execute(
            &format!("keep the rendering of QR image {image}"),
            "UPDATE qr_images SET png = $2 WHERE id = $1 AND png IS NULL",
            &[&image, &png],
        )
        .await?;
        Ok(())
    }

    /// Deletes expired QR images of every tenant; returns how many.
    pub async fn purge_expired_qr_images(&self) -> Result<u64, StoreError> {
        self.execute(
            "delete expired QR images",
            "DELETE FROM qr_images WHERE expires_at <= now()",
            &[],
        )
        .await
    }
}

/// Link pages.
impl Store {
    /// The link token `token` with the device it reaches, whatever its state (expired, used or
    /// revoked: the caller says which to whom); `None` for a token that was never handed out or
    /// whose device is gone. Not tenant-scoped: the token is the credential, so the tenant is
    /// known only once it is found; it reaches exactly the device it was made for.
    pub async fn link_token(&self, token: &str) -> Result<Option<LinkToken>, StoreError> {
        if !is_link_token(token) {
            return Ok(None);
        }
        self.query_opt(
            "look up a link token",
            "SELECT t.tenant_id, d.device_id, d.state, t.expires_at, t.used_at, t.revoked_at
             FROM link_tokens t JOIN devices d ON d.internal_id = t.device_internal_id
             WHERE t.token_hash = $1",
            &[&token_hash(token)],
        )
        .await?
        .map(|row| {
            let tenant = TenantId(row.get(0));
            let device = stored_id(tenant, row.get(1))?;
            let state = stored_state(tenant, &device, row.get(2))?;
            Ok(LinkToken {
                tenant,
                device,
                state,
                expires_at: row.get(3),
                used_at: row.get(4),
                revoked_at: row.get(5),
            })
        })
        .transpose()
    }

    /// Marks link token `token` used, if it is not yet: a token endpoint found its device
    /// logged in. Not tenant-scoped for the same reason as [`Store::link_token`].
    pub async fn mark_link_token_used(&self, token: &str) -> Result<(), StoreError> {
        self.execute(
            "mark a link token used",
            "UPDATE link_tokens SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL",
            &[&token_hash(token)],
        )
        .await?;
        Ok(())
    }
}

/// The operator: tenants themselves.
impl Store {
    /// Creates tenant `name` with one fresh credential, returned in clear this one time.
    pub async fn create_tenant(&self, name: &str) -> Result<(Tenant, Credential), StoreError> {
        let credential = Credential::generate();
        let secret_hash = hash(&credential.secret).await?;
        let id = Uuid::new_v4();
        self.execute(
            &format!("create tenant `{name}`"),
            "WITH tenant AS (INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id)
             INSERT INTO credentials (username, tenant_id, secret_hash)
             SELECT $3, id, $4 FROM tenant",
            &[&id, &name, &credential.username, &secret_hash],
        )
        .await
        .map_err(|e| {
            e.refine(|e| {
                if violates(e, "tenants_name_unique") {
                    Some(StoreError::TenantExists(name.to_string()))
                } else {
                    violates(e, "credentials_username_unique")
                        .then(|| StoreError::UsernameTaken(credential.username.clone()))
                }
            })
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
            .query(
                "list the tenants",
                &format!("{SUMMARY} ORDER BY t.created_at, t.name"),
                &[],
            )
            .await?
            .iter()
            .map(summary)
            .collect())
    }

    /// Deletes `tenant` and every row it owns: credentials, devices with their keys and QR
    /// images, webhook endpoints, events and deliveries (the foreign keys cascade).
    /// [`StoreError::TenantNotFound`] when there is no such tenant.
    ///
    /// This stops no session: delete a tenant with live devices through
    /// `DeviceManager::delete_tenant`, which logs them out first.
    pub async fn delete_tenant(&self, tenant: TenantId) -> Result<(), StoreError> {
        let deleted = self
            .execute_through_deadlocks(
                &format!("delete tenant {tenant}"),
                "DELETE FROM tenants WHERE id = $1",
                &[&tenant.0],
            )
            .await?;
        self.verified.forget_tenant(tenant);
        self.devices.forget_tenant(tenant);
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
        let mut client = self.client().await?;
        let tx = Tx::begin(
            &mut client,
            format!("set up the credentials of tenant `{name}`"),
        )
        .await?;
        tx.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&Uuid::new_v4(), &name],
        )
        .await?;
        let tenant = Tenant {
            id: TenantId(
                tx.query_one("SELECT id FROM tenants WHERE name = $1", &[&name])
                    .await?
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
            .await?
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
                .await?;
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
            .await?;
        tx.commit().await?;

        let removed = removed.iter().map(|row| row.get::<_, String>(0));
        for username in changed.into_iter().chain(removed) {
            self.verified.forget(&username);
        }
        Ok(tenant)
    }
}

/// Authentication.
impl Store {
    /// The tenant of a credential that verified within the last minute, answered from memory
    /// without hashing; `None` when it did not (it may still be right: see `authenticate`).
    pub fn recently_verified(&self, username: &str, password: &str) -> Option<Tenant> {
        self.verified.get(username, password)
    }

    /// The tenant `username` belongs to, if `password` is its secret.
    ///
    /// Unknown usernames cost as much as wrong passwords. Recent successes are answered from
    /// memory for up to a minute; requests verifying the same pair at once do it one after
    /// another, so the ones that wait find the first one's success in memory.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Tenant>, StoreError> {
        if let Some(tenant) = self.verified.get(username, password) {
            return Ok(Some(tenant));
        }
        let _turn = self.verified.turn(username, password).await;
        // Verified by the request whose turn came first, if this one waited.
        if let Some(tenant) = self.verified.get(username, password) {
            return Ok(Some(tenant));
        }
        let epoch = self.verified.epoch();
        let row = self
            .query_opt(
                &format!("look up user `{username}`"),
                "SELECT c.secret_hash, t.id, t.name
                 FROM credentials c JOIN tenants t ON t.id = c.tenant_id
                 WHERE c.username = $1",
                &[&username],
            )
            .await?;
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

/// The webhook dispatcher's side of the outbox.
impl Store {
    /// Opens the listener of dispatcher `owner`: takes its advisory lock and listens for
    /// commits that add deliveries.
    pub async fn listen_outbox(&self, owner: i32) -> Result<OutboxListener, StoreError> {
        let doing = || format!("open the outbox listener of dispatcher {owner}");
        // Wake-ups heard before the dispatcher asks are merged into one.
        let wakes = Arc::new(HeardWakes::default());
        let wake = {
            let wakes = Arc::clone(&wakes);
            move |payload: &str| wakes.hear(payload)
        };
        let (client, driver) = self
            .listening(CHANNEL, "the outbox listener", wake, &doing())
            .await?;
        client
            .execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK_CLASS, &owner])
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        Ok(OutboxListener::new(wakes, driver, client))
    }

    /// Claims up to `limit` due deliveries of enabled endpoints (none of `skip`) for dispatcher
    /// `owner`, leased for `lease`; oldest due first.
    pub async fn claim_deliveries(
        &self,
        owner: i32,
        lease: Duration,
        limit: usize,
        skip: &[Uuid],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let lease_ms = lease.as_millis() as f64;
        let rows = self
            .query(
                "claim webhook deliveries",
                "WITH due AS (
                    SELECT d.id FROM webhook_deliveries d
                    JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled
                    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                      AND (d.expires_at IS NULL OR d.expires_at > now())
                      AND d.endpoint_id <> ALL($4)
                    ORDER BY d.next_attempt_at
                    LIMIT $3
                    FOR UPDATE OF d SKIP LOCKED
                 )
                 UPDATE webhook_deliveries d SET
                    lease_owner = $1,
                    next_attempt_at = now() + $2 * interval '1 millisecond'
                 FROM due, webhook_endpoints w, events e
                 WHERE d.id = due.id AND w.id = d.endpoint_id AND e.id = d.event_id
                 RETURNING d.id, d.endpoint_id, d.attempts, d.expires_at, e.id, e.type, e.body,
                    w.url, w.secret,
                    CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END",
                &[&owner, &lease_ms, &(limit as i64), &skip],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut secrets = vec![row.get::<_, String>(8)];
                secrets.extend(row.get::<_, Option<String>>(9));
                ClaimedDelivery {
                    id: row.get(0),
                    endpoint_id: row.get(1),
                    attempts: row.get(2),
                    expires_at: row.get(3),
                    event_id: row.get(4),
                    event_type: row.get(5),
                    body: row.get(6),
                    url: row.get(7),
                    secrets,
                }
            })
            .collect())
    }

    /// Records how attempts of dispatcher `owner` ended, in one statement; an endpoint that
    /// answered 410 is disabled. Deliveries whose lease `owner` no longer holds are left alone.
    pub async fn settle_deliveries(
        &self,
        owner: i32,
        settled: &[(Uuid, DateTime<Utc>, DeliveryOutcome)],
        gone_endpoints: &[Uuid],
    ) -> Result<(), StoreError> {
        let doing = "record webhook delivery attempts";
        let mut ids = Vec::with_capacity(settled.len());
        let mut ats = Vec::with_capacity(settled.len());
        let mut statuses = Vec::with_capacity(settled.len());
        let mut nexts = Vec::with_capacity(settled.len());
        let mut codes = Vec::with_capacity(settled.len());
        let mut errors = Vec::with_capacity(settled.len());
        for (id, at, outcome) in settled {
            let (status, next, code, error) = outcome.columns();
            ids.push(*id);
            ats.push(*at);
            statuses.push(status);
            nexts.push(next);
            codes.push(code);
            errors.push(error);
        }
        self.execute_through_deadlocks(
            doing,
            "UPDATE webhook_deliveries d SET
                status = o.status,
                attempts = d.attempts + 1,
                next_attempt_at = o.next,
                last_attempt_at = o.at,
                last_status_code = o.code,
                last_error = o.error,
                delivered_at = CASE WHEN o.status = 'delivered' THEN o.at ELSE d.delivered_at END,
                lease_owner = NULL
             FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::timestamptz[],
                         $6::int[], $7::text[]) AS o(id, at, status, next, code, error)
             WHERE d.id = o.id AND d.lease_owner = $1",
            &[&owner, &ids, &ats, &statuses, &nexts, &codes, &errors],
        )
        .await?;
        if !gone_endpoints.is_empty() {
            self.execute(
                doing,
                "UPDATE webhook_endpoints SET enabled = false, updated_at = now(),
                    disabled_reason = 'the endpoint answered 410 Gone: re-enable it with PATCH when it is back'
                 WHERE id = ANY($1)",
                &[&gone_endpoints],
            )
            .await?;
        }
        Ok(())
    }

    /// Hands the claims of dispatcher `owner` back to the outbox at once, as it stops; returns
    /// how many.
    pub async fn release_claims_of(&self, owner: i32) -> Result<u64, StoreError> {
        self.execute(
            &format!("release the webhook claims of dispatcher {owner}"),
            "UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = now()
             WHERE status = 'pending' AND lease_owner = $1",
            &[&owner],
        )
        .await
    }

    /// Hands back to the outbox at once the claims whose owner no longer holds its advisory
    /// lock (its process died); returns how many.
    pub async fn release_orphaned_claims(&self) -> Result<u64, StoreError> {
        self.execute(
            "release orphaned webhook claims",
            "UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = now()
             WHERE status = 'pending' AND lease_owner IS NOT NULL
               AND lease_owner NOT IN (
                   SELECT objid::bigint::int FROM pg_locks
                   WHERE locktype = 'advisory' AND classid = $1::int::oid
                     AND objsubid = 2 AND granted
                     AND database = (SELECT oid FROM pg_database
                                     WHERE datname = current_database()))",
            &[&LOCK_CLASS],
        )
        .await
    }

    /// Marks pending deliveries whose event expired (QR codes) as expired; returns how many.
    pub async fn expire_deliveries(&self) -> Result<u64, StoreError> {
        self.execute(
            "expire webhook deliveries",
            "UPDATE webhook_deliveries SET status = 'expired', lease_owner = NULL,
                next_attempt_at = NULL,
                last_error = coalesce(last_error, 'the event expired before it was delivered')
             WHERE status = 'pending' AND expires_at <= now()
               AND (lease_owner IS NULL OR next_attempt_at <= now())",
            &[],
        )
        .await
    }

    /// Deletes events older than `retention` that have no pending delivery, with their
    /// deliveries; returns how many events went.
    pub async fn purge_events(&self, retention: Duration) -> Result<u64, StoreError> {
        let retention_ms = retention.as_millis() as f64;
        self.execute(
            "purge old events",
            "DELETE FROM events e
             WHERE e.occurred_at < now() - $1 * interval '1 millisecond'
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.event_id = e.id AND d.status = 'pending')",
            &[&retention_ms],
        )
        .await
    }

    /// When the next pending delivery is due, if any: the dispatcher sleeps until then.
    pub async fn next_due_delivery(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .query_one(
                "find the next due webhook delivery",
                "SELECT min(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'",
                &[],
            )
            .await?
            .get(0))
    }
}

/// Pending webhook deliveries of one endpoint, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDeliveries {
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// Its deliveries pending: due, claimed, or awaiting a retry.
    pub count: i64,
    /// Seconds since its oldest pending delivery was created.
    pub oldest_age_seconds: f64,
}

/// What a commit recorded: the tenant, the device and the numbers of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRange {
    /// The tenant.
    pub tenant: TenantId,
    /// The device's id, as stored.
    pub device: String,
    /// The first event's number.
    pub first: i64,
    /// The last event's number.
    pub last: i64,
}

impl RecordedRange {
    /// Parses a `wagate_events` payload: "tenant device first last".
    fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let range = Self {
            tenant: TenantId(parts.next()?.parse().ok()?),
            device: parts.next()?.to_string(),
            first: parts.next()?.parse().ok()?,
            last: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(range)
    }
}

/// Relaying recorded events between nodes.
impl Store {
    /// A connection of its own that hears every commit that records events (see the
    /// `wagate_events` trigger of migration 7), as ranges on the returned channel (at most
    /// `buffer` waiting; more are dropped and logged). The task reading it ends with the
    /// connection; the caller opens another.
    pub async fn listen_recorded_events(
        &self,
        buffer: usize,
    ) -> Result<
        (
            mpsc::Receiver<RecordedRange>,
            tokio::task::JoinHandle<()>,
            tokio_postgres::Client,
        ),
        StoreError,
    > {
        let (tx, ranges) = mpsc::channel(buffer);
        let relay = move |payload: &str| {
            let Some(range) = RecordedRange::parse(payload) else {
                tracing::warn!(payload, "unreadable event notification");
                return;
            };
            if tx.try_send(range).is_err() {
                tracing::warn!(
                    "the event relay fell behind: events recorded elsewhere miss this node's streams"
                );
            }
        };
        let (client, driver) = self
            .listening(
                "wagate_events",
                "the event relay",
                relay,
                "listen for the events other nodes record",
            )
            .await?;
        Ok((ranges, driver, client))
    }
}

/// Metrics, read at scrape time.
impl Store {
    /// How many devices of every tenant are in each state (states without devices left out).
    /// Across tenants: the operator's view of the whole gateway, counts only.
    pub async fn device_states(&self) -> Result<Vec<(DeviceState, i64)>, StoreError> {
        self.query(
            "count the devices by state",
            "SELECT state, count(*) FROM devices GROUP BY state",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let raw: &str = row.get(0);
            let state = DeviceState::parse(raw).ok_or_else(|| {
                StoreError::Corrupt(format!("a device has an unknown state `{raw}`"))
            })?;
            Ok((state, row.get(1)))
        })
        .collect()
    }

    /// How many devices each tenant has in each state (pairs without devices left out). Across
    /// tenants for the operator's opt-in per-tenant metrics; counts only.
    pub async fn tenant_device_states(
        &self,
    ) -> Result<Vec<(TenantId, DeviceState, i64)>, StoreError> {
        self.query(
            "count the devices by tenant and state",
            "SELECT tenant_id, state, count(*) FROM devices GROUP BY tenant_id, state
             ORDER BY tenant_id, state",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let tenant = TenantId(row.get(0));
            let raw: &str = row.get(1);
            let state = DeviceState::parse(raw).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "a device of tenant {tenant} has an unknown state `{raw}`"
                ))
            })?;
            Ok((tenant, state, row.get(2)))
        })
        .collect()
    }

    /// Every endpoint with pending deliveries: how many, and the age of the oldest. Across
    /// tenants: the operator watches the outbox as a whole; endpoint ids and counts only.
    pub async fn pending_deliveries(&self) -> Result<Vec<PendingDeliveries>, StoreError> {
        Ok(self
            .query(
                "count the pending webhook deliveries",
                "SELECT endpoint_id, count(*),
                    greatest(extract(epoch FROM now() - min(created_at)), 0)::float8
                 FROM webhook_deliveries WHERE status = 'pending'
                 GROUP BY endpoint_id ORDER BY endpoint_id",
                &[],
            )
            .await?
            .iter()
            .map(|row| PendingDeliveries {
                endpoint_id: row.get(0),
                count: row.get(1),
                oldest_age_seconds: row.get(2),
            })
            .collect())
    }
}
