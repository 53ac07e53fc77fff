//! A wagate plugin that publishes every event to NATS JetStream on
//! `<prefix>.<tenant>.<device_id>.<type>`, with the event id as the message id, so JetStream
//! drops a re-sent event (`Nats-Msg-Id` de-duplication).
//!
//! It runs async-nats on a runtime of its own, so the gateway's runtime never carries it. The
//! client reconnects by itself; a publish that fails while NATS is away is retried until
//! `retry_for_ms` runs out, so a NATS restart costs no event (the gateway's queue holds the
//! events that arrive meanwhile, up to its size).
//!
//! Config (all optional):
//! `{"url": "nats://127.0.0.1:4222", "subject_prefix": "wagate", "stream": "WAGATE",
//!   "publish_timeout_ms": 5000, "retry_for_ms": 60000}`.
//! With `"stream": null` the plugin does not create a stream; one must capture the subjects.

#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use serde_json::Value;
use wagate_plugin::{Host, Plugin, export_plugin};

/// The plugin's settings, from its JSON config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The NATS server.
    pub url: String,
    /// The first subject token.
    pub subject_prefix: String,
    /// The stream to create (if missing) over `<prefix>.>`; `None`: leave streams alone.
    pub stream: Option<String>,
    /// How long one publish waits for JetStream's acknowledgement.
    pub publish_timeout: Duration,
    /// How long an event is retried before it counts as failed.
    pub retry_for: Duration,
}

impl Settings {
    /// Reads the config, with defaults for what it leaves out.
    pub fn parse(config: &str) -> Result<Self, String> {
        let config: Value =
            serde_json::from_str(config).map_err(|e| format!("the config is not JSON: {e}"))?;
        let text = |key: &str, default: &str| -> Result<String, String> {
            match &config[key] {
                Value::Null => Ok(default.to_string()),
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                other => Err(format!("`{key}` must be a non-empty string, not {other}")),
            }
        };
        let millis = |key: &str, default: u64| -> Result<Duration, String> {
            match &config[key] {
                Value::Null => Ok(Duration::from_millis(default)),
                v => v
                    .as_u64()
                    .map(Duration::from_millis)
                    .ok_or_else(|| format!("`{key}` must be a number of milliseconds, not {v}")),
            }
        };
        let stream = match config.get("stream") {
            None => Some("WAGATE".to_string()),
            Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(other) => return Err(format!("`stream` must be a name or null, not {other}")),
        };
        let subject_prefix = text("subject_prefix", "wagate")?;
        if subject_prefix.contains([' ', '*', '>']) || subject_prefix.ends_with('.') {
            return Err(format!(
                "`subject_prefix` {subject_prefix:?} is not a NATS subject prefix"
            ));
        }
        Ok(Self {
            url: text("url", "nats://127.0.0.1:4222")?,
            subject_prefix,
            stream,
            publish_timeout: millis("publish_timeout_ms", 5000)?,
            retry_for: millis("retry_for_ms", 60_000)?,
        })
    }
}

/// One subject token from a value: `.` separates tokens and ` `, `*`, `>` are special, so they
/// are written as `%2E`, `%20`, `%2A`, `%3E` (and `%` as `%25`).
pub fn token(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            ' ' => out.push_str("%20"),
            '*' => out.push_str("%2A"),
            '>' => out.push_str("%3E"),
            c => out.push(c),
        }
    }
    out
}

/// The subject of an event: `<prefix>.<tenant>.<device_id>.<type>` (`_` for no device).
pub fn subject(prefix: &str, event: &Value) -> Result<String, String> {
    let field = |key: &str| {
        event[key]
            .as_str()
            .ok_or_else(|| format!("the event has no `{key}`"))
    };
    let device = event["device_id"].as_str().unwrap_or("_");
    Ok(format!(
        "{prefix}.{}.{}.{}",
        token(field("tenant")?),
        token(device),
        token(field("type")?)
    ))
}

/// The running plugin: its runtime, client and settings.
pub struct Nats {
    settings: Settings,
    host: Host,
    runtime: tokio::runtime::Runtime,
    jetstream: jetstream::Context,
    stream_ready: bool,
}

