//! `otlp`: OTLP/gRPC exporter. Sends the encoded request as it is, without re-encoding.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use odigos_proto::Signal;
use odigos_proto::codec::RawCodec;
use prost::Message;
use serde::Deserialize;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::queue::{self, QueueConfig, RetryConfig, SendError, Sender};
use super::tls::{Connector, describe};
use super::{Compression, TlsConfig};
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::Next;
use crate::topology;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `host:port` (TLS unless `tls.insecure`), `https://host:port` (TLS), `http://host:port`
    /// (plaintext) or `unix:///path` (a Unix domain socket).
    pub endpoint: String,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Sent as gRPC metadata with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest wait for one request.
    #[serde(default = "default_timeout", with = "crate::yaml::duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Where the exporter connects (`host:port`) and whether over TLS: an `https://` endpoint always
/// is, an `http://` one never is, and a bare `host:port` is unless `tls.insecure` is set.
fn target<'a>(endpoint: &'a str, tls: &TlsConfig) -> Result<(&'a str, bool), String> {
    let (host, secure) = if let Some(host) = endpoint.strip_prefix("https://") {
        (host, true)
    } else if let Some(host) = endpoint.strip_prefix("http://") {
        (host, false)
    } else {
        (endpoint, !tls.insecure)
    };
    if host.is_empty() {
        return Err("endpoint is empty".into());
    }
    Ok((host, secure))
}

/// The channel always dials an `http://` URI, so tonic never applies TLS of its own; the
/// connector encrypts when the endpoint asks for it.
fn dial_uri(host: &str) -> Result<String, String> {
    let uri = format!("http://{host}");
    match uri.parse::<http::Uri>() {
        Ok(_) => Ok(uri),
        Err(e) => Err(format!("invalid endpoint {host}: {e}")),
    }
}

impl ComponentConfig for OtlpExporterConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = self.retry_on_failure.validate();
        problems.extend(self.sending_queue.validate());
        let checked = match self.endpoint.strip_prefix("unix://") {
            Some("") => Err("give the socket's path: unix:///path/to/socket".into()),
            Some(_) => Ok(()),
            None => {
                target(&self.endpoint, &self.tls).and_then(|(host, _)| dial_uri(host).map(drop))
            }
        };
        if let Err(e) = checked {
            problems.push((vec!["endpoint".into()], e));
        }
        problems.extend(self.tls.validate());
        for (key, value) in &self.headers {
            if key.parse::<AsciiMetadataKey>().is_err()
                || value.parse::<AsciiMetadataValue>().is_err()
            {
                problems.push((
                    vec!["headers".into(), key.clone()],
                    "not a valid gRPC metadata entry".into(),
                ));
            }
        }
        problems
    }
}

struct GrpcSender {
    /// The configured endpoint, which errors name.
    endpoint: String,
    channel: Channel,
    compression: Option<CompressionEncoding>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

#[async_trait]
impl Sender for GrpcSender {
    async fn send(&self, signal: Signal, body: Bytes) -> Result<(), SendError> {
        let mut client =
            tonic::client::Grpc::new(self.channel.clone()).max_decoding_message_size(64 << 20);
        if let Some(encoding) = self.compression {
            client = client.send_compressed(encoding);
        }
        client.ready().await.map_err(|e| SendError::Retryable {
            message: format!("connect to {}: {}", self.endpoint, describe(&e)),
            after: None,
        })?;
        let mut request = tonic::Request::new(body);
        for (key, value) in &self.headers {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
        match client.unary(request, path, RawCodec).await {
            Ok(_) => Ok(()),
            Err(status) => Err(classify(&status, &self.endpoint)),
        }
    }
}

/// Retryable codes follow the OTLP specification.
fn classify(status: &tonic::Status, endpoint: &str) -> SendError {
    let mut message = format!("{endpoint}: {:?}: {}", status.code(), status.message());
    // The status of a failed connection may leave out why it failed; the deepest cause says.
    let mut cause = std::error::Error::source(status);
    while let Some(deeper) = cause.and_then(|c| c.source()) {
        cause = Some(deeper);
    }
    if let Some(cause) = cause.map(|c| c.to_string())
        && !message.contains(&cause)
    {
        message = format!("{message}: {cause}");
    }
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unknown => {
            let details = odigos_proto::rpc::Status::decode(status.details()).ok();
            SendError::Retryable {
                message,
                after: details.and_then(|d| d.retry_delay()),
            }
        }
        _ => SendError::Permanent(message),
    }
}

pub(super) fn build(
    config: &OtlpExporterConfig,
    id: &ComponentId,
    context: &topology::Context,
) -> Result<Next, String> {
    let channel = match config.endpoint.strip_prefix("unix://") {
        Some(path) => Endpoint::from_static("http://localhost")
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .connect_with_connector_lazy(UnixConnector(Arc::new(path.into()))),
        None => tcp_channel(config)?,
    };
    let headers = config
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
        .collect();
    let compression = match config.compression {
        Compression::Gzip => Some(CompressionEncoding::Gzip),
        Compression::Zstd => Some(CompressionEncoding::Zstd),
        Compression::None => None,
    };
    let sender = GrpcSender {
        endpoint: config.endpoint.clone(),
        channel,
        compression,
        headers,
    };
    queue::build(
        id,
        Box::new(sender),
        &config.sending_queue,
        &config.retry_on_failure,
        context,
    )
}

/// A channel over TCP, encrypted when the endpoint says so.
fn tcp_channel(config: &OtlpExporterConfig) -> Result<Channel, String> {
    let (host, secure) = target(&config.endpoint, &config.tls)?;
    let uri = dial_uri(host)?;
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("invalid endpoint {uri}: {e}"))?
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .tcp_nodelay(true);
    Ok(if secure {
        let origin = format!("https://{host}")
            .parse()
            .map_err(|e| format!("invalid endpoint {host}: {e}"))?;
        let connector = Connector::always(&config.tls, &[b"h2"])?;
        endpoint
            .origin(origin)
            .connect_with_connector_lazy(connector)
    } else {
        endpoint.connect_lazy()
    })
}

