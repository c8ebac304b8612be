//! The `details` object of a record: validated strictly and kept as written.
//!
//! Details are stored as the caller's own JSON text with insignificant whitespace removed, so a
//! number such as `1e21`, `-0.0` or a 30-digit integer is kept exactly as given. Parsing into
//! `serde_json::Value` and printing it again would round such numbers (serde_json can only keep
//! number text through a crate-wide feature that changes every user of the crate), which is why
//! the minifier below is written by hand; `serde_json` still does the validation.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::EntryError;

/// A JSON object fit to be written into a record: valid, without duplicate keys, one line.
#[derive(Clone, PartialEq, Eq)]
pub struct Details(String);

impl Details {
    /// The empty object.
    pub fn empty() -> Self {
        Details("{}".to_owned())
    }

    /// Validates `text` as a JSON object and keeps it, minus insignificant whitespace.
    ///
    /// Refused: invalid JSON, a top level other than an object, a key repeated within one
    /// object, nesting deeper than serde_json's limit of 128.
    pub fn parse(text: &str) -> Result<Self, EntryError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let unlimited = Cell::new(usize::MAX);
        let kind = StrictValue { left: &unlimited }
            .deserialize(&mut de)
            .and_then(|kind| de.end().map(|()| kind))
            .map_err(|e| map_json_error(&e))?;
        if kind != Kind::Object {
            return Err(EntryError::DetailsNotObject { found: kind.name() });
        }
        Ok(Details(minify(text)))
    }

    /// Builds details from a value made in code. Only objects are accepted.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, EntryError> {
        match value {
            serde_json::Value::Object(_) => Ok(Details(value.to_string())),
            other => Err(EntryError::DetailsNotObject {
                found: value_kind(other),
            }),
        }
    }

    /// Builds details straight from a type whose JSON form is an object with distinct keys,
    /// such as a struct deriving `Serialize`, without building a `Value` first: records
    /// written on every call are made this way. A serializer that repeats a key breaks the
    /// record rules; debug builds check for that.
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, EntryError> {
        // One allocation for a typical record: `to_string` starts at 128 bytes and regrows
        // three times on the way to the usual few hundred.
        let mut bytes = Vec::with_capacity(1024);
        let not_json = |reason: String| EntryError::DetailsNotJson {
            reason,
            line: 0,
            column: 0,
        };
        serde_json::to_writer(&mut bytes, value).map_err(|e| not_json(e.to_string()))?;
        // SAFETY: serde_json writes only UTF-8 (it escapes nothing into other bytes, and every
        // string it is given is `str`); `serde_json::to_string` relies on the same guarantee.
        let text = unsafe { String::from_utf8_unchecked(bytes) };
        let found = match text.as_bytes().first() {
            Some(b'{') => {
                debug_assert!(Details::parse(&text).is_ok(), "serialized details: {text}");
                return Ok(Details(text));
            }
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        };
        Err(EntryError::DetailsNotObject { found })
    }

    /// The JSON text as it will be written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Details {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Details({} bytes)", self.0.len())
    }
}

impl TryFrom<serde_json::Value> for Details {
    type Error = EntryError;
    fn try_from(value: serde_json::Value) -> Result<Self, EntryError> {
        Details::from_value(&value)
    }
}

fn value_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Why JSON that a service forwards could be read otherwise by its receiver than by the
/// service's own record of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnfaithfulJson {
    /// A key repeated within one object: parsers disagree on which value wins.
    RepeatedKey(String),
    /// Nesting deeper than 128 levels: the record cannot read it, while the receiver may.
    TooDeep,
    /// A string with a lone UTF-16 surrogate escape (`"\ud800"`) or bytes that are not UTF-8.
    /// The record cannot hold it and stops there, while many parsers read it anyway (keeping or
    /// replacing the bad code unit) and go on to the fields after it.
    NotUnicode,
    /// A number beyond the range of a double (`1e400`): valid JSON that the record cannot
    /// read, while JavaScript, Python and Java parsers read it as infinity and go on.
    NumberOutOfRange,
    /// More values (scalars and containers together) than the caller's limit: a service that
    /// goes on to build the document in memory would hold many times its size.
    TooManyValues {
        /// The limit that was passed.
        max: usize,
    },
}

