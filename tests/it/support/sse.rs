//! A reader of `text/event-stream` answers, as a browser's EventSource reads them: messages of
//! `id:`, `event:` and `data:` lines separated by a blank line; comment lines are skipped.

use std::time::Duration;

use serde_json::Value;

/// One message of a stream.
#[derive(Debug, Clone)]
pub struct Message {
    /// `id:`, when it had one.
    pub id: Option<String>,
    /// `event:`.
    pub event: String,
    /// `data:`, parsed as JSON.
    pub data: Value,
}

/// An open stream.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// Comment lines seen so far (keep-alives).
    pub comments: usize,
}

impl EventStream {
    /// Reads the stream of `response`.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The content type the stream was answered with.
    pub fn content_type(&self) -> &str {
        self.response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The next message within `within`; `None` when the stream ended.
    pub async fn next(&mut self, within: Duration) -> Option<Message> {
        tokio::time::timeout(within, self.read_message())
            .await
            .unwrap_or_else(|_| panic!("no message within {within:?}"))
    }

    async fn read_message(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(message) = self.parse(&block) {
                    return Some(message);
                }
                continue;
            }
            let chunk = self.response.chunk().await.expect("the stream reads")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// A message from one block, or `None` for a block of comments only.
    fn parse(&mut self, block: &str) -> Option<Message> {
        let (mut id, mut event, mut data) = (None, None, Vec::new());
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim_start().to_string());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim_start().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if event.is_none() && data.is_empty() {
            return None;
        }
        Some(Message {
            id,
            event: event.unwrap_or_else(|| "message".to_string()),
            data: serde_json::from_str(&data.join("\n")).expect("data is JSON"),
        })
    }
}
