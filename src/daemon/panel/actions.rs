//! The panel's actions (share, extend, revoke, rotate, approve, deny): each a JSON
//! body made into a protocol `Command` and run through the daemon's dispatch as the
//! panel's signed-in user, once `may_act` has checked the session, CSRF token, origin
//! and host. Their answers carry the CLI's error codes.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::routes::{may_act, refused, Shared};
use super::{act, PanelState};
use crate::protocol::Command;

/// An action's answer: the result, or the error as the protocol gives it.
pub(super) fn answer(result: Result<Value, termshare_actors::ShareError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let (code, _) = crate::exit::classify(&e);
            let status = match code {
                "denied" | "not_approver" => StatusCode::FORBIDDEN,
                "not_found" => StatusCode::NOT_FOUND,
                "invalid" => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            };
            (
                status,
                Json(json!({"error": {"code": code, "message": e.to_string()}})),
            )
                .into_response()
        }
    }
}

/// Run the command `to_command` makes of the JSON `body`, for a request that may act.
/// Who is asking is checked before the body is even parsed.
async fn run<T: serde::de::DeserializeOwned>(
    state: &PanelState,
    headers: &HeaderMap,
    body: &[u8],
    to_command: impl FnOnce(T) -> Command,
) -> Response {
    let identity = match may_act(state, headers) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    let form: T = match serde_json::from_slice(body) {
        Ok(f) => f,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")),
    };
    let Some(shared) = state.shared.upgrade() else {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    };
    answer(act(&shared, &identity, to_command(form)).await)
}

type Body = axum::body::Bytes;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareForm {
    terminal: String,
    backend: String,
    access: Option<String>,
    ttl: Option<String>,
}

pub(super) async fn share(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    run(&state, &headers, &body, |f: ShareForm| Command::Share {
        terminal: f.terminal,
        backend: f.backend,
        ttl: f.ttl,
        grace: None,
        access: f.access,
        principal: None,
        join_timeout: None,
        max_participants: None,
        record: false,
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareAction {
    share_id: String,
    by: Option<String>,
}

pub(super) async fn extend(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(&state, &headers, &body, |a: ShareAction| Command::Extend {
        share_id: a.share_id,
        by: a.by.unwrap_or_else(|| "5m".into()),
        principal: None,
    })
    .await
}

pub(super) async fn revoke(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(&state, &headers, &body, |a: ShareAction| Command::Revoke {
        share_id: a.share_id,
        principal: None,
    })
    .await
}

pub(super) async fn rotate(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(&state, &headers, &body, |a: ShareAction| Command::Rotate {
        share_id: a.share_id,
        principal: None,
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoffAction {
    handoff_id: String,
    reason: Option<String>,
}

pub(super) async fn approve(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(&state, &headers, &body, |a: HandoffAction| {
        Command::HandoffApprove {
            handoff_id: a.handoff_id,
            principal: None,
        }
    })
    .await
}

pub(super) async fn deny(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    run(&state, &headers, &body, |a: HandoffAction| {
        Command::HandoffDeny {
            handoff_id: a.handoff_id,
            principal: None,
            reason: a.reason,
        }
    })
    .await
}
