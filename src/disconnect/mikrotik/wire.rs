//! The RouterOS API's wire format (MikroTik manual "API"): word lengths, sentences, reply
//! sentences and the pre-6.43 login challenge. Pure functions of bytes, no I/O; the
//! connection ([`super::connection`]) reads and writes what these encode and decode.

use md5::{Digest, Md5};

use super::ApiError;

/// Longest word accepted from a router. The protocol allows 2³²−1 octets; a `/ppp/active`
/// reply never comes close, and a bound keeps a broken peer from exhausting memory.
pub const MAX_WORD_LEN: usize = 16 << 20;

/// Appends the length prefix of a `len`-octet word: 1 to 5 octets, big-endian, the first octet
/// saying how many follow (MikroTik manual "API", word length table).
pub fn encode_length(len: u32, out: &mut Vec<u8>) {
    match len {
        0..0x80 => out.push(len as u8),
        0x80..0x4000 => out.extend_from_slice(&((len | 0x8000) as u16).to_be_bytes()),
        0x4000..0x20_0000 => out.extend_from_slice(&(len | 0xC0_0000).to_be_bytes()[1..]),
        0x20_0000..0x1000_0000 => out.extend_from_slice(&(len | 0xE000_0000).to_be_bytes()),
        _ => {
            out.push(0xF0);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Decodes a length prefix at the start of `buf`: `Ok(None)` when more octets are needed,
/// else the length and the prefix size. A first octet ≥ 0xF8 is a reserved control byte and
/// 0xF1..=0xF7 is no valid prefix: both are errors (a client cannot go on parsing).
pub fn decode_length(buf: &[u8]) -> Result<Option<(u32, usize)>, ApiError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (size, mask): (usize, u32) = match first {
        0x00..=0x7F => (1, 0x7F),
        0x80..=0xBF => (2, 0x3FFF),
        0xC0..=0xDF => (3, 0x1F_FFFF),
        0xE0..=0xEF => (4, 0x0FFF_FFFF),
        0xF0 => (5, u32::MAX),
        _ => {
            return Err(ApiError::Protocol(format!(
                "invalid word length prefix 0x{first:02X}"
            )));
        }
    };
    let Some(prefix) = buf.get(..size) else {
        return Ok(None);
    };
    let len = if size == 5 {
        u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]])
    } else {
        prefix
            .iter()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
            & mask
    };
    Ok(Some((len, size)))
}

/// Appends one sentence: each word length-prefixed (byte length, not characters), then the
/// empty word.
pub fn encode_sentence<W: AsRef<[u8]>>(words: &[W], out: &mut Vec<u8>) -> Result<(), ApiError> {
    for w in words {
        let w = w.as_ref();
        let len = u32::try_from(w.len())
            .map_err(|_| ApiError::Protocol("word longer than 4 GiB".into()))?;
        encode_length(len, out);
        out.extend_from_slice(w);
    }
    out.push(0);
    Ok(())
}

/// The words of one sentence, without the terminating empty word.
pub type Sentence = Vec<Vec<u8>>;

/// Parses one complete sentence from the start of `buf`: `Ok(None)` when it is not complete
/// yet, else its words (the terminating empty word excluded) and the octets it took. Empty
/// sentences are returned as an empty list (callers skip them).
pub fn decode_sentence(buf: &[u8]) -> Result<Option<(Sentence, usize)>, ApiError> {
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        let Some((len, size)) = decode_length(buf.get(at..).unwrap_or_default())? else {
            return Ok(None);
        };
        let len = len as usize;
        if len > MAX_WORD_LEN {
            return Err(ApiError::Protocol(format!(
                "word of {len} octets exceeds the {MAX_WORD_LEN}-octet limit"
            )));
        }
        at += size;
        if len == 0 {
            return Ok(Some((words, at)));
        }
        let Some(word) = buf.get(at..at + len) else {
            return Ok(None);
        };
        words.push(word.to_vec());
        at += len;
    }
}

/// The kind of a reply sentence (its first word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `!re`: one item of data.
    Re,
    /// `!done`: the last reply to a command (may carry `=ret=`).
    Done,
    /// `!trap`: an error; a `!done` still follows.
    Trap,
    /// `!fatal`: the router closes the connection; no `!done` follows.
    Fatal,
    /// `!empty`: no data (RouterOS 7.18+); a `!done` follows.
    Empty,
}

