//! The record format: how one record is laid out as bytes, and how those bytes are checked.
//!
//! A record is one line of UTF-8 JSON with its fields in a fixed order:
//!
//! ```text
//! {"v":1,"seq":S,"ts":"T","id":"U","prev":"P","type":Y,"actor":A,"details":D,"epoch":E,"mac":"M","hash":"H"}\n
//! ```
//!
//! The hash rule works on bytes, never on a re-serialization: the *body* is the line up to the
//! last occurrence of `,"hash":"`, and `H = hex(SHA-256(0x00 || body))`, which is the RFC 6962
//! leaf hash of the body. The *MAC input* is the body up to the last occurrence of `,"mac":"`,
//! and `M = hex(HMAC-SHA256(epoch key E, MAC input))`. `P` is the previous record's `H`, or 64
//! zeros for `seq` 0. See docs/format.md for the full rule and test vectors.

use hmac::{Hmac, Mac};
use kling_audit_merkle::{leaf_hash, Hash};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::details::Details;
use crate::error::EntryError;

/// The format version written in `v`.
pub const FORMAT_VERSION: u32 = 1;
/// Largest record line, newline included.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Largest `type` value, in bytes.
pub const MAX_TYPE_BYTES: usize = 128;
/// Largest `actor` value, in bytes.
pub const MAX_ACTOR_BYTES: usize = 256;
/// The `prev` of the first record.
pub const GENESIS_PREV: Hash = [0u8; 32];

const HEAD: &[u8] = b"{\"v\":1,\"seq\":";
pub(crate) const HASH_KEY: &[u8] = b",\"hash\":\"";
pub(crate) const MAC_KEY: &[u8] = b",\"mac\":\"";
/// `,"hash":"` + 64 hex + `"}`
pub(crate) const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;
/// `,"mac":"` + 64 hex + `"`
pub(crate) const MAC_SUFFIX_LEN: usize = MAC_KEY.len() + 64 + 1;

/// What a caller asks to record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: String,
    pub actor: String,
    pub details: Details,
}

impl Entry {
    /// Builds an entry, checking `type` and `actor` against the documented rules.
    pub fn new(
        kind: impl Into<String>,
        actor: impl Into<String>,
        details: Details,
    ) -> Result<Entry, EntryError> {
        let entry = Entry {
            kind: kind.into(),
            actor: actor.into(),
            details,
        };
        entry.validate()?;
        Ok(entry)
    }

