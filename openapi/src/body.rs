//! Request bodies, read before any handler within [`MAX_BODY`](crate::error::MAX_BODY).
//!
//! A body over the limit is still read to its end, up to [`DRAIN_LIMIT`], and thrown away: a
//! client that is still sending when the 413 comes would otherwise meet a closed connection and
//! never see the answer.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use poem::Body;

use crate::error::MAX_BODY;

/// How much of an oversized body is read and discarded before the connection is given up.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Why a body was not taken.
pub(crate) enum Refused {
    /// Over [`MAX_BODY`].
    TooLarge,
    /// The connection failed while it was read.
    Unreadable(std::io::Error),
}

/// The whole body, when it is at most [`MAX_BODY`] bytes.
pub(crate) async fn read_within_limit(body: Body) -> Result<Bytes, Refused> {
    let mut stream = body.into_bytes_stream();
    let mut kept = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Refused::Unreadable)?;
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= MAX_BODY {
            kept.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_BODY {
        return Err(Refused::TooLarge);
    }
    Ok(kept.freeze())
}
