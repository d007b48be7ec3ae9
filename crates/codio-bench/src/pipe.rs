//! The ceiling of an encrypted stream on this machine: raw TCP carrying 64 KiB records that
//! the sending task seals with ring's AEAD and the receiving task opens, nothing else (no
//! handshake, no multiplexing, a 4-byte length per record). What a secure transport on these
//! cores can at best do, with AES-128-GCM (TLS 1.3's usual choice here) or
//! ChaCha20-Poly1305 (the only cipher libp2p's Noise offers).

use anyhow::Context as _;
use ring::aead::{
    AES_128_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, MAX_TAG_LEN, Nonce, UnboundKey,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use crate::stats::{BulkClock, BulkRun};

/// Cleartext bytes per record (TLS 1.3 records are at most 16 KiB; Noise frames 64 KiB).
const RECORD: usize = 64 * 1024;
const HEADER: usize = 4;

/// The AEAD a pipe seals its records with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cipher {
    Aes128Gcm,
    ChaCha20Poly1305,
}

impl Cipher {
    fn key(self) -> anyhow::Result<LessSafeKey> {
        let (algorithm, len) = match self {
            Cipher::Aes128Gcm => (&AES_128_GCM, 16),
            Cipher::ChaCha20Poly1305 => (&CHACHA20_POLY1305, 32),
        };
        let key = UnboundKey::new(algorithm, &[7u8; 32][..len])
            .map_err(|_| anyhow::anyhow!("bad key length"))?;
        Ok(LessSafeKey::new(key))
    }
}

/// Record nonces: a 64-bit counter, as TLS 1.3 and Noise do.
#[derive(Debug, Default)]
struct Nonces(u64);

impl Nonces {
    fn next(&mut self) -> Nonce {
        self.0 += 1;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.0.to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    }
}

/// Sends `bytes` in sealed records, then reads the receiver's count.
async fn send(mut socket: TcpStream, cipher: Cipher, bytes: u64) -> anyhow::Result<()> {
    let key = cipher.key()?;
    let mut nonces = Nonces::default();
    let mut record = vec![0u8; HEADER + RECORD + MAX_TAG_LEN];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(RECORD as u64) as usize;
        record[..HEADER].copy_from_slice(&(n as u32).to_be_bytes());
        let (body, rest) = record[HEADER..].split_at_mut(n);
        let tag = key
            .seal_in_place_separate_tag(nonces.next(), Aad::empty(), body)
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        rest[..MAX_TAG_LEN].copy_from_slice(tag.as_ref());
        socket
            .write_all(&record[..HEADER + n + MAX_TAG_LEN])
            .await?;
        left -= n as u64;
    }
    crate::raw::finish_counted(socket, bytes).await
}

/// Opens records until the sender closes; answers with the cleartext byte count.
async fn receive(socket: TcpStream, cipher: Cipher) -> anyhow::Result<()> {
    let key = cipher.key()?;
    let mut nonces = Nonces::default();
    let mut reader = BufReader::with_capacity(2 * (HEADER + RECORD + MAX_TAG_LEN), socket);
    let mut record = vec![0u8; RECORD + MAX_TAG_LEN];
    let mut total = 0u64;
    loop {
        let mut header = [0u8; HEADER];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let n = u32::from_be_bytes(header) as usize;
        anyhow::ensure!(n <= RECORD, "record of {n} bytes");
        let sealed = &mut record[..n + MAX_TAG_LEN];
        reader.read_exact(sealed).await?;
        let opened = key
            .open_in_place(nonces.next(), Aad::empty(), sealed)
            .map_err(|_| anyhow::anyhow!("a record failed to open"))?;
        total += opened.len() as u64;
    }
    reader.get_mut().write_all(&total.to_be_bytes()).await?;
    Ok(())
}

/// `bytes_each` bytes on each of `streams` connections at once, each its own encrypted pipe;
/// timed from the first record until every receiver confirmed its count.
pub(crate) async fn bulk(
    cipher: Cipher,
    streams: usize,
    bytes_each: u64,
) -> anyhow::Result<BulkRun> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let mut receivers = Vec::with_capacity(streams);
        for _ in 0..streams {
            let (socket, _) = listener.accept().await?;
            socket.set_nodelay(true)?;
            receivers.push(tokio::spawn(receive(socket, cipher)));
        }
        for receiver in receivers {
            receiver.await??;
        }
        anyhow::Ok(())
    });
    let sockets = crate::raw::connect(addr, streams).await?;
    let clock = BulkClock::start();
    let senders: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(send(socket, cipher, bytes_each)))
        .collect();
    for sender in senders {
        sender.await.context("sender task")??;
    }
    let run = clock.finish(bytes_each * streams as u64);
    server.await??;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record opens (a wrong nonce or tag would fail the transfer) and the count of
    /// cleartext bytes, with a short last record, comes back.
    #[tokio::test]
    async fn records_are_sealed_opened_and_counted() -> anyhow::Result<()> {
        for cipher in [Cipher::Aes128Gcm, Cipher::ChaCha20Poly1305] {
            let run = bulk(cipher, 2, 3 * RECORD as u64 + 5).await?;
            assert!(run.bytes_per_s > 0.0);
        }
        Ok(())
    }
}