/// Checks JSON that a service forwards but does not own. Text that is not JSON at all passes:
/// no receiver reads it as JSON either.
pub fn unfaithful_json(text: &[u8]) -> Option<UnfaithfulJson> {
    unfaithful_json_within(text, usize::MAX)
}

/// [`unfaithful_json`] that also refuses JSON of more than `max_values` values (every scalar,
/// array and object counts one), in the same pass, before anything is built from it.
pub fn unfaithful_json_within(text: &[u8], max_values: usize) -> Option<UnfaithfulJson> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let left = Cell::new(max_values);
    let Err(e) = (StrictValue { left: &left }).deserialize(&mut de) else {
        return None;
    };
    if e.to_string().starts_with(TOO_MANY_VALUES) {
        return Some(UnfaithfulJson::TooManyValues { max: max_values });
    }
    match map_json_error(&e) {
        EntryError::DuplicateKey { key } => Some(UnfaithfulJson::RepeatedKey(key)),
        EntryError::DetailsNotJson { reason, .. } if reason.starts_with("recursion limit") => {
            Some(UnfaithfulJson::TooDeep)
        }
        EntryError::DetailsNotJson { reason, .. }
            if NOT_UNICODE.iter().any(|m| reason.starts_with(m)) =>
        {
            Some(UnfaithfulJson::NotUnicode)
        }
        EntryError::DetailsNotJson { reason, .. } if reason.starts_with("number out of range") => {
            Some(UnfaithfulJson::NumberOutOfRange)
        }
        _ => None,
    }
}

/// serde_json's messages for a lone surrogate escape (the first two) and for bytes of a string
/// that are not UTF-8; its error type names the cause only in its text.
const NOT_UNICODE: &[&str] = &[
    "lone leading surrogate in hex escape",
    "unexpected end of hex escape",
    "invalid unicode code point",
];

const DUPLICATE_PREFIX: &str = "duplicate key ";
/// The error text of a document over its value limit.
const TOO_MANY_VALUES: &str = "too many JSON values";

fn map_json_error(e: &serde_json::Error) -> EntryError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUPLICATE_PREFIX) {
        // The key rides in serde's custom error text as a JSON string, before the position
        // suffix that serde_json appends last (the key itself may hold " at line ").
        let quoted = rest.rsplit_once(" at line ").map_or(rest, |(key, _)| key);
        let key = serde_json::from_str::<String>(quoted)
            .unwrap_or_else(|_| quoted.trim_matches('"').to_owned());
        return EntryError::DuplicateKey { key };
    }
    let reason = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
    EntryError::DetailsNotJson {
        reason,
        line: e.line(),
        column: e.column(),
    }
}

/// Removes whitespace outside strings. The input must already be valid JSON.
fn minify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            out.push(ch);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// A validating visitor: accepts any JSON value, rejects repeated keys, keeps nothing. `left`
/// is how many more values the document may hold.
#[derive(Clone, Copy)]
struct StrictValue<'c> {
    left: &'c Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        let left = self.left.get();
        if left == 0 {
            return Err(de::Error::custom(TOO_MANY_VALUES));
        }
        self.left.set(left - 1);
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::String)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(Kind::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut seen = Seen::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            map.next_value_seed(self)?;
            if let Err(key) = seen.insert(key) {
                let quoted = serde_json::to_string(&*key).unwrap_or_default();
                return Err(de::Error::custom(format_args!(
                    "{DUPLICATE_PREFIX}{quoted}"
                )));
            }
        }
        Ok(Kind::Object)
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The keys of one object so far: a short list searched in turn, as most objects are small,
/// and a set once the object grows past it.
#[derive(Default)]
struct Seen<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl<'de> Seen<'de> {
    const FEW: usize = 16;

