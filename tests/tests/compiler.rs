//! The config compiler against the collector's own validation: random desired states (every
//! destination type, actions, sources, selectors, sampling) compile to configs the collector
//! accepts, and compiling twice gives the same bytes.

use std::collections::BTreeMap;

use odigos_collector::Config;
use odigos_server::catalog::{Catalog, FieldKind};
use odigos_server::compiler::{Compiled, compile};
use odigos_server::resource::{Object, validate};
use odigos_server::store::Desired;
use odigos_tests::layout;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// A CA certificate, for fields that take PEM text.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBiTCCAS+gAwIBAgIUKaUe0I0w0C8i2OP/fh9D+AQRxRcwCgYIKoZIzj0EAwIw\nGTEXMBUGA1UEAwwOb2RpZ29zIHRlc3QgY2EwIBcNMjYxMTI5MTgxMTQ1WhgPMjEy\nNjExMDUxODExNDVaMBkxFzAVBgNVBAMMDm9kaWdvcyB0ZXN0IGNhMFkwEwYHKoZI\nzj0CAQYIKoZIzj0DAQcDQgAEiPbzhNr6vzxRmq1ouBA59TGzl7gvpsTS6xH4hwPh\nRPwoiYr7n6q6ixwrWmzbDT/LNZVG2H1CXHbqX/2iyuDo/6NTMFEwHQYDVR0OBBYE\nFI0212suUTpAeC8LXxDlID+eTL7IMB8GA1UdIwQYMBaAFI0212suUTpAeC8LXxDl\nID+eTL7IMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAIj2h4Jk\nDeHjMPAKiqWFLN8r0rdvzkA/bV9UFirIl5d/AiAajKzSts1AWGqSnT53NDPK7cdW\nUvHoxz39GKnWpPb9jw==\n-----END CERTIFICATE-----\n";

const SIGNALS: [&str; 3] = ["TRACES", "METRICS", "LOGS"];
const KEYS: [&str; 6] = [
    "user.id",
    "user.email",
    "http.url",
    "tenant",
    "k8s.cluster.name",
    "env",
];

fn some<'a>(rng: &mut StdRng, from: &[&'a str]) -> Vec<&'a str> {
    let mut picked: Vec<&str> = from
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    if picked.is_empty() {
        picked.push(from.choose(rng).copied().unwrap_or_default());
    }
    picked
}

