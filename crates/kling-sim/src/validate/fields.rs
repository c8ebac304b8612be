//! Typed reads of request fields with Kling's leniency (reference section 5.5): `null` reads
//! as absent, unknown fields are ignored, and outside strict mode numbers and booleans sent as
//! strings (`"n":"9"`, `"multi_shot":"true"`) are accepted. Every error names the field.

use serde_json::{Map, Value};

/// A rejected field: answered as HTTP 400 with code 1201 and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Checked<T> = Result<T, Invalid>;

/// One JSON object of a request body (the body itself, or a nested object such as `input`).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    strict: bool,
    /// Dotted path of this object inside the body, e.g. `input.`; empty at the top.
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, strict: bool) -> Self {
        Self {
            map,
            strict,
            prefix: "",
        }
    }

    /// The full dotted name of a field, as used in error messages.
    pub fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    fn err(&self, field: &str, what: &str) -> Invalid {
        let name = self.name(field);
        Invalid::new(name.clone(), format!("{name} {what}"))
    }

    /// The raw value, with `null` read as absent.
    pub fn value(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub fn has(&self, field: &str) -> bool {
        self.value(field).is_some()
    }

    /// A missing required field, in the wording Kling was seen to use.
    pub fn missing(&self, field: &str) -> Invalid {
        self.err(field, "can not be null")
    }

    pub fn string(&self, field: &str) -> Checked<Option<&'a str>> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.err(field, "must be a string")),
        }
    }

    pub fn required_string(&self, field: &str) -> Checked<&'a str> {
        match self.string(field)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.missing(field)),
        }
    }

    /// Free text of at most `max_chars` characters.
    pub fn text(&self, field: &str, max_chars: usize) -> Checked<Option<&'a str>> {
        let text = self.string(field)?;
        if text.is_some_and(|t| t.chars().count() > max_chars) {
            return Err(self.err(field, &format!("must be at most {max_chars} characters")));
        }
        Ok(text)
    }

    pub fn one_of(&self, field: &str, allowed: &[&str]) -> Checked<Option<&'a str>> {
        match self.string(field)? {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v)),
            Some(_) => Err(self.err(field, &format!("must be one of: {}", allowed.join(", ")))),
        }
    }

    /// A number in `[lo, hi]`; a numeric string is accepted outside strict mode.
    pub fn number(&self, field: &str, lo: f64, hi: f64) -> Checked<Option<f64>> {
        let n = match self.value(field) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) if !self.strict => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n.is_finite() && (lo..=hi).contains(&n) => Ok(Some(n)),
            Some(_) => Err(self.err(field, &format!("must be within [{lo}, {hi}]"))),
            None => Err(self.err(field, "must be a number")),
        }
    }

    /// An integer in `[lo, hi]`; a string of digits is accepted outside strict mode.
    pub fn integer(&self, field: &str, lo: i64, hi: i64) -> Checked<Option<i64>> {
        let n = match self.value(field) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) if !self.strict => s.trim().parse::<i64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            Some(_) => Err(self.err(field, &format!("must be within [{lo}, {hi}]"))),
            None => Err(self.err(field, "must be an integer")),
        }
    }

    /// A boolean; `"true"`/`"false"` are accepted outside strict mode.
    pub fn boolean(&self, field: &str) -> Checked<Option<bool>> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if !self.strict && (s == "true" || s == "false") => {
                Ok(Some(s == "true"))
            }
            Some(_) => Err(self.err(field, "must be a boolean")),
        }
    }

    /// A duration in whole seconds. Kling types it as a string (`"5"`); a bare number is
    /// accepted outside strict mode.
    pub fn duration(&self, field: &str, allowed: &[u32]) -> Checked<Option<u32>> {
        let secs = match self.value(field) {
            None => return Ok(None),
            Some(Value::String(s)) => s.trim().parse::<u32>().ok(),
            Some(Value::Number(n)) if !self.strict => {
                n.as_u64().and_then(|n| u32::try_from(n).ok())
            }
            Some(_) => return Err(self.err(field, "must be a string")),
        };
        match secs {
            Some(s) if allowed.contains(&s) => Ok(Some(s)),
            _ => {
                let list: Vec<String> = allowed.iter().map(|s| format!("\"{s}\"")).collect();
                Err(self.err(field, &format!("must be one of: {}", list.join(", "))))
            }
        }
    }

    /// An image given as an http(s) URL or as bare base64 (no `data:` prefix), checked
    /// shallowly: the characters, not the decoded picture.
    pub fn image(&self, field: &str) -> Checked<Option<&'a str>> {
        let Some(v) = self.string(field)? else {
            return Ok(None);
        };
        if is_http_url(v) || is_bare_base64(v) {
            Ok(Some(v))
        } else {
            let name = self.name(field);
            Err(Invalid::new(
                name.clone(),
                format!("{name}: File is not in a valid base64 format"),
            ))
        }
    }

    /// A media reference that must be an http(s) URL (`video_url`, `audio_url`).
    pub fn url(&self, field: &str) -> Checked<Option<&'a str>> {
        match self.string(field)? {
            Some(v) if !is_http_url(v) => Err(self.err(field, "must be an http(s) URL")),
            other => Ok(other),
        }
    }

    /// An array of `min..=max` items.
    pub fn array(&self, field: &str, min: usize, max: usize) -> Checked<Option<&'a [Value]>> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::Array(items)) if (min..=max).contains(&items.len()) => Ok(Some(items)),
            Some(Value::Array(_)) => {
                Err(self.err(field, &format!("must have {min} to {max} items")))
            }
            Some(_) => Err(self.err(field, "must be an array")),
        }
    }

    /// A nested object, read with `prefix` (e.g. `"input."`) in its error messages.
    pub fn object(&self, field: &str, prefix: &'a str) -> Checked<Option<Fields<'a>>> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields {
                map,
                strict: self.strict,
                prefix,
            })),
            Some(_) => Err(self.err(field, "must be an object")),
        }
    }

    /// The objects of an array, each read with `prefix` (e.g. `"image_list[]."`).
    pub fn objects(
        &self,
        field: &str,
        min: usize,
        max: usize,
        prefix: &'a str,
    ) -> Checked<Vec<Fields<'a>>> {
        let Some(items) = self.array(field, min, max)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .map(|item| match item {
                Value::Object(map) => Ok(Fields {
                    map,
                    strict: self.strict,
                    prefix,
                }),
                _ => Err(self.err(field, "items must be objects")),
            })
            .collect()
    }
}

