//! OpAMP over WebSocket: each binary frame is a 0 header byte and one message. The server
//! answers every agent message and pushes config changes as they happen.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket};
use futures_util::{SinkExt, StreamExt};
use odigos_proto::opamp::{AgentToServer, ServerErrorResponseType, ws_payload};
use prost::Message;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;

use super::fleet::{Connection, Fleet, Transport, Uid, error_response};

/// Close codes from RFC 6455.
const PROTOCOL_ERROR: u16 = 1002;
const UNSUPPORTED_DATA: u16 = 1003;
const MESSAGE_TOO_BIG: u16 = 1009;

pub(crate) async fn serve(socket: WebSocket, fleet: Arc<Fleet>) {
    let (push, mut pushed) = mpsc::channel(4);
    let connection = Connection {
        id: fleet.connection_id(),
        push,
    };
    let mut closing = fleet.closing();
    let (mut sink, mut stream) = socket.split();
    let mut agent: Option<Uid> = None;
    let close = |code: u16, reason: &str| {
        Frame::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        }))
    };
    loop {
        let outgoing = tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Frame::Binary(frame))) => {
                    let payload = match ws_payload(&frame) {
                        Ok(payload) => payload,
                        Err(reason) => {
                            tracing::warn!(reason, "opamp: bad websocket frame; closing the connection");
                            let _ = sink.send(close(PROTOCOL_ERROR, reason)).await;
                            break;
                        }
                    };
                    match AgentToServer::decode(payload) {
                        Ok(message) => {
                            agent = Uid::try_from(message.instance_uid.as_slice()).ok();
                            fleet.handle(message, Transport::WebSocket(connection.clone()))
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "opamp: undecodable AgentToServer over websocket");
                            let message = format!("invalid AgentToServer: {e}");
                            error_response(&[], ServerErrorResponseType::BadRequest, message, None)
                        }
                    }
                }
                Some(Ok(Frame::Text(_))) => {
                    let _ = sink.send(close(UNSUPPORTED_DATA, "OpAMP uses binary frames")).await;
                    break;
                }
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
                Some(Ok(Frame::Close(_))) | None => break,
                Some(Err(e)) => {
                    let inner = e.into_inner();
                    let too_big = matches!(
                        inner.downcast_ref::<tungstenite::Error>(),
                        Some(tungstenite::Error::Capacity(_))
                    );
                    if too_big {
                        tracing::warn!(error = %inner, "opamp: message over the size limit; closing the connection");
                        let _ = sink.send(close(MESSAGE_TOO_BIG, "message larger than 64 MiB")).await;
                    } else {
                        tracing::warn!(error = %inner, "opamp: websocket error; closing the connection");
                    }
                    break;
                }
            },
            Some(message) = pushed.recv() => message,
            _ = closing.changed() => {
                let _ = sink.send(close(1001, "server shutting down")).await;
                break;
            }
        };
        let mut frame = Vec::with_capacity(1 + outgoing.len());
        frame.push(0);
        frame.extend_from_slice(&outgoing);
        if sink.send(Frame::Binary(frame.into())).await.is_err() {
            break;
        }
    }
    if let Some(uid) = agent {
        fleet.disconnected(&uid, connection.id);
    }
}