fn list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A random, valid desired state, as YAML documents.
fn random_state(rng: &mut StdRng, catalog: &Catalog) -> Vec<String> {
    let mut docs = Vec::new();
    let streams = ["payments", "search"];
    for i in 0..rng.random_range(0..6) {
        let stream = streams.choose(rng).unwrap();
        docs.push(format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata:\n  name: s{i}\n  labels: {{odigos.io/data-stream-{stream}: \"true\"}}\nspec:\n  workload: {{name: app{i}, namespace: ns{}, kind: Deployment}}\n  otelServiceName: svc{i}\n",
            i % 2
        ));
    }
    let types: Vec<_> = catalog.types().collect();
    for i in 0..rng.random_range(0..5) {
        let kind = types.choose(rng).unwrap();
        let supported: Vec<&str> = SIGNALS
            .iter()
            .copied()
            .filter(|s| {
                kind.signals
                    .iter()
                    .any(|k| format!("{k:?}").eq_ignore_ascii_case(s))
            })
            .collect();
        let mut data = BTreeMap::new();
        let mut secret = BTreeMap::new();
        for field in &kind.fields {
            if !field.required && rng.random_bool(0.5) {
                continue;
            }
            let value = match field.kind {
                FieldKind::Url => "https://backend.example:4318".to_string(),
                FieldKind::Select => field.values.choose(rng).cloned().unwrap_or_default(),
                FieldKind::Number => "7".into(),
                FieldKind::Boolean if field.unsupported.is_some() => "false".into(),
                FieldKind::Boolean => "true".into(),
                FieldKind::String => format!("value-{i}"),
                FieldKind::Headers => format!(r#"[{{"key": "x-tenant", "value": "t{i}"}}]"#),
                FieldKind::List => r#"["k8s.pod.name"]"#.into(),
                FieldKind::Pem => CA_PEM.into(),
            };
            if field.secret {
                secret.insert(field.name.clone(), value);
            } else {
                data.insert(field.name.clone(), value);
            }
        }
        let mut doc = format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: d{i}}}\nspec:\n  type: {}\n  disabled: {}\n  signals: {}\n  data: {}\n",
            kind.name,
            rng.random_bool(0.2),
            list(&some(rng, &supported)),
            serde_json::to_string(&data).unwrap()
        );
        if rng.random_bool(0.3) {
            doc.push_str(&format!(
                "  sourceSelector: {{dataStreams: [{}], namespaces: [ns1]}}\n",
                streams.choose(rng).unwrap()
            ));
        }
        if !secret.is_empty() {
            doc.push_str(&format!("  secretRef: {{name: d{i}-secret}}\n"));
            docs.push(format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: d{i}-secret}}\nstringData: {}\n",
                serde_json::to_string(&secret).unwrap()
            ));
        }
        docs.push(doc);
    }
    for i in 0..rng.random_range(0..5) {
        let key = KEYS.choose(rng).unwrap();
        let kind = rng.random_range(0..7);
        let body = match kind {
            0 => format!(
                "  addClusterInfo:\n    clusterAttributes: [{{attributeName: {key}, attributeStringValue: v{i}}}]\n    overwriteExistingValues: {}\n",
                rng.random_bool(0.5)
            ),
            1 => format!("  renameAttribute:\n    renames: {{{key}: renamed.{i}}}\n"),
            3 => format!(
                "  piiMasking:\n    scopes: {{namespaces: [ns{}]}}\n    piiCategories: [CREDIT_CARD, EMAIL, JWT, UUID]\n    customFormatMaskings: [{{lookupKey: {key}, dataFormat: json}}]\n    customRegexMaskings: [{{regex: 'k=([^&]+)'}}]\n",
                i % 2
            ),
            4 => format!(
                "  urlTemplatization:\n    rules: [{{templates: ['/users/{{id}}', '/v{i}/*']}}, {{scopes: {{languages: [javascript]}}, templates: ['/c/{{c}}']}}]\n    default: [{{scopes: {{sources: [{{name: app{i}, namespace: ns{}, kind: Deployment}}]}}, skipPolicy: {{skipHttpStatusCodes: [404]}}}}]\n",
                i % 2
            ),
            5 => format!(
                "  spanRenamer:\n    programmingLanguage: java\n    scopeName: scope{i}\n    regexReplacements: [{{regexPattern: '\\d+', templateText: '{{n}}'}}]\n"
            ),
            6 => "  k8sAttributes:\n    collectWorkloadUID: true\n    labelsAttributes: [{labelKey: app, attributeKey: app}]\n".into(),
            _ => format!(
                "  deleteAttribute:\n    attributeNamesToDelete: {}\n",
                list(&some(rng, &KEYS))
            ),
        };
        docs.push(format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {{name: a{i}}}\nspec:\n  disabled: {}\n  signals: {}\n{body}",
            rng.random_bool(0.2),
            // The span actions change traces only.
            if (3..=5).contains(&kind) {
                list(&["TRACES"])
            } else {
                list(&some(rng, &SIGNALS))
            }
        ));
    }
    if rng.random_bool(0.5) {
        docs.push(format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Sampling\nmetadata: {{name: sampling}}\nspec:\n  noisyOperations: [{{operation: {{httpServer: {{route: /healthz}}}}}}]\n  highlyRelevantOperations: [{{error: true}}, {{durationAtLeastMs: {}, sourceScopes: [{{workloadName: app1}}]}}]\n  costReductionRules: [{{percentageAtMost: {}, sourceScopes: [{{workloadName: app{}}}]}}]\n",
            rng.random_range(1..2000),
            rng.random_range(0..=100),
            rng.random_range(0..6)
        ));
    }
    docs
}

