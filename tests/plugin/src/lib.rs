//! A plugin for wagate's own tests. Its config says what it does with every event:
//! `{"record": "/path"}` appends the event as a line to the file, `{"panic": true}` panics,
//! `{"hold_until": "/path"}` takes no event before that file exists, `{"refuse": "reason"}`
//! refuses to start.
//!
//! With the environment variable `WAGATE_TEST_PLUGIN_OTHER_ABI` set, its entry point reports
//! ABI version 99, to test the gateway's refusal of a mismatched plugin.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use wagate_plugin::{__vtable, ABI_VERSION, Host, Plugin, PluginVTable};

struct Scripted {
    record: Option<std::fs::File>,
    panic: bool,
    /// Every event waits until this file exists: a plugin as slow as the test wants.
    hold_until: Option<std::path::PathBuf>,
}

impl Plugin for Scripted {
    fn init(config: &str, host: Host) -> Result<Self, String> {
        let config: Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        if let Some(reason) = config["refuse"].as_str() {
            return Err(reason.to_string());
        }
        let record = match config["record"].as_str() {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{path}: {e}"))?,
            ),
            None => None,
        };
        host.info("test plugin started");
        Ok(Self {
            record,
            panic: config["panic"].as_bool().unwrap_or(false),
            hold_until: config["hold_until"].as_str().map(Into::into),
        })
    }

    fn on_event(&mut self, event: &str) -> Result<(), String> {
        while let Some(file) = &self.hold_until
            && !file.exists()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.panic {
            panic!("this test plugin panics on every event");
        }
        if let Some(file) = &mut self.record {
            writeln!(file, "{event}").map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

static VTABLE: PluginVTable = __vtable::<Scripted>("test-plugin", "0.0.0");

/// The ABI version reported when `WAGATE_TEST_PLUGIN_OTHER_ABI` is set.
pub const OTHER_ABI: u32 = ABI_VERSION + 98;

static OTHER: PluginVTable = PluginVTable {
    abi_version: OTHER_ABI,
    ..__vtable::<Scripted>("test-plugin", "0.0.0")
};

/// The entry point, written out (rather than `export_plugin!`) so the ABI version can be faked.
#[unsafe(no_mangle)]
pub extern "C" fn wagate_plugin_entry() -> *const PluginVTable {
    if std::env::var_os("WAGATE_TEST_PLUGIN_OTHER_ABI").is_some() {
        &OTHER
    } else {
        &VTABLE
    }
}
