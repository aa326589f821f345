//! `/api/v1/clients`: the client rules the store holds (every node follows a change), and
//! the configuration's, read only. A prefix travels percent-encoded in the path.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use store::{ClientRule, RuleKind};

use super::{Shared, error, unavailable};

fn rule_json(r: &ClientRule) -> Value {
    json!({ "prefix": r.prefix, "kind": r.kind.as_str(), "added_at": r.added_at })
}

/// `{"config": {"allow": [...], "deny": [...]}, "stored": [{"prefix", "kind", "added_at"}]}`.
pub async fn list(State(s): Shared) -> Response {
    let (allow, deny, stored) = s.tracker.clients().sources();
    Json(json!({
        "config": { "allow": allow, "deny": deny },
        "stored": stored.iter().map(rule_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `PUT /api/v1/clients/{prefix}` with `{"kind": "allow"|"deny"}`: 201 for a new prefix,
/// 200 when it had a rule (now of this kind).
pub async fn put(
    State(s): Shared,
    Path(prefix): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Err(why) = crate::config::valid_prefix(&prefix) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let kind = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("kind")?.as_str().and_then(RuleKind::parse));
    let Some(kind) = kind else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be {\"kind\": \"allow\"} or {\"kind\": \"deny\"}",
        );
    };
    let existed = s
        .tracker
        .clients()
        .sources()
        .2
        .iter()
        .any(|r| r.prefix == prefix);
    let rule = ClientRule {
        prefix,
        kind,
        added_at: crate::os::unix_secs(),
    };
    if let Err(e) = s.tracker.add_client_rule(&s.store, &rule).await {
        return unavailable(e);
    }
    let stored = s.tracker.clients().sources().2;
    let now = stored
        .iter()
        .find(|r| r.prefix == rule.prefix)
        .unwrap_or(&rule);
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(rule_json(now))).into_response()
}

pub async fn remove(State(s): Shared, Path(prefix): Path<String>) -> Response {
    if let Err(why) = crate::config::valid_prefix(&prefix) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    match s.tracker.remove_client_rule(&s.store, &prefix).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("{prefix:?} has no stored client rule"),
        ),
        Err(e) => unavailable(e),
    }
}
