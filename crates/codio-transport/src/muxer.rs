//! Yamux (`/yamux/1.0.0`) as a libp2p [`StreamMuxer`], with the knobs that `libp2p-yamux`
//! 0.48 does not expose (it only sets the stream count).
//!
//! Wire-compatible with every Yamux peer; only local choices differ:
//!
//! - **split send size**: `libp2p-yamux` cuts writes into 16 KiB frames, and rust-yamux
//!   flushes the socket after each frame, so every 16 KiB became its own Noise message, its
//!   own seal/open and its own `write(2)`. codio uses frames that fill a Noise message exactly
//!   ([`NOISE_FRAME_PAYLOAD`]), a quarter of the messages and system calls per byte.
//! - **connection receive window**: the ceiling of the auto-tuned per-stream windows summed
//!   over a connection (rust-yamux's default is 1 GiB; codio bounds it, see
//!   [`TransportConfig`](crate::TransportConfig)).
//!
//! The adapter mirrors `libp2p-yamux`'s: inbound streams accepted while the swarm polls the
//! connection wait in a bounded buffer.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use futures::{AsyncRead, AsyncWrite, future, ready};
use libp2p::core::{
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
};

/// The largest cleartext libp2p-noise puts in one message is 64,511 bytes (65,535 less the
/// 1 KiB it reserves for the tag); less the 12-byte Yamux header, a data frame of this size
/// fills one Noise message exactly.
pub const NOISE_FRAME_PAYLOAD: usize = 65_535 - 1_024 - 12;

/// Inbound streams buffered while the swarm is busy; beyond this they are dropped (reset).
/// Equal to rust-yamux's ACK backlog, so well-behaved remotes never hit it.
const MAX_BUFFERED_INBOUND_STREAMS: usize = 256;

/// The Yamux upgrade with codio's tuning.
#[derive(Debug, Clone)]
pub struct YamuxConfig(yamux::Config);

impl YamuxConfig {
    /// `max_streams` concurrent streams, frames of `split_send_size` bytes, stream windows
    /// summing to at most `max_receive_window` bytes per connection (raised to the Yamux
    /// minimum of 256 KiB per stream when lower).
    pub fn new(max_streams: usize, split_send_size: usize, max_receive_window: usize) -> Self {
        let mut config = yamux::Config::default();
        // rust-yamux asserts window >= 256 KiB * streams on each setter, against the other
        // setting's current value: lift the window first, so that any stream count passes.
        let window = max_receive_window.max(max_streams.saturating_mul(256 * 1024));
        config.set_max_connection_receive_window(None);
        config.set_max_num_streams(max_streams);
        config.set_max_connection_receive_window(Some(window));
        config.set_split_send_size(split_send_size.max(1));
        Self(config)
    }
}

impl UpgradeInfo for YamuxConfig {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for YamuxConfig
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(
            io,
            self.0,
            yamux::Mode::Server,
        ))))
    }
}

impl<C> OutboundConnectionUpgrade<C> for YamuxConfig
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(
            io,
            self.0,
            yamux::Mode::Client,
        ))))
    }
}

/// A Yamux connection as a [`StreamMuxer`].
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Inbound streams that arrived while the swarm polled [`StreamMuxer::poll`].
    inbound: VecDeque<Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    fn new(connection: yamux::Connection<C>) -> Self {
        Self {
            connection,
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }

    fn poll_next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<Stream, MuxerError>> {
        let stream = ready!(self.connection.poll_next_inbound(cx))
            .ok_or(MuxerError(yamux::ConnectionError::Closed))?
            .map_err(MuxerError)?;
        Poll::Ready(Ok(Stream(stream)))
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = Stream;
    type Error = MuxerError;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        if let Some(stream) = self.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(result) = self.poll_next_inbound(cx) {
            return Poll::Ready(result);
        }
        self.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let stream = ready!(self.connection.poll_new_outbound(cx)).map_err(MuxerError)?;
        Poll::Ready(Ok(Stream(stream)))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connection.poll_close(cx).map_err(MuxerError)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = ready!(this.poll_next_inbound(cx))?;
        if this.inbound.len() >= MAX_BUFFERED_INBOUND_STREAMS {
            tracing::warn!(stream = %stream.0, "inbound stream buffer full; dropping stream");
            drop(stream);
        } else {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
        // Come back at once: the connection may have more to do, but let others run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A Yamux stream.
#[derive(Debug)]
pub struct Stream(yamux::Stream);

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read_vectored(cx, bufs)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// A Yamux connection error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct MuxerError(yamux::ConnectionError);

impl From<MuxerError> for io::Error {
    fn from(error: MuxerError) -> Self {
        match error.0 {
            yamux::ConnectionError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rust-yamux checks its window against its stream count on every setter: any count,
    /// above or below its default of 512, and any window must give a valid configuration.
    #[test]
    fn any_stream_count_and_window_make_a_config() {
        for streams in [1, 128, 256, 512, 4096] {
            for window in [0, 1 << 20, 96 << 20, 1 << 30] {
                let YamuxConfig(config) = YamuxConfig::new(streams, NOISE_FRAME_PAYLOAD, window);
                let _ = format!("{config:?}");
            }
        }
    }
}
