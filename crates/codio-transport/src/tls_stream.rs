//! TLS over a byte stream with rustls' unbuffered API, so that an idle connection holds no
//! buffer.
//!
//! rustls' buffered connection (what futures-rustls drives) keeps a receive buffer of at
//! least 4 KiB for its whole life once anything was read: 4 KiB of every idle connection.
//! Here the buffers are this stream's own: received TLS records wait in one until rustls
//! takes them, encrypted ones in another until the socket takes them, and plaintext a reader
//! did not have room for in a third; each is released as soon as it is empty.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite};
use rustls::{
    CommonState, SupportedCipherSuite,
    client::UnbufferedClientConnection,
    server::UnbufferedServerConnection,
    unbuffered::{
        ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    },
};

/// Bytes asked of the socket per read: a whole TLS record (16 KiB of payload and its
/// overhead) fits.
const READ: usize = 16 * 1024 + 512;

/// Plaintext encrypted per write call, at most.
const MAX_WRITE: usize = 64 * 1024;

/// What TLS 1.3 adds to a record of at most 16 KiB: header, content type, AEAD tag.
const RECORD_OVERHEAD: usize = 5 + 1 + 16;

/// Either side's rustls connection.
enum Side {
    Client(UnbufferedClientConnection),
    Server(UnbufferedServerConnection),
}

impl Side {
    fn common(&self) -> &CommonState {
        match self {
            Side::Client(c) => c,
            Side::Server(s) => s,
        }
    }
}

/// What a call asks of the connection once it can send application data.
#[derive(Clone, Copy)]
enum Action<'a> {
    /// Plaintext is wanted.
    Read,
    /// Encrypt this.
    Write(&'a [u8]),
    /// Send close_notify.
    Close,
    /// Finish the handshake.
    Handshake,
}

/// Where a call got to.
enum Outcome {
    /// Plaintext is waiting in `plain`.
    Data,
    /// More TLS records are needed from the peer.
    Blocked,
    /// Application data can be sent (the handshake is done, or far enough).
    Writable,
    /// This many bytes of plaintext were encrypted into `outgoing`.
    Wrote(usize),
    /// The peer closed its side (close_notify); this side may still send.
    PeerClosed,
    /// Both sides closed.
    Closed,
}

/// A TLS 1.3 session over `C` (see the module documentation).
pub struct TlsStream<C> {
    io: C,
    side: Side,
    /// Received TLS bytes, the first `filled` of them not yet taken by rustls.
    incoming: Vec<u8>,
    filled: usize,
    /// Decrypted bytes not yet read, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Encrypted bytes not yet written, from `out_at`.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The socket reached its end.
    eof: bool,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_sent: bool,
}

impl<C> std::fmt::Debug for TlsStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("suite", &self.negotiated_cipher_suite())
            .field("filled", &self.filled)
            .field("plain", &(self.plain.len() - self.plain_at))
            .field("outgoing", &(self.outgoing.len() - self.out_at))
            .finish_non_exhaustive()
    }
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Where decrypted application data goes: the reader's buffer while it has room (`copied`
/// bytes of it used), then `plain`.
struct Sink<'a> {
    read: &'a mut [u8],
    copied: usize,
    plain: &'a mut Vec<u8>,
}

impl Sink<'_> {
    fn put(&mut self, payload: &[u8]) {
        let room = self.read.len() - self.copied;
        let direct = if self.plain.is_empty() {
            room.min(payload.len())
        } else {
            0
        };
        self.read[self.copied..self.copied + direct].copy_from_slice(&payload[..direct]);
        self.copied += direct;
        self.plain.extend_from_slice(&payload[direct..]);
    }
}

