//! mDNS packets of the libp2p discovery spec (`discovery/mdns.md`): a query is a `PTR`
//! question for the service name; an answer is a `PTR` record naming the peer, with `TXT`
//! records `dnsaddr=<multiaddr>/p2p/<peer id>` for its addresses. Parsing is bounded: a
//! packet yields at most [`MAX_PEERS_PER_PACKET`] peers and each peer at most the caller's
//! number of addresses, whatever the packet holds.

use std::{net::IpAddr, time::Duration};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, Record, RecordType, rdata},
};
use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// Peers read from one packet at most (a packet of the spec carries one; a few answer for
/// several nodes behind one responder).
pub(crate) const MAX_PEERS_PER_PACKET: usize = 16;

/// What a packet says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Packet {
    /// Someone asks for the service's peers.
    Query,
    /// Peers of the service and where they listen.
    Answer(Vec<Announced>),
}

/// One peer of an answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Announced {
    pub(crate) peer_id: PeerId,
    /// Its addresses, with the sender's IP in place of the announced one (as libp2p-mdns
    /// does): an answer can only point at the host that sent it.
    pub(crate) addresses: Vec<Multiaddr>,
    pub(crate) ttl: Duration,
}

/// A query for `service`'s peers.
pub(crate) fn query(service: &Name) -> Option<Vec<u8>> {
    let mut message = Message::new(0, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(service.clone(), RecordType::PTR));
    message.to_vec().ok()
}

/// An answer announcing `peer_id` at `addresses` for `ttl`; `instance` names the peer
/// under the service (random, chosen once per node).
pub(crate) fn answer(
    service: &Name,
    instance: &Name,
    peer_id: PeerId,
    addresses: &[Multiaddr],
    ttl: Duration,
) -> Option<Vec<u8>> {
    let ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    message.metadata.authoritative = true;
    let pointer = RData::PTR(rdata::PTR(instance.clone()));
    message.add_answer(Record::from_rdata(service.clone(), ttl, pointer));
    for address in addresses {
        let text = format!("dnsaddr={address}/p2p/{peer_id}");
        // A character string holds 255 bytes at most; a longer address is not announced.
        if text.len() > 255 {
            continue;
        }
        let txt = RData::TXT(rdata::TXT::new(vec![text]));
        message.add_additional(Record::from_rdata(instance.clone(), ttl, txt));
    }
    message.to_vec().ok()
}

/// Reads a packet from `source`; `None` for what is not ours (other services, malformed).
pub(crate) fn parse(
    bytes: &[u8],
    source: IpAddr,
    service: &Name,
    max_addresses: usize,
) -> Option<Packet> {
    let message = Message::from_vec(bytes).ok()?;
    if message.metadata.message_type == MessageType::Query {
        let asks = message
            .queries
            .iter()
            .any(|q| q.name() == service && q.query_type() == RecordType::PTR);
        return asks.then_some(Packet::Query);
    }
    let announced = message
        .answers
        .iter()
        .filter(|record| record.name == *service)
        .filter_map(|record| match &record.data {
            RData::PTR(rdata::PTR(instance)) => Some((instance, record.ttl)),
            _ => None,
        })
        .take(MAX_PEERS_PER_PACKET)
        .filter_map(|(instance, ttl)| announced(&message, instance, ttl, source, max_addresses))
        .collect();
    Some(Packet::Answer(announced))
}

/// The peer `instance` names in `message`: its `TXT` records (answers or additionals) that
/// all name one peer id.
fn announced(
    message: &Message,
    instance: &Name,
    ttl: u32,
    source: IpAddr,
    max_addresses: usize,
) -> Option<Announced> {
    let mut peer_id = None;
    let mut addresses = Vec::new();
    let texts = message
        .answers
        .iter()
        .chain(&message.additionals)
        .filter(|record| record.name == *instance)
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(txt.txt_data.iter()),
            _ => None,
        })
        .flatten();
    for text in texts {
        let Some((peer, address)) = dnsaddr(text, source) else {
            continue;
        };
        if *peer_id.get_or_insert(peer) != peer {
            // Records naming two peers under one instance: the packet lies.
            return None;
        }
        if addresses.len() < max_addresses && !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Some(Announced {
        peer_id: peer_id?,
        addresses,
        ttl: Duration::from_secs(u64::from(ttl)),
    })
}

