//! OTLP/HTTP: protobuf and JSON bodies, gzip or deflate encoded, on `/v1/{traces,metrics,logs}`.

use std::future::IntoFuture;
use std::io::Read;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use odigos_proto::{Signal, rpc};
use prost::Message;

use super::{CorsConfig, Ingest, IngestError, OtlpConfig};
use crate::receiver::{Server, listen};

pub(super) async fn start(
    endpoint: &str,
    ingest: Ingest,
    settings: Arc<ArcSwap<OtlpConfig>>,
) -> Result<Server, String> {
    let listener = listen(endpoint).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let state = Arc::new(Endpoint { ingest, settings });
    // Paths are matched per request, against the current settings.
    let app = axum::Router::new()
        .fallback(
            |State(state): State<Arc<Endpoint>>,
             method: Method,
             uri: Uri,
             headers: HeaderMap,
             body: Body| async move {
                state.handle(uri.path(), method, headers, body).await
            },
        )
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    tracing::info!(%local, "otlp http receiver listening");
    Ok(Server::spawn(
        "http",
        endpoint,
        local.to_string(),
        |shutdown| {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .into_future()
        },
    ))
}

struct Endpoint {
    ingest: Ingest,
    settings: Arc<ArcSwap<OtlpConfig>>,
}

#[derive(Clone, Copy)]
enum Format {
    Protobuf,
    Json,
}

impl Endpoint {
    /// Answers a request, with CORS when the receiver allows cross-origin requests.
    async fn handle(&self, path: &str, method: Method, headers: HeaderMap, body: Body) -> Response {
        let cors = {
            let settings = self.settings.load();
            settings
                .protocols
                .http
                .as_ref()
                .and_then(|h| h.cors.clone())
                .filter(|c| !c.allowed_origins.is_empty())
        };
        let Some(cors) = cors else {
            return self.handle_request(path, method, headers, body).await;
        };
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return preflight(&cors, origin.as_deref(), &headers);
        }
        let mut response = self.handle_request(path, method, headers, body).await;
        let answer = response.headers_mut();
        answer.append(header::VARY, header::ORIGIN.as_str().parse().unwrap());
        if let Some(allowed) = origin.as_deref().and_then(|o| allow_origin(&cors, o))
            && let Ok(value) = allowed.parse()
        {
            answer.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        }
        response
    }

    async fn handle_request(
        &self,
        path: &str,
        method: Method,
        headers: HeaderMap,
        body: Body,
    ) -> Response {
        let (signal, max_size) = {
            let settings = self.settings.load();
            let Some(http) = &settings.protocols.http else {
                return reply(
                    Format::Json,
                    StatusCode::NOT_FOUND,
                    "OTLP/HTTP is turned off",
                );
            };
            let paths = [
                &http.traces_url_path,
                &http.metrics_url_path,
                &http.logs_url_path,
            ];
            let signal = Signal::ALL
                .into_iter()
                .zip(paths)
                .find(|(_, p)| p.as_str() == path);
            match signal {
                Some((signal, _)) => (signal, http.max_request_body_size),
                None => {
                    return reply(
                        Format::Json,
                        StatusCode::NOT_FOUND,
                        "no OTLP endpoint at this path",
                    );
                }
            }
        };
        if method != Method::POST {
            let mut response = reply(Format::Json, StatusCode::METHOD_NOT_ALLOWED, "use POST");
            response
                .headers_mut()
                .insert(header::ALLOW, "POST".parse().unwrap());
            return response;
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        let format = match content_type {
            "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
            "application/json" => Format::Json,
            other => {
                let message = format!(
                    "unsupported content type {other:?}: use application/x-protobuf or application/json"
                );
                return reply(Format::Json, StatusCode::UNSUPPORTED_MEDIA_TYPE, &message);
            }
        };
        let body = match axum::body::to_bytes(body, max_size).await {
            Ok(body) => body,
            Err(_) => {
                let message = format!("request body larger than {} bytes", max_size);
                return reply(format, StatusCode::PAYLOAD_TOO_LARGE, &message);
            }
        };
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let body = match decompress(encoding, body, max_size) {
            Ok(body) => body,
            Err((status, message)) => return reply(format, status, &message),
        };
        let result = match format {
            Format::Protobuf => self.ingest.encoded(signal, body).await,
            Format::Json => self.ingest.json(signal, &body).await,
        };
        match result {
            Ok(()) => match format {
                // An empty Export*ServiceResponse: full success.
                Format::Protobuf => (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    Bytes::new(),
                )
                    .into_response(),
                Format::Json => {
                    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
                }
            },
            Err(IngestError::Invalid(message)) => reply(format, StatusCode::BAD_REQUEST, &message),
            Err(IngestError::Unsupported(signal)) => reply(
                format,
                StatusCode::NOT_FOUND,
                &format!("this receiver feeds no {signal} pipeline"),
            ),
            Err(IngestError::Exhausted(message)) => {
                let mut response = reply(format, StatusCode::TOO_MANY_REQUESTS, &message);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, "1".parse().unwrap());
                response
            }
            Err(IngestError::Rejected(message)) => {
                reply(format, StatusCode::INTERNAL_SERVER_ERROR, &message)
            }
        }
    }
}

