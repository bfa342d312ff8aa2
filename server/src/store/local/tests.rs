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
    let store = LocalStore::open(dir.path(), Catalog::builtin(), None).unwrap();
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

    // Reading again what is already in force publishes nothing new.
    std::fs::write(dir.path().join("c.yaml"), ACTION).unwrap();
    store.reload();
    assert_eq!(store.subscribe().borrow().generation, 3);
}

fn action(name: &str, to: &str) -> String {
    ACTION
        .replace("name: rename", &format!("name: {name}"))
        .replace("enduser.id", to)
}

fn renamed_to(snapshot: &Snapshot, name: &str) -> Option<String> {
    let action = snapshot
        .desired
        .actions
        .get(&("default".into(), name.into()))?;
    let renames = &action.spec.rename_attribute.as_ref()?.renames;
    Some(renames["user.id"].clone())
}

#[test]
fn each_document_of_a_file_stands_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("actions.yaml");
    let invalid = action("b", "x").replace("renameAttribute:", "renameAttributes:");
    let unparsable = "kind: Action\nmetadata: {name: [d\n";
    let text = [
        action("a", "one"),
        invalid.clone(),
        action("c", "one"),
        unparsable.to_string(),
        action("e", "one"),
    ]
    .join("---\n");
    std::fs::write(&file, &text).unwrap();
    let store = LocalStore::open(dir.path(), Catalog::builtin(), None).unwrap();
    let first = store.subscribe().borrow().clone();
    let names: Vec<&str> = first
        .desired
        .actions
        .keys()
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(names, ["a", "c", "e"], "{:?}", first.problems);
    assert_eq!(first.problems.len(), 2, "{:?}", first.problems);
    assert!(first.accepted.contains_key("Action default/c"));

    // An edit to a good document applies though others in the file stay bad.
    std::fs::write(&file, text.replacen("one", "two", 2)).unwrap();
    store.reload();
    let second = store.subscribe().borrow().clone();
    assert_eq!(renamed_to(&second, "a").as_deref(), Some("two"));
    assert_eq!(renamed_to(&second, "c").as_deref(), Some("two"));
    assert_eq!(renamed_to(&second, "e").as_deref(), Some("one"));

    // A good version that turns bad stays in force; one removed from the file goes.
    let text = [
        action("a", "two").replace("renameAttribute:", "renameAttributez:"),
        action("c", "two"),
    ]
    .join("---\n");
    std::fs::write(&file, text).unwrap();
    store.reload();
    let third = store.subscribe().borrow().clone();
    assert_eq!(renamed_to(&third, "a").as_deref(), Some("two"));
    assert_eq!(renamed_to(&third, "e"), None);
    assert_eq!(third.problems.len(), 1, "{:?}", third.problems);
}

#[test]
fn the_versions_in_force_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let kept = state.path().join("accepted.json");
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, format!("{DESTINATION}---\n{}", action("r", "one"))).unwrap();
    let store = LocalStore::open(dir.path(), Catalog::builtin(), Some(&kept)).unwrap();
    let at = store.subscribe().borrow().accepted["Action default/r"].clone();
    drop(store);

    // Broken while nothing ran: the kept versions are in force at the next start.
    std::fs::write(
        &file,
        format!(
            "{}---\n{}",
            DESTINATION.replace("TRACES", "SPANS"),
            action("r", "two").replace("renames:", "renamez:")
        ),
    )
    .unwrap();
    let store = LocalStore::open(dir.path(), Catalog::builtin(), Some(&kept)).unwrap();
    let snapshot = store.subscribe().borrow().clone();
    assert_eq!(snapshot.problems.len(), 2, "{:?}", snapshot.problems);
    assert_eq!(snapshot.desired.destinations.len(), 1);
    assert_eq!(renamed_to(&snapshot, "r").as_deref(), Some("one"));
    assert_eq!(
        snapshot.accepted["Action default/r"], at,
        "accepted when first written"
    );

    // Fixed: the new version is in force, and kept in its turn.
    std::fs::write(&file, action("r", "three")).unwrap();
    store.reload();
    drop(store);
    std::fs::remove_file(&file).unwrap();
    std::fs::write(dir.path().join("b.yaml"), DESTINATION).unwrap();
    let store = LocalStore::open(dir.path(), Catalog::builtin(), Some(&kept)).unwrap();
    let snapshot = store.subscribe().borrow().clone();
    assert_eq!(
        renamed_to(&snapshot, "r"),
        None,
        "a deleted file takes its resources away"
    );
    assert_eq!(snapshot.desired.destinations.len(), 1);
}