    /// `type`: 1 to 128 bytes of ASCII letters, digits and `._:-/`. `actor`: 1 to 256 bytes of
    /// UTF-8 without control characters.
    pub fn validate(&self) -> Result<(), EntryError> {
        check_len("type", &self.kind, MAX_TYPE_BYTES)?;
        if let Some(ch) = self
            .kind
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._:-/".contains(*c)))
        {
            return Err(EntryError::BadCharacter {
                field: "type",
                ch,
                rule: "letters, digits and . _ : - / only",
            });
        }
        check_len("actor", &self.actor, MAX_ACTOR_BYTES)?;
        if let Some(ch) = self.actor.chars().find(|c| c.is_control()) {
            return Err(EntryError::BadCharacter {
                field: "actor",
                ch,
                rule: "no control characters",
            });
        }
        Ok(())
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), EntryError> {
    if value.is_empty() {
        return Err(EntryError::EmptyField { field });
    }
    if value.len() > max {
        return Err(EntryError::FieldTooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// The writer-assigned fields of one record.
pub struct Stamp<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub id: &'a uuid::Uuid,
    pub prev: &'a Hash,
    pub epoch: u64,
    /// The epoch key, already absorbed into an HMAC state (saves two compressions per record).
    pub mac: &'a MacState,
}

/// Appends the encoded record to `out` and returns its leaf hash.
///
/// On error nothing is left in `out`.
pub fn encode(out: &mut Vec<u8>, stamp: &Stamp<'_>, entry: &Entry) -> Result<Hash, EntryError> {
    let start = out.len();
    let result = encode_inner(out, start, stamp, entry);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_inner(
    out: &mut Vec<u8>,
    start: usize,
    stamp: &Stamp<'_>,
    entry: &Entry,
) -> Result<Hash, EntryError> {
    // itoa rather than `write!`: this runs for every record on the writer thread.
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(num.format(FORMAT_VERSION).as_bytes());
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(num.format(stamp.seq).as_bytes());
    out.extend_from_slice(b",\"ts\":\"");
    out.extend_from_slice(stamp.ts.as_bytes());
    out.extend_from_slice(b"\",\"id\":\"");
    let mut idbuf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(stamp.id.hyphenated().encode_lower(&mut idbuf).as_bytes());
    out.extend_from_slice(b"\",\"prev\":\"");
    push_hex(out, stamp.prev);
    out.extend_from_slice(b"\",\"type\":");
    push_json_string(out, &entry.kind);
    out.extend_from_slice(b",\"actor\":");
    push_json_string(out, &entry.actor);
    out.extend_from_slice(b",\"details\":");
    out.extend_from_slice(entry.details.as_str().as_bytes());
    out.extend_from_slice(b",\"epoch\":");
    out.extend_from_slice(num.format(stamp.epoch).as_bytes());
    let mac = mac_with(stamp.mac, &out[start..]);
    out.extend_from_slice(MAC_KEY);
    push_hex(out, &mac);
    out.push(b'"');
    let leaf = leaf_hash(&out[start..]);
    out.extend_from_slice(HASH_KEY);
    push_hex(out, &leaf);
    out.extend_from_slice(b"\"}\n");
    let len = out.len() - start;
    if len > MAX_RECORD_BYTES {
        return Err(EntryError::RecordTooLarge {
            len,
            max: MAX_RECORD_BYTES,
        });
    }
    Ok(leaf)
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes quotes, backslashes and control characters and nothing else, which
    // keeps the text readable and the encoding unambiguous.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
}

/// An HMAC-SHA256 state keyed with one epoch key.
pub type MacState = Hmac<sha2::Sha256>;

/// Prepares the HMAC state of `key`.
pub fn mac_state(key: &[u8; 32]) -> MacState {
    <MacState as Mac>::new_from_slice(key).expect("HMAC takes any key")
}

/// HMAC-SHA256 of `data` under a prepared key state.
pub fn mac_with(state: &MacState, data: &[u8]) -> Hash {
    let mut m = state.clone();
    m.update(data);
    m.finalize().into_bytes().into()
}

/// HMAC-SHA256 of `data` under `key`.
pub fn mac(key: &[u8; 32], data: &[u8]) -> Hash {
    // A 32-byte key is always accepted by HMAC.
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Why a line is not a well-formed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFault {
    Empty,
    TooLong(usize),
    NotUtf8,
    /// The fixed framing (`{"v":1,"seq":` ... `,"mac":"…","hash":"…"}`) is absent.
    Framing(&'static str),
    NotJson(String),
    BadField(&'static str),
}

impl std::fmt::Display for LineFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineFault::Empty => f.write_str("empty line"),
            LineFault::TooLong(n) => write!(f, "line of {n} bytes exceeds the record limit"),
            LineFault::NotUtf8 => f.write_str("line is not valid UTF-8"),
            LineFault::Framing(what) => write!(f, "record framing broken: {what}"),
            LineFault::NotJson(e) => write!(f, "line is not a JSON record: {e}"),
            LineFault::BadField(name) => write!(f, "field `{name}` has the wrong form"),
        }
    }
}

/// A parsed record line. Borrowed from the line; nothing is re-serialized.
#[derive(Debug, Clone)]
pub struct RecordView<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub id: &'a str,
    pub prev: Hash,
    pub kind: &'a RawValue,
    pub actor: &'a RawValue,
    pub details: &'a RawValue,
    pub epoch: u64,
    pub mac: Hash,
    /// The hash written in the line.
    pub hash: Hash,
    /// The hash computed from the line's bytes.
    pub leaf: Hash,
    /// The bytes the MAC covers.
    pub mac_input: &'a [u8],
}

impl RecordView<'_> {
    /// Whether the stored hash matches the bytes.
    pub fn hash_ok(&self) -> bool {
        self.hash == self.leaf
    }

    /// Whether the MAC verifies under `key`.
    pub fn mac_ok(&self, key: &[u8; 32]) -> bool {
        use subtle_eq::ct_eq;
        ct_eq(&mac(key, self.mac_input), &self.mac)
    }

    /// The record's `type` as a string.
    pub fn kind_str(&self) -> String {
        serde_json::from_str(self.kind.get()).unwrap_or_default()
    }

    /// The record's `actor` as a string.
    pub fn actor_str(&self) -> String {
        serde_json::from_str(self.actor.get()).unwrap_or_default()
    }
}

/// Whether `stored` is the MAC of `input` under a prepared key state, compared in constant time.
pub(crate) fn mac_matches(state: &MacState, input: &[u8], stored: &Hash) -> bool {
    subtle_eq::ct_eq(&mac_with(state, input), stored)
}

mod subtle_eq {
    /// Constant-time equality of two hashes.
    pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    v: u32,
    seq: u64,
    #[serde(borrow)]
    ts: &'a str,
    #[serde(borrow)]
    id: &'a str,
    #[serde(borrow)]
    prev: &'a str,
    #[serde(rename = "type", borrow)]
    kind: &'a RawValue,
    #[serde(borrow)]
    actor: &'a RawValue,
    #[serde(borrow)]
    details: &'a RawValue,
    epoch: u64,
    #[serde(borrow)]
    mac: &'a str,
    #[serde(borrow)]
    hash: &'a str,
}

/// Parses one line, without its trailing newline.
pub fn parse_line(line: &[u8]) -> Result<RecordView<'_>, LineFault> {
    if line.is_empty() {
        return Err(LineFault::Empty);
    }
    if line.len() >= MAX_RECORD_BYTES {
        return Err(LineFault::TooLong(line.len()));
    }
    if !line.starts_with(HEAD) {
        return Err(LineFault::Framing(
            "line does not start with {\"v\":1,\"seq\":",
        ));
    }
    if line.len() < HEAD.len() + HASH_SUFFIX_LEN + MAC_SUFFIX_LEN || !line.ends_with(b"\"}") {
        return Err(LineFault::Framing("line does not end with the hash field"));
    }
    let body_len = line.len() - HASH_SUFFIX_LEN;
    if &line[body_len..body_len + HASH_KEY.len()] != HASH_KEY {
        return Err(LineFault::Framing("`hash` is not the last field"));
    }
    let body = &line[..body_len];
    let mac_start = body_len - MAC_SUFFIX_LEN;
    if &body[mac_start..mac_start + MAC_KEY.len()] != MAC_KEY || !body.ends_with(b"\"") {
        return Err(LineFault::Framing("`mac` does not come just before `hash`"));
    }
    let wire: Wire<'_> = serde_json::from_slice(line).map_err(|e| {
        if std::str::from_utf8(line).is_err() {
            LineFault::NotUtf8
        } else {
            LineFault::NotJson(e.to_string())
        }
    })?;
    if wire.v != FORMAT_VERSION {
        return Err(LineFault::BadField("v"));
    }
    if !valid_ts(wire.ts) {
        return Err(LineFault::BadField("ts"));
    }
    if uuid::Uuid::try_parse(wire.id).is_err() {
        return Err(LineFault::BadField("id"));
    }
    let prev = parse_hex32(wire.prev).ok_or(LineFault::BadField("prev"))?;
    let mac = parse_hex32(wire.mac).ok_or(LineFault::BadField("mac"))?;
    let hash = parse_hex32(wire.hash).ok_or(LineFault::BadField("hash"))?;
    if !wire.kind.get().starts_with('"') {
        return Err(LineFault::BadField("type"));
    }
    if !wire.actor.get().starts_with('"') {
        return Err(LineFault::BadField("actor"));
    }
    if !wire.details.get().starts_with('{') {
        return Err(LineFault::BadField("details"));
    }
    Ok(RecordView {
        seq: wire.seq,
        ts: wire.ts,
        id: wire.id,
        prev,
        kind: wire.kind,
        actor: wire.actor,
        details: wire.details,
        epoch: wire.epoch,
        mac,
        hash,
        leaf: leaf_hash(body),
        mac_input: &body[..mac_start],
    })
}

