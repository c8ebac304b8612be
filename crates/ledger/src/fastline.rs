//! A positional reader for record lines in the writer's canonical form, for the verifier's hot
//! loop.
//!
//! [`scan`] reads the fixed fields by position and checks the three JSON values in the middle
//! (`type`, `actor`, `details`) with a small validator instead of a general JSON parser. It
//! accepts a *subset* of what [`crate::record::parse_line`] accepts, with the same field values:
//! the writer's form (no whitespace, fields in order, hyphenated `id`, nesting up to
//! [`MAX_FAST_DEPTH`]). Anything else, valid or not, returns `None`, and the caller hands the
//! line to `parse_line`, which gives the verdict and words the error. So the verifier's
//! acceptance set stays exactly `parse_line`'s; a differential test checks the subset property.

use kling_audit_merkle::{leaf_hash, Hash};

use crate::record::{
    parse_hex32_bytes, parse_line, valid_ts_bytes, HASH_KEY, HASH_SUFFIX_LEN, MAC_KEY,
    MAC_SUFFIX_LEN, MAX_RECORD_BYTES,
};

/// Deeper `details` go to the reference parser; the writer allows 128 levels.
pub(crate) const MAX_FAST_DEPTH: usize = 256;

/// The fields of a canonical record line, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    pub seq: u64,
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, checked.
    pub ts: &'a [u8],
    pub prev: Hash,
    /// The raw JSON string of `type`, quotes included.
    pub kind: &'a [u8],
    /// The raw JSON object of `details`; valid UTF-8.
    pub details: &'a [u8],
    pub epoch: u64,
    pub mac: Hash,
    pub hash: Hash,
    /// The bytes the leaf hash covers (up to `,"hash":"`).
    pub body: &'a [u8],
}

const HEAD: &[u8] = b"{\"v\":1,\"seq\":";
const SHORTEST: usize = HEAD.len() + 1 + HASH_SUFFIX_LEN + MAC_SUFFIX_LEN;

