//! The Helm chart `charts/odigos`, checked offline: `helm lint --strict` passes, and what
//! `helm template` renders over a matrix of values validates strictly against the schemas of
//! Kubernetes 1.25 to 1.33 (PyPI `kubernetes-validate`); the control plane runs
//! `odigos server --kubernetes` with the token from its Secret and the chosen settings.

use std::path::PathBuf;
use std::process::Command;

/// helm, from `$ODIGOS_HELM_DIR` (`./test.sh` puts it there).
fn helm() -> Option<PathBuf> {
    let dir = std::env::var_os("ODIGOS_HELM_DIR").map(PathBuf::from)?;
    Some(dir.join("helm")).filter(|h| h.exists())
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?}: {said}");
    said
}

#[test]
fn the_chart_lints_and_renders_valid_manifests_for_every_supported_kubernetes() {
    let Some(helm) = helm() else {
        assert!(
            std::env::var("CI").is_err(),
            "the chart test needs helm in $ODIGOS_HELM_DIR (./test.sh puts it there)"
        );
        eprintln!("skipped: no helm in $ODIGOS_HELM_DIR (./test.sh puts it there)");
        return;
    };
    let chart = odigos_tests::workspace().join("charts/odigos");
    run(Command::new(&helm).arg("lint").arg("--strict").arg(&chart));

    let validate = odigos_tests::python()
        .parent()
        .unwrap()
        .join("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let matrix: [&[&str]; 3] = [
        &[],
        &[
            "--set=token.value=s3cret",
            "--set=ui.readOnly=true",
            "--set=image.pullPolicy=Never",
            "--set=controlPlane.watchNamespace=shop",
            "--set=controlPlane.nodeSelector.kubernetes\\.io/os=linux",
            "--set=controlPlane.tolerations[0].operator=Exists",
            "--set=collectors.sizing=size_l",
            "--set=odiglet.nodeSelector.kubernetes\\.io/os=linux",
            "--set=odiglet.tolerations[0].operator=Exists",
            "--set=webhook.certSecret=my-webhook-cert",
            "--set=webhook.caBundle=bXktY2E=",
        ],
        &[
            "--set=token.existingSecret=my-token",
            "--set=webhook.enabled=false",
            "--set=odiglet.enabled=false",
        ],
    ];
    for (i, values) in matrix.iter().enumerate() {
        let rendered = run(Command::new(&helm)
            .args(["template", "odigos"])
            .arg(&chart)
            .args(["--namespace", "odigos-system"])
            .args(*values));
        let file = dir.path().join(format!("rendered-{i}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        for minor in 25..=33 {
            run(Command::new(&validate)
                .args(["--strict", "-k", &format!("1.{minor}.0")])
                .arg(&file));
        }
        let deployment = rendered
            .split("\n---")
            .find(|d| d.contains("kind: Deployment"))
            .expect("the control plane Deployment");
        assert!(deployment.contains("- --kubernetes"), "{deployment}");
        assert!(
            deployment.contains("name: ODIGOS_TOKEN"),
            "the token comes from its Secret: {deployment}"
        );
        match i {
            1 => {
                assert!(deployment.contains("- --ui-read-only"), "{deployment}");
                assert!(deployment.contains("- --namespace=shop"), "{deployment}");
                assert!(
                    deployment.contains("imagePullPolicy: Never"),
                    "{deployment}"
                );
                assert!(rendered.contains(r#"token: "czNjcmV0""#), "{rendered}");
                assert!(deployment.contains("- --sizing=size_l"), "{deployment}");
                assert!(
                    deployment.contains("- --webhook=0.0.0.0:4443"),
                    "{deployment}"
                );
                assert!(rendered.contains("failurePolicy: Ignore"), "{rendered}");
                // The certificate brought along is served and its CA trusted; none is made.
                assert!(
                    deployment.contains("secretName: my-webhook-cert"),
                    "{deployment}"
                );
                assert!(rendered.contains("caBundle: bXktY2E="), "{rendered}");
                assert!(
                    !rendered.contains("name: odigos-webhook-cert"),
                    "{rendered}"
                );
                // It is the user's to renew.
                assert!(
                    !deployment.contains("--webhook-cert-secret"),
                    "{deployment}"
                );
                assert!(
                    !rendered.contains("mutatingwebhookconfigurations"),
                    "{rendered}"
                );
            }
            2 => {
                assert!(deployment.contains("name: my-token"), "{deployment}");
                assert!(
                    !rendered.contains("kind: Secret"),
                    "no Secret of ours, and no webhook: {rendered}"
                );
                assert!(!rendered.contains("MutatingWebhookConfiguration"));
                assert!(!deployment.contains("--webhook"), "{deployment}");
                assert!(
                    !rendered.contains("kind: DaemonSet"),
                    "no odiglet: {rendered}"
                );
            }
            _ => {
                assert!(!deployment.contains("--ui-read-only"), "{deployment}");
                assert!(deployment.contains("- --sizing=size_s"), "{deployment}");
                // The certificate made at install is renewed by the control plane, which may
                // update the webhook registration's caBundle and nothing else of it.
                assert!(
                    deployment.contains("- --webhook-cert-secret=odigos-webhook-cert")
                        && deployment.contains("- --webhook-configuration=odigos-pod-webhook"),
                    "{deployment}"
                );
                assert!(
                    rendered.contains("resources: [mutatingwebhookconfigurations]\n    resourceNames: [odigos-pod-webhook]\n    verbs: [get, update]"),
                    "{rendered}"
                );
                let odiglet = rendered
                    .split("\n---")
                    .find(|d| d.contains("kind: DaemonSet"))
                    .expect("the odiglet DaemonSet");
                for needed in [
                    "- odiglet",
                    "hostPID: true",
                    "privileged: true",
                    "name: ODIGOS_TOKEN",
                    "fieldPath: spec.nodeName",
                    "path: /sys/kernel/tracing",
                ] {
                    assert!(odiglet.contains(needed), "{needed}: {odiglet}");
                }
            }
        }
    }

    // `helm template` with `value` set fails; what it says.
    let refusal = |value: &str| {
        let refused = Command::new(&helm)
            .args(["template", "odigos"])
            .arg(&chart)
            .arg(format!("--set={value}"))
            .output()
            .unwrap();
        assert!(!refused.status.success(), "{value} is accepted");
        String::from_utf8_lossy(&refused.stderr).into_owned()
    };
    // A sizing that is no preset is refused at install, naming the value.
    let said = refusal("collectors.sizing=huge");
    assert!(
        said.contains("collectors.sizing: \"huge\" is not a sizing preset"),
        "{said}"
    );
    // A certificate of one's own needs the CA that signed it.
    let said = refusal("webhook.certSecret=my-webhook-cert");
    assert!(said.contains("webhook.caBundle"), "{said}");
}
