-- whatsapp-rust's per-device state (its storage `Backend`): Signal keys and sessions, app-state
-- sync keys and versions, protocol bookkeeping, message secrets and the device blob.
--
-- Every table hangs off one device and goes with it (ON DELETE CASCADE); every primary key starts
-- with the device, so each device's rows are one index range. Values the library treats as
-- opaque are stored as bytea. Unsigned 32-bit ids are stored as bigint so that no id wraps.

-- Orders writes where "the latest" matters (the newest app-state sync key, the newest LID of a
-- phone number) even when two writes share a timestamp.
CREATE SEQUENCE wa_write_seq;

-- Signal: remote identity keys, sessions, one-time and signed pre-keys, group sender keys.
CREATE TABLE wa_identities (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    address text NOT NULL,
    identity_key bytea NOT NULL,
    PRIMARY KEY (device_internal_id, address)
);

CREATE TABLE wa_sessions (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    address text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (device_internal_id, address)
);

CREATE TABLE wa_prekeys (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    id bigint NOT NULL,
    record bytea NOT NULL,
    uploaded boolean NOT NULL DEFAULT false,
    PRIMARY KEY (device_internal_id, id)
);

CREATE TABLE wa_signed_prekeys (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    id bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (device_internal_id, id)
);

CREATE TABLE wa_sender_keys (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    address text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (device_internal_id, address)
);

-- App-state sync: keys, per-collection versions (a serialised HashState), mutation MACs.
CREATE TABLE wa_app_state_keys (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    key_id bytea NOT NULL,
    key_data bytea NOT NULL,
    fingerprint bytea NOT NULL,
    key_timestamp bigint NOT NULL,
    written bigint NOT NULL DEFAULT nextval('wa_write_seq'),
    PRIMARY KEY (device_internal_id, key_id)
);

CREATE TABLE wa_app_state_versions (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    collection text NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (device_internal_id, collection)
);

CREATE TABLE wa_app_state_mutation_macs (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    collection text NOT NULL,
    index_mac bytea NOT NULL,
    value_mac bytea NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (device_internal_id, collection, index_mac)
);

-- Protocol bookkeeping: which group members hold our sender key, LID <-> phone number mappings,
-- retry base keys, users' device lists, group metadata, trusted-contact tokens, sent messages
-- kept for retries, and decrypted inbound messages awaiting the durability hook.
CREATE TABLE wa_sender_key_devices (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    group_jid text NOT NULL,
    device_jid text NOT NULL,
    has_key boolean NOT NULL,
    PRIMARY KEY (device_internal_id, group_jid, device_jid)
);

-- Rows are also deleted by member across all groups.
CREATE INDEX wa_sender_key_devices_device_jid ON wa_sender_key_devices (device_internal_id, device_jid);

CREATE TABLE wa_lid_mappings (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    lid text NOT NULL,
    phone_number text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    learning_source text NOT NULL,
    written bigint NOT NULL DEFAULT nextval('wa_write_seq'),
    PRIMARY KEY (device_internal_id, lid)
);

-- Lookups by phone number.
CREATE INDEX wa_lid_mappings_phone_number ON wa_lid_mappings (device_internal_id, phone_number);

CREATE TABLE wa_base_keys (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    address text NOT NULL,
    message_id text NOT NULL,
    base_key bytea NOT NULL,
    PRIMARY KEY (device_internal_id, address, message_id)
);

-- record is a serialised DeviceListRecord.
CREATE TABLE wa_device_lists (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    user_id text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (device_internal_id, user_id)
);

CREATE TABLE wa_group_metadata (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    group_jid text NOT NULL,
    metadata bytea NOT NULL,
    PRIMARY KEY (device_internal_id, group_jid)
);

CREATE TABLE wa_tc_tokens (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    jid text NOT NULL,
    token bytea NOT NULL,
    token_timestamp bigint NOT NULL,
    sender_timestamp bigint,
    PRIMARY KEY (device_internal_id, jid)
);

CREATE TABLE wa_sent_messages (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    chat_jid text NOT NULL,
    message_id text NOT NULL,
    payload bytea NOT NULL,
    stored_at bigint NOT NULL,
    PRIMARY KEY (device_internal_id, chat_jid, message_id)
);

-- The keep-alive sweep deletes by age.
CREATE INDEX wa_sent_messages_stored_at ON wa_sent_messages (device_internal_id, stored_at);

CREATE TABLE wa_pending_inbound (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    chat_jid text NOT NULL,
    sender_jid text NOT NULL,
    message_id text NOT NULL,
    message bytea NOT NULL,
    stored_at bigint NOT NULL,
    PRIMARY KEY (device_internal_id, chat_jid, sender_jid, message_id)
);

CREATE INDEX wa_pending_inbound_stored_at ON wa_pending_inbound (device_internal_id, stored_at);

-- Message secrets; expires_at 0 means never.
CREATE TABLE wa_msg_secrets (
    device_internal_id bigint NOT NULL REFERENCES devices (internal_id) ON DELETE CASCADE,
    chat_jid text NOT NULL,
    sender_jid text NOT NULL,
    message_id text NOT NULL,
    secret bytea NOT NULL,
    expires_at bigint NOT NULL,
    message_ts bigint NOT NULL,
    PRIMARY KEY (device_internal_id, chat_jid, sender_jid, message_id)
);

-- The keep-alive sweep deletes expired rows; rows that never expire are most of the table.
CREATE INDEX wa_msg_secrets_expires_at ON wa_msg_secrets (device_internal_id, expires_at)
    WHERE expires_at <> 0;

-- The device itself (its own keys, account, counters): a serialised whatsapp-rust Device.
CREATE TABLE wa_device (
    device_internal_id bigint PRIMARY KEY REFERENCES devices (internal_id) ON DELETE CASCADE,
    data bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
