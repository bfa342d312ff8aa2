use super::*;

const DESTINATION: &str = "apiVersion: odigos.io/v1alpha1
kind: Destination
metadata:
  name: sink
spec:
  type: otlp
  signals: [TRACES]
  data:
    OTLP_GRPC_ENDPOINT: http://127.0.0.1:4317
";

const ACTION: &str = "apiVersion: odigos.io/v1alpha1
kind: Action
metadata:
  name: rename
spec:
  signals: [TRACES]
  renameAttribute:
    renames:
      user.id: enduser.id
";

fn problems(text: &str) -> Vec<String> {
    parse_file(text, "f.yaml", Catalog::builtin())
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn reads_every_document_of_a_file() {
    let text = format!("{DESTINATION}---\n{ACTION}---\n");
    let objects = parse_file(&text, "f.yaml", Catalog::builtin()).unwrap();
    let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(keys, ["Destination default/sink", "Action default/rename"]);
}

#[test]
fn problems_name_file_line_resource_and_field() {
    let unknown_type = DESTINATION.replace("type: otlp", "type: nosuch");
    assert_eq!(problems(&unknown_type).len(), 1);
    assert!(
        problems(&unknown_type)[0].starts_with(
            "f.yaml:6: Destination default/sink: spec.type: unknown destination type \"nosuch\""
        ),
        "{:?}",
        problems(&unknown_type)
    );

    let missing = DESTINATION.replace("    OTLP_GRPC_ENDPOINT: http://127.0.0.1:4317\n", "");
    assert_eq!(
        problems(&missing),
        [
            "f.yaml:8: Destination default/sink: spec.data.OTLP_GRPC_ENDPOINT: is required in spec.data"
        ]
    );

    // The second document's lines count from the top of the file.
    let two_kinds = format!(
        "{DESTINATION}---\n{}",
        ACTION.replace(
            "  renameAttribute:",
            "  deleteAttribute:\n    attributeNamesToDelete: [x]\n  renameAttribute:"
        )
    );
    assert_eq!(
        problems(&two_kinds),
        [
            "f.yaml:19: Action default/rename: spec.renameAttribute: an Action does one thing; this one sets deleteAttribute and renameAttribute"
        ]
    );

    let regex = "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {name: s}\nspec:\n  matchWorkloadNameAsRegex: true\n  workload: {name: 'py(thon', kind: Process}\n";
    assert!(
        problems(regex)[0].contains("spec.workload.name: bad regex"),
        "{:?}",
        problems(regex)
    );

    let broken = "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {name: a\n";
    assert!(
        problems(broken)[0].starts_with("f.yaml:4: did not find expected"),
        "{:?}",
        problems(broken)
    );

    let typo = ACTION.replace("renames:", "renamez:");
    assert!(
        problems(&typo)[0].contains("spec.renameAttribute.renamez: unknown field"),
        "{:?}",
        problems(&typo)
    );
}

#[test]
fn a_bad_edit_keeps_the_last_good_version_and_disturbs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), DESTINATION).unwrap();
    std::fs::write(dir.path().join("b.yaml"), ACTION).unwrap();
    let store = LocalStore::open(dir.path(), Catalog::builtin()).unwrap();
    let first = store.subscribe().borrow().clone();
    assert_eq!(first.desired.destinations.len(), 1);
    assert_eq!(first.desired.actions.len(), 1);
    assert!(first.problems.is_empty());

    std::fs::write(
        dir.path().join("a.yaml"),
        DESTINATION.replace("TRACES", "SPANS"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        ACTION.replace("enduser.id", "user.key"),
    )
    .unwrap();
    store.reload();
    let second = store.subscribe().borrow().clone();
    assert_eq!(second.problems.len(), 1, "{:?}", second.problems);
    assert!(
        second.problems[0].to_string().contains("a.yaml:7"),
        "{}",
        second.problems[0]
    );
    assert_eq!(
        second.desired.destinations[&("default".into(), "sink".into())]
            .spec
            .signals,
        [crate::resource::Signal::Traces]
    );
    let renames = &second.desired.actions[&("default".into(), "rename".into())]
        .spec
        .rename_attribute
        .as_ref()
        .unwrap()
        .renames;
    assert_eq!(renames["user.id"], "user.key");

    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    std::fs::write(dir.path().join("c.yaml"), ACTION).unwrap();
    store.reload();
    let third = store.subscribe().borrow().clone();
    assert!(third.desired.destinations.is_empty());
    assert_eq!(third.problems.len(), 1);
    assert!(
        third.problems[0]
            .to_string()
            .contains("defined in an earlier file too")
    );
    assert_eq!(third.generation, 3);
}
