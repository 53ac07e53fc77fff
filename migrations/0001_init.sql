-- Tenants, their API credentials, their device slots and the QR images shown while linking.

CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    name text NOT NULL CONSTRAINT tenants_name_unique UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- secret_hash is `pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>`; secrets themselves
-- are never stored.
CREATE TABLE credentials (
    username text CONSTRAINT credentials_username_unique PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    secret_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX credentials_tenant_id ON credentials (tenant_id);

-- internal_id is for rows that hang off a device (key material, QR images); the API only ever
-- names a device by (tenant_id, device_id).
CREATE TABLE devices (
    internal_id bigserial PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    device_id text NOT NULL,
    display_name text,
    state text NOT NULL DEFAULT 'disconnected'
        CHECK (state IN ('disconnected', 'connecting', 'connected', 'logged_in')),
    jid text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT devices_tenant_device_unique UNIQUE (tenant_id, device_id)
);

CREATE TABLE qr_images (
    id uuid PRIMARY KEY,
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    png bytea NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX qr_images_expires_at ON qr_images (expires_at);

-- Without it, deleting a device scans every QR image.
CREATE INDEX qr_images_device_internal_id ON qr_images (device_internal_id);
