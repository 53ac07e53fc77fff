-- Nodes: every `wagate serve` on this database registers here and holds the advisory lock
-- (class 0x6e64, "nd") keyed by its id for as long as it lives, so a dead process is known to
-- be dead at once (its connection, and with it the lock, is gone) and a paused one once its
-- heartbeat is older than the lease expiry.
CREATE TABLE nodes (
    id serial PRIMARY KEY,
    -- Where the other nodes forward requests for the devices this node owns; NULL when it
    -- cannot be reached (it then owns devices only while no other node can).
    address text,
    -- The base of the links this node hands out, so a forwarded answer can carry the
    -- receiving node's instead.
    public_url text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- Set on SIGTERM: the node is handing its devices over and takes no new ones.
    draining boolean NOT NULL DEFAULT false
);

-- A device's lease: the node whose session may run it, the epoch that node's writes are fenced
-- by (it grows on every acquisition, so a node that lost the lease writes nothing), and when the
-- lease lapses unless renewed.
ALTER TABLE devices
    ADD COLUMN lease_node integer,
    ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0,
    ADD COLUMN lease_expires_at timestamptz;

-- Renewal and the counts per node find a node's devices by it.
CREATE INDEX devices_lease_node ON devices (lease_node) WHERE lease_node IS NOT NULL;

-- Every node relays the events other nodes record to its own live streams (a tenant's stream
-- spans devices on every node): a commit that records events says which, per device, on
-- `wagate_events` as "tenant device first_seq last_seq" (device ids hold no spaces).
CREATE FUNCTION wagate_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wagate_events',
                      e.tenant_id::text || ' ' || e.device_id || ' ' || min(e.seq) || ' ' || max(e.seq))
    FROM new_events e
    WHERE e.device_id IS NOT NULL
    GROUP BY e.tenant_id, e.device_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify_nodes AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION wagate_notify_events();
