//! The raw TCP baseline: plain tokio sockets with `TCP_NODELAY`, no encryption, no
//! multiplexing beyond a 4-byte request id.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};

use crate::{
    drive::{RequestRun, drive},
    stats::{BulkClock, BulkRun, Samples},
};

const CHUNK: usize = 64 * 1024;

async fn listener() -> anyhow::Result<(TcpListener, SocketAddr)> {
    listener_on(std::net::Ipv4Addr::LOCALHOST.into()).await
}

/// A listener on `ip`, any port.
pub(crate) async fn listener_on(ip: std::net::IpAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Accepts bulk senders: each connection is read to its end, then its byte count is sent
/// back (what [`send_counted`] waits for).
pub(crate) async fn serve_bulk(listener: TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let n = socket.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            socket.write_all(&total.to_be_bytes()).await?;
            anyhow::Ok(())
        });
    }
}

/// Writes `bytes` bytes to a [`serve_bulk`] server and waits until it confirmed them all.
pub(crate) async fn send_counted(mut socket: TcpStream, bytes: u64) -> anyhow::Result<()> {
    let buf = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        socket.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    finish_counted(socket, bytes).await
}

/// Closes the sending side of a counted transfer of `bytes` bytes and waits for the
/// receiver's count (a big-endian `u64`), which must match.
pub(crate) async fn finish_counted(mut socket: TcpStream, bytes: u64) -> anyhow::Result<()> {
    socket.shutdown().await?;
    let mut ack = [0u8; 8];
    socket.read_exact(&mut ack).await?;
    anyhow::ensure!(u64::from_be_bytes(ack) == bytes, "short transfer");
    Ok(())
}

/// Answers every connection as an echo server (see [`Client`]).
pub(crate) async fn serve_echo(listener: TcpListener) {
    while let Ok((socket, _)) = listener.accept().await {
        let _ = socket.set_nodelay(true);
        tokio::spawn(echo(socket));
    }
}

/// `count` connections to `addr`, `TCP_NODELAY` set.
pub(crate) async fn connect(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Sends `bytes_each` bytes on each of `streams` connections at once; returns bytes/s over
/// all of them, from the first write until the receiver acknowledged the last byte.
pub(crate) async fn bulk(streams: usize, bytes_each: u64) -> anyhow::Result<BulkRun> {
    let (listener, addr) = listener().await?;
    let server = tokio::spawn(serve_bulk(listener));
    let sockets = connect(addr, streams).await?;
    let clock = BulkClock::start();
    let mut senders = Vec::with_capacity(streams);
    for socket in sockets {
        senders.push(tokio::spawn(send_counted(socket, bytes_each)));
    }
    for sender in senders {
        sender.await??;
    }
    let run = clock.finish(bytes_each * streams as u64);
    server.abort();
    Ok(run)
}

/// Echo server: frames of `u32 len ‖ u32 id ‖ payload`, answered in order, flushed when no
/// further request is already buffered.
async fn echo(socket: TcpStream) -> anyhow::Result<()> {
    let (reader, writer) = socket.into_split();
    let mut reader = BufReader::new(reader);
    let mut writer = BufWriter::new(writer);
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; 8];
        if reader.read_exact(&mut head).await.is_err() {
            return Ok(());
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        payload.resize(len, 0);
        reader.read_exact(&mut payload).await?;
        writer.write_all(&head).await?;
        writer.write_all(&payload).await?;
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Vec<u8>>>>>;

/// A pipelining client over one connection.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    requests: mpsc::Sender<(Vec<u8>, oneshot::Sender<Vec<u8>>)>,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (reader, writer) = socket.into_split();
        let pending: Pending = Arc::default();
        let (requests, mut rx) = mpsc::channel::<(Vec<u8>, oneshot::Sender<Vec<u8>>)>(1024);
        let waiting = pending.clone();
        tokio::spawn(async move {
            let mut writer = BufWriter::new(writer);
            let mut id = 0u32;
            while let Some((payload, reply)) = rx.recv().await {
                let mut next = Some((payload, reply));
                // Coalesce whatever is already queued into one write.
                while let Some((payload, reply)) = next.take() {
                    id = id.wrapping_add(1);
                    if let Ok(mut map) = waiting.lock() {
                        map.insert(id, reply);
                    }
                    writer
                        .write_all(&(payload.len() as u32).to_be_bytes())
                        .await?;
                    writer.write_all(&id.to_be_bytes()).await?;
                    writer.write_all(&payload).await?;
                    next = rx.try_recv().ok();
                }
                writer.flush().await?;
            }
            anyhow::Ok(())
        });
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            loop {
                let mut head = [0u8; 8];
                reader.read_exact(&mut head).await?;
                let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let id = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                let mut payload = vec![0u8; len];
                reader.read_exact(&mut payload).await?;
                let reply = pending.lock().ok().and_then(|mut map| map.remove(&id));
                if let Some(reply) = reply {
                    let _ = reply.send(payload);
                }
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        });
        Ok(Self { requests })
    }

    pub(crate) async fn request(&self, payload: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send((payload, reply))
            .await
            .map_err(|_| anyhow::anyhow!("client gone"))?;
        rx.await.context("no response")
    }
}

/// `count` echo requests of `size` bytes, `in_flight` at a time, over one connection.
pub(crate) async fn requests(
    count: usize,
    in_flight: usize,
    size: usize,
) -> anyhow::Result<RequestRun> {
    let (listener, addr) = listener().await?;
    let server = tokio::spawn(async move {
        if let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let _ = echo(socket).await;
        }
    });
    let client = Client::connect(addr).await?;
    let run = drive(count, in_flight, count / 10, move || {
        let client = client.clone();
        async move {
            let answer = client.request(vec![7u8; size]).await?;
            anyhow::ensure!(answer.len() == size, "wrong echo");
            Ok(())
        }
    })
    .await?;
    server.abort();
    Ok(run)
}

/// `count` sequential TCP connects (each closed before the next).
pub(crate) async fn setup(count: usize) -> anyhow::Result<Samples> {
    let (listener, addr) = listener().await?;
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let mut samples = Samples::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        samples.push(t.elapsed());
        drop(socket);
    }
    server.abort();
    Ok(samples)
}
