//! The web UI in headless Chromium against `odigos up`, driven by `tests/ui/browser.cjs`
//! (playwright-core): sign in with the printed link, see the collectors (and odiglet, where it
//! runs) APPLIED in the fleet view, create a Destination through its form and watch it roll
//! out, test a destination's connection (down, then up), create an Action, push a destination whose exporter cannot be built and see the
//! gateway FAILED with its error and on the Problems page, have a bad value refused at its
//! field, and see what an SDK sends flow on the overview's edges. Screenshots of every page, light and dark, go to `target/ui-screenshots/`.

use std::path::PathBuf;
use std::process::Command;

use odigos_tests::up::Up;

const DEBUG: &str = "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {name: debug}\nspec: {type: debug, signals: [TRACES]}\n";

/// Where playwright-core is installed (`ui/node_modules`, or what `./test.sh` says).
fn node_modules() -> Option<PathBuf> {
    let path = std::env::var_os("ODIGOS_UI_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| odigos_tests::workspace().join("ui/node_modules"));
    path.join("playwright-core").is_dir().then_some(path)
}

#[test]
fn the_ui_shows_the_fleet_and_changes_the_desired_state_in_a_real_browser() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    let (Some(modules), true) = (node_modules(), chromium.exists()) else {
        assert!(
            std::env::var("CI").is_err(),
            "the browser test needs Chromium at /usr/bin/chromium and playwright-core (./test.sh installs both)"
        );
        eprintln!("skipped: no Chromium or playwright-core (./test.sh installs both)");
        return;
    };
    let up = Up::start(&[("debug.yaml", DEBUG.to_string())]);
    let shots = odigos_tests::workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tempfile::tempdir().unwrap();
    let odiglet = up.output().contains("ebpf tracing   on");
    // Data flowing all along, for the overview's throughput.
    let streamer = up.stream_spans("checkout");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let run = Command::new("node")
        .arg(odigos_tests::workspace().join("tests/ui/browser.cjs"))
        .env("ODIGOS_UI_LINK", up.login_link())
        .env("ODIGOS_UI_NODE_MODULES", &modules)
        .env("ODIGOS_UI_SHOTS", &shots)
        .env("ODIGOS_UI_ARCHIVE", out.path().join("archive.jsonl"))
        .env("ODIGOS_UI_ODIGLET", if odiglet { "1" } else { "0" })
        .env("ODIGOS_UI_OTLP", format!("127.0.0.1:{}", up.grpc()))
        .env("ODIGOS_UI_CLOSED", closed.to_string())
        .output()
        .expect("node runs");
    streamer.stop();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{said}");
    assert!(
        run.status.success(),
        "the browser run failed (screenshots in {}):\n{said}\n{}",
        shots.display(),
        up.logs()
    );
    assert!(said.contains("ok: every page rendered"), "{said}");
}