fn desired(docs: &[String], catalog: &Catalog) -> Desired {
    let mut desired = Desired::default();
    for doc in docs {
        let object = Object::from_value(odigos_proto::yaml::parse(doc).unwrap())
            .unwrap_or_else(|e| panic!("{e:?}\n{doc}"));
        let errors = validate(&object, catalog);
        assert!(
            errors.is_empty(),
            "the generator wrote an invalid resource: {errors:?}\n{doc}"
        );
        assert!(desired.insert(object));
    }
    desired
}

fn accepted(compiled: &Compiled, docs: &[String]) {
    for (path, value) in &compiled.secret_files {
        std::fs::write(path, value).unwrap();
    }
    for (role, text) in [("gateway", &compiled.gateway), ("node", &compiled.node)] {
        if let Err(errors) = Config::from_yaml(text, role) {
            panic!(
                "the collector refuses the {role} config:\n{errors}\n{text}\nfrom:\n{}",
                docs.join("---\n")
            );
        }
    }
}

#[test]
fn random_states_compile_deterministically_to_configs_the_collector_accepts() {
    let catalog = Catalog::builtin();
    let secrets = tempfile::tempdir().unwrap();
    let layout = layout(secrets.path());
    for seed in 0..300 {
        let mut rng = StdRng::seed_from_u64(seed);
        let docs = random_state(&mut rng, catalog);
        let state = desired(&docs, catalog);
        let first = compile(&state, catalog, &layout);
        let again = compile(&desired(&docs, catalog), catalog, &layout);
        assert_eq!(first.gateway, again.gateway, "seed {seed}");
        assert_eq!(first.node, again.node, "seed {seed}");
        accepted(&first, &docs);
    }
}

#[test]
fn every_destination_type_compiles_to_a_config_the_collector_accepts() {
    let catalog = Catalog::builtin();
    let secrets = tempfile::tempdir().unwrap();
    let layout = layout(secrets.path());
    for kind in catalog.types() {
        let mut data = BTreeMap::new();
        for field in &kind.fields {
            let value = match field.kind {
                FieldKind::Url => "https://backend.example".to_string(),
                FieldKind::Select => field.values[0].clone(),
                FieldKind::Number => "3".into(),
                FieldKind::Boolean if field.unsupported.is_some() => "false".into(),
                FieldKind::Boolean => "true".into(),
                FieldKind::String if field.secret => "s3cr3t-value".into(),
                FieldKind::String => "some-value".into(),
                FieldKind::Headers if field.secret => r#"{"x-key": "s3cr3t-value"}"#.into(),
                FieldKind::Headers => r#"[{"key": "x-tenant", "value": "acme"}]"#.into(),
                FieldKind::List => r#"["k8s.pod.name"]"#.into(),
                FieldKind::Pem => CA_PEM.into(),
            };
            data.insert(field.name.clone(), value);
        }
        let signals: Vec<String> = kind
            .signals
            .iter()
            .map(|s| format!("{s:?}").to_uppercase())
            .collect();
        let doc = format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: d}}\nspec:\n  type: {}\n  signals: [{}]\n  data: {}\n",
            kind.name,
            signals.join(", "),
            serde_json::to_string(&data).unwrap()
        );
        let docs = vec![doc];
        let compiled = compile(&desired(&docs, catalog), catalog, &layout);
        assert!(
            compiled.problems.is_empty(),
            "{}: {:?}",
            kind.name,
            compiled.problems
        );
        accepted(&compiled, &docs);
        let secret_fields = kind
            .fields
            .iter()
            .filter(|f| f.secret && f.ignored.is_none())
            .count();
        assert_eq!(
            compiled.secret_files.is_empty(),
            secret_fields == 0,
            "{}",
            kind.name
        );
        assert!(
            !compiled.gateway.contains("s3cr3t-value"),
            "{}: a secret is in the config",
            kind.name
        );
    }
}
