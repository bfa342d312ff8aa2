//! Embeds into the binary every destination descriptor in `catalog/`, and the web UI's built
//! files (`ui/dist`, committed) as a table of path, content type and bytes.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn main() {
    // Read when the script runs, not when it is compiled: one build of the script may serve
    // checkouts at other paths.
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("catalog.rs"), catalog(&manifest.join("catalog"))).unwrap();
    std::fs::write(
        out.join("ui_files.rs"),
        ui_files(&manifest.join("../ui/dist")),
    )
    .unwrap();
}

fn catalog(dir: &Path) -> String {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("server/catalog exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push(']');
    out
}

fn ui_files(dist: &Path) -> String {
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    collect(dist, &mut files);
    files.sort();
    let mut out = String::from(
        "/// The UI's files: path, content type, body.\npub static FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    for file in &files {
        let path = file
            .strip_prefix(dist)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let kind = match file.extension().and_then(|e| e.to_str()) {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            Some("json") => "application/json",
            _ => "application/octet-stream",
        };
        writeln!(
            out,
            "    (\"/{path}\", \"{kind}\", include_bytes!({:?})),",
            file.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    out
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
