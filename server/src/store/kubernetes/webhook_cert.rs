//! The pod webhook's certificate, renewed by the leader before it expires. When less than a
//! third of its life (or under 30 days) is left, a new CA and a serving certificate signed by
//! it, valid a year, replace it in its Secret; the webhook configuration's `caBundle` trusts
//! the new CA and the one before it, so that every replica serves a trusted certificate while
//! the kubelet brings it the new files (the webhook reads them again as they change).

use std::time::Duration as StdDuration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// How long a certificate the control plane makes is valid.
const LIFETIME: Duration = Duration::days(365);
/// A certificate is renewed once it has less than this left, or less than a third of its life.
const RENEW_WITHIN: Duration = Duration::days(30);
/// How often the leader looks at the certificate.
pub(super) const CHECK_EVERY: StdDuration = StdDuration::from_secs(3600);

/// The webhook's certificate the control plane keeps renewed.
#[derive(Clone, Debug)]
pub struct WebhookCert {
    /// The `kubernetes.io/tls` Secret in the home namespace (`tls.crt`, `tls.key`, and the
    /// CAs trusted in `ca.crt`) that the webhook serves.
    pub secret: String,
    /// The MutatingWebhookConfiguration that calls the webhook and trusts its CA.
    pub configuration: String,
}

/// Renews the certificate if it is due: returns until when the new one is valid, or None
/// when the one there is good for a while yet.
pub(super) async fn renew_if_due(
    client: &Client,
    home: &str,
    names: &WebhookCert,
) -> Result<Option<OffsetDateTime>, String> {
    let secrets = Api::<Secret>::namespaced(client.clone(), home);
    let configurations = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let mut secret = secrets
        .get(&names.secret)
        .await
        .map_err(|e| format!("reading the Secret {home}/{}: {e}", names.secret))?;
    let mut data = secret.data.take().unwrap_or_default();
    let file = |key: &str| data.get(key).map(|b| b.0.as_slice()).unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    if let Some((from, until)) = validity(file("tls.crt")).first()
        && !due(*from, *until, now)
    {
        return Ok(None);
    }
    let mut configuration = configurations
        .get(&names.configuration)
        .await
        .map_err(|e| {
            format!(
                "reading the MutatingWebhookConfiguration {}: {e}",
                names.configuration
            )
        })?;
    let names_served: Vec<String> = configuration
        .webhooks
        .iter()
        .flatten()
        .filter_map(|w| w.client_config.service.as_ref())
        .flat_map(|s| {
            let namespace = s.namespace.as_str();
            [
                format!("{}.{namespace}.svc", s.name),
                format!("{}.{namespace}", s.name),
                s.name.clone(),
            ]
        })
        .collect();
    let made = issue(names_served, now).map_err(|e| format!("making a certificate: {e}"))?;
    // The CA before this one still signs the certificate that replicas serve until the
    // kubelet updates their files.
    let mut trusted = made.ca;
    if let Some(previous) = pems(file("ca.crt")).into_iter().next()
        && validity(previous.as_bytes())
            .first()
            .is_some_and(|(_, until)| *until > now)
    {
        trusted.push_str(&previous);
    }
    for webhook in configuration.webhooks.iter_mut().flatten() {
        webhook.client_config.ca_bundle = Some(ByteString(trusted.clone().into_bytes()));
    }
    configurations
        .replace(&names.configuration, &PostParams::default(), &configuration)
        .await
        .map_err(|e| {
            format!(
                "updating the MutatingWebhookConfiguration {}: {e}",
                names.configuration
            )
        })?;
    data.insert("ca.crt".into(), ByteString(trusted.into_bytes()));
    data.insert("tls.crt".into(), ByteString(made.cert.into_bytes()));
    data.insert("tls.key".into(), ByteString(made.key.into_bytes()));
    secret.data = Some(data);
    secrets
        .replace(&names.secret, &PostParams::default(), &secret)
        .await
        .map_err(|e| format!("updating the Secret {home}/{}: {e}", names.secret))?;
    Ok(Some(now + LIFETIME))
}

