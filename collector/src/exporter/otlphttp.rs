//! `otlphttp`: OTLP/HTTP exporter with protobuf or JSON bodies.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use odigos_proto::Signal;
use serde::Deserialize;

use super::queue::{self, QueueConfig, RetryConfig, SendError, Sender};
use super::tls::{Connector, describe};
use super::{Compression, TlsConfig};
use crate::batch::Decoded;
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::Next;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpHttpExporterConfig {
    /// Base URL; `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended. `https://` means TLS
    /// and `http://` plaintext; without a scheme, TLS unless `tls.insecure`.
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
    /// Used for every `https://` URL.
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
            urls[signal as usize] = match (url, &self.endpoint) {
                (Some(url), _) => with_scheme(url, &self.tls)?,
                (None, Some(base)) => {
                    let base = with_scheme(base, &self.tls)?;
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

/// The URL as written when it has an `http://` or `https://` scheme; without one, `https://`
/// unless `tls.insecure` is set.
fn with_scheme(url: &str, tls: &TlsConfig) -> Result<String, String> {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if host.unwrap_or(url).is_empty() {
        return Err("endpoint is empty".into());
    }
    Ok(match (host, tls.insecure) {
        (Some(_), _) => url.to_string(),
        (None, true) => format!("http://{url}"),
        (None, false) => format!("https://{url}"),
    })
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
        problems.extend(self.tls.validate());
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
    client: Client<Connector, Full<Bytes>>,
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
        let url = &self.urls[signal as usize];
        let mut request = http::Request::post(url.clone())
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
                message: format!("{url}: timed out after {:?}", self.timeout),
                after: None,
            })?
            .map_err(|e| SendError::Retryable {
                message: format!("{url}: request failed: {}", describe(&e)),
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
        let message = format!("{url}: HTTP {status}: {text}");
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
    let connector = Connector::for_https(&config.tls, &[b"h2", b"http/1.1"])?;
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
        let config: OtlpHttpExporterConfig =
            crate::yaml::from_value(crate::yaml::parse(&yaml).unwrap()).unwrap();
        assert_eq!(config.validate(), [], "{yaml}");
        let exporter = build(&config, &ComponentId::new("otlphttp"), &Context::new()).unwrap();
        let batch = Batch::from_bytes(Signal::Traces, request()).unwrap();
        exporter.consume(batch).await
    }

    #[test]
    fn scheme_decides_tls() {
        let tls = TlsConfig::default();
        let insecure = TlsConfig {
            insecure: true,
            ..TlsConfig::default()
        };
        assert_eq!(with_scheme("c:4318", &tls).unwrap(), "https://c:4318");
        assert_eq!(with_scheme("c:4318", &insecure).unwrap(), "http://c:4318");
        assert_eq!(
            with_scheme("https://c:4318", &insecure).unwrap(),
            "https://c:4318"
        );
        assert_eq!(with_scheme("http://c:4318", &tls).unwrap(), "http://c:4318");
        assert_eq!(
            with_scheme("http://", &tls).unwrap_err(),
            "endpoint is empty"
        );
    }

    #[tokio::test]
    async fn delivers_over_https_with_ca_file() {
        let pki = testing::pki(&["127.0.0.1"]);
        let (address, received) = testing::serve(pki.server.clone()).await;
        let yaml = format!(
            "endpoint: https://{address}\ntls: {{ca_file: {}}}",
            pki.ca_file.display()
        );
        export(&yaml).await.unwrap();
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let seen = &received[0];
        assert_eq!(seen.path, "/v1/traces");
        assert_eq!(seen.content_type, "application/x-protobuf");
        // Offered by ALPN and chosen by the server.
        assert_eq!(seen.version, http::Version::HTTP_2);
        assert_eq!(seen.body, request());
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
        let yaml = format!(
            "traces_endpoint: https://{address}/v1/traces\nmetrics_endpoint: https://{address}/v1/metrics\nlogs_endpoint: https://{address}/v1/logs\ntls: {{insecure_skip_verify: true}}"
        );
        export(&yaml).await.unwrap();
        assert_eq!(received.lock().unwrap()[0].path, "/v1/traces");
    }

    #[test]
    fn unreadable_ca_file_fails_validation() {
        let yaml = "endpoint: https://c:4318\ntls: {ca_file: /nonexistent/ca.pem}";
        let config: OtlpHttpExporterConfig =
            crate::yaml::from_value(crate::yaml::parse(yaml).unwrap()).unwrap();
        let problems = config.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, ["tls", "ca_file"]);
        assert!(
            problems[0]
                .1
                .starts_with("/nonexistent/ca.pem: cannot read")
        );
    }
}