/// Connects to a Unix domain socket, whatever the URI says.
#[derive(Clone)]
struct UnixConnector(Arc<std::path::PathBuf>);

impl tower_service::Service<http::Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            tokio::net::UnixStream::connect(&*path)
                .await
                .map(TokioIo::new)
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::Batch;
    use crate::exporter::tls::testing::{self, request};

    /// Sends one batch through an exporter built from `yaml`, without queue or retries.
    async fn export(yaml: &str) -> Result<(), crate::ConsumeError> {
        let yaml = format!(
            "{yaml}\ncompression: none\ntimeout: 5s\nsending_queue: {{enabled: false}}\nretry_on_failure: {{enabled: false}}\n"
        );
        let config: OtlpExporterConfig =
            crate::yaml::from_value(crate::yaml::parse(&yaml).unwrap()).unwrap();
        assert_eq!(config.validate(), [], "{yaml}");
        let exporter = build(
            &config,
            &ComponentId::new("otlp"),
            &topology::Context::new(),
        )
        .unwrap();
        let batch = Batch::from_bytes(Signal::Traces, request()).unwrap();
        exporter.consume(batch).await
    }

    #[test]
    fn endpoint_scheme_decides_tls() {
        let tls = TlsConfig::default();
        let insecure = TlsConfig {
            insecure: true,
            ..TlsConfig::default()
        };
        assert_eq!(target("collector:4317", &tls), Ok(("collector:4317", true)));
        assert_eq!(
            target("collector:4317", &insecure),
            Ok(("collector:4317", false))
        );
        assert_eq!(target("https://c:4317", &insecure), Ok(("c:4317", true)));
        assert_eq!(target("http://c:4317", &tls), Ok(("c:4317", false)));
        assert!(target("https://", &tls).is_err());
    }

    #[tokio::test]
    async fn delivers_over_tls_with_ca_file() {
        let pki = testing::pki(&["127.0.0.1"]);
        let (address, received) = testing::serve(pki.server.clone()).await;
        // A bare host:port means TLS.
        let yaml = format!(
            "endpoint: {address}\ntls: {{ca_file: {}}}",
            pki.ca_file.display()
        );
        export(&yaml).await.unwrap();
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let seen = &received[0];
        assert_eq!(seen.path, Signal::Traces.grpc_path());
        assert_eq!(seen.version, http::Version::HTTP_2);
        // One uncompressed gRPC message: flag, length, then the request as it was given.
        let sent = request();
        assert_eq!(seen.body[0], 0);
        assert_eq!(seen.body[1..5], (sent.len() as u32).to_be_bytes());
        assert_eq!(seen.body[5..], sent[..]);
    }

    #[tokio::test]
    async fn server_name_override_names_the_certificate() {
        let pki = testing::pki(&["otel.test"]);
        let (address, received) = testing::serve(pki.server.clone()).await;
        let yaml = format!(
            "endpoint: https://{address}\ntls: {{ca_file: {}, server_name_override: otel.test}}",
            pki.ca_file.display()
        );
        export(&yaml).await.unwrap();
        assert_eq!(received.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn untrusted_certificate_is_reported() {
        let pki = testing::pki(&["127.0.0.1"]);
        let (address, received) = testing::serve(pki.server.clone()).await;
        let error = export(&format!("endpoint: https://{address}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("certificate"), "{error}");
        assert!(received.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn insecure_skip_verify_accepts_any_certificate() {
        let pki = testing::pki(&["127.0.0.1"]);
        let (address, received) = testing::serve(pki.server.clone()).await;
        let yaml = format!("endpoint: {address}\ntls: {{insecure_skip_verify: true}}");
        export(&yaml).await.unwrap();
        assert_eq!(received.lock().unwrap().len(), 1);
    }
}