/// `dnsaddr=/ip4/…/tcp/…/p2p/<id>` as the peer id and the address at `source`'s IP.
fn dnsaddr(text: &[u8], source: IpAddr) -> Option<(PeerId, Multiaddr)> {
    let text = std::str::from_utf8(text.strip_prefix(b"dnsaddr=")?).ok()?;
    let mut address: Multiaddr = text.parse().ok()?;
    let Some(Protocol::P2p(peer_id)) = address.pop() else {
        return None;
    };
    Some((peer_id, at_source(&address, source)?))
}

/// `address` (`/ip4|ip6/…/tcp|udp/…`, nothing relayed) with `source` as its IP.
fn at_source(address: &Multiaddr, source: IpAddr) -> Option<Multiaddr> {
    let mut parts = address.iter();
    match parts.next()? {
        Protocol::Ip4(_) | Protocol::Ip6(_) => {}
        _ => return None,
    }
    let rest: Vec<Protocol<'_>> = parts.collect();
    let transport_ok = matches!(rest.first(), Some(Protocol::Tcp(_) | Protocol::Udp(_)));
    if !transport_ok || rest.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    Some(
        std::iter::once(Protocol::from(source))
            .chain(rest)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Name {
        Name::from_ascii("_p2p._udp.local.").unwrap()
    }

    fn instance(n: u8) -> Name {
        Name::from_ascii(format!("peer{n}._p2p._udp.local.")).unwrap()
    }

    const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    #[test]
    fn a_query_is_read_back_and_other_services_are_ignored() {
        let bytes = query(&service()).unwrap();
        assert_eq!(parse(&bytes, SOURCE, &service(), 8), Some(Packet::Query));
        let other = Name::from_ascii("_other._udp.local.").unwrap();
        assert_eq!(parse(&bytes, SOURCE, &other, 8), None);
        assert_eq!(parse(b"\x00garbage", SOURCE, &service(), 8), None);
    }

    #[test]
    fn an_answer_is_read_back_at_the_senders_ip_and_capped() {
        let peer = PeerId::random();
        let addresses: Vec<Multiaddr> = (0..20u16)
            .map(|port| {
                format!("/ip4/192.0.2.1/tcp/{}", 4000 + port)
                    .parse()
                    .unwrap()
            })
            .chain(["/dns4/example.com/tcp/1".parse().unwrap()])
            .collect();
        let ttl = Duration::from_secs(u64::from(u32::MAX));
        let bytes = answer(&service(), &instance(1), peer, &addresses, ttl).unwrap();
        let Some(Packet::Answer(peers)) = parse(&bytes, SOURCE, &service(), 8) else {
            panic!("an answer");
        };
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].peer_id, peer);
        assert_eq!(peers[0].ttl, ttl, "the sender's TTL, capped by the table");
        let expected: Vec<Multiaddr> = (0..8u16)
            .map(|port| {
                format!("/ip4/10.0.0.7/tcp/{}", 4000 + port)
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(peers[0].addresses, expected);
    }

    #[test]
    fn records_naming_two_peers_under_one_instance_are_refused() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let address: Multiaddr = "/ip4/10.0.0.7/tcp/1".parse().unwrap();
        let mut message = Message::new(0, MessageType::Response, OpCode::Query);
        let pointer = RData::PTR(rdata::PTR(instance(1)));
        message.add_answer(Record::from_rdata(service(), 60, pointer));
        for peer in [a, b] {
            let txt = RData::TXT(rdata::TXT::new(vec![format!(
                "dnsaddr={address}/p2p/{peer}"
            )]));
            message.add_additional(Record::from_rdata(instance(1), 60, txt));
        }
        let bytes = message.to_vec().unwrap();
        assert_eq!(
            parse(&bytes, SOURCE, &service(), 8),
            Some(Packet::Answer(vec![]))
        );
    }

    #[test]
    fn a_packet_yields_a_bounded_number_of_peers() {
        let address: Multiaddr = "/ip4/10.0.0.7/tcp/1".parse().unwrap();
        let mut message = Message::new(0, MessageType::Response, OpCode::Query);
        for n in 0..40 {
            let pointer = RData::PTR(rdata::PTR(instance(n)));
            message.add_answer(Record::from_rdata(service(), 60, pointer));
            let text = format!("dnsaddr={address}/p2p/{}", PeerId::random());
            let txt = RData::TXT(rdata::TXT::new(vec![text]));
            message.add_additional(Record::from_rdata(instance(n), 60, txt));
        }
        let bytes = message.to_vec().unwrap();
        let Some(Packet::Answer(peers)) = parse(&bytes, SOURCE, &service(), 8) else {
            panic!("an answer");
        };
        assert_eq!(peers.len(), MAX_PEERS_PER_PACKET);
    }
}
