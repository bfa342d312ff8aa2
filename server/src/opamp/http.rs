//! The OpAMP endpoint: plain HTTP POSTs and WebSocket upgrades on the same path, told apart by
//! the request (an upgrade asks for `websocket`; a POST carries `application/x-protobuf`).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use odigos_proto::opamp::{AgentToServer, MAX_MESSAGE_BYTES, ServerErrorResponseType};
use prost::Message;
use tokio::sync::Semaphore;

use super::fleet::{Fleet, Transport, error_response};

const PROTOBUF: &str = "application/x-protobuf";
/// How long an overloaded server asks agents to wait.
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub(crate) struct Endpoint {
    fleet: Arc<Fleet>,
    permits: Arc<Semaphore>,
}

impl Endpoint {
    pub(crate) fn new(fleet: Arc<Fleet>, max_concurrent_requests: usize) -> Endpoint {
        Endpoint {
            fleet,
            permits: Arc::new(Semaphore::new(max_concurrent_requests.max(1))),
        }
    }
}

pub(crate) async fn handle(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let fleet = endpoint.fleet.clone();
        return match WebSocketUpgrade::from_request(request, &()).await {
            Ok(ws) => ws
                .max_message_size(MAX_MESSAGE_BYTES + 1)
                .max_frame_size(MAX_MESSAGE_BYTES + 1)
                // Small buffers: a fleet holds tens of thousands of mostly idle connections.
                .read_buffer_size(4 << 10)
                .write_buffer_size(4 << 10)
                .on_upgrade(move |socket| super::ws::serve(socket, fleet)),
            Err(rejection) => rejection.into_response(),
        };
    }
    let Ok(_permit) = endpoint.permits.clone().try_acquire_owned() else {
        let body = error_response(
            &[],
            ServerErrorResponseType::Unavailable,
            "server overloaded, retry later".into(),
            Some(RETRY_AFTER),
        );
        let mut response = reply(StatusCode::SERVICE_UNAVAILABLE, body);
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        );
        return response;
    };
    if request.method() != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST, or a WebSocket upgrade",
        )
            .into_response();
    }
    let headers = request.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some(PROTOBUF) {
        let message = format!("unsupported content type {content_type:?}: use {PROTOBUF}");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_MESSAGE_BYTES).await {
        Ok(body) => body,
        Err(_) => return too_large().into_response(),
    };
    let body = match decompress(&headers, body) {
        Ok(body) => body,
        Err((status, message)) => return (status, message).into_response(),
    };
    let message = match AgentToServer::decode(body) {
        Ok(message) => message,
        Err(e) => {
            tracing::warn!(error = %e, "opamp: undecodable AgentToServer over http");
            let body = error_response(
                &[],
                ServerErrorResponseType::BadRequest,
                format!("invalid AgentToServer: {e}"),
                None,
            );
            return reply(StatusCode::BAD_REQUEST, body);
        }
    };
    if headers.contains_key(super::SDK_RELAY_HEADER)
        && let Some(refusal) = endpoint.fleet.refused_for_sdk(&message)
    {
        tracing::warn!(node = ?headers[super::SDK_RELAY_HEADER], "opamp: {refusal}");
        let body = error_response(
            &message.instance_uid,
            ServerErrorResponseType::BadRequest,
            refusal,
            None,
        );
        return reply(StatusCode::FORBIDDEN, body);
    }
    let answer = endpoint.fleet.handle(message, Transport::Http);
    reply(StatusCode::OK, answer)
}

/// The body, gunzipped if it says so; an error is the status and message to answer with.
fn decompress(headers: &HeaderMap, body: Bytes) -> Result<Bytes, (StatusCode, String)> {
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
    {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut out = Vec::new();
            let reader = flate2::read::GzDecoder::new(&body[..]);
            match reader
                .take(MAX_MESSAGE_BYTES as u64 + 1)
                .read_to_end(&mut out)
            {
                Ok(_) if out.len() > MAX_MESSAGE_BYTES => Err(too_large()),
                Ok(_) => Ok(out.into()),
                Err(e) => Err((StatusCode::BAD_REQUEST, format!("bad gzip body: {e}"))),
            }
        }
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content encoding {other:?}"),
        )),
    }
}

fn too_large() -> (StatusCode, String) {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("message larger than {MAX_MESSAGE_BYTES} bytes"),
    )
}

fn reply(status: StatusCode, body: Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, PROTOBUF)], Body::from(body)).into_response()
}