/// Whether a certificate valid from `from` until `until` is to be renewed at `now`.
fn due(from: OffsetDateTime, until: OffsetDateTime, now: OffsetDateTime) -> bool {
    until - now < RENEW_WITHIN.max((until - from) / 3)
}

/// A CA, and a serving certificate it signed with its key, all PEM.
struct Made {
    ca: String,
    cert: String,
    key: String,
}

/// A new CA and a certificate it signed for `names` (DNS names, the first its common name).
fn issue(names: Vec<String>, now: OffsetDateTime) -> Result<Made, rcgen::Error> {
    let valid = |params: &mut CertificateParams, common_name: &str| {
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + LIFETIME;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    valid(&mut ca, "odigos-webhook-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let common_name = names.first().cloned().unwrap_or_default();
    let mut serving = CertificateParams::new(names)?;
    valid(&mut serving, &common_name);
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(Made {
        ca: ca_pem,
        cert: serving.signed_by(&key, &issuer)?.pem(),
        key: key.serialize_pem(),
    })
}

/// Each PEM block of `bundle`, as text.
fn pems(bundle: &[u8]) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(bundle);
    text.split_inclusive(END)
        .filter(|block| block.contains(END))
        .map(|block| format!("{}\n", block.trim()))
        .collect()
}

/// When each certificate of a PEM bundle is valid from and until.
fn validity(bundle: &[u8]) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    x509_parser::pem::Pem::iter_from_buffer(bundle)
        .flatten()
        .filter_map(|pem| {
            let cert = pem.parse_x509().ok()?;
            let validity = cert.validity();
            Some((
                validity.not_before.to_datetime(),
                validity.not_after.to_datetime(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_in_the_last_third_of_its_life_or_its_last_month() {
        let now = OffsetDateTime::now_utc();
        let year = |from: OffsetDateTime| (from, from + Duration::days(365));
        let (from, until) = year(now - Duration::days(200));
        assert!(!due(from, until, now), "165 days left of 365");
        let (from, until) = year(now - Duration::days(250));
        assert!(due(from, until, now), "115 days left of 365");
        // A day-long certificate (as a test installs) is renewed at once.
        assert!(due(now, now + Duration::days(1), now));
        // One the chart made for ten years is left alone for six.
        assert!(!due(
            now,
            now + Duration::days(3650),
            now + Duration::days(2000)
        ));
        assert!(due(from, until, until + Duration::days(1)), "expired");
    }

    #[test]
    fn the_certificate_made_is_signed_by_the_ca_for_the_services_names() {
        let now = OffsetDateTime::now_utc();
        let names = vec![
            "odigos-control-plane.odigos-system.svc".to_string(),
            "odigos-control-plane".into(),
        ];
        let made = issue(names, now).unwrap();
        let [(from, until)] = validity(made.cert.as_bytes())[..] else {
            panic!("one certificate: {}", made.cert)
        };
        assert!(from <= now && until - now > Duration::days(364));
        let pem = x509_parser::pem::Pem::iter_from_buffer(made.cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let cert = pem.parse_x509().unwrap();
        let ca_pem = x509_parser::pem::Pem::iter_from_buffer(made.ca.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        assert!(ca.is_ca());
        cert.verify_signature(Some(ca.public_key()))
            .expect("signed by the CA");
        let alt_names = cert.subject_alternative_name().unwrap().unwrap();
        let alt_names = format!("{:?}", alt_names.value.general_names);
        assert!(
            alt_names.contains("odigos-control-plane.odigos-system.svc"),
            "{alt_names}"
        );
        let key = KeyPair::from_pem(&made.key).unwrap();
        assert_eq!(
            key.public_key_raw(),
            cert.public_key().subject_public_key.data.as_ref()
        );
    }

    #[test]
    fn a_bundle_splits_into_its_certificates() {
        let now = OffsetDateTime::now_utc();
        let first = issue(vec!["a".into()], now).unwrap().ca;
        let second = issue(vec!["b".into()], now).unwrap().ca;
        assert_eq!(pems(format!("{first}{second}").as_bytes()), [first, second]);
        assert!(pems(b"").is_empty());
    }
}
