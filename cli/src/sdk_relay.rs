//! odiglet's OpAMP relay for the SDKs of its node's pods. The pod webhook points them here
//! (`ODIGOS_OPAMP_SERVER_HOST`, the node's address), where they need no token: each message
//! (OpAMP over plain HTTP, as SDKs speak it) is passed on to the control plane with odiglet's
//! own token, and what it answers goes back. The agent is described as what the pod that sent
//! it runs (its workload, namespace, pod and node) whatever it claims, only pods of this node
//! are heard, and the control plane answers relayed messages as an SDK agent's and nothing else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use odigos_ebpf::pods::{Pod, Pods};
use odigos_proto::opamp::{AgentToServer, AnyValue, KeyValue, any_value};
use odigos_server::compiler::instrumentation_config_name;
use odigos_server::opamp::{PATH, SDK_RELAY_HEADER};
use odigos_server::reconciler::{ROLE, WORKLOAD};
use prost::Message;
use tokio::sync::watch;

const PROTOBUF: &str = "application/x-protobuf";
/// How long the control plane has to answer a relayed message.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Relay {
    /// The control plane's OpAMP endpoint over plain HTTP.
    upstream: String,
    token: Option<String>,
    node: String,
    pods: watch::Receiver<Pods>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Relay {
    /// A relay to the control plane at odiglet's own OpAMP `endpoint` (`ws://` or `http://`),
    /// for the pods of `node` as `pods` has them.
    pub fn new(
        endpoint: &str,
        token: Option<String>,
        node: String,
        pods: watch::Receiver<Pods>,
    ) -> Result<Relay, String> {
        let upstream = match endpoint.strip_prefix("ws://") {
            Some(rest) => format!("http://{rest}"),
            None if endpoint.starts_with("http://") => endpoint.to_string(),
            None => {
                return Err(format!(
                    "{endpoint}: the SDK relay reaches the control plane over plain HTTP, so --opamp-endpoint must be ws:// or http://"
                ));
            }
        };
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Ok(Relay {
            upstream,
            token,
            node,
            pods,
            client,
        })
    }

    /// The pod of this node at `ip`.
    fn pod_at(&self, ip: IpAddr) -> Option<Arc<Pod>> {
        let ip = ip.to_canonical().to_string();
        let pods = self.pods.borrow();
        pods.values().find(|pod| pod.ips.contains(&ip)).cloned()
    }
}

/// Relays what comes to `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, relay: Relay) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route(PATH, axum::routing::post(relay_message))
        .with_state(Arc::new(relay));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

async fn relay_message(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !matches!(encoding, "" | "identity") {
        let said = format!("content encoding {encoding:?}: send the message uncompressed");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, said).into_response();
    }
    let Some(pod) = relay.pod_at(peer.ip()) else {
        let said = format!(
            "{} is no pod of node {}: only pods of this node reach the control plane here",
            peer.ip(),
            relay.node
        );
        return (StatusCode::FORBIDDEN, said).into_response();
    };
    let mut message = match AgentToServer::decode(body) {
        Ok(message) => message,
        Err(e) => {
            let said = format!("not an OpAMP AgentToServer message: {e}");
            return (StatusCode::BAD_REQUEST, said).into_response();
        }
    };
    speak_for(&pod, &mut message);
    let mut request = axum::http::Request::post(&relay.upstream)
        .header(header::CONTENT_TYPE, PROTOBUF)
        .header(SDK_RELAY_HEADER, &relay.node);
    if let Some(token) = &relay.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(message.encode_to_vec().into()))
        .expect("a valid request");
    let answer = async {
        let response = relay
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body.to_bytes()))
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, answer).await {
        Ok(Ok((status, body))) => {
            (status, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot relay an SDK agent's message to the control plane");
            (
                StatusCode::BAD_GATEWAY,
                format!("the control plane cannot be reached: {e}"),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the control plane did not answer in time",
        )
            .into_response(),
    }
}

/// Describes the agent as what `pod` runs, whatever it said: an SDK agent of the pod's
/// workload (whose settings it gets), in the pod's namespace, pod and node.
fn speak_for(pod: &Pod, message: &mut AgentToServer) {
    let Some(description) = message.agent_description.as_mut() else {
        return;
    };
    let workload = instrumentation_config_name(&pod.workload_kind, &pod.workload_name);
    let ours = [
        (ROLE, "sdk".to_string()),
        (WORKLOAD, format!("{}/{workload}", pod.namespace)),
        ("k8s.namespace.name", pod.namespace.clone()),
        ("k8s.pod.name", pod.name.clone()),
        ("k8s.node.name", pod.node.clone()),
    ];
    for attributes in [
        &mut description.identifying_attributes,
        &mut description.non_identifying_attributes,
    ] {
        attributes.retain(|kv| ours.iter().all(|(key, _)| *key != kv.key));
    }
    description
        .non_identifying_attributes
        .extend(ours.into_iter().map(|(key, value)| KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value)),
            }),
        }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use odigos_proto::opamp::AgentDescription;

    #[test]
    fn the_agent_is_described_as_what_its_pod_runs_whatever_it_claims() {
        let text = |key: &str, value: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
        };
        let pod = Pod {
            namespace: "shop".into(),
            name: "checkout-5d9f7c-abcde".into(),
            node: "node-1".into(),
            workload_kind: "Deployment".into(),
            workload_name: "checkout".into(),
            ..Pod::default()
        };
        let mut message = AgentToServer {
            agent_description: Some(AgentDescription {
                identifying_attributes: vec![
                    text("service.name", "checkout-api"),
                    text(ROLE, "gateway"),
                ],
                non_identifying_attributes: vec![text(WORKLOAD, "bank/deployment-vault")],
            }),
            ..Default::default()
        };
        speak_for(&pod, &mut message);
        let description = message.agent_description.unwrap();
        assert_eq!(
            description.identifying_attributes,
            [text("service.name", "checkout-api")]
        );
        assert_eq!(
            description.non_identifying_attributes,
            [
                text(ROLE, "sdk"),
                text(WORKLOAD, "shop/deployment-checkout"),
                text("k8s.namespace.name", "shop"),
                text("k8s.pod.name", "checkout-5d9f7c-abcde"),
                text("k8s.node.name", "node-1"),
            ]
        );
        // A heartbeat carries no description, and none is made up.
        let mut heartbeat = AgentToServer::default();
        speak_for(&pod, &mut heartbeat);
        assert!(heartbeat.agent_description.is_none());
    }
}
