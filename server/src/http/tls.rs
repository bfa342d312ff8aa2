//! TLS for the control plane's listeners: rustls with the ring provider, one task per
//! connection, and certificates read again from their files as they are renewed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are read again: a Secret mounted in a pod is updated in
/// place when its certificate is renewed, and the kubelet itself takes about a minute.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Serves the certificate chain and key of two PEM files, and from then on reads them again
/// every [`RELOAD_EVERY`]: a renewed certificate is served without a restart, and files that
/// fail to load leave the last good one served.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> std::io::Result<TlsAcceptor> {
    let served = Arc::new(Served::load(cert, key)?);
    let provider = served.provider.clone();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert, &e))?
        .with_no_client_auth()
        .with_cert_resolver(served.clone());
    // WebSocket upgrades ride on HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio::spawn(follow(Arc::downgrade(&served)));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reads the files again while the acceptor lives.
async fn follow(served: Weak<Served>) {
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let Some(served) = served.upgrade() else {
            return;
        };
        served.reload();
    }
}

fn invalid(what: &Path, e: &dyn std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {e}", what.display()),
    )
}

/// The certificate served, and the files it comes from.
#[derive(Debug)]
struct Served {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The files' bytes as last read, to tell a change.
    read: std::sync::Mutex<Vec<u8>>,
    current: ArcSwap<CertifiedKey>,
}

impl Served {
    fn load(cert: &Path, key: &Path) -> std::io::Result<Served> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (read, certified) = certified_key(cert, key, &provider)?;
        Ok(Served {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            read: std::sync::Mutex::new(read),
            current: ArcSwap::from_pointee(certified),
        })
    }

    /// Serves the files' certificate from now on if they changed and load; says so either way.
    fn reload(&self) {
        let (cert, key) = (&self.cert, &self.key);
        let mut read = self.read.lock().unwrap();
        let bytes = [std::fs::read(cert), std::fs::read(key)];
        if bytes.iter().flatten().flatten().eq(read.iter()) {
            return;
        }
        match certified_key(cert, key, &self.provider) {
            Ok((now, certified)) => {
                self.current.store(Arc::new(certified));
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                *read = now;
            }
            Err(e) => {
                // Once per change of the files, not on every read.
                tracing::warn!(error = %e, "TLS certificate not reloaded; the last one is still served");
                *read = bytes.into_iter().flatten().flatten().collect();
            }
        }
    }
}

impl ResolvesServerCert for Served {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The certificate chain and key of two PEM files, and the files' bytes.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> std::io::Result<(Vec<u8>, CertifiedKey)> {
    let cert_pem = std::fs::read(cert).map_err(|e| invalid(cert, &e))?;
    let key_pem = std::fs::read(key).map_err(|e| invalid(key, &e))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert, &e))?;
    if certs.is_empty() {
        return Err(invalid(cert, &"no certificate in the file"));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid(key, &e))?;
    let certified =
        CertifiedKey::from_der(certs, private_key, provider).map_err(|e| invalid(key, &e))?;
    Ok(([cert_pem, key_pem].concat(), certified))
}

/// Accepts TLS connections and serves `app` on each until `stopped` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    stopped: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut stopped => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let connection = Builder::new(TokioExecutor::new());
            if let Err(e) = connection
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_certificate(dir: &Path, name: &str) -> Vec<u8> {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.join("tls.crt"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), made.signing_key.serialize_pem()).unwrap();
        made.cert.der().to_vec()
    }

    fn served_der(served: &Served) -> Vec<u8> {
        served.current.load().cert[0].to_vec()
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = write_certificate(dir.path(), "first.example");
        let served = Served::load(&cert, &key).unwrap();
        assert_eq!(served_der(&served), first);

        let renewed = write_certificate(dir.path(), "renewed.example");
        served.reload();
        assert_eq!(served_der(&served), renewed);

        // A key that does not load (as when the files are caught half written) leaves the
        // renewed certificate served.
        std::fs::write(&key, "not a key").unwrap();
        served.reload();
        assert_eq!(served_der(&served), renewed);
    }
}
