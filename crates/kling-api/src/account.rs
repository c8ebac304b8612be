//! Account responses: resource packs from `GET /account/costs` (kling-api.md 12.2) and the
//! deduction exports `POST /account/billing/{package,balance}` (12.3), which are the ground
//! truth for reconciling audit records by `task_id`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient::{null_as_default, opt_int, LenientFloat, LenientInt, NumericString};
use crate::task::Filter;

/// `data` of `GET /account/costs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AccountCosts {
    /// Inner code (0 on success).
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub code: Option<i64>,
    /// Inner message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// The packs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub resource_pack_subscribe_infos: Vec<ResourcePack>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One resource pack.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResourcePack {
    /// Pack name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pack_name: Option<String>,
    /// 32 hex characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pack_id: Option<String>,
    /// `decreasing_total` or `constant_period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pack_type: Option<String>,
    /// Units bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_quantity: Option<LenientFloat>,
    /// Units left; may be up to 12 hours stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_quantity: Option<LenientFloat>,
    /// Unix ms.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub purchase_time: Option<i64>,
    /// Unix ms.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub effective_time: Option<i64>,
    /// Unix ms.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub invalid_time: Option<i64>,
    /// `toBeOnline`, `online`, `expired`, `runOut`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AccountCosts {
    /// Units remaining over packs that are `online`.
    pub fn remaining_online(&self) -> f64 {
        self.resource_pack_subscribe_infos
            .iter()
            .filter(|p| p.status.as_deref() == Some("online"))
            .filter_map(|p| p.remaining_quantity.map(|q| q.value))
            .sum()
    }
}

/// Body of the deduction exports (12.3). A cursor overrides everything else.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BillingExportQuery {
    /// Window start, Unix ms; required without a cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<LenientInt>,
    /// Window end, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<LenientInt>,
    /// Page size, default and maximum 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LenientInt>,
    /// Filters (`api_key_name`, `product_type`, `package_name`, `package_id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// From the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `data` of a deduction export.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BillingExportPage {
    /// Records and count.
    #[serde(default)]
    pub result: BillingExportResult,
    /// Cursor of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Whether more pages follow.
    #[serde(default)]
    pub has_more: bool,
}

/// `result` of a deduction export.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BillingExportResult {
    /// One record per deduction.
    #[serde(default, deserialize_with = "null_as_default")]
    pub detail: Vec<DeductionRecord>,
    /// Total count.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub count: Option<i64>,
}

/// A deduction record of either export; unit and cash exports share the task fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeductionRecord {
    /// The task charged: the join key with audit records.
    #[serde(
        default,
        deserialize_with = "crate::lenient::opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// Console name of the key used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_name: Option<String>,
    /// `video`, `image`, `try-on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_type: Option<String>,
    /// E.g. "Image to Video".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_function: Option<String>,
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// `720p`, `1080p`, `4k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Seconds, e.g. `"5.04"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<NumericString>,
    /// Unix ms, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduction_time: Option<NumericString>,
    /// Units or cash deducted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduction_amount: Option<NumericString>,
    /// Unit export: pack id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_id: Option<String>,
    /// Cash export: `balance` or `test_balance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cash_type: Option<String>,
    /// Cash export: currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Everything else (before/after balances, sound and voice options).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn account_costs_parse() {
        let costs: AccountCosts = serde_json::from_value(json!({
            "code": 0, "msg": "success", "resource_pack_subscribe_infos": [
                {"resource_pack_name": "Video pack", "resource_pack_id": "0123456789abcdef0123456789abcdef",
                 "resource_pack_type": "decreasing_total", "total_quantity": 200.0,
                 "remaining_quantity": 118.5, "purchase_time": 1726124664368_i64,
                 "effective_time": 1726124664368_i64, "invalid_time": 1728716664368_i64,
                 "status": "online"},
                {"resource_pack_name": "Old", "remaining_quantity": "7", "status": "expired"}
            ]}))
        .unwrap();
        assert_eq!(costs.resource_pack_subscribe_infos.len(), 2);
        assert_eq!(costs.remaining_online(), 118.5);
        assert!(serde_json::from_value::<AccountCosts>(
            json!({"resource_pack_subscribe_infos": 5})
        )
        .is_err());
    }

    #[test]
    fn deduction_export_parses() {
        let page: BillingExportPage = serde_json::from_value(json!({
            "result": {"detail": [{"task_id": "866889456698785798", "package_id": "p",
                "product_type": "video", "deduction_amount": "1.5", "deduction_time": "1774711310000",
                "unit_before_deduction": "10", "unit_after_deduction": "8.5"}], "count": 1},
            "next_cursor": null, "has_more": false}))
        .unwrap();
        let rec = &page.result.detail[0];
        assert_eq!(rec.task_id.as_deref(), Some("866889456698785798"));
        assert_eq!(
            rec.deduction_amount
                .as_ref()
                .and_then(NumericString::as_f64),
            Some(1.5)
        );
        assert!(rec.extra.contains_key("unit_after_deduction"));
    }
}
