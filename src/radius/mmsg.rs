//! Several datagrams per system call on the accounting socket: `recvmmsg(2)` for requests and
//! `sendmmsg(2)` for responses, through `nix`'s safe wrappers. At tens of thousands of packets
//! a second one `recvfrom`/`sendto` per datagram was a fifth of the daemon's CPU; a burst now
//! costs one call each way.
//!
//! Both work on a non-blocking socket and return `WouldBlock` when nothing could be done, so
//! that they run inside tokio's readiness loop (`UdpSocket::try_io` / `async_io`).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams per `recvmmsg` call. A burst larger than this takes several calls.
pub const RECV_BATCH: usize = 64;

/// One receive buffer: one octet more than the largest RADIUS packet (RFC 2865 §3), so that an
/// oversized datagram arrives longer than 4096 octets and is rejected as such, as a whole
/// datagram would be.
pub const RECV_BUFFER: usize = super::codec::MAX_PACKET_LEN + 1;

/// Datagrams per `sendmmsg` call.
pub const SEND_BATCH: usize = 256;

/// Receive buffers for [`recv_batch`]: [`RECV_BATCH`] of [`RECV_BUFFER`] octets.
#[derive(Debug)]
pub struct RecvBuffers {
    bufs: Vec<Vec<u8>>,
    /// Length and sender of each datagram of the last call, in arrival order.
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Default for RecvBuffers {
    fn default() -> Self {
        RecvBuffers {
            bufs: vec![vec![0; RECV_BUFFER]; RECV_BATCH],
            got: Vec::with_capacity(RECV_BATCH),
        }
    }
}

impl RecvBuffers {
    /// The datagrams of the last [`recv_batch`], in arrival order: the octets received (at
    /// most [`RECV_BUFFER`]) and the sender, when the kernel gave one.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        self.got
            .iter()
            .zip(&self.bufs)
            .map(|(&(len, peer), buf)| (&buf[..len.min(buf.len())], peer))
    }
}

/// Receives up to [`RECV_BATCH`] datagrams waiting on `fd` in one `recvmmsg` (non-blocking):
/// returns how many, or `WouldBlock` when none was waiting. Read them with
/// [`RecvBuffers::datagrams`].
pub fn recv_batch(fd: RawFd, buffers: &mut RecvBuffers) -> io::Result<usize> {
    let RecvBuffers { bufs, got } = buffers;
    got.clear();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(bufs.len(), None);
    let mut slices: Vec<[IoSliceMut<'_>; 1]> = bufs
        .iter_mut()
        .map(|b| [IoSliceMut::new(b.as_mut_slice())])
        .collect();
    let received = nix::sys::socket::recvmmsg(
        fd,
        &mut headers,
        slices.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    for message in received {
        got.push((message.bytes, message.address.and_then(std_addr)));
    }
    Ok(got.len())
}

/// Sends `datagrams` from `fd` in `sendmmsg` calls of up to [`SEND_BATCH`] (non-blocking):
/// returns how many of the first ones were sent. `WouldBlock` when not even the first could
/// be; any other error is the first datagram's (the kernel reports a later one's by stopping
/// before it).
pub fn send_batch(fd: RawFd, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let mut sent = 0;
    for chunk in datagrams.chunks(SEND_BATCH) {
        let n = match send_chunk(fd, chunk) {
            Ok(n) => n,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => return Ok(sent),
        };
        sent += n;
        if n < chunk.len() {
            break;
        }
    }
    Ok(sent)
}

fn send_chunk(fd: RawFd, chunk: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
    let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = chunk
        .iter()
        .map(|(peer, _)| Some(SockaddrStorage::from(*peer)))
        .collect();
    let sent = nix::sys::socket::sendmmsg(
        fd,
        &mut headers,
        slices.iter(),
        addrs,
        [],
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(sent.count())
}

/// A sender's address as std's type (IPv4 or IPv6; anything else is `None`).
fn std_addr(addr: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use super::*;

    fn pair(a: &str, b: &str) -> (UdpSocket, UdpSocket) {
        let x = UdpSocket::bind(a).unwrap();
        let y = UdpSocket::bind(b).unwrap();
        x.set_nonblocking(true).unwrap();
        y.set_nonblocking(true).unwrap();
        (x, y)
    }

    fn wait_readable(s: &UdpSocket) {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut probe = [0u8; 1];
        s.peek_from(&mut probe).unwrap();
        s.set_nonblocking(true).unwrap();
    }

    #[test]
    fn nothing_waiting_is_would_block() {
        let (x, _) = pair("127.0.0.1:0", "127.0.0.1:0");
        let mut bufs = RecvBuffers::default();
        let e = recv_batch(x.as_raw_fd(), &mut bufs).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(bufs.datagrams().count(), 0);
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_in_order_with_its_senders() {
        for (a, b) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            let Ok(x) = UdpSocket::bind(a) else {
                eprintln!("skipping {a}: no such address here");
                continue;
            };
            drop(x);
            let (tx, rx) = pair(a, b);
            let to = rx.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 20 + i as usize]).collect();
            let datagrams: Vec<(SocketAddr, &[u8])> =
                payloads.iter().map(|p| (to, p.as_slice())).collect();
            assert_eq!(send_batch(tx.as_raw_fd(), &datagrams).unwrap(), 100);
            let mut bufs = RecvBuffers::default();
            let mut seen = Vec::new();
            while seen.len() < 100 {
                wait_readable(&rx);
                let n = recv_batch(rx.as_raw_fd(), &mut bufs).unwrap();
                assert!(n <= RECV_BATCH);
                for (bytes, peer) in bufs.datagrams() {
                    assert_eq!(peer, Some(tx.local_addr().unwrap()));
                    seen.push(bytes.to_vec());
                }
            }
            assert_eq!(seen, payloads);
        }
    }

    #[test]
    fn an_oversized_datagram_arrives_longer_than_a_radius_packet() {
        let (tx, rx) = pair("127.0.0.1:0", "127.0.0.1:0");
        let big = vec![7u8; 6000];
        tx.send_to(&big, rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[1, 2, 3], rx.local_addr().unwrap()).unwrap();
        let mut bufs = RecvBuffers::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 2 {
            wait_readable(&rx);
            recv_batch(rx.as_raw_fd(), &mut bufs).unwrap();
            got.extend(bufs.datagrams().map(|(b, _)| b.to_vec()));
        }
        assert_eq!(got[0].len(), RECV_BUFFER);
        assert_eq!(got[1], [1, 2, 3]);
        // Rejected for its length, as the whole datagram would be.
        assert!(matches!(
            crate::radius::codec::Packet::decode(&got[0]),
            Err(e) if e.to_string().contains("larger than 4096")
        ));
    }

    #[test]
    fn a_send_error_is_the_first_datagrams() {
        let (tx, _) = pair("127.0.0.1:0", "127.0.0.1:0");
        // An IPv6 destination from an IPv4 socket fails at once.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let r = send_batch(tx.as_raw_fd(), &[(v6, b"x".as_slice())]);
        assert!(r.is_err(), "{r:?}");
        assert_eq!(std_addr(SockaddrStorage::from(v6)), Some(v6));
        let v4: SocketAddr = "192.0.2.1:1813".parse().unwrap();
        assert_eq!(std_addr(SockaddrStorage::from(v4)), Some(v4));
    }
}
