-- A stream that resumes reads one device's events in order after a given one.
CREATE INDEX events_device_seq ON events (tenant_id, device_id, seq);
