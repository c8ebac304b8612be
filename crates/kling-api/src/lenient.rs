//! Scalar types that accept the loose JSON Kling's clients send (kling-api.md 5.5): numbers
//! as strings (`"n":"9"`), strings as numbers (`"duration": 5`), booleans as strings
//! (`"multi_shot":"true"`). Each remembers the JSON type it arrived as, because the audit
//! records it (15) and a strict simulator mode rejects mismatches (16.9); serializing writes
//! the value back in the same JSON type, so a forwarded body does not change shape.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value documented as a numeric **string** (`duration: "5"`, `final_unit_deduction: "1"`)
/// that some clients send as a JSON number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NumericString {
    /// The text; for a JSON number, its JSON rendering (`5`, `5.5`).
    pub text: String,
    /// True when it arrived as a JSON number rather than a string.
    pub sent_as_number: bool,
}

impl NumericString {
    /// A value that arrived (or will be sent) as a string.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            sent_as_number: false,
        }
    }

    /// The value as a float, when the text is a finite number.
    pub fn as_f64(&self) -> Option<f64> {
        self.text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
    }

    /// The value as an integer, when the text is one (`"5"`, not `"5.5"`).
    pub fn as_i64(&self) -> Option<i64> {
        self.text.trim().parse::<i64>().ok()
    }
}