/// Whether the verifier's positional reader agrees with [`parse_line`] on `line`: it may
/// decline any line, but a line it reads must be one `parse_line` accepts, with the same
/// fields. For the fuzz targets.
#[doc(hidden)]
pub fn fast_path_agrees(line: &[u8]) -> bool {
    crate::fastline::agrees_with_reference(line)
}

/// Lowercase hex of exactly 32 bytes; anything else is refused so that one hash has one spelling.
pub fn parse_hex32(s: &str) -> Option<Hash> {
    parse_hex32_bytes(s.as_bytes())
}

/// [`parse_hex32`] on bytes.
pub(crate) fn parse_hex32_bytes(b: &[u8]) -> Option<Hash> {
    // Eight digits at a time in a u64: this runs three times per record in the verifier's hot
    // loop. A byte of 0x80 or more marks the input bad first, so the carries it may cause
    // between the lanes of the additions below cannot make bad input pass.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let b = <&[u8; 64]>::try_from(b).ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0u64;
    for (o, c) in out.chunks_exact_mut(4).zip(b.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        // Per lane: the high bit of x + (0x80 - k) is set exactly when x >= k (for x < 0x80).
        let ge = |k: u8| x.wrapping_add(ONES * u64::from(0x80 - k));
        let digit = ge(b'0') & !ge(b'9' + 1) & HIGH;
        let lower = ge(b'a') & !ge(b'f' + 1) & HIGH;
        bad |= (x & HIGH) | ((digit | lower) ^ HIGH);
        // '0'..'9' and 'a'..'f' end in 0..9 and 1..6; letters add 9.
        let nibbles = (x & (ONES * 0x0f)) + (lower >> 7) * 9;
        let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
        let quads = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
        let packed = (quads | (quads >> 16)) as u32;
        o.copy_from_slice(&packed.to_le_bytes());
    }
    (bad == 0).then_some(out)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, the only timestamp form written.
pub fn valid_ts(ts: &str) -> bool {
    valid_ts_bytes(ts.as_bytes())
}

/// [`valid_ts`] on bytes.
pub(crate) fn valid_ts_bytes(b: &[u8]) -> bool {
    const FORM: &[u8; 27] = b"0000-00-00T00:00:00.000000Z";
    let Ok(b) = <&[u8; 27]>::try_from(b) else {
        return false;
    };
    // Without early exits the fixed pattern unrolls into straight-line compares.
    let mut ok = true;
    for (c, f) in b.iter().zip(FORM) {
        ok &= if *f == b'0' {
            c.is_ascii_digit()
        } else {
            c == f
        };
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain per-digit decoder, the reference for the word-at-a-time one.
    fn parse_hex32_by_table(b: &[u8]) -> Option<Hash> {
        const fn table() -> [u8; 256] {
            let mut t = [0xffu8; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        }
        static HEX: [u8; 256] = table();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
            bad |= hi | lo;
            *o = (hi << 4) | (lo & 0x0f);
        }
        // Valid digits are below 16; the marker 0xff sets the high bits.
        (bad & 0xf0 == 0).then_some(out)
    }

    proptest::proptest! {
        #[test]
        fn hex_decoders_agree(
            digits in "[0-9a-fA-F:/`@gG\u{80}-\u{ff}]{64}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 64),
            flip in 0usize..64,
        ) {
            let mut b = digits.as_bytes().to_vec();
            b.truncate(64);
            b.resize(64, b'0');
            proptest::prop_assert_eq!(parse_hex32_bytes(&b), parse_hex32_by_table(&b));
            proptest::prop_assert_eq!(parse_hex32_bytes(&bytes), parse_hex32_by_table(&bytes));
            let mut good = hex::encode([0xa5u8; 32]).into_bytes();
            good[flip] = bytes[flip];
            proptest::prop_assert_eq!(parse_hex32_bytes(&good), parse_hex32_by_table(&good));
        }
    }

    #[test]
    fn hex_decoder_takes_every_lowercase_digit_and_nothing_else() {
        for c in 0..=255u8 {
            let b = [c; 64];
            assert_eq!(parse_hex32_bytes(&b), parse_hex32_by_table(&b), "{c}");
        }
        let all = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_hex32_bytes(all).map(hex::encode).as_deref(),
            std::str::from_utf8(all).ok()
        );
    }

    fn sample(details: &str) -> (Vec<u8>, Hash) {
        let entry =
            Entry::new("task.submitted", "alice", Details::parse(details).unwrap()).unwrap();
        let id = uuid::Uuid::nil();
        let stamp = Stamp {
            seq: 7,
            ts: "2026-12-04T10:00:00.000001Z",
            id: &id,
            prev: &[1u8; 32],
            epoch: 2,
            mac: &mac_state(&[9u8; 32]),
        };
        let mut out = Vec::new();
        let h = encode(&mut out, &stamp, &entry).unwrap();
        (out, h)
    }

    #[test]
    fn encoded_line_parses_back_and_hashes_its_own_bytes() {
        let (line, h) = sample(r#"{"hash":"x","mac":"y","n":1e21}"#);
        assert_eq!(line.last(), Some(&b'\n'));
        let v = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(v.seq, 7);
        assert_eq!(v.leaf, h);
        assert!(v.hash_ok());
        assert!(v.mac_ok(&[9u8; 32]));
        assert!(!v.mac_ok(&[8u8; 32]));
        assert_eq!(v.details.get(), r#"{"hash":"x","mac":"y","n":1e21}"#);
        assert_eq!(v.kind_str(), "task.submitted");
    }

    #[test]
    fn any_flipped_byte_changes_the_verdict() {
        let (line, _) = sample(r#"{"k":"v"}"#);
        let line = &line[..line.len() - 1];
        for i in 0..line.len() {
            let mut bad = line.to_vec();
            bad[i] ^= 0x01;
            if let Ok(v) = parse_line(&bad) {
                assert!(
                    !v.hash_ok() || !v.mac_ok(&[9u8; 32]),
                    "flip at {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn type_and_actor_rules() {
        assert!(Entry::new("", "a", Details::empty()).is_err());
        assert!(Entry::new("bad type", "a", Details::empty()).is_err());
        assert!(Entry::new("t", "a\u{7}", Details::empty()).is_err());
        assert!(Entry::new("t", "ünïcode 🎬", Details::empty()).is_ok());
        assert!(Entry::new("t".repeat(129), "a", Details::empty()).is_err());
    }

    #[test]
    fn oversize_records_are_refused_and_leave_nothing() {
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_RECORD_BYTES));
        let entry = Entry::new("t", "a", Details::parse(&big).unwrap()).unwrap();
        let id = uuid::Uuid::nil();
        let stamp = Stamp {
            seq: 0,
            ts: "2026-12-04T10:00:00.000001Z",
            id: &id,
            prev: &GENESIS_PREV,
            epoch: 0,
            mac: &mac_state(&[0u8; 32]),
        };
        let mut out = b"keep".to_vec();
        assert!(matches!(
            encode(&mut out, &stamp, &entry),
            Err(EntryError::RecordTooLarge { .. })
        ));
        assert_eq!(out, b"keep");
    }

    proptest::proptest! {
        #[test]
        fn parse_line_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_line(&bytes);
        }
    }
}
