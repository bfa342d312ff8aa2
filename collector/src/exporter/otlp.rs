//! `otlp`: OTLP/gRPC exporter. Sends the encoded request as it is, without re-encoding.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use odigos_proto::Signal;
use odigos_proto::codec::RawCodec;
use prost::Message;
use serde::Deserialize;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::queue::{self, QueueConfig, RetryConfig, SendError, Sender};
use super::{Compression, TlsConfig, plaintext_endpoint};
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::Next;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `host:port` or `http://host:port`.
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

impl ComponentConfig for OtlpExporterConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = self.retry_on_failure.validate();
        problems.extend(self.sending_queue.validate());
        if let Err(e) = plaintext_endpoint(&self.endpoint, &self.tls) {
            problems.push((vec!["endpoint".into()], e));
        }
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
            message: format!("connect: {e}"),
            after: None,
        })?;
        let mut request = tonic::Request::new(body);
        for (key, value) in &self.headers {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
        match client.unary(request, path, RawCodec).await {
            Ok(_) => Ok(()),
            Err(status) => Err(classify(&status)),
        }
    }
}

/// Retryable codes follow the OTLP specification.
fn classify(status: &tonic::Status) -> SendError {
    let message = format!("{:?}: {}", status.code(), status.message());
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
    context: &Context,
) -> Result<Next, String> {
    let uri = plaintext_endpoint(&config.endpoint, &config.tls)?;
    let channel = Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("invalid endpoint {uri}: {e}"))?
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .tcp_nodelay(true)
        .connect_lazy();
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
