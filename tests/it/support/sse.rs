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

/// A stream opened by a client that reads its head and then nothing more, on a connection
/// with a small receive window, as a stuck browser tab or a dead proxy does.
pub struct StalledReader {
    socket: tokio::net::TcpStream,
}

impl StalledReader {
    /// Reads everything still buffered for this connection until the gateway closes it;
    /// `None` if it is still open after `within`.
    pub async fn read_until_closed(&mut self, within: Duration) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let mut chunk = vec![0; 64 * 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(rest),
                Ok(Ok(n)) => rest.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

impl super::Api {
    /// Opens the event stream at `path` with this client's credentials and reads only the
    /// answer's head (`Connection: close`: the connection ends with the answer).
    pub async fn stalled_stream(&self, path: &str) -> StalledReader {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = self
            .request(reqwest::Method::GET, path)
            .build()
            .expect("a request");
        let url = request.url();
        let address = format!(
            "{}:{}",
            url.host_str().expect("a host"),
            url.port().expect("a port")
        );
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        // Before connecting, so the window the gateway sees is this small from the start.
        socket.set_recv_buffer_size(4096).expect("a receive buffer");
        let mut socket = socket
            .connect(address.parse().expect("an address"))
            .await
            .expect("connects");
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
        for (name, value) in request.headers() {
            head.push_str(&format!(
                "{name}: {}\r\n",
                value.to_str().expect("an ASCII header")
            ));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).await.expect("sent");
        let mut read = Vec::new();
        let mut chunk = vec![0; 4096];
        while !read.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut chunk).await.expect("the answer's head");
            assert!(n > 0, "the gateway closed before answering");
            read.extend_from_slice(&chunk[..n]);
        }
        StalledReader { socket }
    }
}
