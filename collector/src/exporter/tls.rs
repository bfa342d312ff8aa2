//! Client TLS for the network exporters: rustls with the ring provider, and a connector that
//! both the gRPC channel and the HTTP client dial through.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A certificate chain to present, and its key.
type ClientCertificate = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Client TLS settings, as in the OpenTelemetry Collector.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Send without TLS to an endpoint written without a scheme. An `https://` endpoint is
    /// always TLS and an `http://` one never is.
    pub insecure: bool,
    /// PEM file of the CA certificates to trust. When set, only these are trusted; otherwise
    /// the public web roots are.
    pub ca_file: Option<PathBuf>,
    /// The CA certificates to trust, as PEM text, instead of a file. When set, only these are
    /// trusted; it may not be given together with `ca_file`.
    pub ca_pem: Option<String>,
    /// Accept any server certificate. The connection is still encrypted, but whoever can
    /// intercept it can pose as the server.
    pub insecure_skip_verify: bool,
    /// The name the server certificate must carry, instead of the endpoint's host.
    pub server_name_override: Option<String>,
    /// A client certificate (PEM chain) to present, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Problems found at config load, as `(field path, message)` under `tls`.
    pub(crate) fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        let at = |field: &str| vec!["tls".to_string(), field.to_string()];
        if let Some(file) = &self.ca_file
            && let Err(e) = load_roots(file)
        {
            problems.push((at("ca_file"), e));
        }
        if let Some(pem) = &self.ca_pem {
            if self.ca_file.is_some() {
                problems.push((at("ca_pem"), "give ca_file or ca_pem, not both".into()));
            } else if let Err(e) = parse_roots("ca_pem", pem.as_bytes()) {
                problems.push((at("ca_pem"), e));
            }
        }
        if let Err(e) = self.server_name() {
            problems.push((at("server_name_override"), e));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                problems.push((at("key_file"), "give key_file with cert_file".into()))
            }
            (None, Some(_)) => {
                problems.push((at("cert_file"), "give cert_file with key_file".into()))
            }
            (Some(_), Some(_)) => {
                if let Err(e) = self.client_certificate() {
                    problems.push((at("cert_file"), e));
                }
            }
            (None, None) => {}
        }
        problems
    }

    /// The rustls client settings; `alpn` lists the protocols offered, most preferred first.
    pub(super) fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
        } else {
            let roots = match (&self.ca_file, &self.ca_pem) {
                (Some(file), _) => load_roots(file)?,
                (None, Some(pem)) => parse_roots("ca_pem", pem.as_bytes())?,
                (None, None) => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match self.client_certificate()? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cert_file and key_file: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The client certificate chain and key of `cert_file` and `key_file`, when given.
    fn client_certificate(&self) -> Result<Option<ClientCertificate>, String> {
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else {
            return Ok(None);
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate found", cert.display()));
        }
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
        Ok(Some((chain, key)))
    }

    fn server_name(&self) -> Result<Option<ServerName<'static>>, String> {
        self.server_name_override
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|_| format!("{name:?} is not a valid DNS name or IP address"))
            })
            .transpose()
    }
}

fn load_roots(file: &Path) -> Result<RootCertStore, String> {
    let name = file.display();
    let pem = std::fs::read(file).map_err(|e| format!("{name}: cannot read: {e}"))?;
    parse_roots(&name.to_string(), &pem)
}

/// The CA certificates in `pem`; `name` says where it came from in messages.
fn parse_roots(name: &str, pem: &[u8]) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{name}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{name}: no certificate found"));
    }
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{name}: no usable CA certificate"));
    }
    Ok(roots)
}

/// Accepts every certificate but still checks that the handshake is signed by its key.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Dials TCP, then TLS for `https://` URIs, or for every URI when built with [`Connector::always`].
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
    always: bool,
}

impl Connector {
    /// Encrypts connections to `https://` URIs only; `alpn` lists the protocols offered.
    pub(crate) fn for_https(config: &TlsConfig, alpn: &[&[u8]]) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        Ok(Connector {
            http,
            tls: config.client_config(alpn)?.into(),
            server_name: config.server_name()?,
            always: false,
        })
    }

    /// Encrypts every connection, whatever the URI's scheme.
    pub(super) fn always(config: &TlsConfig, alpn: &[&[u8]]) -> Result<Self, String> {
        Ok(Connector {
            always: true,
            ..Connector::for_https(config, alpn)?
        })
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let encrypt = self.always || uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let (tls, server_name) = (self.tls.clone(), self.server_name.clone());
        let connect = self.http.call(uri.clone());
        Box::pin(async move {
            let tcp = connect.await?.into_inner();
            if !encrypt {
                return Ok(TokioIo::new(Stream::Plain(tcp)));
            }
            let host = uri.host().unwrap_or_default();
            let name = match server_name {
                Some(name) => name,
                None => ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|_| format!("{host:?} is not a valid server name"))?,
            };
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("tls handshake with {host}: {e}")))?;
            Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
        })
    }
}

