//! A quinn connection as a libp2p [`StreamMuxer`]: each libp2p stream is one bidirectional
//! QUIC stream; the peer's budget of concurrent streams is the transport's `max_streams`
//! (quinn refuses more, as QUIC flow control does: the peer cannot even open them).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite, FutureExt, future::BoxFuture};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

type Opening =
    BoxFuture<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>;

/// An established QUIC connection.
pub(crate) struct Connection {
    connection: quinn::Connection,
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
    pub(crate) fn new(connection: quinn::Connection) -> Self {
        Self {
            connection,
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
        Poll::Ready(Ok(Stream::new(send, recv)))
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
        Poll::Ready(Ok(Stream::new(send, recv)))
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
}

impl Stream {
    fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self {
            send,
            recv,
            finished: false,
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