impl From<&str> for NumericString {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl fmt::Display for NumericString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for NumericString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.sent_as_number {
            if let Some(i) = self.as_i64() {
                return serializer.serialize_i64(i);
            }
            if let Some(f) = self.as_f64() {
                return serializer.serialize_f64(f);
            }
        }
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for NumericString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(NumericString::new(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(NumericString {
                    text: v.to_string(),
                    sent_as_number: true,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(NumericString {
                    text: v.to_string(),
                    sent_as_number: true,
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(NumericString {
                    text: v.to_string(),
                    sent_as_number: true,
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The scalars [`Lenient`] supports (`i64`, `f64`, `bool`): how each reads from its string
/// form and from the other JSON scalar types, and how it is written back.
pub trait LenientScalar: Sized + Copy + private::Sealed {
    /// Parses the string form, `None` when it is not one.
    fn parse_text(text: &str) -> Option<Self>;
    /// The string form.
    fn to_text(&self) -> String;
    /// Writes the native JSON form.
    fn serialize_native<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
    /// From a JSON integer, without silent wrap-around.
    fn from_i64(v: i64) -> Option<Self>;
    /// From a JSON unsigned integer.
    fn from_u64(v: u64) -> Option<Self>;
    /// From a JSON float.
    fn from_f64(v: f64) -> Option<Self>;
    /// From a JSON boolean.
    fn from_bool(v: bool) -> Option<Self>;
}

mod private {
    pub trait Sealed {}
    impl Sealed for i64 {}
    impl Sealed for f64 {}
    impl Sealed for bool {}
}

impl LenientScalar for i64 {
    fn parse_text(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn serialize_native<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(*self)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok()
    }
    fn from_f64(v: f64) -> Option<Self> {
        // 5.0 is an integer; 5.5 is not. The bound keeps the cast from saturating.
        (v.fract() == 0.0 && v.abs() < 9.0e18).then_some(v as i64)
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

impl LenientScalar for f64 {
    fn parse_text(text: &str) -> Option<Self> {
        text.trim().parse::<f64>().ok().filter(|f| f.is_finite())
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn serialize_native<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Whole values go out as integers (`5`, not `5.0`): clients mostly send them that way.
        if self.fract() == 0.0 && self.abs() < 9.0e15 {
            serializer.serialize_i64(*self as i64)
        } else {
            serializer.serialize_f64(*self)
        }
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

impl LenientScalar for bool {
    fn parse_text(text: &str) -> Option<Self> {
        match text.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn serialize_native<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(*self)
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// A number or boolean that may arrive as its string form (`"9"`, `"true"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lenient<T> {
    /// The parsed value.
    pub value: T,
    /// True when it arrived as a JSON string.
    pub sent_as_string: bool,
}

impl<T> Lenient<T> {
    /// A value sent in its native JSON type.
    pub fn new(value: T) -> Self {
        Self {
            value,
            sent_as_string: false,
        }
    }
}

impl<T> From<T> for Lenient<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: LenientScalar> Serialize for Lenient<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.sent_as_string {
            serializer.serialize_str(&self.value.to_text())
        } else {
            self.value.serialize_native(serializer)
        }
    }
}

impl<'de, T> Deserialize<'de> for Lenient<T>
where
    T: LenientScalar,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: LenientScalar> Visitor<'_> for V<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or its string form")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::parse_text(v)
                    .map(|value| Lenient {
                        value,
                        sent_as_string: true,
                    })
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                T::from_bool(v)
                    .map(Lenient::new)
                    .ok_or_else(|| E::invalid_type(de::Unexpected::Bool(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::from_i64(v)
                    .map(Lenient::new)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::from_u64(v)
                    .map(Lenient::new)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::from_f64(v)
                    .map(Lenient::new)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An integer that may arrive as `"9"`.
pub type LenientInt = Lenient<i64>;
/// A float that may arrive as `"0.5"`.
pub type LenientFloat = Lenient<f64>;
/// A boolean that may arrive as `"true"`.
pub type LenientBool = Lenient<bool>;

/// Serde helper: reads `null` as the type's default (an empty list for `videos: null`).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Serde helper: an optional opaque id that may arrive as a number (`"id": 12`) or string.
pub(crate) fn opt_id<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<NumericString>::deserialize(deserializer)?.map(|n| n.text))
}

/// Serde helper: an optional integer that may arrive as a string (`"created_at": "1722..."`).
pub(crate) fn opt_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<LenientInt>::deserialize(deserializer)?.map(|l| l.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_string_accepts_both_and_round_trips() {
        let s: NumericString = serde_json::from_value(json!("5")).unwrap();
        assert_eq!(
            (s.text.as_str(), s.sent_as_number, s.as_i64()),
            ("5", false, Some(5))
        );
        assert_eq!(serde_json::to_value(&s).unwrap(), json!("5"));
        let n: NumericString = serde_json::from_value(json!(5)).unwrap();
        assert_eq!((n.text.as_str(), n.sent_as_number), ("5", true));
        assert_eq!(serde_json::to_value(&n).unwrap(), json!(5));
        let f: NumericString = serde_json::from_value(json!(5.1)).unwrap();
        assert_eq!(f.as_f64(), Some(5.1));
        assert_eq!(serde_json::to_value(&f).unwrap(), json!(5.1));
        assert!(serde_json::from_value::<NumericString>(json!(true)).is_err());
        assert!(serde_json::from_value::<NumericString>(json!([5])).is_err());
        assert_eq!(NumericString::new("abc").as_f64(), None);
        assert_eq!(NumericString::new("NaN").as_f64(), None);
    }

    #[test]
    fn lenient_scalars() {
        let n: LenientInt = serde_json::from_value(json!("9")).unwrap();
        assert_eq!((n.value, n.sent_as_string), (9, true));
        assert_eq!(serde_json::to_value(n).unwrap(), json!("9"));
        let n: LenientInt = serde_json::from_value(json!(9)).unwrap();
        assert_eq!(serde_json::to_value(n).unwrap(), json!(9));
        let n: LenientInt = serde_json::from_value(json!(9.0)).unwrap();
        assert_eq!(n.value, 9);
        assert!(serde_json::from_value::<LenientInt>(json!(9.5)).is_err());
        assert!(serde_json::from_value::<LenientInt>(json!("nine")).is_err());
        assert!(serde_json::from_value::<LenientInt>(json!(u64::MAX)).is_err());
        let b: LenientBool = serde_json::from_value(json!("true")).unwrap();
        assert!(b.value && b.sent_as_string);
        assert_eq!(serde_json::to_value(b).unwrap(), json!("true"));
        assert!(serde_json::from_value::<LenientBool>(json!(1)).is_err());
        assert!(serde_json::from_value::<LenientBool>(json!("yes")).is_err());
        let f: LenientFloat = serde_json::from_value(json!("0.5")).unwrap();
        assert_eq!(f.value, 0.5);
        let f: LenientFloat = serde_json::from_value(json!(1)).unwrap();
        assert_eq!((f.value, f.sent_as_string), (1.0, false));
        assert!(serde_json::from_value::<LenientFloat>(json!(false)).is_err());
    }
}
