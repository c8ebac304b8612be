//! The `gateway.request` record, serialised straight from the request's parts.
//!
//! Every forwarded call writes one, so it is not gathered into a `serde_json::Map` first: that
//! cost an allocation per key and per value, and a second pass to drop them. The fields keep
//! the text a sorted map gave them (keys in byte order, the same values), which a test pins.

use std::borrow::Cow;
use std::net::IpAddr;

use kling_api::routes::{Operation, OperationKind};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::inspect::{cap_chars, recorded_ids, QuerySummary, ID_MAX_CHARS};

/// The details of a `gateway.request` record.
pub(crate) struct RequestRecord<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The route label ([`crate::inspect::route_label`]).
    pub route: &'a str,
    pub op: &'a Operation,
    pub auth_mode: &'static str,
    /// The keyed commitment of the path ([`kling_audit_ledger::Commitments::path`]), for a
    /// path the gateway does not know, whose record otherwise names it only as `other`.
    pub path_hmac: Option<&'a str>,
    pub credential: &'a Value,
    pub source_ip: IpAddr,
    /// Already capped.
    pub user_agent: Option<String>,
    pub query: Option<QuerySummary<'a>>,
    /// The keyed commitment of the query string as sent
    /// ([`kling_audit_ledger::Commitments::query`]), made only when `query` does not hold every
    /// value sent ([`QuerySummary::unrecorded_values`]).
    pub query_hmac: Option<String>,
    pub body_bytes: usize,
    pub body_json: bool,
    /// Fields read from the body ([`crate::inspect::body_fields`]) and the callback summary.
    /// Where one has the name of a field above (`external_task_id`), the body's wins, as it
    /// did when both were inserted into one map, body last.
    pub body: Map<String, Value>,
}