impl Nats {
    async fn publish_once(
        jetstream: &jetstream::Context,
        settings: &Settings,
        stream_ready: &mut bool,
        subject: &str,
        id: &str,
        payload: &[u8],
    ) -> Result<(), String> {
        if !*stream_ready {
            if let Some(name) = &settings.stream {
                let config = stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{}.>", settings.subject_prefix)],
                    ..Default::default()
                };
                tokio::time::timeout(
                    settings.publish_timeout,
                    jetstream.get_or_create_stream(config),
                )
                .await
                .map_err(|_| format!("stream {name} not ready in time"))?
                .map_err(|e| format!("stream {name}: {e}"))?;
            }
            *stream_ready = true;
        }
        let publish = PublishMessage::build()
            .message_id(id)
            .payload(payload.to_vec().into());
        let ack = jetstream
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(|e| format!("publish to {subject}: {e}"))?;
        tokio::time::timeout(settings.publish_timeout, ack)
            .await
            .map_err(|_| format!("no acknowledgement for {subject} in time"))?
            .map_err(|e| format!("publish to {subject}: {e}"))?;
        Ok(())
    }
}

impl Plugin for Nats {
    fn init(config: &str, host: Host) -> Result<Self, String> {
        let settings = Settings::parse(config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wagate-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("its runtime did not start: {e}"))?;
        let events = host;
        let options = async_nats::ConnectOptions::new()
            .name("wagate")
            // The gateway may start before NATS: connect in the background and keep trying.
            .retry_on_initial_connect()
            .event_callback(move |event| async move {
                events.info(&format!("nats: {event}"));
            });
        let client = runtime
            .block_on(options.connect(settings.url.as_str()))
            .map_err(|e| format!("cannot use NATS at {}: {e}", settings.url))?;
        host.info(&format!(
            "publishing to {} as {}.<tenant>.<device_id>.<type>",
            settings.url, settings.subject_prefix
        ));
        // The JetStream context spawns onto the current runtime: make it this plugin's own.
        let jetstream = {
            let _inside = runtime.enter();
            jetstream::new(client)
        };
        Ok(Self {
            jetstream,
            settings,
            host,
            runtime,
            stream_ready: false,
        })
    }

    fn on_event(&mut self, event: &str) -> Result<(), String> {
        let parsed: Value =
            serde_json::from_str(event).map_err(|e| format!("the event is not JSON: {e}"))?;
        let subject = subject(&self.settings.subject_prefix, &parsed)?;
        let id = parsed["id"].as_str().ok_or("the event has no `id`")?;
        let give_up = Instant::now() + self.settings.retry_for;
        let mut pause = Duration::from_millis(100);
        let mut warned = false;
        loop {
            let sent = self.runtime.block_on(Self::publish_once(
                &self.jetstream,
                &self.settings,
                &mut self.stream_ready,
                &subject,
                id,
                event.as_bytes(),
            ));
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() + pause < give_up => {
                    if !warned {
                        self.host
                            .warn(&format!("{e}; retrying until NATS takes it"));
                        warned = true;
                    }
                    // A failed stream set-up is tried again with the event.
                    self.stream_ready = self.stream_ready && !e.starts_with("stream");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

export_plugin!(Nats);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subjects_name_tenant_device_and_type() {
        let event = json!({"tenant": "t-1", "device_id": "my.phone", "type": "logged_in"});
        assert_eq!(
            subject("wagate", &event).unwrap(),
            "wagate.t-1.my%2Ephone.logged_in"
        );
    }

    #[test]
    fn the_config_has_defaults_and_refuses_nonsense() {
        let defaults = Settings::parse("{}").unwrap();
        assert_eq!(defaults.url, "nats://127.0.0.1:4222");
        assert_eq!(defaults.stream.as_deref(), Some("WAGATE"));
        assert_eq!(Settings::parse(r#"{"stream": null}"#).unwrap().stream, None);
        for bad in [
            r#"{"url": 5}"#,
            r#"{"retry_for_ms": "x"}"#,
            r#"{"subject_prefix": "a.*"}"#,
            "nope",
        ] {
            assert!(Settings::parse(bad).is_err(), "{bad}");
        }
    }
}
