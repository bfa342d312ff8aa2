//! Odigos-style Action manifests of the kinds `piiMasking`, `urlTemplatization` and
//! `spanRenamer`, written in `odigos.d/` of an `odigos up`, change the spans the Python
//! OpenTelemetry SDK sends on their way to a `file` destination: personal data is masked, the
//! URL path becomes a route and a span name, and a job's span name loses its number.

use std::process::Command;
use std::time::Duration;

use odigos_tests::up::Up;
use odigos_tests::*;

const PII: &str = "apiVersion: odigos.io/v1alpha1
kind: Action
metadata:
  name: pii-masking
  namespace: odigos-system
spec:
  actionName: PII Masking
  signals:
    - TRACES
  piiMasking:
    piiCategories:
      - CREDIT_CARD
      - EMAIL
      - JWT
      - UUID
";

const URL: &str = "apiVersion: odigos.io/v1alpha1
kind: Action
metadata:
  name: url-templatization
  namespace: odigos-system
spec:
  actionName: URL templatization
  signals:
    - TRACES
  urlTemplatization:
    rules:
      - templates:
          - /users/{user-id}/orders/{order-id}
";

const RENAMER: &str = "apiVersion: odigos.io/v1alpha1
kind: Action
metadata:
  name: job-names
  namespace: odigos-system
spec:
  signals: [TRACES]
  spanRenamer:
    programmingLanguage: python
    scopeName: e2e.jobs
    regexReplacements:
      - regexPattern: '-\\d+-'
        templateText: '-{n}-'
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_mask_templatize_and_rename_real_spans() {
    let out = tempfile::tempdir().unwrap();
    let spans_file = out.path().join("spans.jsonl");
    let destination = format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: archive}}\nspec:\n  type: file\n  signals: [TRACES]\n  data: {{FILE_PATH: {}}}\n",
        spans_file.display()
    );
    let up = tokio::task::block_in_place(|| {
        Up::start(&[
            ("archive.yaml", destination),
            ("pii.yaml", PII.into()),
            ("url.yaml", URL.into()),
            ("renamer.yaml", RENAMER.into()),
        ])
    });
    let state = up.wait_applied(1);
    assert_eq!(state["problems"], serde_json::json!([]), "{state:#}");

    let output = Command::new(python())
        .arg(workspace().join("tests/python/send_action_spans.py"))
        .args([
            "--endpoint",
            &format!("http://127.0.0.1:{}", up.grpc()),
            "--service",
            "shop",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python SDK failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let arrived = wait_for(Duration::from_secs(20), || {
        let requests = json_lines(&spans_file);
        items(&requests, "resourceSpans", "scopeSpans", "spans").len() >= 2
    });
    assert!(
        arrived,
        "spans did not reach the destination:\n{}",
        up.logs()
    );
    let requests = json_lines(&spans_file);
    let spans = items(&requests, "resourceSpans", "scopeSpans", "spans");
    let span = |scope: &str| {
        spans
            .iter()
            .find(|(_, s, _)| s["name"] == scope)
            .map(|(_, _, span)| *span)
            .unwrap_or_else(|| panic!("no span of scope {scope} in {requests:#?}"))
    };

    let web = span("e2e.web");
    assert_eq!(web["name"], "GET /users/{user-id}/orders/{order-id}");
    assert_eq!(
        attribute(web, "http.route").as_deref(),
        Some("/users/{user-id}/orders/{order-id}")
    );
    assert_eq!(
        attribute(web, "enduser.note").as_deref(),
        Some("mail ***EMAIL***, card ***CREDIT_CARD***")
    );
    assert_eq!(
        attribute(web, "auth.header").as_deref(),
        Some("Bearer ***JWT***")
    );
    assert_eq!(
        attribute(web, "order.ref").as_deref(),
        Some("order ***UUID*** shipped")
    );
    // The route is templated first; then the path's UUID is masked too.
    assert_eq!(
        attribute(web, "url.path").as_deref(),
        Some("/users/123/orders/***UUID***")
    );

    assert_eq!(span("e2e.jobs")["name"], "job-{n}-run");
}
