//! The panel's HTTP routes, and the checks every request passes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use termshare_actors::Identity;

use super::auth::{Session, COOKIE};
use super::{act, actions, view, PanelState};
use crate::protocol::Command;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
/// The largest action body taken (a share request is a few fields).
const MAX_BODY: usize = 16 * 1024;

/// Scripts, styles and connections only from the panel itself; nothing inline,
/// nothing framed, no forms anywhere else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

pub(super) type Shared = Arc<PanelState>;

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/state", get(state_now))
        .route("/api/events", get(events))
        .route("/api/link/{share}", get(link))
        .route("/api/share", post(actions::share))
        .route("/api/extend", post(actions::extend))
        .route("/api/revoke", post(actions::revoke))
        .route("/api/rotate", post(actions::rotate))
        .route("/api/handoff/approve", post(actions::approve))
        .route("/api/handoff/deny", post(actions::deny))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(harden))
        .with_state(state)
}

/// What every answer carries.
async fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Why a request is turned away: its status, and words for the person.
pub(super) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": "refused", "message": self.1}});
        (self.0, Json(body)).into_response()
    }
}

fn refusal(status: StatusCode, why: &str) -> Refusal {
    Refusal(status, why.to_owned())
}

pub(super) fn refused(status: StatusCode, why: &str) -> Response {
    refusal(status, why).into_response()
}

/// Who is asking: a request for this panel's own host, with a good session cookie,
/// whose user the policy still knows. Anything else gets 401 (or 421) and no data.
fn signed_in(state: &PanelState, headers: &HeaderMap) -> Result<(Session, Identity), Refusal> {
    own_host(state, headers)?;
    let unauthorized = || {
        refusal(
            StatusCode::UNAUTHORIZED,
            "not signed in: run `termshare panel` and open the address it prints",
        )
    };
    let cookie = cookie(headers, COOKIE).ok_or_else(unauthorized)?;
    let session = state.auth.session(&cookie).ok_or_else(unauthorized)?;
    let shared = state.shared.upgrade().ok_or_else(unauthorized)?;
    let identity = shared
        .peers
        .identify(session.uid, None)
        .map_err(|why| refusal(StatusCode::FORBIDDEN, &why))?;
    Ok((session, identity))
}

/// The request is for this panel's own address (a DNS-rebinding page's is not).
fn own_host(state: &PanelState, headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match host.is_some_and(|h| state.hosts.iter().any(|ours| ours == h)) {
        true => Ok(()),
        false => Err(refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "this is not the panel's address",
        )),
    }
}

/// A signed-in request for data: it also carries the session's page token (in
/// `X-Termshare-Token`, or `given` for the event stream), which only the panel's own
/// page has. The cookie alone, which a server on another loopback port could have
/// been sent, opens nothing.
fn with_token(
    state: &PanelState,
    headers: &HeaderMap,
    given: Option<&str>,
) -> Result<Identity, Refusal> {
    let (session, identity) = signed_in(state, headers)?;
    let token = headers
        .get("x-termshare-token")
        .and_then(|v| v.to_str().ok())
        .or(given)
        .unwrap_or_default();
    if !state.auth.page_token_ok(&session, token) {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "this page is not signed in: run `termshare panel` and open the address it prints",
        ));
    }
    Ok(identity)
}

/// A signed-in request that may change something: it carries the page token, a JSON
/// body, and nothing that says another site sent it.
pub(super) fn may_act(state: &PanelState, headers: &HeaderMap) -> Result<Identity, Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let cross_site = || refusal(StatusCode::FORBIDDEN, "a cross-site request is refused");
    if let Some(origin) = header("origin") {
        let ours = state.hosts.iter().any(|h| origin == format!("http://{h}"));
        if !ours {
            return Err(cross_site());
        }
    }
    if header("sec-fetch-site").is_some_and(|s| s != "same-origin") {
        return Err(cross_site());
    }
    if !header("content-type").is_some_and(|t| t.starts_with("application/json")) {
        return Err(cross_site());
    }
    with_token(state, headers, None)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

