//! A quinn connection as a libp2p [`StreamMuxer`]: each libp2p stream is one bidirectional
//! QUIC stream; the peer's budget of concurrent streams is the transport's `max_streams`
//! (quinn refuses more, as QUIC flow control does: the peer cannot even open them).
//!
//! quinn sets up the state of every stream the peer may open at once when it grants them
//! (21 KiB per connection for libp2p's usual 256), so a connection starts with
//! [`INITIAL_STREAMS`] and doubles the grant, up to the budget, whenever the peer's open
//! streams reach three quarters of it: an idle connection pays for 32 streams, a busy one
//! for what it uses, and the worst case is the budget, as before.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite, FutureExt, future::BoxFuture};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

type Opening =
    BoxFuture<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>;

/// Concurrent streams a peer may open on a new connection (raised as it uses them).
pub(crate) const INITIAL_STREAMS: u32 = 32;

/// An established QUIC connection.
pub(crate) struct Connection {
    connection: quinn::Connection,
    /// The peer's streams open now (each [`Stream`] it opened holds a count until dropped).
    peer_streams: Arc<AtomicUsize>,
    /// Concurrent streams the peer may open now, and at most.
    granted: u32,
    budget: u32,
    inbound: Option<Opening>,
    outbound: Option<Opening>,
    closing: Option<BoxFuture<'static, quinn::ConnectionError>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.connection.remote_address())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// `connection`, whose peer was granted `min(INITIAL_STREAMS, budget)` streams by its
    /// transport configuration and may get up to `budget`.
    pub(crate) fn new(connection: quinn::Connection, budget: u32) -> Self {
        Self {
            connection,
            peer_streams: Arc::new(AtomicUsize::new(0)),
            granted: INITIAL_STREAMS.min(budget),
            budget,
            inbound: None,
            outbound: None,
            closing: None,
        }
    }
}

/// A QUIC connection error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct ConnectionError(#[from] quinn::ConnectionError);

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        let accepting = this.inbound.get_or_insert_with(|| {
            let connection = connection.clone();
            async move { connection.accept_bi().await }.boxed()
        });
        let result = ready!(accepting.poll_unpin(cx));
        this.inbound = None;
        let (send, recv) = result?;
        let open = this.peer_streams.fetch_add(1, Ordering::Relaxed) + 1;
        if open * 4 >= this.granted as usize * 3 && this.granted < this.budget {
            this.granted = this.granted.saturating_mul(2).min(this.budget);
            this.connection
                .set_max_concurrent_bi_streams(this.granted.into());
        }
        Poll::Ready(Ok(Stream::new(send, recv, Some(this.peer_streams.clone()))))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        let opening = this.outbound.get_or_insert_with(|| {
            let connection = connection.clone();
            async move { connection.open_bi().await }.boxed()
        });
        let result = ready!(opening.poll_unpin(cx));
        this.outbound = None;
        let (send, recv) = result?;
        Poll::Ready(Ok(Stream::new(send, recv, None)))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let connection = &this.connection;
        let closing = this.closing.get_or_insert_with(|| {
            connection.close(quinn::VarInt::from_u32(0), b"");
            let connection = connection.clone();
            async move { connection.closed().await }.boxed()
        });
        match ready!(closing.poll_unpin(cx)) {
            quinn::ConnectionError::LocallyClosed => Poll::Ready(Ok(())),
            error => Poll::Ready(Err(error.into())),
        }
    }

    fn poll(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        // Nothing to report: a lost connection ends the pending inbound stream with its error.
        Poll::Pending
    }
}

/// One bidirectional QUIC stream.
#[derive(Debug)]
pub(crate) struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// The sending half was finished: closing again succeeds at once (quinn refuses a
    /// second `finish`, and protocols close a stream more than once).
    finished: bool,
    /// The connection's count of the peer's open streams, for a stream the peer opened.
    count: Option<Arc<AtomicUsize>>,
}

impl Stream {
    /// A stream of `send` and `recv`; `count` is the connection's count of the peer's open
    /// streams for a stream the peer opened (decremented when the stream is dropped).
    fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        count: Option<Arc<AtomicUsize>>,
    ) -> Self {
        Self {
            send,
            recv,
            finished: false,
            count,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(count) = &self.count {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.finished {
            return Poll::Ready(Ok(()));
        }
        ready!(AsyncWrite::poll_close(Pin::new(&mut self.send), cx))?;
        self.finished = true;
        Poll::Ready(Ok(()))
    }
}
