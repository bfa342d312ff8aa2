//! `otlphttp`: OTLP/HTTP exporter with protobuf or JSON bodies.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use odigos_proto::Signal;
use serde::Deserialize;

use super::queue::{self, QueueConfig, RetryConfig, SendError, Sender};
use super::{Compression, TlsConfig, plaintext_endpoint};
use crate::batch::Decoded;
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::Next;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpHttpExporterConfig {
    /// Base URL; `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended.
    pub endpoint: Option<String>,
    /// Full URL for traces, instead of the one derived from `endpoint`.
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    /// `proto` or `json`.
    #[serde(default)]
    pub encoding: Encoding,
    /// `gzip` or `none`.
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout", with = "crate::yaml::duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Proto,
    Json,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl OtlpHttpExporterConfig {
    /// The URL each signal is posted to.
    fn urls(&self) -> Result<[String; 3], String> {
        let overrides = [
            &self.traces_endpoint,
            &self.metrics_endpoint,
            &self.logs_endpoint,
        ];
        let mut urls = [String::new(), String::new(), String::new()];
        for (signal, url) in Signal::ALL.into_iter().zip(overrides) {
            // An explicit URL is taken as written; a scheme-less one follows the TLS setting.
            let tls = TlsConfig { insecure: true };
            urls[signal as usize] = match (url, &self.endpoint) {
                (Some(url), _) => plaintext_endpoint(url, &tls)?,
                (None, Some(base)) => {
                    let base = plaintext_endpoint(base, &self.tls)?;
                    format!("{}{}", base.trim_end_matches('/'), signal.http_path())
                }
                (None, None) => {
                    return Err(format!("set endpoint or {}_endpoint", signal.as_str()));
                }
            };
        }
        Ok(urls)
    }
}

impl ComponentConfig for OtlpHttpExporterConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = self.retry_on_failure.validate();
        problems.extend(self.sending_queue.validate());
        match self.urls() {
            Ok(urls) => {
                for url in urls {
                    if url.parse::<http::Uri>().is_err() {
                        problems
                            .push((vec!["endpoint".into()], format!("{url} is not a valid URL")));
                    }
                }
            }
            Err(e) => problems.push((vec!["endpoint".into()], e)),
        }
        if self.compression == Compression::Zstd {
            problems.push((vec!["compression".into()], "use gzip or none".into()));
        }
        for (key, value) in &self.headers {
            if key.parse::<HeaderName>().is_err() || value.parse::<HeaderValue>().is_err() {
                problems.push((
                    vec!["headers".into(), key.clone()],
                    "not a valid HTTP header".into(),
                ));
            }
        }
        problems
    }
}

struct HttpSender {
    client: Client<HttpConnector, Full<Bytes>>,
    urls: [http::Uri; 3],
    encoding: Encoding,
    gzip: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

#[async_trait]
impl Sender for HttpSender {
    async fn send(&self, signal: Signal, body: Bytes) -> Result<(), SendError> {
        let (content_type, body) = match self.encoding {
            Encoding::Proto => ("application/x-protobuf", body),
            Encoding::Json => {
                let decoded = Decoded::decode(signal, &body)
                    .map_err(|e| SendError::Permanent(e.to_string()))?;
                ("application/json", Bytes::from(decoded.to_json()))
            }
        };
        let mut request = http::Request::post(self.urls[signal as usize].clone())
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::USER_AGENT,
                concat!("odigos-collector/", env!("CARGO_PKG_VERSION")),
            );
        let body = if self.gzip {
            request = request.header(header::CONTENT_ENCODING, "gzip");
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder
                .write_all(&body)
                .and_then(|_| encoder.finish())
                .map(Bytes::from)
                .map_err(|e| SendError::Permanent(e.to_string()))?
        } else {
            body
        };
        for (key, value) in &self.headers {
            request = request.header(key, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| SendError::Retryable {
                message: format!("timed out after {:?}", self.timeout),
                after: None,
            })?
            .map_err(|e| SendError::Retryable {
                message: format!("request failed: {e}"),
                after: None,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        let message = format!("HTTP {status}: {text}");
        match status {
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Err(SendError::Retryable { message, after }),
            _ => Err(SendError::Permanent(message)),
        }
    }
}

pub(super) fn build(
    config: &OtlpHttpExporterConfig,
    id: &ComponentId,
    context: &Context,
) -> Result<Next, String> {
    let urls = config.urls()?;
    let parse = |url: &String| url.parse::<http::Uri>().map_err(|e| format!("{url}: {e}"));
    let urls = [parse(&urls[0])?, parse(&urls[1])?, parse(&urls[2])?];
    let headers = config
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
        .collect();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let sender = HttpSender {
        client: Client::builder(TokioExecutor::new()).build(connector),
        urls,
        encoding: config.encoding,
        gzip: config.compression == Compression::Gzip,
        headers,
        timeout: config.timeout,
    };
    queue::build(
        id,
        Box::new(sender),
        &config.sending_queue,
        &config.retry_on_failure,
        context,
    )
}
