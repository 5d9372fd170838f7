//! A test NAS that receives RFC 5176 Disconnect-Requests and CoA-Requests on a real UDP socket.
//! It parses and checks packets with its own code (MD5 and HMAC-MD5 directly, not radacctd's
//! codec), so it can catch codec mistakes; `radclient` is pointed at it to prove it faithful. It
//! records every datagram and answers as its mode says.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub const DISCONNECT_REQUEST: u8 = 40;
pub const DISCONNECT_ACK: u8 = 41;
pub const DISCONNECT_NAK: u8 = 42;
pub const COA_REQUEST: u8 = 43;
pub const COA_ACK: u8 = 44;
pub const COA_NAK: u8 = 45;
const VENDOR_SPECIFIC: u8 = 26;
const MESSAGE_AUTHENTICATOR: u8 = 80;
const ERROR_CAUSE: u8 = 101;

/// How the test NAS answers a valid Disconnect-Request or CoA-Request: the ACK and NAK are of
/// the request's kind (Disconnect-ACK/NAK for a Disconnect-Request, CoA-ACK/NAK for a
/// CoA-Request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NasMode {
    /// An ACK (with a Message-Authenticator).
    Ack,
    /// A NAK with this Error-Cause, if any.
    Nak(Option<u32>),
    /// An ACK whose Response Authenticator is wrong.
    BadAuthenticator,
    /// An ACK with a right Response Authenticator but a wrong Message-Authenticator.
    BadMessageAuthenticator,
    /// A valid ACK, sent from another UDP port.
    WrongPort,
    /// No answer.
    Silent,
}

/// One datagram the NAS received, as it parsed it.
#[derive(Debug, Clone)]
pub struct Received {
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub attrs: Vec<(u8, Vec<u8>)>,
    /// RFC 5176 §3 / RFC 2866 §3 Request Authenticator checked with the NAS's secret.
    pub authenticator_ok: bool,
    /// `None` without a Message-Authenticator, else whether it verified.
    pub message_authenticator_ok: Option<bool>,
    pub bytes: Vec<u8>,
    /// When it arrived (to tell whether requests overlapped).
    pub at: std::time::Instant,
}

impl Received {
    pub fn attr(&self, typ: u8) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(t, _)| *t == typ)
            .map(|(_, v)| v.as_slice())
    }

    pub fn attr_str(&self, typ: u8) -> Option<String> {
        self.attr(typ)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn attr_ipv4(&self, typ: u8) -> Option<Ipv4Addr> {
        self.attr(typ)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(Ipv4Addr::from)
    }

    /// The first attribute of `typ` as a 32-bit integer (`None` unless exactly four bytes).
    pub fn attr_u32(&self, typ: u8) -> Option<u32> {
        self.attr(typ)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes)
    }

    /// Every sub-attribute of every Vendor-Specific attribute, as (vendor, type, value), in
    /// packet order (RFC 2865 §5.26 layout: vendor id, then type/length/value triples).
    pub fn vsas(&self) -> Vec<(u32, u8, &[u8])> {
        self.attrs
            .iter()
            .filter(|(t, _)| *t == VENDOR_SPECIFIC)
            .flat_map(|(_, v)| parse_vsa(v))
            .collect()
    }

    /// The value of the first Vendor-Specific sub-attribute `typ` of `vendor`.
    pub fn vsa(&self, vendor: u32, typ: u8) -> Option<&[u8]> {
        self.vsas()
            .into_iter()
            .find(|(v, t, _)| *v == vendor && *t == typ)
            .map(|(_, _, value)| value)
    }

    /// [`Received::vsa`] as text.
    pub fn vsa_str(&self, vendor: u32, typ: u8) -> Option<String> {
        self.vsa(vendor, typ)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// The sub-attributes of one Vendor-Specific value; empty when it is too short or malformed
/// (then it is not the RFC 2865 §5.26 recommended format, and no test expects to read it).
fn parse_vsa(v: &[u8]) -> Vec<(u32, u8, &[u8])> {
    let Some((vendor, mut rest)) = v.split_first_chunk::<4>() else {
        return Vec::new();
    };
    let vendor = u32::from_be_bytes(*vendor);
    let mut out = Vec::new();
    while let [t, l, ..] = *rest {
        let l = usize::from(l);
        if l < 2 || l > rest.len() {
            return Vec::new();
        }
        out.push((vendor, t, &rest[2..l]));
        rest = &rest[l..];
    }
    out
}

#[derive(Debug)]
struct State {
    mode: NasMode,
    /// Requests to drop silently before answering again (tests retransmission).
    drop_next: usize,
    /// Wait before answering.
    delay: Duration,
    received: Vec<Received>,
}

/// A test NAS on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct FakeNas {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeNas {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNas {
    pub async fn start(secret: &str, mode: NasMode) -> FakeNas {
        let socket = Arc::new(bind_with_big_buffer());
        let other = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind NAS 2"));
        let addr = socket.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            mode,
            drop_next: 0,
            delay: Duration::ZERO,
            received: Vec::new(),
        }));
        let secret = secret.as_bytes().to_vec();
        let task = tokio::spawn(serve(socket, other, secret, state.clone()));
        FakeNas { addr, state, task }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_mode(&self, mode: NasMode) {
        self.state().mode = mode;
    }

    /// Ignores the next `n` requests (as if lost), then answers again.
    pub fn drop_next(&self, n: usize) {
        self.state().drop_next = n;
    }

    /// Answers after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// Datagrams received so far.
    pub fn count(&self) -> usize {
        self.state().received.len()
    }
}

