-- A device whose account confirms links with a passkey waits in `passkey_required` for the
-- assertion between the scan (or code) and `logged_in`.
ALTER TABLE devices DROP CONSTRAINT devices_state_check;
ALTER TABLE devices ADD CONSTRAINT devices_state_check
    CHECK (state IN ('disconnected', 'connecting', 'connected', 'passkey_required', 'logged_in'));
