//! The image `tests/k8s/build-image.sh` assembles without a Docker engine: a docker-archive
//! that names itself, whose one layer is what its config says it is, and whose binary runs
//! from that layer alone (in a chroot), with its libraries and the CA roots beside it.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_image_runs_the_binary_from_its_own_layer() {
    if !odigos_tests::is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "running the image's binary in a chroot needs root (CI runs as root)"
        );
        eprintln!("skipped: running the image's binary in a chroot needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("odigos.tar");
    let built = Command::new(odigos_tests::workspace().join("tests/k8s/build-image.sh"))
        .arg(&image)
        .arg(odigos_tests::odigos_binary())
        .env("IMAGE", "localhost/odigos:test")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&built.stdout).to_string()
        + &String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "{said}");
    assert!(
        said.contains("image localhost/odigos:test: "),
        "the size is reported: {said}"
    );

    let unpacked = dir.path().join("archive");
    std::fs::create_dir(&unpacked).unwrap();
    untar(&image, &unpacked);
    let read = |name: &str| std::fs::read(unpacked.join(name)).unwrap();
    let manifest: Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "localhost/odigos:test");
    let config: Value =
        serde_json::from_slice(&read(manifest[0]["Config"].as_str().unwrap())).unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/odigos"])
    );
    let layer = unpacked.join(manifest[0]["Layers"][0].as_str().unwrap());
    let digest = Command::new("sha256sum").arg(&layer).output().unwrap();
    let digest = String::from_utf8_lossy(&digest.stdout);
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", digest.split_whitespace().next().unwrap()),
        "the layer is the one the config names"
    );

    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    untar(&layer, &rootfs);
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    let ran = Command::new("chroot")
        .arg(&rootfs)
        .args(["/usr/local/bin/odigos", "--version"])
        .output()
        .unwrap();
    assert!(
        ran.status.success() && String::from_utf8_lossy(&ran.stdout).starts_with("odigos "),
        "{ran:?}"
    );
}

fn untar(archive: &std::path::Path, into: &std::path::Path) {
    let status = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success());
}
