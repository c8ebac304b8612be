//! The synchronous face scan `POST /v1/videos/identify-face` (reference section 6.6): it
//! answers at once with a session that a later advanced lip-sync must name.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::families::PackType;
use crate::reply::ApiError;
use crate::state::{lock, Shared};
use crate::tasks::CDN_BASE;
use crate::units::Units;
use crate::validate::validate_identify_face;

pub(crate) fn identify(shared: &Arc<Shared>, body: &Map<String, Value>) -> Result<Value, ApiError> {
    validate_identify_face(body, &shared.cfg)?;
    let session_id = shared.numeric_id();
    let units = Units::from_f64(shared.cfg.billing.face_scan_units).unwrap_or(Units::ZERO);
    {
        let mut store = lock(&shared.store);
        store.charge_now(PackType::Video, units);
        store.add_session(session_id.clone());
    }
    Ok(json!({
        "session_id": session_id,
        "final_unit_deduction": units.to_string(),
        "face_data": [{
            "face_id": "0",
            "face_image": format!("{CDN_BASE}/faces/{session_id}-0.png"),
            "start_time": 0,
            "end_time": 5100,
        }],
    }))
}