/// Headers a browser may always send, as otelcol allows them.
const SIMPLE_HEADERS: &[&str] = &["origin", "accept", "content-type", "x-requested-with"];

/// What `Access-Control-Allow-Origin` says to `origin`: `*` when any origin is allowed, the
/// origin itself when it matches one of `allowed_origins`, nothing otherwise.
fn allow_origin(cors: &CorsConfig, origin: &str) -> Option<String> {
    let origin_lower = origin.to_ascii_lowercase();
    let matches = |allowed: &String| {
        let allowed = allowed.to_ascii_lowercase();
        match allowed.split_once('*') {
            None => allowed == origin_lower,
            Some((prefix, suffix)) => {
                origin_lower.len() >= prefix.len() + suffix.len()
                    && origin_lower.starts_with(prefix)
                    && origin_lower.ends_with(suffix)
            }
        }
    };
    if cors.allowed_origins.iter().any(|a| a == "*") {
        Some("*".into())
    } else if cors.allowed_origins.iter().any(matches) {
        Some(origin.to_string())
    } else {
        None
    }
}

/// Answers a CORS preflight: the allow headers when the origin, the method (`POST`) and every
/// requested header are allowed; without them (so the browser refuses) otherwise.
fn preflight(cors: &CorsConfig, origin: Option<&str>, headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let answer = response.headers_mut();
    for vary in [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ] {
        answer.append(header::VARY, vary.parse().unwrap());
    }
    let Some(allowed) = origin.and_then(|o| allow_origin(cors, o)) else {
        return response;
    };
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !method.eq_ignore_ascii_case("POST") {
        return response;
    }
    let requested: Vec<String> = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let any_header = cors.allowed_headers.iter().any(|h| h == "*");
    let header_allowed = |h: &String| {
        any_header
            || SIMPLE_HEADERS.contains(&h.as_str())
            || cors
                .allowed_headers
                .iter()
                .any(|a| a.eq_ignore_ascii_case(h))
    };
    if !requested.iter().all(header_allowed) {
        return response;
    }
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = value.parse() {
            answer.insert(name, value);
        }
    };
    set(header::ACCESS_CONTROL_ALLOW_ORIGIN, &allowed);
    set(header::ACCESS_CONTROL_ALLOW_METHODS, "POST");
    if !requested.is_empty() {
        set(header::ACCESS_CONTROL_ALLOW_HEADERS, &requested.join(", "));
    }
    if cors.max_age > 0 {
        set(header::ACCESS_CONTROL_MAX_AGE, &cors.max_age.to_string());
    }
    response
}

fn decompress(encoding: &str, body: Bytes, max_size: usize) -> Result<Bytes, (StatusCode, String)> {
    let reader: Box<dyn Read + '_> = match encoding.trim() {
        "" | "identity" => return Ok(body),
        "gzip" => Box::new(flate2::read::GzDecoder::new(&body[..])),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        other => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content encoding {other:?}: use gzip, deflate or none"),
            ));
        }
    };
    let mut out = Vec::new();
    // Read one byte past the limit to tell "exactly the limit" from "over it".
    match reader.take(max_size as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > max_size => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body larger than {max_size} bytes"),
        )),
        Ok(_) => Ok(out.into()),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("cannot decompress {encoding} body: {e}"),
        )),
    }
}

/// An error (or not-found) reply in the request's format; the gRPC code follows the HTTP status.
fn reply(format: Format, status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => 12,
        StatusCode::TOO_MANY_REQUESTS => 8,
        _ => 13,
    };
    match format {
        Format::Protobuf => {
            let body = rpc::Status {
                code,
                message: message.to_string(),
                details: Vec::new(),
            }
            .encode_to_vec();
            (
                status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                body,
            )
                .into_response()
        }
        Format::Json => {
            let body = serde_json::json!({ "code": code, "message": message }).to_string();
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}
