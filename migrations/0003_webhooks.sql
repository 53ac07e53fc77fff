-- Webhooks: tenant endpoints, the durable outbox of events, and one delivery per event and
-- endpoint that the dispatcher claims, attempts and reschedules.

-- Each device numbers its events; the counter is bumped in the transaction that records them,
-- which also serialises a device's events.
ALTER TABLE devices ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;

-- body is the exact JSON every consumer receives; it never changes, so retries and replays send
-- the same bytes. device_id is NULL for endpoint pings.
CREATE TABLE events (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    device_id text,
    seq bigint NOT NULL,
    type text NOT NULL,
    occurred_at timestamptz NOT NULL,
    body text NOT NULL,
    -- A QR code's event is useless once the code has expired.
    expires_at timestamptz
);

CREATE INDEX events_occurred_at ON events (occurred_at);

-- The secret signs deliveries, so it is kept as is (unlike API credentials). After a rotation
-- the previous secret also signs until previous_secret_until.
CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    events text[] NOT NULL,
    -- NULL: every device of the tenant.
    device_ids text[],
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    secret text NOT NULL,
    previous_secret text,
    previous_secret_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_endpoints_tenant_id ON webhook_endpoints (tenant_id);

-- A pending delivery is due at next_attempt_at; a claimed one carries the claiming dispatcher
-- (lease_owner, which holds an advisory lock while it lives) and the end of its lease.
CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'dead', 'expired')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    expires_at timestamptz,
    lease_owner integer,
    leased_until timestamptz,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (lease_owner)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id);
CREATE INDEX webhook_deliveries_event_id ON webhook_deliveries (event_id);