/// Handles one state of the connection; returns how many bytes of `incoming` rustls is done
/// with, and the outcome when the call should stop here (`None`: go on).
fn step<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    action: Action<'_>,
    outgoing: &mut Vec<u8>,
    sink: &mut Sink<'_>,
) -> io::Result<(usize, Option<Outcome>)> {
    let mut discard = status.discard;
    let outcome = match status.state.map_err(invalid)? {
        ConnectionState::ReadTraffic(mut records) => {
            while let Some(record) = records.next_record() {
                let record = record.map_err(invalid)?;
                discard += record.discard;
                sink.put(record.payload);
            }
            matches!(action, Action::Read).then_some(Outcome::Data)
        }
        ConnectionState::EncodeTlsData(mut data) => {
            let start = outgoing.len();
            let needed = match data.encode(&mut []) {
                Ok(_) => 0,
                Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    required_size
                }
                Err(error) => return Err(invalid(error.to_string())),
            };
            outgoing.resize(start + needed, 0);
            if needed > 0 {
                data.encode(&mut outgoing[start..])
                    .map_err(|e| invalid(e.to_string()))?;
            }
            None
        }
        ConnectionState::TransmitTlsData(transmit) => {
            // What was encoded waits in `outgoing`, which is written before anything else
            // goes out and before this stream waits for the peer.
            transmit.done();
            None
        }
        ConnectionState::BlockedHandshake => Some(Outcome::Blocked),
        ConnectionState::WriteTraffic(mut traffic) => match action {
            Action::Read => Some(Outcome::Blocked),
            Action::Handshake => Some(Outcome::Writable),
            Action::Write(data) => {
                let records = data.len().div_ceil(16 * 1024).max(1);
                let start = outgoing.len();
                outgoing.resize(start + data.len() + records * RECORD_OVERHEAD, 0);
                let written = match traffic.encrypt(data, &mut outgoing[start..]) {
                    Ok(n) => n,
                    Err(EncryptError::InsufficientSize(InsufficientSizeError {
                        required_size,
                    })) => {
                        outgoing.resize(start + required_size, 0);
                        traffic
                            .encrypt(data, &mut outgoing[start..])
                            .map_err(|e| invalid(e.to_string()))?
                    }
                    Err(error) => return Err(invalid(error.to_string())),
                };
                outgoing.truncate(start + written);
                Some(Outcome::Wrote(data.len()))
            }
            Action::Close => {
                let start = outgoing.len();
                outgoing.resize(start + 64, 0);
                let written = traffic
                    .queue_close_notify(&mut outgoing[start..])
                    .map_err(|e| invalid(e.to_string()))?;
                outgoing.truncate(start + written);
                Some(Outcome::Wrote(0))
            }
        },
        ConnectionState::PeerClosed => Some(Outcome::PeerClosed),
        ConnectionState::Closed => Some(Outcome::Closed),
        _ => return Err(invalid("unexpected TLS state (early data is not offered)")),
    };
    Ok((discard, outcome))
}

impl<C> TlsStream<C> {
    fn new(io: C, side: Side) -> Self {
        Self {
            io,
            side,
            incoming: Vec::new(),
            filled: 0,
            plain: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            out_at: 0,
            eof: false,
            peer_closed: false,
            close_sent: false,
        }
    }

