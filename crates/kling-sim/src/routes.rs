//! Request routing. One fallback handler classifies every request itself, so unknown paths
//! and wrong methods get Kling-style envelopes (404/1202) rather than the framework's plain
//! answers, and every request is counted under a route template.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::response::Response;
use axum::Router;
use kling_api::codes;
use serde_json::{Map, Value};

use crate::auth::{self, Accepts};
use crate::families::{self, Family, FamilyPath};
use crate::faults::{FaultDecision, ServerFault};
use crate::handlers;
use crate::reply::{failure, ok_with_error_code, success, ApiError};
use crate::state::{now_ms, Shared};
use crate::validate::{capability_of, resolve_new, NewModel, NewPath};

/// Largest request body read: several 10 MB images in base64 fit.
const MAX_BODY_BYTES: usize = 64 << 20;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Create(&'static Family),
    QueryOne(&'static Family, &'a str),
    List(&'static Family),
    IdentifyFace,
    AccountCosts,
    /// New-standard `POST /<capability>/<model-version>`.
    NewCreate(&'static Family, &'static NewModel),
    /// New-standard `GET /tasks?task_ids=..|external_task_ids=..`.
    QueryTasks,
    /// New-standard cursor listing `POST /tasks`.
    ListTasks,
    /// A served new-standard capability with an unknown model version.
    UnknownModel,
    /// A known path with the wrong method.
    WrongMethod,
    Unknown,
}

impl Route<'_> {
    pub fn classify<'a>(method: &Method, path: &'a str) -> Route<'a> {
        let is_get = method == Method::GET;
        let is_post = method == Method::POST;
        if path == "/account/costs" {
            return if is_get {
                Route::AccountCosts
            } else {
                Route::WrongMethod
            };
        }
        if path == "/tasks" {
            return match *method {
                Method::GET => Route::QueryTasks,
                Method::POST => Route::ListTasks,
                _ => Route::WrongMethod,
            };
        }
        let Some(rest) = path.strip_prefix("/v1/") else {
            return match path.strip_prefix('/').and_then(resolve_new) {
                Some(NewPath::Known(f, m)) if is_post => Route::NewCreate(f, m),
                Some(NewPath::Known(..)) => Route::WrongMethod,
                Some(NewPath::UnknownModel) => Route::UnknownModel,
                None => Route::Unknown,
            };
        };
        // `okaris/kling` writes the face-scan path with a capital I (section 6.6).
        if rest == "videos/identify-face" || rest == "videos/Identify-face" {
            return if is_post {
                Route::IdentifyFace
            } else {
                Route::WrongMethod
            };
        }
        match families::resolve(rest) {
            Some(FamilyPath::Collection(f)) if is_post => Route::Create(f),
            Some(FamilyPath::Collection(f)) if is_get => Route::List(f),
            Some(FamilyPath::Item(f, id)) if is_get => Route::QueryOne(f, id),
            Some(_) => Route::WrongMethod,
            None => Route::Unknown,
        }
    }

    /// The route template counted in [`crate::SimStats`].
    pub fn label(&self, method: &Method) -> String {
        match self {
            Route::Create(f) => format!("POST /v1/{}", f.path),
            Route::QueryOne(f, _) => format!("GET /v1/{}/{{id}}", f.path),
            Route::List(f) => format!("GET /v1/{}", f.path),
            Route::IdentifyFace => "POST /v1/videos/identify-face".to_owned(),
            Route::AccountCosts => "GET /account/costs".to_owned(),
            Route::NewCreate(f, m) => format!("POST /{}/{}", capability_of(f), m.version),
            Route::QueryTasks => "GET /tasks".to_owned(),
            Route::ListTasks => "POST /tasks".to_owned(),
            Route::UnknownModel => "POST /{capability}/{unknown model}".to_owned(),
            Route::WrongMethod => format!("{method} (wrong method)"),
            Route::Unknown => "unmatched".to_owned(),
        }
    }
}

/// The router serving every simulated route.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    // A router mounted without the fault layer numbers its own requests; it cannot delay or
    // drop them, so those faults are ignored there.
    let fault = match req.extensions().get::<FaultDecision>() {
        Some(fault) => *fault,
        None => shared.admit_request(),
    };
    let request_id = shared.request_id();
    let (parts, body) = req.into_parts();
    let route = Route::classify(&parts.method, parts.uri.path());
    shared.count_route(&route.label(&parts.method));

    if let Some(server_fault) = fault.server_error {
        let code = match server_fault {
            ServerFault::Internal => codes::SERVER_ERROR,
            ServerFault::Unavailable => codes::SERVER_UNAVAILABLE,
            ServerFault::Timeout => codes::SERVER_TIMEOUT,
        };
        return failure(&request_id, &ApiError::of(code), None);
    }
    if fault.nonzero_code {
        return ok_with_error_code(&request_id, codes::SERVER_ERROR);
    }
    match handle(&shared, route, &parts, body, fault).await {
        Ok(data) => success(&request_id, data),
        Err(err) => {
            tracing::debug!(
                target: "kling_sim::routes",
                route = %route.label(&parts.method),
                code = err.code,
                status = err.status().as_u16(),
                "request refused",
            );
            failure(&request_id, &err, shared.faults.retry_after_secs())
        }
    }
}