/// Reads a line (without its newline) in the canonical form; `None` when it is not in that
/// form, which includes every malformed line.
pub(crate) fn scan(line: &[u8]) -> Option<Fields<'_>> {
    let n = line.len();
    if !(SHORTEST..MAX_RECORD_BYTES).contains(&n) {
        return None;
    }
    let body_len = n - HASH_SUFFIX_LEN;
    let mac_start = body_len - MAC_SUFFIX_LEN;
    let (rest, tail) = line.split_at(mac_start);
    // tail: ,"mac":"<64 hex>","hash":"<64 hex>"}
    let (mac_key, tail) = tail.split_at(MAC_KEY.len());
    let (mac_hex, tail) = tail.split_at(64);
    let (quote, tail) = tail.split_at(1);
    let (hash_key, tail) = tail.split_at(HASH_KEY.len());
    let (hash_hex, end) = tail.split_at(64);
    if mac_key != MAC_KEY || quote != b"\"" || hash_key != HASH_KEY || end != b"\"}" {
        return None;
    }
    let mac = parse_hex32_bytes(mac_hex)?;
    let hash = parse_hex32_bytes(hash_hex)?;

    let mut c = Cursor { b: rest, i: 0 };
    c.lit(HEAD)?;
    let seq = c.uint()?;
    c.lit(b",\"ts\":\"")?;
    let ts = c.take(27)?;
    if !valid_ts_bytes(ts) {
        return None;
    }
    c.lit(b"\",\"id\":\"")?;
    if !hyphenated_uuid(c.take(36)?) {
        return None;
    }
    c.lit(b"\",\"prev\":\"")?;
    let prev = parse_hex32_bytes(c.take(64)?)?;
    c.lit(b"\",\"type\":")?;
    let json_start = c.i;
    let mut high = 0u8;
    c.expect(b'"')?;
    high |= c.string()?;
    let kind = &rest[json_start..c.i];
    c.lit(b",\"actor\":")?;
    c.expect(b'"')?;
    high |= c.string()?;
    c.lit(b",\"details\":")?;
    let details_start = c.i;
    if c.peek()? != b'{' {
        return None;
    }
    high |= c.value()?;
    let details = &rest[details_start..c.i];
    let json_end = c.i;
    c.lit(b",\"epoch\":")?;
    let epoch = c.uint()?;
    if c.i != rest.len() {
        return None;
    }
    // Outside strings only ASCII was accepted; strings with high bytes must be UTF-8 (the
    // reference parser checks each raw value, and ASCII separators cannot split a sequence).
    if high & 0x80 != 0 && std::str::from_utf8(&rest[json_start..json_end]).is_err() {
        return None;
    }
    Some(Fields {
        seq,
        ts,
        prev,
        kind,
        details,
        epoch,
        mac,
        hash,
        body: &line[..body_len],
    })
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex of either case, a form `Uuid::try_parse` takes.
fn hyphenated_uuid(b: &[u8]) -> bool {
    const FORM: &[u8; 36] = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    let Ok(b) = <&[u8; 36]>::try_from(b) else {
        return false;
    };
    let mut ok = true;
    for (c, f) in b.iter().zip(FORM) {
        ok &= if *f == b'x' {
            c.is_ascii_hexdigit()
        } else {
            c == f
        };
    }
    ok
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    #[inline]
    fn lit(&mut self, want: &[u8]) -> Option<()> {
        let got = self.b.get(self.i..self.i + want.len())?;
        if got != want {
            return None;
        }
        self.i += want.len();
        Some(())
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let got = self.b.get(self.i..self.i + n)?;
        self.i += n;
        Some(got)
    }

    /// A JSON integer that fits `u64`: `0` or a digit string without a leading zero.
    fn uint(&mut self) -> Option<u64> {
        let first = self.next()?;
        if !first.is_ascii_digit() {
            return None;
        }
        let mut v = u64::from(first - b'0');
        if first == b'0' {
            return (!self.peek().is_some_and(|c| c.is_ascii_digit())).then_some(0);
        }
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        // `1.0` or `1e3` would be a float, which the reference parser refuses for an integer.
        Some(v)
    }

    /// The rest of a JSON string after its opening quote. Returns the OR of its bytes, so the
    /// caller knows whether a UTF-8 check is needed.
    fn string(&mut self) -> Option<u8> {
        let mut high = 0u8;
        loop {
            let c = self.next()?;
            high |= c;
            match c {
                b'"' => return Some(high),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    // Any four hex digits: raw values keep escapes unchecked, lone surrogates
                    // included, exactly as the reference parser does.
                    b'u' => {
                        if !self.take(4)?.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                    }
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits_at_least_one()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits_at_least_one()?;
        }
        Some(())
    }

    #[inline]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    #[inline]
    fn digits_at_least_one(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// An object key and its colon, after a `{` or `,` in an object.
    #[inline]
    fn key(&mut self, high: &mut u8) -> Option<()> {
        self.expect(b'"')?;
        *high |= self.string()?;
        self.expect(b':')
    }

    /// One JSON value without whitespace, nested at most [`MAX_FAST_DEPTH`] levels. Returns
    /// the OR of its string bytes.
    fn value(&mut self) -> Option<u8> {
        // One bit per open container: set for an object, clear for an array.
        let mut stack = [0u64; MAX_FAST_DEPTH / 64];
        let mut depth = 0usize;
        let mut high = 0u8;
        loop {
            // A value is expected here.
            match self.next()? {
                b'"' => high |= self.string()?,
                b'{' | b'[' => {
                    let object = self.b[self.i - 1] == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        if depth == MAX_FAST_DEPTH {
                            return None;
                        }
                        let (w, bit) = (depth / 64, depth % 64);
                        stack[w] = (stack[w] & !(1 << bit)) | (u64::from(object) << bit);
                        depth += 1;
                        if object {
                            self.key(&mut high)?;
                        }
                        continue;
                    }
                }
                b't' => self.lit(b"rue")?,
                b'f' => self.lit(b"alse")?,
                b'n' => self.lit(b"ull")?,
                b'-' | b'0'..=b'9' => {
                    self.i -= 1;
                    self.number()?;
                }
                _ => return None,
            }
            // A value ended: close containers until one continues with a comma.
            loop {
                if depth == 0 {
                    return Some(high);
                }
                let top = depth - 1;
                let object = stack[top / 64] >> (top % 64) & 1 == 1;
                match self.next()? {
                    b',' => {
                        if object {
                            self.key(&mut high)?;
                        }
                        break;
                    }
                    b'}' if object => depth -= 1,
                    b']' if !object => depth -= 1,
                    _ => return None,
                }
            }
        }
    }
}

/// The subset property: what [`scan`] accepts, [`parse_line`] accepts with the same fields.
/// Checked by the tests here and by the `record_line` fuzz target.
pub(crate) fn agrees_with_reference(line: &[u8]) -> bool {
    let Some(f) = scan(line) else {
        return true;
    };
    let Ok(v) = parse_line(line) else {
        return false;
    };
    f.seq == v.seq
        && f.ts == v.ts.as_bytes()
        && f.prev == v.prev
        && f.kind == v.kind.get().as_bytes()
        && f.details == v.details.get().as_bytes()
        && f.epoch == v.epoch
        && f.mac == v.mac
        && f.hash == v.hash
        && leaf_hash(f.body) == v.leaf
        && line.starts_with(v.mac_input)
        && f.body.len() == v.mac_input.len() + MAC_SUFFIX_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"v":1,"seq":0,"ts":"2026-12-04T16:39:20.813958Z","id":"01a241ec-b1ed-7b19-8b67-c5912941ac10","prev":"0000000000000000000000000000000000000000000000000000000000000000","type":"task.submitted","actor":"alice","details":{"model":"kling-v2-1","prompt_hmac":"9f2c","prompt_chars":42},"epoch":0,"mac":"23bf94db1d294f61e5393c0c68d79300349fce7deb893b3b68517bae6b19f149","hash":"38bc72468e5fedac84287e41f5029099baf42ab8fe9302cdfe0f509e4461b966"}"#;

    fn agrees(line: &[u8]) -> bool {
        agrees_with_reference(line)
    }

    fn with_details(details: &str) -> String {
        GOOD.replace(
            r#"{"model":"kling-v2-1","prompt_hmac":"9f2c","prompt_chars":42}"#,
            details,
        )
    }

    #[test]
    fn the_format_vector_takes_the_fast_path() {
        let f = scan(GOOD.as_bytes()).expect("canonical line");
        assert!(agrees(GOOD.as_bytes()));
        assert_eq!(f.body.len(), 362);
        assert!(leaf_hash(f.body) == f.hash);
    }

    #[test]
    fn canonical_json_of_every_kind_takes_the_fast_path() {
        for d in [
            r#"{}"#,
            r#"{"a":[]}"#,
            r#"{"a":[1,-0.0,1e21,1E+2,2.5e-3,true,false,null,"x",{"b":{}}]}"#,
            r#"{"ünï":"🎬","e":"\"\\\/\b\f\n\r\t\u00e9\uD800"}"#,
            r#"{"hash":"x","mac":"y","n":123456789012345678901234567890}"#,
            r#"{"a":1,"a":2}"#,
        ] {
            let line = with_details(d);
            assert!(scan(line.as_bytes()).is_some(), "{d}");
            assert!(agrees(line.as_bytes()), "{d}");
        }
    }

    #[test]
    fn lines_outside_the_canonical_form_go_to_the_reference_parser() {
        for d in [
            r#"{ "a":1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":NaN}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1,}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":tru}"#,
            r#"{"a":1}}"#,
            r#"{"a":[1}"#,
            r#"[1]"#,
            "{\"a\":\"\u{1}\"}",
        ] {
            let line = with_details(d);
            assert!(scan(line.as_bytes()).is_none(), "{d}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(300), "]".repeat(300));
        let line = with_details(&deep);
        assert!(scan(line.as_bytes()).is_none());
        assert!(
            parse_line(line.as_bytes()).is_ok(),
            "the reference accepts any depth"
        );
        let mut bad_utf8 = with_details(r#"{"a":"éé"}"#).into_bytes();
        let at = bad_utf8.iter().position(|b| *b >= 0x80).unwrap();
        bad_utf8[at] = 0xff;
        assert!(scan(&bad_utf8).is_none());
        for (from, to) in [
            ("\"seq\":0", "\"seq\":00"),
            ("\"seq\":0", "\"seq\":-0"),
            ("\"seq\":0", "\"seq\":0.0"),
            ("\"seq\":0", "\"seq\":18446744073709551616"),
            ("\"epoch\":0", "\"epoch\":1e0"),
            ("\"type\":\"task.submitted\"", "\"type\":1"),
            ("\"actor\":\"alice\"", "\"actor\":[\"alice\"]"),
            ("01a241ec-b1ed", "01A241EC-B1ED"),
        ] {
            let line = GOOD.replace(from, to);
            assert!(agrees(line.as_bytes()), "{to}");
        }
        let upper_id = GOOD.replace("01a241ec-b1ed", "01A241EC-B1ED");
        assert!(scan(upper_id.as_bytes()).is_some());
        let big = GOOD.replace("\"seq\":0", "\"seq\":18446744073709551615");
        assert_eq!(scan(big.as_bytes()).map(|f| f.seq), Some(u64::MAX));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Byte edits of a valid line: whatever the fast path accepts, the reference accepts
        /// with the same fields.
        #[test]
        fn fast_path_accepts_a_subset_of_parse_line(
            edits in proptest::collection::vec((0usize..440, proptest::prelude::any::<u8>(), 0u8..4), 1..4),
            details in "[\\[\\]{}\":,0-9a-z\\\\.eE+\\- éu]{0,40}",
        ) {
            let mut line = with_details(&format!("{{\"k\":{details}}}")).into_bytes();
            if let Ok(text) = std::str::from_utf8(&line) {
                proptest::prop_assert!(agrees(text.as_bytes()));
            }
            for (at, byte, op) in edits {
                let at = at % (line.len() + 1);
                match op {
                    0 if at < line.len() => line[at] = byte,
                    1 => line.insert(at, byte),
                    2 if at < line.len() => { line.remove(at); }
                    _ => {
                        const JSONISH: &[u8] = b"{}[]\",:\\0-e.u";
                        line.insert(at, JSONISH[usize::from(byte) % JSONISH.len()]);
                    }
                }
            }
            proptest::prop_assert!(agrees(&line));
        }

        /// Random JSON-ish details: the fast path agrees with the reference, and takes every
        /// details value the reference takes in canonical form (no whitespace, depth limit).
        #[test]
        fn fast_path_takes_canonical_details_the_reference_takes(
            details in "\\{[\\[\\]{}\":,0-9a-z\\\\.eE+\\-éu]{0,30}\\}",
        ) {
            let line = with_details(&details);
            proptest::prop_assert!(agrees(line.as_bytes()));
            if let Ok(v) = parse_line(line.as_bytes()) {
                if v.details.get() == details {
                    proptest::prop_assert!(scan(line.as_bytes()).is_some(), "{}", details);
                }
            }
        }
    }
}
