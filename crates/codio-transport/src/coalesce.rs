//! Small writes gathered into TLS-record-sized ones.
//!
//! futures-rustls turns every `poll_write` into its own TLS record and socket write, and
//! Yamux writes each frame's 12-byte header and its body separately: a small request cost
//! two records (each with 22 bytes of overhead and an AEAD call) and two system calls, where
//! libp2p-noise gathers everything up to a flush into one message. [`Coalesce`] gathers
//! writes until a flush or a full record (16 KiB, TLS's largest), then writes them at once;
//! a write of a full record or more goes straight through (after what was gathered), so bulk
//! data is not copied. The buffer is released when it drains: a quiet connection holds none.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncWrite};

/// TLS 1.3's largest record payload: writes are gathered up to this.
const RECORD: usize = 16 * 1024;

/// A byte stream whose writes are gathered until a flush or a full record.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    buffer: Vec<u8>,
}

impl<S> Coalesce<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out what was gathered; releases the buffer once empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        while written < self.buffer.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.buffer[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.buffer.drain(..written);
                    return Poll::Pending;
                }
            }
        }
        self.buffer = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buffer.len() + data.len() > RECORD {
            ready!(this.poll_drain(cx))?;
        }
        if data.len() >= RECORD {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.buffer.capacity() == 0 {
            this.buffer.reserve_exact(RECORD);
        }
        let n = data.len().min(RECORD - this.buffer.len());
        this.buffer.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt, io::Cursor};

    use super::*;

    /// A sink that records each write it was given.
    #[derive(Debug, Default)]
    struct Writes(Vec<usize>, Vec<u8>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.0.push(data.len());
            this.1.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn small_writes_go_out_together_large_ones_straight() {
        futures::executor::block_on(async {
            let mut stream = Coalesce::new(Writes::default());
            stream.write_all(&[1; 12]).await.unwrap();
            stream.write_all(&[2; 80]).await.unwrap();
            assert!(stream.inner.0.is_empty(), "nothing written before a flush");
            stream.flush().await.unwrap();
            assert_eq!(stream.inner.0, vec![92]);
            assert_eq!(stream.buffer.capacity(), 0, "released when drained");
            stream.write_all(&[3; 3 * RECORD]).await.unwrap();
            assert_eq!(
                stream.inner.0,
                vec![92, 3 * RECORD],
                "a large write goes straight"
            );
            stream.write_all(&[4; 12]).await.unwrap();
            stream.write_all(&[5; RECORD]).await.unwrap();
            stream.close().await.unwrap();
            // What was gathered goes first, then the full record straight.
            assert_eq!(stream.inner.0, vec![92, 3 * RECORD, 12, RECORD]);
            assert_eq!(stream.inner.1.len(), 92 + 4 * RECORD + 12);
        });
    }

    #[test]
    fn reads_pass_through() {
        futures::executor::block_on(async {
            let mut stream = Coalesce::new(Cursor::new(b"hello".to_vec()));
            let mut read = String::new();
            stream.read_to_string(&mut read).await.unwrap();
            assert_eq!(read, "hello");
        });
    }
}
