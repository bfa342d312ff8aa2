//! Odigos's documented sample manifests (`tests/manifests/odigos/`, one file per sample, each
//! naming its page) apply as they are: every document reads and validates with no problem, the
//! desired state compiles with no problem to configs the collector accepts, and every
//! Destination is in use. What a sample sets that has no effect here yet is listed, and only
//! that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use odigos_collector::Config;
use odigos_server::catalog::Catalog;
use odigos_server::compiler::{DestinationPlan, compile};
use odigos_server::resource::{Object, not_honoured, validate};
use odigos_server::store::Desired;
use odigos_tests::layout;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/odigos")
}

/// The resources of a sample file, as `kubectl apply -f` reads it: documents between `---`
/// lines; one holding only comments is no resource.
fn objects(file: &str) -> Vec<Object> {
    let text = std::fs::read_to_string(manifests().join(file)).unwrap();
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else {
            let last = documents.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    documents
        .iter()
        .map(|doc| odigos_proto::yaml::parse(doc).unwrap_or_else(|e| panic!("{file}: {e:?}")))
        .filter(|value| !value.is_null())
        .map(|value| Object::from_value(value).unwrap_or_else(|e| panic!("{file}: {e:?}")))
        .collect()
}

/// Applies the files together and checks everything the module comment promises; returns the
/// compiled gateway config and what is not honoured, by resource.
fn apply(files: &[&str]) -> (String, BTreeMap<String, Vec<(String, String)>>) {
    let catalog = Catalog::builtin();
    let mut desired = Desired::default();
    let mut ignored = BTreeMap::new();
    for file in files {
        for object in objects(file) {
            let problems = validate(&object, catalog);
            assert!(
                problems.is_empty(),
                "{file}: {}: {problems:?}",
                object.key()
            );
            let without_effect = not_honoured(&object, catalog);
            if !without_effect.is_empty() {
                ignored.insert(object.key().to_string(), without_effect);
            }
            assert!(desired.insert(object), "{file}: a resource twice");
        }
    }
    let secrets = tempfile::tempdir().unwrap();
    let compiled = compile(&desired, catalog, &layout(secrets.path()));
    assert!(
        compiled.problems.is_empty(),
        "{files:?}: {:?}",
        compiled.problems
    );
    for (key, plan) in &compiled.destinations {
        assert!(
            matches!(plan, DestinationPlan::Active { .. }),
            "{files:?}: Destination {key:?} is {plan:?}"
        );
    }
    for (path, value) in &compiled.secret_files {
        std::fs::write(path, value).unwrap();
    }
    for (role, text) in [("gateway", &compiled.gateway), ("node", &compiled.node)] {
        if let Err(errors) = Config::from_yaml(text, role) {
            panic!("{files:?}: the collector refuses the {role} config:\n{errors}\n{text}");
        }
    }
    (compiled.gateway, ignored)
}

#[test]
fn every_documented_sample_applies_as_it_is() {
    let mut files: Vec<String> = std::fs::read_dir(manifests())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{files:?}");
    for file in &files {
        let first = std::fs::read_to_string(manifests().join(file)).unwrap();
        assert!(
            first.starts_with("# From the Odigos documentation"),
            "{file} does not say where it comes from"
        );
        // A Destination that selects a data stream needs a Source in it: the workload sample
        // carries the `example` data stream label.
        let mut together = vec![file.as_str()];
        if file == "destination-jaeger-datastream.yaml" {
            together.push("source-workload.yaml");
        }
        apply(&together);
    }
}

#[test]
fn the_scheme_less_otlp_example_is_plaintext_and_tls_follows_its_field() {
    let (gateway, ignored) = apply(&["destination-otlp.yaml"]);
    let config = odigos_proto::yaml::parse(&gateway).unwrap();
    let exporter = &config["exporters"]["otlp/odigos-system.otlp-example"];
    assert_eq!(
        exporter["endpoint"].as_str(),
        Some("collector.example:4317")
    );
    assert_eq!(
        exporter["tls"]["insecure"].as_bool(),
        Some(true),
        "{gateway}"
    );
    assert_eq!(exporter["compression"].as_str(), Some("none"), "{gateway}");
    // The sample lists PROFILES, which is accepted and said to receive nothing.
    let notes = &ignored["Destination odigos-system/otlp-example"];
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, "spec.signals");

    let (gateway, _) = apply(&["destination-jaeger-tls.yaml"]);
    let config = odigos_proto::yaml::parse(&gateway).unwrap();
    let exporter = &config["exporters"]["otlp/odigos-system.jaeger-example"];
    assert_eq!(
        exporter["endpoint"].as_str(),
        Some("jaeger-collector.tracing:4317")
    );
    assert_eq!(
        exporter["tls"]["insecure"].as_bool(),
        Some(false),
        "{gateway}"
    );
}

#[test]
fn what_samples_set_without_effect_is_listed() {
    let (_, ignored) = apply(&["rule-code-attributes.yaml"]);
    assert_eq!(
        ignored["InstrumentationRule odigos-system/collect-all-payloads"][0].0,
        "spec.codeAttributes"
    );
    let (_, ignored) = apply(&["rule-payload-collection-full.yaml"]);
    let paths: Vec<&str> =
        ignored["InstrumentationRule odigos-system/full-payload-collection-example"]
            .iter()
            .map(|(path, _)| path.as_str())
            .collect();
    assert_eq!(
        paths,
        [
            "spec.instrumentationLibraries",
            "spec.payloadCollection.messaging"
        ]
    );
    let (_, ignored) = apply(&["sampling-drop-grpc-health-checks.yaml"]);
    assert_eq!(
        ignored["Sampling odigos-system/drop-grpc-health-checks"][0].0,
        "spec.noisyOperations.0.operation"
    );
    // Samples that are fully in force list nothing.
    for file in [
        "source-workload.yaml",
        "destination-datadog.yaml",
        "sampling-payment-service-policy.yaml",
        "rule-headers-collection.yaml",
    ] {
        let (_, ignored) = apply(&[file]);
        assert!(ignored.is_empty(), "{file}: {ignored:?}");
    }
}
