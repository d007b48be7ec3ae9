//! The sockets of mDNS: one bound to `0.0.0.0:5353` that joins the group on every IPv4
//! interface but loopback (as they come and go, watched with `if-watch`), and one that
//! sends to the group out of each of them. IPv4 only, as libp2p-mdns by default.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    task::{Context, Poll},
};

use futures::StreamExt;
use if_watch::{IfEvent, IpNet, tokio::IfWatcher};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::{io::ReadBuf, net::UdpSocket};

/// The mDNS IPv4 group and port.
pub(crate) const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
pub(crate) const PORT: u16 = 5353;

/// The largest mDNS packet read (RFC 6762 allows 9,000 bytes); longer ones arrive cut and
/// fail to parse.
pub(crate) const MAX_PACKET: usize = 9_000;

/// The sockets and the interfaces they serve.
#[derive(Debug)]
pub(crate) struct Io {
    receiver: UdpSocket,
    sender: UdpSocket,
    watcher: IfWatcher,
    interfaces: Vec<Ipv4Addr>,
}

impl Io {
    /// Opens the sockets (the interfaces join as the watcher reports them).
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            receiver: receiver()?,
            sender: sender()?,
            watcher: IfWatcher::new()?,
            interfaces: Vec::new(),
        })
    }

    /// Interfaces that came up since the last call (joined), after dropping those that went
    /// down; `true` if one came up.
    pub(crate) fn poll_interfaces(&mut self, cx: &mut Context<'_>) -> bool {
        let mut up = false;
        while let Poll::Ready(Some(event)) = self.watcher.poll_next_unpin(cx) {
            match event {
                Ok(IfEvent::Up(IpNet::V4(net))) if !net.addr().is_loopback() => {
                    up |= self.join(net.addr());
                }
                Ok(IfEvent::Down(IpNet::V4(net))) => self.leave(net.addr()),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "mDNS: interface watch failed"),
            }
        }
        up
    }

    fn join(&mut self, interface: Ipv4Addr) -> bool {
        if self.interfaces.contains(&interface) {
            return false;
        }
        match self.receiver.join_multicast_v4(GROUP, interface) {
            Ok(()) => {}
            // A second address of an interface served already: sending out of it too would
            // announce this node twice, once from an address others may not expect.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return false,
            Err(error) => {
                tracing::debug!(%interface, %error, "mDNS: cannot join the group");
                return false;
            }
        }
        tracing::debug!(%interface, "mDNS: serving interface");
        self.interfaces.push(interface);
        true
    }

    fn leave(&mut self, interface: Ipv4Addr) {
        if let Some(i) = self.interfaces.iter().position(|a| *a == interface) {
            self.interfaces.swap_remove(i);
            let _ = self.receiver.leave_multicast_v4(GROUP, interface);
        }
    }

    /// Sends `packet` to the group out of every interface; a full send buffer drops it
    /// (mDNS repeats itself).
    pub(crate) fn send(&self, packet: &[u8]) {
        let group = SocketAddr::V4(SocketAddrV4::new(GROUP, PORT));
        for interface in &self.interfaces {
            let sent = SockRef::from(&self.sender)
                .set_multicast_if_v4(interface)
                .and_then(|()| self.sender.try_send_to(packet, group));
            if let Err(error) = sent {
                tracing::debug!(%interface, %error, "mDNS: send failed");
            }
        }
    }

    /// A packet and its sender's IP, if one is waiting.
    pub(crate) fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, IpAddr)>> {
        let mut buf = ReadBuf::new(buf);
        let from = std::task::ready!(self.receiver.poll_recv_from(cx, &mut buf))?;
        Poll::Ready(Ok((buf.filled().len(), from.ip())))
    }
}

/// `0.0.0.0:5353`, shared with every other mDNS responder on the host.
fn receiver() -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).into())?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// An ephemeral port for sending to the group (looped back to this host's other nodes).
fn sender() -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(255)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}