async fn handle(
    shared: &Arc<Shared>,
    route: Route<'_>,
    parts: &axum::http::request::Parts,
    body: Body,
    fault: FaultDecision,
) -> Result<Value, ApiError> {
    if matches!(route, Route::Unknown | Route::WrongMethod) {
        return Err(ApiError::of(codes::METHOD_INVALID));
    }
    if route == Route::UnknownModel {
        // 1203 is Kling's "resource (e.g. model) does not exist" (section 11.1).
        return Err(ApiError::new(
            codes::RESOURCE_NOT_FOUND,
            "model does not exist for this capability",
        ));
    }
    let accepts = match route {
        Route::NewCreate(..) | Route::QueryTasks | Route::ListTasks => Accepts::ApiKeyOnly,
        _ => Accepts::JwtOrApiKey,
    };
    let caller = auth::authenticate(
        parts.headers.get(header::AUTHORIZATION),
        &shared.cfg,
        now_ms() / 1000,
        accepts,
    )?;
    let query = kling_api::routes::query_pairs(parts.uri.query());
    match route {
        Route::Create(family) => {
            let body = read_object(body).await?;
            handlers::create::create(shared, family, &caller, &body, fault)
        }
        Route::QueryOne(family, id) => handlers::query::one(shared, family, id, &query),
        Route::List(family) => handlers::query::list(shared, family, &query),
        Route::IdentifyFace => {
            let body = read_object(body).await?;
            handlers::face::identify(shared, &body)
        }
        Route::AccountCosts => handlers::account::costs(shared, &query),
        Route::NewCreate(family, model) => {
            let body = read_object(body).await?;
            handlers::create::create_new(shared, family, model, &caller, &body, fault)
        }
        Route::QueryTasks => handlers::tasks::query(shared, &query),
        Route::ListTasks => {
            let body = read_object_or_empty(body).await?;
            handlers::tasks::list(shared, &body)
        }
        Route::Unknown | Route::WrongMethod | Route::UnknownModel => {
            Err(ApiError::of(codes::METHOD_INVALID))
        }
    }
}

/// Reads a JSON object body; anything else is 400/1200.
async fn read_object(body: Body) -> Result<Map<String, Value>, ApiError> {
    parse_object(&read_bytes(body).await?)
}

/// As [`read_object`], but an empty body reads as `{}` (a listing with every default).
async fn read_object_or_empty(body: Body) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_bytes(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    parse_object(&bytes)
}

async fn read_bytes(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                codes::PARAMETER_INVALID,
                "request body is unreadable or too large",
            )
        })
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(
            codes::PARAMETER_INVALID,
            "request body must be a JSON object",
        )),
        Err(_) => Err(ApiError::new(
            codes::PARAMETER_INVALID,
            "request body is not valid JSON",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_legacy_routes() {
        let post = Method::POST;
        let get = Method::GET;
        assert!(
            matches!(Route::classify(&post, "/v1/videos/text2video"), Route::Create(f) if f.path == "videos/text2video")
        );
        assert!(matches!(
            Route::classify(&get, "/v1/videos/text2video"),
            Route::List(_)
        ));
        assert!(matches!(
            Route::classify(&get, "/v1/images/generations/123"),
            Route::QueryOne(_, "123")
        ));
        assert_eq!(
            Route::classify(&post, "/v1/videos/Identify-face"),
            Route::IdentifyFace
        );
        assert_eq!(Route::classify(&get, "/account/costs"), Route::AccountCosts);
        assert_eq!(
            Route::classify(&Method::DELETE, "/v1/videos/text2video"),
            Route::WrongMethod
        );
        assert_eq!(
            Route::classify(&post, "/v1/videos/text2video/1"),
            Route::WrongMethod
        );
        assert_eq!(
            Route::classify(&get, "/v2/videos/text2video"),
            Route::Unknown
        );
        assert_eq!(Route::classify(&get, "/v1/videos/nope"), Route::Unknown);
    }

    #[test]
    fn classifies_new_standard_routes() {
        let post = Method::POST;
        let get = Method::GET;
        assert!(matches!(
            Route::classify(&post, "/text-to-video/kling-3.0"),
            Route::NewCreate(f, m) if f.path == "videos/text2video" && m.version == "kling-3.0"
        ));
        assert_eq!(
            Route::classify(&get, "/text-to-video/kling-3.0"),
            Route::WrongMethod
        );
        assert_eq!(
            Route::classify(&post, "/text-to-video/kling-9.9"),
            Route::UnknownModel
        );
        assert_eq!(
            Route::classify(&post, "/text-to-song/kling-3.0"),
            Route::Unknown
        );
        assert_eq!(Route::classify(&get, "/tasks"), Route::QueryTasks);
        assert_eq!(Route::classify(&post, "/tasks"), Route::ListTasks);
        assert_eq!(
            Route::classify(&Method::DELETE, "/tasks"),
            Route::WrongMethod
        );
    }
}