/// Whether a string is an absolute http or https URL with a host.
pub fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

/// Whether a string looks like standard base64 with optional padding.
pub fn is_bare_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    let padding = s.len() - body.len();
    !body.is_empty()
        && padding <= 2
        && s.len() % 4 != 1
        && (padding == 0 || s.len().is_multiple_of(4))
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn null_reads_as_absent() {
        let m = obj(json!({"image_tail": null, "n": null}));
        let f = Fields::new(&m, false);
        assert_eq!(f.image("image_tail"), Ok(None));
        assert_eq!(f.integer("n", 1, 9), Ok(None));
        assert_eq!(
            f.required_string("image_tail").unwrap_err().message,
            "image_tail can not be null"
        );
    }

    #[test]
    fn lenient_mode_coerces_and_strict_mode_refuses() {
        let m = obj(json!({"n": "9", "multi_shot": "true", "duration": 5, "cfg_scale": "0.5"}));
        let lenient = Fields::new(&m, false);
        assert_eq!(lenient.integer("n", 1, 9), Ok(Some(9)));
        assert_eq!(lenient.boolean("multi_shot"), Ok(Some(true)));
        assert_eq!(lenient.duration("duration", &[5, 10]), Ok(Some(5)));
        assert_eq!(lenient.number("cfg_scale", 0.0, 1.0), Ok(Some(0.5)));
        let strict = Fields::new(&m, true);
        assert_eq!(strict.integer("n", 1, 9).unwrap_err().field, "n");
        assert_eq!(
            strict.boolean("multi_shot").unwrap_err().field,
            "multi_shot"
        );
        assert_eq!(
            strict.duration("duration", &[5, 10]).unwrap_err().field,
            "duration"
        );
        assert_eq!(
            strict.number("cfg_scale", 0.0, 1.0).unwrap_err().field,
            "cfg_scale"
        );
    }

    #[test]
    fn errors_name_nested_fields() {
        let m = obj(json!({"input": {"mode": "sideways"}}));
        let f = Fields::new(&m, false);
        let input = f.object("input", "input.").unwrap().unwrap();
        let err = input
            .one_of("mode", &["text2video", "audio2video"])
            .unwrap_err();
        assert_eq!(err.field, "input.mode");
        assert!(err.message.starts_with("input.mode must be one of"));
    }

    #[test]
    fn images_are_urls_or_bare_base64() {
        assert!(is_http_url("https://example.test/a.png"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("ftp://example.test/a.png"));
        assert!(is_bare_base64("iVBORw0KGgo="));
        assert!(is_bare_base64("iVBORw0KGgoAAAANSUhEUg"));
        assert!(!is_bare_base64("data:image/png;base64,iVBORw0KGgo="));
        assert!(!is_bare_base64("===="));
        assert!(!is_bare_base64("abcde"));
        assert!(!is_bare_base64(""));
        let m = obj(json!({"image": "data:image/png;base64,AAAA"}));
        let err = Fields::new(&m, false).image("image").unwrap_err();
        assert_eq!(err.message, "image: File is not in a valid base64 format");
    }

    #[test]
    fn prompt_length_counts_characters_not_bytes() {
        let text = "é".repeat(2500);
        let m = obj(json!({ "prompt": text }));
        assert!(Fields::new(&m, false).text("prompt", 2500).is_ok());
        let m = obj(json!({ "prompt": "é".repeat(2501) }));
        assert_eq!(
            Fields::new(&m, false)
                .text("prompt", 2500)
                .unwrap_err()
                .field,
            "prompt"
        );
    }
}
