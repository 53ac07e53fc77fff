//! A wagate plugin for servers with no browser: every `qr_refreshed` is printed as a QR code
//! made of terminal characters (scan it from the screen with WhatsApp), every `pair_code_issued`
//! and `logged_in` as a line.
//!
//! Config (optional): `{"quiet_zone": true}` keeps the white border some phone cameras need.

#![deny(unsafe_code)]

use std::io::Write;

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use serde_json::Value;
use wagate_plugin::{Host, Plugin, export_plugin};

/// The plugin's state: how to draw.
pub struct QrTerminal {
    quiet_zone: bool,
}

impl QrTerminal {
    /// What to print for one event, if anything.
    pub fn render(&self, event: &Value) -> Option<String> {
        let device = event["device_id"].as_str().unwrap_or("-");
        let data = &event["data"];
        match event["type"].as_str()? {
            "qr_refreshed" => {
                let code = QrCode::new(data["qr_code"].as_str()?.as_bytes()).ok()?;
                // Dark modules drawn light-on-dark read best in most terminals.
                let image = code
                    .render::<Dense1x2>()
                    .dark_color(Dense1x2::Light)
                    .light_color(Dense1x2::Dark)
                    .quiet_zone(self.quiet_zone)
                    .build();
                Some(format!(
                    "device {device}: scan this QR code with WhatsApp (Linked devices), valid until {}\n{image}\n",
                    data["expires_at"].as_str().unwrap_or("?")
                ))
            }
            "pair_code_issued" => Some(format!(
                "device {device}: enter pairing code {} on the phone",
                data["pair_code"].as_str()?
            )),
            "logged_in" => Some(format!(
                "device {device} logged in as {}",
                data["jid"].as_str()?
            )),
            _ => None,
        }
    }
}

impl Plugin for QrTerminal {
    fn init(config: &str, _host: Host) -> Result<Self, String> {
        let config: Value =
            serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
        Ok(Self {
            quiet_zone: config["quiet_zone"].as_bool().unwrap_or(true),
        })
    }

    fn on_event(&mut self, event: &str) -> Result<(), String> {
        let event: Value =
            serde_json::from_str(event).map_err(|e| format!("event is not JSON: {e}"))?;
        if let Some(text) = self.render(&event) {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").map_err(|e| format!("stdout: {e}"))?;
            out.flush().map_err(|e| format!("stdout: {e}"))?;
        }
        Ok(())
    }
}

export_plugin!(QrTerminal);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_login_is_one_line() {
        let plugin = QrTerminal { quiet_zone: true };
        let line = plugin.render(&json!({
            "type": "logged_in", "device_id": "d1",
            "data": {"jid": "628912344551:3@s.whatsapp.net"}
        }));
        assert_eq!(
            line.unwrap(),
            "device d1 logged in as 628912344551:3@s.whatsapp.net"
        );
    }

    #[test]
    fn a_qr_code_is_drawn_with_block_characters() {
        let plugin = QrTerminal { quiet_zone: false };
        let text = plugin
            .render(&json!({
                "type": "qr_refreshed", "device_id": "d1",
                "data": {"qr_code": "2@abc,def,ghi,jkl", "expires_at": "2026-11-28T06:00:00Z"}
            }))
            .unwrap();
        assert!(text.starts_with("device d1: scan this QR code"));
        assert!(text.lines().count() > 10, "{text}");
        assert!(text.contains('█') || text.contains('▀') || text.contains('▄'));
    }

    #[test]
    fn other_events_print_nothing() {
        let plugin = QrTerminal { quiet_zone: true };
        assert_eq!(
            plugin.render(&json!({"type": "state_changed", "data": {}})),
            None
        );
    }
}
