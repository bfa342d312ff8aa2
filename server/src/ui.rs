//! The web UI's files, built from `ui/` (see `ui/README.md`) and embedded in the binary. A
//! path that names no file gets `index.html`: the app routes itself (`/fleet`, `/destinations`).

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/ui_files.rs"));

/// Serves a file of the UI, or the app's page for any other path outside the APIs.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path.starts_with("/graphql") {
        return (StatusCode::NOT_FOUND, "no such API path").into_response();
    }
    let file = FILES
        .iter()
        .find(|(name, ..)| *name == path)
        .or_else(|| FILES.iter().find(|(name, ..)| *name == "/index.html"));
    let Some((name, kind, body)) = file else {
        return (StatusCode::NOT_FOUND, "this build has no UI").into_response();
    };
    // Built files carry a hash of their content in their name; the page itself does not.
    let cache = if name.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, *kind),
            (header::CACHE_CONTROL, cache),
        ],
        *body,
    )
        .into_response()
}