    /// The cipher suite the handshake settled on.
    pub fn negotiated_cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.side.common().negotiated_cipher_suite()
    }

    /// The stream under TLS.
    pub fn get_ref(&self) -> &C {
        &self.io
    }

    /// Bytes of buffer this stream holds (allocated, used or not).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.incoming.capacity() + self.plain.capacity() + self.outgoing.capacity()
    }

    /// Lets rustls take what it can of `incoming` and acts on the states it reaches, until
    /// `action` is done or needs more from the peer.
    fn drive(&mut self, action: Action<'_>) -> io::Result<Outcome> {
        self.drive_into(action, &mut []).map(|(outcome, _)| outcome)
    }

    /// [`drive`](Self::drive), decrypted data going into `read` first (how much did is
    /// returned), the rest into `plain`.
    fn drive_into(&mut self, action: Action<'_>, read: &mut [u8]) -> io::Result<(Outcome, usize)> {
        let mut sink = Sink {
            read,
            copied: 0,
            plain: &mut self.plain,
        };
        // Bounded: each pass either stops or lets rustls make progress on what it holds
        // (records decrypted, handshake messages encoded); a connection in a sane state
        // stops within a few passes.
        for _ in 0..1024 {
            let incoming = &mut self.incoming[..self.filled];
            let (discard, outcome) = match &mut self.side {
                Side::Client(c) => step(
                    c.process_tls_records(incoming),
                    action,
                    &mut self.outgoing,
                    &mut sink,
                )?,
                Side::Server(s) => step(
                    s.process_tls_records(incoming),
                    action,
                    &mut self.outgoing,
                    &mut sink,
                )?,
            };
            if discard > 0 {
                self.incoming.copy_within(discard..self.filled, 0);
                self.filled -= discard;
            }
            match outcome {
                None => continue,
                Some(Outcome::PeerClosed) => {
                    self.peer_closed = true;
                    // Edge-triggered: a writer goes on to the state that lets it send.
                    if matches!(action, Action::Write(_) | Action::Close) {
                        continue;
                    }
                }
                Some(Outcome::Closed) => self.peer_closed = true,
                Some(Outcome::Writable) if self.side.common().is_handshaking() => {
                    // A server may send before the client's Finished; the handshake is
                    // only done once it arrived.
                    return Ok((Outcome::Blocked, sink.copied));
                }
                Some(_) => {}
            }
            return Ok((outcome.unwrap_or(Outcome::Blocked), sink.copied));
        }
        Err(invalid("TLS connection made no progress"))
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> TlsStream<C> {
    /// Runs the client's handshake over `io`.
    pub(crate) async fn connect(io: C, connection: UnbufferedClientConnection) -> io::Result<Self> {
        let mut stream = Self::new(io, Side::Client(connection));
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// Runs the server's handshake over `io`.
    pub(crate) async fn accept(io: C, connection: UnbufferedServerConnection) -> io::Result<Self> {
        let mut stream = Self::new(io, Side::Server(connection));
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_write_out(cx))?;
            match self.drive(Action::Handshake)? {
                Outcome::Writable => return self.poll_write_out(cx),
                Outcome::Closed | Outcome::PeerClosed => {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
                }
                Outcome::Data | Outcome::Wrote(_) => {}
                Outcome::Blocked => {
                    ready!(self.poll_write_out(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// Reads more TLS bytes from the socket; `Ok(0)` at its end. The receive buffer is
    /// released while nothing is buffered and the socket has nothing.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() < self.filled + READ {
            self.incoming.resize(self.filled + READ, 0);
        }
        match Pin::new(&mut self.io).poll_read(cx, &mut self.incoming[self.filled..]) {
            Poll::Ready(Ok(n)) => {
                self.filled += n;
                if n == 0 {
                    self.eof = true;
                }
                Poll::Ready(Ok(n))
            }
            other => {
                self.release_incoming();
                other
            }
        }
    }

    /// Releases the receive buffer when it holds nothing rustls still needs.
    fn release_incoming(&mut self) {
        if self.filled == 0 {
            self.incoming = Vec::new();
        }
    }

    /// Writes out what is encrypted; the buffer is released once written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.len().min(this.plain.len() - this.plain_at);
                buf[..n].copy_from_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if this.peer_closed {
                this.release_incoming();
                return Poll::Ready(Ok(0));
            }
            // Answers rustls owes the peer (a key update) go out with whatever comes next;
            // a full socket does not stop reading.
            if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(e));
            }
            match this.drive_into(Action::Read, buf)? {
                (Outcome::Data, copied) if copied > 0 => return Poll::Ready(Ok(copied)),
                (Outcome::Data, _) => {}
                (Outcome::Closed | Outcome::PeerClosed, _) => {
                    this.release_incoming();
                    return Poll::Ready(Ok(0));
                }
                (Outcome::Blocked | Outcome::Writable | Outcome::Wrote(_), _) => {
                    if this.eof {
                        // The socket ended without close_notify: data may be missing.
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed the connection without sending TLS close_notify",
                        )));
                    }
                    ready!(this.poll_fill(cx))?;
                }
            }
        }
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was encrypted before goes out first: at most one call's worth waits here.
        ready!(this.poll_write_out(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        match this.drive(Action::Write(data))? {
            Outcome::Wrote(n) => {
                // Accepted: written now as far as the socket takes it, the rest before the
                // next write or at the flush.
                if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n))
            }
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS connection cannot send application data",
            ))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        if !this.close_sent {
            this.close_sent = true;
            if let Err(e) = this.drive(Action::Close) {
                tracing::debug!(%e, "no close_notify sent");
            }
            ready!(this.poll_write_out(cx))?;
        }
        Pin::new(&mut this.io).poll_close(cx)
    }
}
