//! The smallest useful wagate plugin: it counts the events it is given and logs each one's
//! type through the gateway's log. Copy this directory, rename the package, and put your own
//! logic in `on_event`.

#![deny(unsafe_code)]

use wagate_plugin::{Host, Plugin, export_plugin};

/// The plugin's state; the gateway calls it from one thread, so plain fields are enough.
struct Minimal {
    host: Host,
    seen: u64,
}

impl Plugin for Minimal {
    /// Called once at start with the plugin's JSON config (`{}` when it has none). An `Err`
    /// stops the gateway from starting, with this message.
    fn init(config: &str, host: Host) -> Result<Self, String> {
        host.info(&format!("minimal plugin started with config {config}"));
        Ok(Self { host, seen: 0 })
    }

    /// Called with every event's JSON, in order: `{"id", "type", "tenant", "device_id", "seq",
    /// "occurred_at", "data"}`. A slow plugin only delays itself: events that find its queue
    /// full are dropped and counted. An `Err` or a panic is counted, and the next event comes.
    fn on_event(&mut self, event: &str) -> Result<(), String> {
        self.seen += 1;
        // A real plugin would parse the JSON (e.g. with serde_json); this one only peeks.
        let kind = event
            .split("\"type\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("unknown");
        self.host.info(&format!("event #{}: {kind}", self.seen));
        Ok(())
    }
}

export_plugin!(Minimal);