/// One reply sentence: attributes (`=name=value`) in order, the `.tag` API attribute apart,
/// and for `!fatal` its raw text word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub attrs: Vec<(String, String)>,
    pub tag: Option<String>,
    /// `!fatal`'s second word, which is raw text, not an attribute.
    pub text: Option<String>,
}

impl Reply {
    /// Parses a reply sentence. An unknown first word is a protocol error; words other than
    /// `=…` and `.tag=…` are ignored.
    pub fn parse(words: &[Vec<u8>]) -> Result<Reply, ApiError> {
        let Some((first, rest)) = words.split_first() else {
            return Err(ApiError::Protocol("empty reply sentence".into()));
        };
        let kind = match first.as_slice() {
            b"!re" => ReplyKind::Re,
            b"!done" => ReplyKind::Done,
            b"!trap" => ReplyKind::Trap,
            b"!fatal" => ReplyKind::Fatal,
            b"!empty" => ReplyKind::Empty,
            other => {
                return Err(ApiError::Protocol(format!(
                    "unexpected reply word {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        };
        let mut reply = Reply {
            kind,
            attrs: Vec::new(),
            tag: None,
            text: None,
        };
        for w in rest {
            let w = String::from_utf8_lossy(w);
            if let Some(attr) = w.strip_prefix('=') {
                // `=name=value`: the value may be empty or contain `=`; split at the first `=`.
                let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
                reply.attrs.push((name.to_owned(), value.to_owned()));
            } else if let Some(tag) = w.strip_prefix(".tag=") {
                reply.tag = Some(tag.to_owned());
            } else if kind == ReplyKind::Fatal && reply.text.is_none() {
                reply.text = Some(w.into_owned());
            }
        }
        Ok(reply)
    }

    /// The first attribute of that name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `=message=` of a `!trap` (or the text of a `!fatal`), for errors and logs.
    pub fn message(&self) -> String {
        self.attr("message")
            .or(self.text.as_deref())
            .unwrap_or("(no message)")
            .to_owned()
    }
}

/// The replies to one command: its `!re` items, its `!trap`s, and the final `!done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub items: Vec<Reply>,
    pub traps: Vec<Reply>,
    /// Whether an `!empty` came before the `!done`.
    pub empty: bool,
    pub done: Reply,
}

impl Response {
    /// `Err(Trap)` with the first trap's message when the command trapped.
    pub fn ok(self) -> Result<Response, ApiError> {
        match self.traps.first() {
            Some(t) => Err(ApiError::Trap(t.message())),
            None => Ok(self),
        }
    }
}

/// The pre-6.43 challenge answer: `00` + hex(MD5(0x00 ‖ password ‖ unhex(challenge))).
pub fn challenge_response(password: &str, challenge_hex: &str) -> Result<String, ApiError> {
    let challenge = unhex(challenge_hex)
        .ok_or_else(|| ApiError::LoginFailed(format!("bad challenge {challenge_hex:?}")))?;
    let mut md5 = Md5::new();
    md5.update([0u8]);
    md5.update(password.as_bytes());
    md5.update(&challenge);
    let digest: [u8; 16] = md5.finalize().into();
    let mut out = String::with_capacity(34);
    out.push_str("00");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        encode_length(len, &mut v);
        v
    }

    #[test]
    fn length_boundaries_encode() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (0x7F, &[0x7F]),
            (0x80, &[0x80, 0x80]),
            (0x3FFF, &[0xBF, 0xFF]),
            (0x4000, &[0xC0, 0x40, 0x00]),
            (0x1F_FFFF, &[0xDF, 0xFF, 0xFF]),
            (0x20_0000, &[0xE0, 0x20, 0x00, 0x00]),
            (0x0FFF_FFFF, &[0xEF, 0xFF, 0xFF, 0xFF]),
            (0x1000_0000, &[0xF0, 0x10, 0x00, 0x00, 0x00]),
            (u32::MAX, &[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]),
        ];
        for (len, want) in cases {
            assert_eq!(enc(*len), *want, "length {len:#x}");
        }
    }

    #[test]
    fn length_boundaries_decode_both_ways() {
        for len in [
            0,
            1,
            0x7F,
            0x80,
            0x3FFF,
            0x4000,
            0x1F_FFFF,
            0x20_0000,
            0x0FFF_FFFF,
            0x1000_0000,
            u32::MAX,
        ] {
            let bytes = enc(len);
            assert_eq!(
                decode_length(&bytes).unwrap(),
                Some((len, bytes.len())),
                "{len:#x}"
            );
            // Every strict prefix asks for more octets.
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_length(&bytes[..cut]).unwrap(),
                    None,
                    "{len:#x} cut {cut}"
                );
            }
        }
        // Masking: the marker bits never leak into the length.
        assert_eq!(decode_length(&[0xBF, 0xFF]).unwrap(), Some((0x3FFF, 2)));
        assert_eq!(
            decode_length(&[0xDF, 0xFF, 0xFF]).unwrap(),
            Some((0x1F_FFFF, 3))
        );
    }

    #[test]
    fn control_bytes_are_errors() {
        for b in 0xF1..=0xFF {
            assert!(decode_length(&[b, 0, 0, 0, 0]).is_err(), "{b:#x}");
        }
    }

    #[test]
    fn sentence_round_trip_and_partial_input() {
        let long = "x".repeat(20_000);
        let words = ["/ppp/active/print", "=.proplist=.id,name", &long, "?name=ü"];
        let mut out = Vec::new();
        encode_sentence(&words, &mut out).unwrap();
        // UTF-8: the length is in bytes.
        assert!(out.ends_with(&[8, b'?', b'n', b'a', b'm', b'e', b'=', 0xC3, 0xBC, 0]));
        for cut in 0..out.len() {
            assert_eq!(decode_sentence(&out[..cut]).unwrap(), None, "cut {cut}");
        }
        let mut two = out.clone();
        two.extend_from_slice(&out);
        let (got, used) = decode_sentence(&two).unwrap().unwrap();
        assert_eq!(used, out.len());
        let got: Vec<String> = got
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect();
        assert_eq!(got, words);
        assert_eq!(decode_sentence(&[0]).unwrap(), Some((vec![], 1)));
    }

    #[test]
    fn reply_parsing() {
        let w = |s: &[&str]| s.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
        let r = Reply::parse(&w(&[
            "!re",
            "=.id=*80000123",
            "=comment=a=b",
            "=x=",
            ".tag=7",
        ]))
        .unwrap();
        assert_eq!(r.kind, ReplyKind::Re);
        assert_eq!(r.attr(".id"), Some("*80000123"));
        assert_eq!(r.attr("comment"), Some("a=b"));
        assert_eq!(r.attr("x"), Some(""));
        assert_eq!(r.tag.as_deref(), Some("7"));
        assert_eq!(r.attr("tag"), None, ".tag is not an attribute");
        let f = Reply::parse(&w(&["!fatal", "session terminated on request"])).unwrap();
        assert_eq!(f.kind, ReplyKind::Fatal);
        assert_eq!(f.message(), "session terminated on request");
        assert!(f.attrs.is_empty());
        let t = Reply::parse(&w(&["!trap", "=category=0", "=message=no such item (4)"])).unwrap();
        assert_eq!(t.message(), "no such item (4)");
        assert_eq!(
            Reply::parse(&w(&["!empty"])).unwrap().kind,
            ReplyKind::Empty
        );
        assert!(Reply::parse(&w(&["!bogus"])).is_err());
    }

    #[test]
    fn challenge_response_formula() {
        // md5(0x00 ‖ "secret" ‖ unhex(challenge)) computed independently.
        let challenge = "9f1e1c5e6a0b2b3c4d5e6f708192a3b4";
        let mut raw = vec![0u8];
        raw.extend_from_slice(b"secret");
        raw.extend_from_slice(&unhex(challenge).unwrap());
        let want: [u8; 16] = Md5::digest(&raw).into();
        let want_hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            challenge_response("secret", challenge).unwrap(),
            format!("00{want_hex}")
        );
        assert!(challenge_response("x", "abc").is_err());
        assert!(challenge_response("x", "zz").is_err());
    }
}
