//! WhatsApp's framing on a websocket: an optional edge-routing pre-intro and the `WA` connection
//! header on the client's first bytes, then 3-byte big-endian length-prefixed frames; after the
//! handshake, each frame is one AES-GCM-sealed binary node with a per-direction counter.

use thiserror::Error;
use wacore_binary::Node;
use wacore_binary::consts::WA_CONN_HEADER;
use wacore_noise::NoiseCipher;
use wacore_noise::framing::FrameDecoder;

/// The client's bytes broke the wire format.
#[derive(Debug, Error)]
pub enum WireError {
    /// The connection did not start with WhatsApp's header.
    #[error("connection header {0:02x?} is not WhatsApp's")]
    BadHeader(Vec<u8>),
    /// A frame did not decrypt with the session key.
    #[error("frame {counter} did not decrypt: {detail}")]
    Decrypt {
        /// The frame's counter in its direction.
        counter: u32,
        /// What the cipher said.
        detail: String,
    },
    /// A frame decrypted but is not a binary node.
    #[error("frame is not a binary node: {0}")]
    Node(String),
    /// More than 2^32 frames on one socket.
    #[error("frame counter exhausted")]
    CounterExhausted,
}

/// Splits the client's byte stream into frames, consuming the connection header first.
pub struct FrameReader {
    header_done: bool,
    pending: Vec<u8>,
    frames: FrameDecoder,
}

const EDGE_ROUTING_MAGIC: &[u8; 4] = b"ED\x00\x01";

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    /// A reader at the start of a connection.
    pub fn new() -> Self {
        Self {
            header_done: false,
            pending: Vec::new(),
            frames: FrameDecoder::new(),
        }
    }

    /// Feeds bytes from one websocket message.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), WireError> {
        if self.header_done {
            self.frames.feed(data);
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let mut at = 0;
        if self.pending.starts_with(EDGE_ROUTING_MAGIC) {
            if self.pending.len() < 7 {
                return Ok(());
            }
            let len = u32::from_be_bytes([0, self.pending[4], self.pending[5], self.pending[6]]);
            at = 7 + len as usize;
        } else if self.pending.len() >= 4 && !self.pending.starts_with(b"WA") {
            return Err(WireError::BadHeader(self.pending[..4].to_vec()));
        }
        if self.pending.len() < at + WA_CONN_HEADER.len() {
            return Ok(());
        }
        let header = &self.pending[at..at + WA_CONN_HEADER.len()];
        // The last header byte is the dictionary version; only the magic must match.
        if header[..3] != WA_CONN_HEADER[..3] {
            return Err(WireError::BadHeader(header.to_vec()));
        }
        self.header_done = true;
        self.frames.feed(&self.pending[at + WA_CONN_HEADER.len()..]);
        self.pending = Vec::new();
        Ok(())
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        self.frames.decode_frame().map(|b| b.to_vec())
    }
}

/// Prefixes a payload with its 3-byte length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(3 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(payload);
    out
}

/// One direction of an established session's cipher, with its frame counter.
pub struct SealedDirection {
    cipher: NoiseCipher,
    counter: u32,
}

impl SealedDirection {
    /// A direction whose first frame carries counter 0.
    pub fn new(cipher: NoiseCipher) -> Self {
        Self { cipher, counter: 0 }
    }

    fn next_counter(&mut self) -> Result<u32, WireError> {
        let c = self.counter;
        self.counter = c.checked_add(1).ok_or(WireError::CounterExhausted)?;
        Ok(c)
    }

    /// Marshals, seals and frames a node.
    pub fn seal(&mut self, node: &Node) -> Result<Vec<u8>, WireError> {
        let plain = wacore_binary::marshal(node).map_err(|e| WireError::Node(e.to_string()))?;
        let counter = self.next_counter()?;
        let sealed = self
            .cipher
            .encrypt_with_counter(counter, &plain)
            .map_err(|e| WireError::Decrypt {
                counter,
                detail: e.to_string(),
            })?;
        Ok(frame(&sealed))
    }

    /// Opens a frame and decodes the node inside.
    pub fn open(&mut self, mut frame: Vec<u8>) -> Result<Node, WireError> {
        let counter = self.next_counter()?;
        self.cipher
            .decrypt_in_place_with_counter(counter, &mut frame)
            .map_err(|e| WireError::Decrypt {
                counter,
                detail: e.to_string(),
            })?;
        let plain =
            wacore_binary::util::unpack(&frame).map_err(|e| WireError::Node(e.to_string()))?;
        let node = wacore_binary::marshal::unmarshal_ref(&plain)
            .map_err(|e| WireError::Node(e.to_string()))?;
        Ok(node.to_owned())
    }
}
