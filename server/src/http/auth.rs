//! Who may call: agents and API clients with the bearer token, people with a session cookie.
//!
//! A person signs in by posting a one-time login code (from the link `odigos up` prints) or
//! the token itself to `/api/v1/session`, and gets an HttpOnly, SameSite=Strict cookie. A
//! request made with the cookie that is not a read must also carry [`CSRF_HEADER`], which a
//! page of another site cannot set without the browser asking first.
//!
//! A server started without a token lets agents connect freely, but the UI still asks: its
//! token is then one made at start, known only through the sign-in links the server prints.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use subtle::ConstantTimeEq;

/// The session cookie's name.
const SESSION_COOKIE: &str = "odigos_session";
/// The header a request made with the session cookie needs, unless it only reads.
pub const CSRF_HEADER: &str = "x-odigos-csrf";
const SESSION_PATH: &str = "/api/v1/session";
/// Sessions kept at once; signing in past this forgets the oldest.
const MAX_SESSIONS: usize = 1024;
/// Unused login codes kept at once.
const MAX_CODES: usize = 16;

/// Which listener a request came to.
#[derive(Clone, Copy)]
pub enum Side {
    /// Where agents connect: the bearer token only.
    Agents,
    /// Where people look: the token or a session.
    People { read_only: bool },
}

pub struct Auth {
    /// What agents and API clients present where agents connect; without one, nothing is
    /// asked there.
    token: Option<String>,
    /// What people and scripts present where the UI is: the token, or without one a token
    /// made at start, so the UI always asks (its one-time links sign people in).
    people: String,
    sessions: Mutex<VecDeque<String>>,
    codes: Mutex<VecDeque<String>>,
}

impl Auth {
    pub fn new(token: Option<String>) -> Auth {
        Auth {
            people: token.clone().unwrap_or_else(random_hex),
            token,
            sessions: Mutex::default(),
            codes: Mutex::default(),
        }
    }

    /// A new login code, good for one sign-in.
    pub fn login_code(&self) -> String {
        let code = random_hex();
        let mut codes = self.codes.lock().unwrap();
        if codes.len() == MAX_CODES {
            codes.pop_front();
        }
        codes.push_back(code.clone());
        code
    }

    /// `app` with every request checked as `side` wants.
    pub fn guard(self: &Arc<Self>, app: axum::Router, side: Side) -> axum::Router {
        let auth = self.clone();
        app.layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let auth = auth.clone();
                async move {
                    match auth.check(&request, side) {
                        Ok(()) => next.run(request).await,
                        Err(refusal) => refusal.into_response(),
                    }
                }
            },
        ))
    }

    fn check(&self, request: &Request, side: Side) -> Result<(), (StatusCode, &'static str)> {
        let path = request.uri().path();
        let reads = matches!(*request.method(), Method::GET | Method::HEAD);
        let api = path.starts_with("/api/") || path.starts_with("/graphql");
        if let Side::People { read_only: true } = side
            && !reads
            && path != SESSION_PATH
            && path != "/graphql"
        {
            return Err((
                StatusCode::FORBIDDEN,
                "the UI is read-only (--ui-read-only)",
            ));
        }
        let token = match side {
            Side::People { .. } => &self.people,
            Side::Agents => match &self.token {
                Some(token) => token,
                None => return Ok(()),
            },
        };
        if let Side::People { .. } = side
            && (path == SESSION_PATH || (reads && !api))
        {
            // Signing in, or the UI's own files, which hold nothing secret.
            return Ok(());
        }
        if let Some(presented) = bearer(request.headers()) {
            return if equal(presented, token) {
                Ok(())
            } else {
                Err((StatusCode::UNAUTHORIZED, "wrong bearer token"))
            };
        }
        if let Side::People { .. } = side
            && let Some(session) = cookie(request.headers(), SESSION_COOKIE)
        {
            let known = self
                .sessions
                .lock()
                .unwrap()
                .iter()
                .any(|s| equal(session, s));
            if !known {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "the session has ended: sign in again",
                ));
            }
            if !reads && !request.headers().contains_key(CSRF_HEADER) {
                return Err((
                    StatusCode::FORBIDDEN,
                    "a change made with the session cookie needs the x-odigos-csrf header",
                ));
            }
            return Ok(());
        }
        Err((
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>) or session",
        ))
    }

    /// `POST /api/v1/session` signs in; `DELETE` signs out.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route(SESSION_PATH, axum::routing::post(sign_in).delete(sign_out))
            .with_state(self)
    }
}

/// What signing in takes: a login code, or the token.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    code: Option<String>,
    token: Option<String>,
}

async fn sign_in(State(auth): State<Arc<Auth>>, Json(credentials): Json<Credentials>) -> Response {
    let token = &auth.people;
    let accepted = match (&credentials.code, &credentials.token) {
        (Some(code), None) => {
            let mut codes = auth.codes.lock().unwrap();
            let position = codes.iter().position(|c| equal(code, c));
            position.and_then(|at| codes.remove(at)).is_some()
        }
        (None, Some(presented)) => equal(presented, token),
        _ => {
            let refused = "give either a login code or the token";
            return (StatusCode::BAD_REQUEST, refused).into_response();
        }
    };
    if !accepted {
        let refused = "the login code was used already or is unknown, or the token is wrong";
        return (StatusCode::UNAUTHORIZED, refused).into_response();
    }
    let session = random_hex();
    {
        let mut sessions = auth.sessions.lock().unwrap();
        if sessions.len() == MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session.clone());
    }
    let cookie = format!("{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

async fn sign_out(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
        auth.sessions.lock().unwrap().retain(|s| s != session);
    }
    let expired = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Compares in constant time, so a guess learns nothing from how long it took.
fn equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