/// A connection to the destination, over TLS or not.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(tcp) => tcp.connected(),
            Stream::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                if session.alpn_protocol() == Some(b"h2") {
                    tcp.connected().negotiated_h2()
                } else {
                    tcp.connected()
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Describes an error with the errors beneath it, which is where a connection failure says
/// what went wrong (`transport error` alone says nothing).
pub(super) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// A TLS server on 127.0.0.1 with a certificate from a private CA, for the exporters' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{HeaderMap, Response, Version, header};
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use odigos_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use odigos_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    /// An OTLP trace request with one span, encoded.
    pub(crate) fn request() -> Bytes {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "checkout".into(),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
        .into()
    }

    /// A CA written to `ca_file` and the server settings of a certificate it signed.
    pub(crate) struct Pki {
        pub ca_file: PathBuf,
        pub server: Arc<rustls::ServerConfig>,
        _dir: tempfile::TempDir,
    }

    /// `names` are the DNS names and IP addresses the server certificate is valid for.
    pub(crate) fn pki(names: &[&str]) -> Pki {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "exporter test ca");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Pki {
            ca_file,
            server: Arc::new(server),
            _dir: dir,
        }
    }

    /// One request as the server saw it.
    #[derive(Debug)]
    pub(crate) struct Received {
        pub path: String,
        pub version: Version,
        pub content_type: String,
        pub body: Bytes,
    }

    /// Serves HTTP/1.1 and HTTP/2 over TLS until the test ends. Every request succeeds; a gRPC
    /// one gets an empty message and an OK status.
    pub(crate) async fn serve(
        config: Arc<rustls::ServerConfig>,
    ) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    // A client that distrusts the certificate ends the handshake here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let log = log.clone();
                        async move { Ok::<_, hyper::Error>(answer(request, &log).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (address, received)
    }

    async fn answer(
        request: http::Request<hyper::body::Incoming>,
        log: &Mutex<Vec<Received>>,
    ) -> Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let grpc = content_type.starts_with("application/grpc");
        log.lock().unwrap().push(Received {
            path: parts.uri.path().to_string(),
            version: parts.version,
            content_type,
            body,
        });
        if !grpc {
            return Response::new(Full::new(Bytes::new()).boxed());
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let message = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]));
        Response::builder()
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(message.with_trailers(async { Some(Ok(trailers)) }).boxed())
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ca_file_and_server_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let pki = testing::pki(&["localhost"]);
        let check = |ca_file: &Path| {
            TlsConfig {
                ca_file: Some(ca_file.to_path_buf()),
                ..TlsConfig::default()
            }
            .validate()
        };

        let problems = check(&missing);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, ["tls", "ca_file"]);
        assert!(
            problems[0]
                .1
                .starts_with(&format!("{}: cannot read", missing.display())),
            "{}",
            problems[0].1
        );
        let problems = check(&empty);
        assert_eq!(
            problems[0].1,
            format!("{}: no certificate found", empty.display())
        );
        assert_eq!(check(&pki.ca_file), []);

        let bad_name = TlsConfig {
            server_name_override: Some("not a name".into()),
            ..TlsConfig::default()
        };
        assert_eq!(bad_name.validate()[0].0, ["tls", "server_name_override"]);
    }

    #[test]
    fn ca_pem_is_trusted_like_a_ca_file() {
        let pki = testing::pki(&["localhost"]);
        let pem = std::fs::read_to_string(&pki.ca_file).unwrap();
        let config = TlsConfig {
            ca_pem: Some(pem.clone()),
            ..TlsConfig::default()
        };
        assert_eq!(config.validate(), []);
        assert!(config.client_config(&[b"h2"]).is_ok());
        let bad = TlsConfig {
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nnope\n".into()),
            ..TlsConfig::default()
        };
        assert_eq!(bad.validate()[0].0, ["tls", "ca_pem"]);
        let both = TlsConfig {
            ca_file: Some(pki.ca_file.clone()),
            ca_pem: Some(pem),
            ..TlsConfig::default()
        };
        assert_eq!(
            both.validate(),
            [(
                vec!["tls".to_string(), "ca_pem".to_string()],
                "give ca_file or ca_pem, not both".to_string()
            )]
        );
    }

    #[test]
    fn parses_tls_settings() {
        let text = "insecure: false\nca_file: /etc/ca.pem\ninsecure_skip_verify: true\nserver_name_override: otel.example\n";
        let config: TlsConfig = crate::yaml::from_value(crate::yaml::parse(text).unwrap()).unwrap();
        assert_eq!(
            config,
            TlsConfig {
                insecure: false,
                ca_file: Some("/etc/ca.pem".into()),
                ca_pem: None,
                insecure_skip_verify: true,
                server_name_override: Some("otel.example".into()),
                cert_file: None,
                key_file: None,
            }
        );
        let unknown = crate::yaml::parse("min_version: '1.3'").unwrap();
        assert!(crate::yaml::from_value::<TlsConfig>(unknown).is_err());
        let half = crate::yaml::parse("cert_file: /etc/client.pem").unwrap();
        let half: TlsConfig = crate::yaml::from_value(half).unwrap();
        assert_eq!(half.validate()[0].1, "give key_file with cert_file");
    }
}
