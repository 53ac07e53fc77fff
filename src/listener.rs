//! The HTTP listener's connections, each closed once its client has taken nothing of what it
//! is sent for a while: an event stream whose reader stopped reading (or a download nobody
//! fetches) would otherwise hold its socket, its buffers and its bus receiver for as long as
//! the client keeps the connection open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a connection may refuse every byte written to it before it is closed.
pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(60);

/// An acceptor whose connections close after a write stalled for `limit`.
pub struct StallGuarded<A> {
    inner: A,
    limit: Duration,
}

impl<A> StallGuarded<A> {
    /// Guards the connections `inner` accepts.
    pub fn new(inner: A, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

/// A connection whose writes go out as they are made (`TCP_NODELAY`): an answer is written in
/// pieces (its head, then its body; an event stream's events one by one), and with Nagle's
/// algorithm a small piece waits for the client's delayed acknowledgement of the previous one,
/// up to 40 ms per answer on a kept-alive connection.
pub trait NoDelay {
    /// Turns Nagle's algorithm off for this connection.
    fn no_delay(&self);
}

impl NoDelay for tokio::net::TcpStream {
    fn no_delay(&self) {
        if let Err(e) = self.set_nodelay(true) {
            // The connection still works, only slower; nothing for the client to act on.
            tracing::debug!("TCP_NODELAY not set on an accepted connection: {e}");
        }
    }
}

impl<A: Acceptor> Acceptor for StallGuarded<A>
where
    A::Io: NoDelay,
{
    type Io = StallGuard<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)>> + Send {
        let limit = self.limit;
        let accepted = self.inner.accept();
        async move {
            let (io, local, remote, scheme) = accepted.await?;
            io.no_delay();
            let io = StallGuard {
                io,
                limit,
                stalled: None,
            };
            Ok((io, local, remote, scheme))
        }
    }
}

/// A connection that fails its pending write once the peer has accepted nothing for `limit`.
pub struct StallGuard<Io> {
    io: Io,
    limit: Duration,
    /// Set when a write first found the peer's window shut; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<Io> StallGuard<Io> {
    /// Passes on a write's outcome; while it is pending, counts the stall against the limit.
    fn judge<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let limit = self.limit;
        let stall = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing written to it for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for StallGuard<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for StallGuard<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_write(cx, buf);
        this.judge(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.judge(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_flush(cx);
        this.judge(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_shutdown(cx);
        this.judge(cx, outcome)
    }
}

#[cfg(test)]
mod tests {
    use poem::listener::{Listener, TcpListener};

    use super::*;

    #[tokio::test]
    async fn accepted_connections_write_without_waiting_for_acknowledgements() {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bound");
        let address = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("a socket address");
        let mut guarded = StallGuarded::new(acceptor, DEFAULT_WRITE_STALL);
        let client = tokio::net::TcpStream::connect(address);
        let (accepted, _client) = tokio::join!(guarded.accept(), client);
        let (io, _, _, _) = accepted.expect("accepted");
        assert!(
            io.io.nodelay().expect("readable option"),
            "TCP_NODELAY is on"
        );
    }
}