    /// Adds a key; hands it back when the object already had it.
    fn insert(&mut self, key: Cow<'de, str>) -> Result<(), Cow<'de, str>> {
        if self.many.is_empty() {
            if self.few.contains(&key) {
                return Err(key);
            }
            if self.few.len() < Self::FEW {
                self.few.push(key);
                return Ok(());
            }
            self.many.extend(self.few.drain(..));
        }
        if self.many.contains(&key) {
            return Err(key);
        }
        self.many.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_kept_as_written() {
        let d = Details::parse(r#"{ "a": 1e21, "b": -0.0, "c": 123456789012345678901234567890 }"#)
            .unwrap();
        assert_eq!(
            d.as_str(),
            r#"{"a":1e21,"b":-0.0,"c":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn whitespace_inside_strings_is_kept() {
        let d = Details::parse("{\"k\" :\n \"a b\\n\\\" c\"}").unwrap();
        assert_eq!(d.as_str(), "{\"k\":\"a b\\n\\\" c\"}");
    }

    #[test]
    fn serialized_structs_become_the_same_text_as_their_values() {
        #[derive(serde::Serialize)]
        struct Made<'a> {
            a: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            b: Option<&'a str>,
            c: &'a str,
            d: f64,
        }
        let made = Made {
            a: None,
            b: None,
            c: "x\"y\u{1}",
            d: 0.25,
        };
        let value = serde_json::json!({"a": null, "c": "x\"y\u{1}", "d": 0.25});
        let from_struct = Details::from_serialize(&made).unwrap();
        assert_eq!(from_struct, Details::from_value(&value).unwrap());
        assert_eq!(from_struct, Details::parse(from_struct.as_str()).unwrap());
        for (v, kind) in [
            (serde_json::json!([1]), "an array"),
            (serde_json::json!("s"), "a string"),
            (serde_json::json!(true), "a boolean"),
            (serde_json::json!(null), "null"),
            (serde_json::json!(-3), "a number"),
        ] {
            match Details::from_serialize(&v) {
                Err(EntryError::DetailsNotObject { found }) => assert_eq!(found, kind),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn non_objects_are_refused_with_their_kind() {
        for (text, kind) in [("[1]", "an array"), ("3", "a number"), ("null", "null")] {
            match Details::parse(text) {
                Err(EntryError::DetailsNotObject { found }) => assert_eq!(found, kind),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn repeated_keys_and_deep_nesting_are_found_in_any_json_and_nothing_else_is() {
        let repeated = |k: &str| Some(UnfaithfulJson::RepeatedKey(k.to_owned()));
        assert_eq!(
            unfaithful_json(br#"{"prompt":"x","prompt":"y"}"#),
            repeated("prompt")
        );
        assert_eq!(unfaithful_json(br#"[{"a":{"b":1,"b":2}}]"#), repeated("b"));
        assert_eq!(unfaithful_json(br#"{"a":1,"b":{"a":2}}"#), None);
        let deep = format!(
            r#"{{"prompt":"x","j":{}{}}}"#,
            "[".repeat(130),
            "]".repeat(130)
        );
        assert_eq!(
            unfaithful_json(deep.as_bytes()),
            Some(UnfaithfulJson::TooDeep)
        );
        let fine = format!(r#"{{"j":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert_eq!(unfaithful_json(fine.as_bytes()), None);
        assert_eq!(unfaithful_json(b"{not json"), None);
        assert_eq!(unfaithful_json(b""), None);
    }

    #[test]
    fn a_lone_surrogate_or_non_utf8_string_hiding_a_repeated_key_is_unfaithful() {
        // Most parsers read these strings anyway (keeping or replacing the bad code unit), and
        // then the keys after them, which this parser never reaches.
        for text in [
            &br#"{"x":"\ud800","prompt":"a","prompt":"b"}"#[..],
            br#"{"x":"\udc00","prompt":"a","prompt":"b"}"#,
            br#"{"x":"\ud800\u0041","prompt":"a"}"#,
            br#"{"\ud800":1,"prompt":"a"}"#,
            b"{\"x\":\"\xff\",\"prompt\":\"a\",\"prompt\":\"b\"}",
            b"{\"\xc3\":1}",
        ] {
            assert_eq!(
                unfaithful_json(text),
                Some(UnfaithfulJson::NotUnicode),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // A proper pair, and bytes that no parser reads as JSON, are not.
        assert_eq!(unfaithful_json(br#"{"x":"\ud83d\ude00"}"#), None);
        assert_eq!(unfaithful_json(b"\xff\xfe{}"), None);
        assert_eq!(unfaithful_json(b"prompt=\xff"), None);
    }

    #[test]
    fn json_over_its_value_limit_is_refused_counting_scalars_and_containers() {
        // An object, an array, three numbers and a string: six values.
        let text = br#"{"a":[1,2,3],"b":"x"}"#;
        assert_eq!(unfaithful_json_within(text, 6), None);
        assert_eq!(
            unfaithful_json_within(text, 5),
            Some(UnfaithfulJson::TooManyValues { max: 5 })
        );
        // Keys are not values; long strings count once.
        let long = format!(r#"{{"{}":"{}"}}"#, "k".repeat(100), "v".repeat(100_000));
        assert_eq!(unfaithful_json_within(long.as_bytes(), 2), None);
        let many = format!("[{}1]", "1,".repeat(1000));
        assert_eq!(
            unfaithful_json_within(many.as_bytes(), 1000),
            Some(UnfaithfulJson::TooManyValues { max: 1000 })
        );
        assert_eq!(unfaithful_json_within(many.as_bytes(), 1002), None);
        assert_eq!(unfaithful_json(many.as_bytes()), None);
    }

    #[test]
    fn a_number_out_of_range_hiding_a_repeated_key_is_unfaithful() {
        for text in [
            &br#"{"x":1e400,"prompt":"a","prompt":"b"}"#[..],
            br#"{"x":[-1E+999],"prompt":"a"}"#,
        ] {
            assert_eq!(
                unfaithful_json(text),
                Some(UnfaithfulJson::NumberOutOfRange),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // Tiny numbers round to zero and long integers to a double: both are read.
        assert_eq!(
            unfaithful_json(br#"{"x":1e-400,"y":1234567890123456789012345}"#),
            None
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        match Details::parse(r#"{"a":{"x":1,"x":2}}"#) {
            Err(EntryError::DuplicateKey { key }) => assert_eq!(key, "x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_repeated_in_a_large_object_or_spelled_with_an_escape_is_refused() {
        let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let distinct = format!("{{{}}}", keys.join(","));
        assert!(Details::parse(&distinct).is_ok());
        for late in [1, 16, 17, 39] {
            let repeated = format!("{{{},\"k{late}\":0}}", keys.join(","));
            match Details::parse(&repeated) {
                Err(EntryError::DuplicateKey { key }) => assert_eq!(key, format!("k{late}")),
                other => panic!("k{late}: {other:?}"),
            }
        }
        match Details::parse(r#"{"ab":1,"\u0061b":2}"#) {
            Err(EntryError::DuplicateKey { key }) => assert_eq!(key, "ab"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_is_named_exactly_whatever_it_holds() {
        for key in [
            "a\"b",
            "back\\slash",
            "x at line 5 column 2",
            "tab\there",
            "é🎬",
        ] {
            let quoted = serde_json::to_string(key).unwrap();
            match Details::parse(&format!("{{{quoted}:1,{quoted}:2}}")) {
                Err(EntryError::DuplicateKey { key: found }) => assert_eq!(found, key),
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn lone_surrogates_and_nan_are_refused() {
        assert!(matches!(
            Details::parse(r#"{"a":"\ud800"}"#),
            Err(EntryError::DetailsNotJson { .. })
        ));
        assert!(matches!(
            Details::parse(r#"{"a":NaN}"#),
            Err(EntryError::DetailsNotJson { .. })
        ));
        assert!(matches!(
            Details::parse(r#"{"a":1} x"#),
            Err(EntryError::DetailsNotJson { .. })
        ));
    }

    #[test]
    fn deep_nesting_within_the_limit_is_kept() {
        let depth = 100;
        let text = format!(
            "{}{}",
            "{\"a\":".repeat(depth),
            "1".to_owned() + &"}".repeat(depth)
        );
        assert_eq!(Details::parse(&text).unwrap().as_str(), text);
        let too_deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let obj = format!("{{\"a\":{too_deep}}}");
        assert!(matches!(
            Details::parse(&obj),
            Err(EntryError::DetailsNotJson { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn minified_details_parse_to_the_same_value(v in arb_json(3)) {
            let obj = serde_json::json!({ "v": v });
            let pretty = serde_json::to_string_pretty(&obj).unwrap();
            let d = Details::parse(&pretty).unwrap();
            let back: serde_json::Value = serde_json::from_str(d.as_str()).unwrap();
            proptest::prop_assert_eq!(back, obj);
            proptest::prop_assert!(!d.as_str().contains('\n'));
        }
    }

    fn arb_json(depth: u32) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            "\\PC{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(depth, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z ]{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
