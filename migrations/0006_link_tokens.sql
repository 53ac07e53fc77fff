-- Link tokens: a link an operator hands a customer, which opens the link page of one device with
-- no other credential. Only the token's SHA-256 is stored; the token itself is shown once, in the
-- answer that creates it.
--
-- A token goes with its device (ON DELETE CASCADE, as the device's keys and QR images do) and
-- with its tenant. `used_at` is set when the device logs in (in the transaction that records the
-- login) or when a token endpoint finds it logged in; `revoked_at` by the operator.
CREATE TABLE link_tokens (
    id bigserial PRIMARY KEY,
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL CONSTRAINT link_tokens_token_hash_unique UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);

-- Revoking, using up and deleting a device's tokens find them by device.
CREATE INDEX link_tokens_device_internal_id ON link_tokens (device_internal_id);

-- Without it, deleting a tenant scans every token.
CREATE INDEX link_tokens_tenant_id ON link_tokens (tenant_id);