/// A field of the record whose value comes from the request's parts.
enum Field<'a> {
    Str(&'a str),
    Owned(String),
    OptStr(Option<&'a str>),
    Bool(bool),
    Count(usize),
    Json(&'a Value),
    OwnedStrings(Vec<String>),
    Names(&'a [Cow<'a, str>]),
    Pairs(&'a [(Cow<'a, str>, Cow<'a, str>)]),
    Ip(IpAddr),
    Null,
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Str(v) => s.serialize_str(v),
            Field::Owned(v) => s.serialize_str(v),
            Field::OptStr(v) => v.serialize(s),
            Field::Bool(v) => s.serialize_bool(*v),
            Field::Count(v) => s.serialize_u64(*v as u64),
            Field::Json(v) => v.serialize(s),
            Field::OwnedStrings(v) => v.serialize(s),
            Field::Names(v) => v.serialize(s),
            Field::Pairs(v) => {
                let mut map = s.serialize_map(Some(v.len()))?;
                for (key, value) in *v {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
            Field::Ip(v) => s.collect_str(v),
            Field::Null => s.serialize_unit(),
        }
    }
}

impl<'a> RequestRecord<'a> {
    /// The fields that do not come from the body, in byte order of their names.
    fn fixed(&'a self) -> Vec<(&'static str, Field<'a>)> {
        let op = self.op;
        let mut f = Vec::with_capacity(20);
        f.push(("auth_mode", Field::Str(self.auth_mode)));
        f.push(("body_bytes", Field::Count(self.body_bytes)));
        f.push(("body_json", Field::Bool(self.body_json)));
        f.push(("credential", Field::Json(self.credential)));
        match &op.kind {
            OperationKind::LookupByExternalId {
                external_task_id, ..
            } => f.push((
                "external_task_id",
                Field::Owned(cap_chars(external_task_id, ID_MAX_CHARS)),
            )),
            _ => f.push(("external_task_id", Field::Null)),
        }
        if let OperationKind::QueryTasks {
            external_task_ids, ..
        } = &op.kind
        {
            let (kept, omitted) = recorded_ids(external_task_ids);
            f.push(("external_task_ids", Field::OwnedStrings(kept)));
            if omitted > 0 {
                f.push(("external_task_ids_omitted", Field::Count(omitted)));
            }
        }
        f.push(("family", Field::OptStr(op.family.map(|x| x.as_str()))));
        f.push((
            "generation",
            Field::OptStr(op.generation.map(|g| g.as_str())),
        ));
        if let OperationKind::LookupByExternalId { form, .. } = &op.kind {
            f.push(("lookup_form", Field::Str(form.as_str())));
        }
        f.push(("method", Field::Str(self.method)));
        f.push(("operation", Field::Str(op.kind.as_str())));
        if let Some(hmac) = self.path_hmac {
            f.push(("path_hmac", Field::Str(hmac)));
        }
        if let Some(query) = &self.query {
            f.push(("query", Field::Pairs(&query.values)));
            if let Some(hmac) = &self.query_hmac {
                f.push(("query_hmac", Field::Str(hmac)));
            }
            if !query.other_names.is_empty() {
                f.push(("query_other_names", Field::Names(&query.other_names)));
            }
            if query.other_omitted > 0 {
                f.push((
                    "query_other_names_omitted",
                    Field::Count(query.other_omitted),
                ));
            }
        }
        f.push(("request_id", Field::Str(self.request_id)));
        f.push(("route", Field::Str(self.route)));
        f.push(("source_ip", Field::Ip(self.source_ip)));
        if let Some(route) = op.route {
            f.push(("sync", Field::Bool(!route.is_async())));
        }
        match &op.kind {
            OperationKind::QueryOne { task_id } => {
                f.push(("task_id", Field::Owned(cap_chars(task_id, ID_MAX_CHARS))));
            }
            OperationKind::QueryTasks { task_ids, .. } => {
                let (kept, omitted) = recorded_ids(task_ids);
                f.push(("task_ids", Field::OwnedStrings(kept)));
                if omitted > 0 {
                    f.push(("task_ids_omitted", Field::Count(omitted)));
                }
            }
            _ => {}
        }
        f.push(("user_agent", Field::OptStr(self.user_agent.as_deref())));
        debug_assert!(f.windows(2).all(|w| w[0].0 < w[1].0), "fields out of order");
        f
    }
}

impl Serialize for RequestRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fixed = self.fixed();
        let mut map = s.serialize_map(None)?;
        let mut body = self.body.iter().peekable();
        // Two sorted sequences merged into one, as one sorted map would hold them.
        for (key, field) in &fixed {
            while let Some((k, v)) = body.next_if(|(k, _)| k.as_str() < *key) {
                map.serialize_entry(k, v)?;
            }
            if body.peek().is_some_and(|(k, _)| k.as_str() == *key) {
                continue;
            }
            map.serialize_entry(key, field)?;
        }
        for (k, v) in body {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect;
    use kling_api::routes;
    use kling_audit_ledger::Details;
    use serde_json::json;

    /// The record as it was made before [`RequestRecord`]: one map, filled in this order.
    fn as_map(r: &RequestRecord<'_>, query: Option<&str>) -> Value {
        let mut m = Map::new();
        m.insert("request_id".into(), json!(r.request_id));
        inspect::operation_fields(r.op, r.method, &mut m);
        m.insert("auth_mode".into(), json!(r.auth_mode));
        if let Some(hmac) = r.path_hmac {
            m.insert("path_hmac".into(), json!(hmac));
        }
        m.insert("credential".into(), r.credential.clone());
        m.insert("source_ip".into(), json!(r.source_ip.to_string()));
        m.insert("user_agent".into(), json!(r.user_agent));
        // The query as the sorted map used to hold it, built here independently.
        let pairs = routes::query_pairs(query);
        if !pairs.is_empty() {
            let kept = [
                "pageNum",
                "pageSize",
                "start_time",
                "end_time",
                "external_task_id",
                "task_ids",
                "external_task_ids",
            ];
            let mut values = Map::new();
            let mut others = Vec::new();
            let mut omitted = 0;
            for (k, v) in pairs {
                if kept.contains(&k.as_str()) {
                    values.insert(k, json!(cap_chars(&v, 256)));
                } else if others.len() < 100 {
                    others.push(json!(cap_chars(&k, 64)));
                } else {
                    omitted += 1;
                }
            }
            m.insert("query".into(), Value::Object(values));
            if let Some(hmac) = &r.query_hmac {
                m.insert("query_hmac".into(), json!(hmac));
            }
            if !others.is_empty() {
                m.insert("query_other_names".into(), Value::Array(others));
            }
            if omitted > 0 {
                m.insert("query_other_names_omitted".into(), json!(omitted));
            }
        }
        m.insert("body_bytes".into(), json!(r.body_bytes));
        m.insert("body_json".into(), json!(r.body_json));
        m.extend(r.body.clone());
        m.entry("external_task_id").or_insert(Value::Null);
        Value::Object(m)
    }

    #[test]
    fn a_query_naming_many_ids_is_recorded_with_the_first_hundred_capped() {
        let query = format!(
            "task_ids={},{}",
            "t".repeat(200),
            (0..150)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let op = routes::classify("GET", "/tasks", Some(&query));
        let credential = json!({});
        let record = RequestRecord {
            request_id: "r",
            method: "GET",
            route: inspect::route_label(&op),
            op: &op,
            auth_mode: "actors",
            path_hmac: None,
            credential: &credential,
            source_ip: "::1".parse().unwrap(),
            user_agent: None,
            query: None,
            query_hmac: None,
            body_bytes: 0,
            body_json: true,
            body: Map::new(),
        };
        let made = Details::from_serialize(&record).unwrap();
        let value: Value = serde_json::from_str(made.as_str()).unwrap();
        let ids = value["task_ids"].as_array().unwrap();
        assert_eq!(ids.len(), inspect::MAX_RECORDED_IDS);
        assert_eq!(ids[0].as_str().unwrap().chars().count(), 128);
        assert_eq!(ids[99], "98");
        assert_eq!(value["task_ids_omitted"], 51);
        assert!(made.as_str().len() < 2000, "{} bytes", made.as_str().len());
    }

    #[test]
    fn request_records_keep_the_text_of_a_sorted_map() {
        let credential = json!({"kind": "jwt", "key_fp": "ab12", "verified": true, "exp": 5});
        let body_with_id = json!({
            "model": "kling-v1", "external_task_id": "order-7",
            "callback": {"host": "example.org", "relayed": true},
            "prompts": [{"field": "prompt", "chars": 12}], "zz_last": 1,
        });
        // Repeated names (the last value kept), escapes, and values and names over the caps.
        let odd_query = format!(
            "pageNum=1&pageSize=5&pageNum=2&a%20b=1&end_time={}&{}=3&start_time=%C3%A9{}",
            "x".repeat(300),
            "n".repeat(70),
            "é".repeat(300)
        );
        // More ids and other parameter names than a record keeps, one id over the cap.
        let many_ids = format!(
            "task_ids={},{}&external_task_ids={}&{}",
            "t".repeat(200),
            (0..150)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
            (0..101)
                .map(|i| format!("e{i}"))
                .collect::<Vec<_>>()
                .join(","),
            (0..130)
                .map(|i| format!("n{i}=1"))
                .collect::<Vec<_>>()
                .join("&")
        );
        // method, path, query, body fields, user agent
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Value, Option<&'a str>);
        let cases: &[Case] = &[
            (
                "GET",
                "/v1/videos/text2video",
                Some(&odd_query),
                json!({}),
                None,
            ),
            (
                "GET",
                "/account/costs",
                Some("start_time=0&end_time=1&x=2"),
                json!({}),
                None,
            ),
            (
                "POST",
                "/v1/videos/text2video",
                None,
                body_with_id.clone(),
                Some("curl/8"),
            ),
            (
                "GET",
                "/v1/videos/text2video/8668",
                None,
                json!({}),
                Some("sdk \"q\""),
            ),
            (
                "GET",
                "/v1/videos/text2video",
                Some("external_task_id=order-9&pageNum=1"),
                json!({}),
                None,
            ),
            (
                "GET",
                "/v1/videos/text2video",
                Some("external_task_id=o"),
                body_with_id,
                None,
            ),
            (
                "GET",
                "/tasks",
                Some("task_ids=1,2&external_task_ids=a"),
                json!({}),
                None,
            ),
            ("GET", "/tasks", Some(&many_ids), json!({}), None),
            (
                "DELETE",
                "/v1/unheard/of",
                Some("secret=zzz"),
                json!({}),
                None,
            ),
        ];
        for (method, path, query, body, ua) in cases {
            let op = routes::classify(method, path, *query);
            let route = inspect::route_label(&op);
            let summary = inspect::query_summary(routes::query_pairs_borrowed(*query));
            let query_hmac = summary
                .as_ref()
                .filter(|s| s.unrecorded_values)
                .map(|_| "9c0d".to_owned());
            let record = RequestRecord {
                request_id: "0193bc1c-8d7e-41a7-82d2-f5cd6f83d50d",
                method,
                route,
                op: &op,
                auth_mode: "actors",
                path_hmac: (op.kind == OperationKind::Unknown).then_some("5e1f"),
                credential: &credential,
                source_ip: "::1".parse().unwrap(),
                user_agent: ua.map(str::to_owned),
                query: summary,
                query_hmac,
                body_bytes: 17,
                body_json: true,
                body: body.as_object().cloned().unwrap_or_default(),
            };
            let made = Details::from_serialize(&record).unwrap();
            let old = Details::from_value(&as_map(&record, *query)).unwrap();
            assert_eq!(made.as_str(), old.as_str(), "{method} {path} {query:?}");
        }
    }
}