#[derive(Deserialize)]
struct Entry {
    /// The one-time secret `termshare panel` printed.
    s: Option<String>,
}

/// The page (it holds no data). With `?s=SECRET`: trade the secret for the session
/// cookie, and hand this page its page token (the page keeps it, and takes the secret
/// out of its address). Without: the page for a signed-in browser, whose tab still
/// holds its token (a reload).
async fn index(
    State(state): State<Shared>,
    Query(entry): Query<Entry>,
    headers: HeaderMap,
) -> Response {
    let page = |token: &str| {
        let html = INDEX.replace("{{PAGE_TOKEN}}", token);
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
    };
    let Some(secret) = entry.s else {
        return match signed_in(&state, &headers) {
            Ok(_) => page(""),
            Err(refusal) => refusal.into_response(),
        };
    };
    if let Err(refusal) = own_host(&state, &headers) {
        return refusal.into_response();
    }
    let Some(cookie) = state.auth.exchange(&secret) else {
        return refused(
            StatusCode::UNAUTHORIZED,
            "this address was used already or is too old: run `termshare panel` again",
        );
    };
    let Some(session) = state.auth.session(&cookie) else {
        return refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the new session is not valid",
        );
    };
    let set = format!(
        "{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        super::auth::SESSION_TTL.as_secs()
    );
    let mut response = page(&state.auth.page_token(&session));
    if let Ok(v) = HeaderValue::from_str(&set) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The view now (same origin only: no CORS).
async fn state_now(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let identity = match with_token(&state, &headers, None) {
        Ok(who) => who,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(shared) = state.shared.upgrade() else {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    };
    let board = shared.ts.badges().borrow().clone();
    Json(view(&shared, &identity, &board, &state.lanes.borrow())).into_response()
}

#[derive(Deserialize)]
struct Stream {
    /// The page token (an `EventSource` cannot send a header).
    t: Option<String>,
}

/// The view on every change, as Server-Sent Events (`event: view`).
async fn events(
    State(state): State<Shared>,
    Query(stream): Query<Stream>,
    headers: HeaderMap,
) -> Response {
    let identity = match with_token(&state, &headers, stream.t.as_deref()) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(shared) = state.shared.upgrade() else {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    };
    let badges = shared.ts.badges();
    drop(shared);
    let start = (state.clone(), identity, badges, state.lanes.clone(), true);
    let stream = futures_util::stream::unfold(
        start,
        |(state, identity, mut badges, mut lanes, first)| async move {
            if !first {
                let mut stop = state.stop.clone();
                tokio::select! {
                    changed = badges.changed() => changed.ok()?,
                    changed = lanes.changed() => changed.ok()?,
                    _ = stop.wait_for(|s| *s) => return None,
                }
            }
            let shared = state.shared.upgrade()?;
            // The board shown is the version marked seen, read in one step: a change
            // published while the view is built wakes the next turn instead of being
            // marked seen unsent (a badge once stayed "starting" that way).
            let board = badges.borrow_and_update().clone();
            let v = view(&shared, &identity, &board, &lanes.borrow_and_update());
            drop(shared);
            let event = Event::default().event("view").data(v.to_string());
            Some((
                Ok::<_, Infallible>(event),
                (state, identity, badges, lanes, false),
            ))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A share's link, for its owner only (the page copies it; it never shows it).
async fn link(
    State(state): State<Shared>,
    Path(share): Path<String>,
    headers: HeaderMap,
) -> Response {
    let identity = match with_token(&state, &headers, None) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(shared) = state.shared.upgrade() else {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    };
    // `list` answers only the shares this identity may manage, with their links.
    match act(&shared, &identity, Command::List {}).await {
        Ok(Value::Array(shares)) => match shares.iter().find(|s| s["share_id"] == share) {
            Some(s) => Json(json!({"link": s["link"], "read_only_link": s["read_only_link"]}))
                .into_response(),
            None => refused(StatusCode::NOT_FOUND, "no such share of yours"),
        },
        Ok(_) => refused(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer"),
        Err(e) => actions::answer(Err(e)),
    }
}