async fn serve(
    socket: Arc<UdpSocket>,
    other: Arc<UdpSocket>,
    secret: Vec<u8>,
    state: Arc<Mutex<State>>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some(rx) = parse(&buf[..n], &secret) else {
            continue;
        };
        let (mode, delay, drop_it) = {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            st.received.push(rx.clone());
            let drop_it = st.drop_next > 0;
            if drop_it {
                st.drop_next -= 1;
            }
            (st.mode, st.delay, drop_it)
        };
        let Some((ack, nak)) = answer_codes(rx.code) else {
            continue;
        };
        // A real NAS silently discards what does not verify (RFC 5176 §3.5).
        if drop_it || !rx.authenticator_ok || rx.message_authenticator_ok == Some(false) {
            continue;
        }
        let (code, attrs) = match mode {
            NasMode::Silent => continue,
            NasMode::Nak(cause) => (
                nak,
                cause
                    .map(|c| vec![(ERROR_CAUSE, c.to_be_bytes().to_vec())])
                    .unwrap_or_default(),
            ),
            _ => (ack, Vec::new()),
        };
        let mut resp = response(code, rx.identifier, &rx.authenticator, &attrs, &secret);
        match mode {
            NasMode::BadAuthenticator => resp[4] ^= 0xFF,
            NasMode::BadMessageAuthenticator => {
                // The MA is the last attribute; break it and re-sign the Response
                // Authenticator so that only the MA is wrong.
                let n = resp.len();
                resp[n - 1] ^= 0xFF;
                let auth = md5_of(&[&resp[..4], &rx.authenticator, &resp[20..], &secret]);
                resp[4..20].copy_from_slice(&auth);
            }
            _ => {}
        }
        let sender = if mode == NasMode::WrongPort {
            other.clone()
        } else {
            socket.clone()
        };
        if delay.is_zero() {
            let _ = sender.send_to(&resp, from).await;
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = sender.send_to(&resp, from).await;
            });
        }
    }
}

/// The (ACK, NAK) codes that answer a request code, `None` for what this NAS does not serve.
fn answer_codes(request: u8) -> Option<(u8, u8)> {
    match request {
        DISCONNECT_REQUEST => Some((DISCONNECT_ACK, DISCONNECT_NAK)),
        COA_REQUEST => Some((COA_ACK, COA_NAK)),
        _ => None,
    }
}

/// A loopback socket whose receive buffer holds a burst of a thousand requests (the kernel
/// default, ~200 KiB, drops some, and the client then rightly retransmits).
fn bind_with_big_buffer() -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    let _ = s.set_recv_buffer_size(8 << 20);
    s.set_nonblocking(true).expect("nonblocking");
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind NAS");
    UdpSocket::from_std(s.into()).expect("tokio socket")
}

fn md5_of(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hmac_of(secret: &[u8], data: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Md5> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Parses and checks a request; `None` if it is not even RADIUS framing.
fn parse(d: &[u8], secret: &[u8]) -> Option<Received> {
    if d.len() < 20 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
    if !(20..=4096).contains(&len) || len > d.len() {
        return None;
    }
    let p = &d[..len];
    let mut attrs = Vec::new();
    let mut ma_at = None;
    let mut i = 20;
    while i < len {
        if i + 2 > len {
            return None;
        }
        let (t, l) = (p[i], usize::from(p[i + 1]));
        if l < 2 || i + l > len {
            return None;
        }
        if t == MESSAGE_AUTHENTICATOR && ma_at.is_none() {
            ma_at = Some(i + 2);
        }
        attrs.push((t, p[i + 2..i + l].to_vec()));
        i += l;
    }
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(&p[4..20]);
    let zero = [0u8; 16];
    let authenticator_ok = md5_of(&[&p[..4], &zero, &p[20..], secret]) == authenticator;
    let message_authenticator_ok = ma_at.map(|at| {
        if at + 16 > len || p[at - 1] != 18 {
            return false;
        }
        let mut copy = p.to_vec();
        copy[4..20].fill(0);
        copy[at..at + 16].fill(0);
        hmac_of(secret, &copy)[..] == p[at..at + 16]
    });
    Some(Received {
        code: p[0],
        identifier: p[1],
        authenticator,
        attrs,
        authenticator_ok,
        message_authenticator_ok,
        bytes: p.to_vec(),
        at: std::time::Instant::now(),
    })
}

/// A signed response carrying `attrs` and a Message-Authenticator (computed first, over the
/// packet with the request's authenticator, RFC 5176 §3 / RFC 3579 §3.2).
pub fn response(
    code: u8,
    identifier: u8,
    request_authenticator: &[u8; 16],
    attrs: &[(u8, Vec<u8>)],
    secret: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in attrs {
        body.push(*t);
        body.push((v.len() + 2) as u8);
        body.extend_from_slice(v);
    }
    body.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
    let ma_at = 20 + body.len();
    body.extend_from_slice(&[0; 16]);
    let len = (20 + body.len()) as u16;
    let mut p = vec![code, identifier];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(request_authenticator);
    p.extend_from_slice(&body);
    let ma = hmac_of(secret, &p);
    p[ma_at..ma_at + 16].copy_from_slice(&ma);
    let auth = md5_of(&[&p[..4], request_authenticator, &p[20..], secret]);
    p[4..20].copy_from_slice(&auth);
    p
}
