-- Every node keeps the device rows it reads in memory (the status of a device is asked far more
-- often than it changes). A commit that changes what a node keeps of a device (its state, its
-- link, its name) or deletes it says which on `wagate_devices`, as "tenant device" (device ids
-- hold no spaces), so every node drops its copy. Lease renewals touch other columns and say
-- nothing.
CREATE FUNCTION wagate_notify_device_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wagate_devices', OLD.tenant_id::text || ' ' || OLD.device_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_notify_change AFTER UPDATE ON devices
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          OR OLD.jid IS DISTINCT FROM NEW.jid
          OR OLD.display_name IS DISTINCT FROM NEW.display_name)
    EXECUTE FUNCTION wagate_notify_device_change();

CREATE TRIGGER devices_notify_delete AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION wagate_notify_device_change();
