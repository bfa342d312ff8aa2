//! What a process runs: its language and runtime version, from the libraries it has mapped
//! (`/proc/PID/maps`), its executable's name, and for Go the build information the toolchain
//! writes into every binary.

use std::io::Read;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Go,
    Java,
    Python,
    #[serde(rename = "javascript")]
    NodeJs,
    DotNet,
    Ruby,
    Php,
    /// Compiled to machine code with no runtime of its own: Rust, C, C++.
    Native,
}

impl Language {
    /// The name Odigos gives it (`runtimeDetailsByContainer[].language`).
    pub fn name(self) -> &'static str {
        match self {
            Language::Go => "go",
            Language::Java => "java",
            Language::Python => "python",
            Language::NodeJs => "javascript",
            Language::DotNet => "dotnet",
            Language::Ruby => "ruby",
            Language::Php => "php",
            Language::Native => "native",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Runtime {
    pub language: Language,
    pub version: Option<String>,
}

/// The largest executable read to look for Go's build information.
const GO_MAX: u64 = 512 << 20;

/// The runtime of process `pid` as `proc` (normally `/proc`) shows it.
pub fn detect(proc: &Path, pid: u32) -> std::io::Result<Runtime> {
    let dir = proc.join(pid.to_string());
    let maps = std::fs::read_to_string(dir.join("maps")).unwrap_or_default();
    let exe = std::fs::read_link(dir.join("exe"))?;
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if let Some(runtime) = from_libraries(&maps).or_else(|| from_name(name)) {
        return Ok(runtime);
    }
    let mut binary = Vec::new();
    std::fs::File::open(dir.join("exe"))?
        .take(GO_MAX)
        .read_to_end(&mut binary)?;
    Ok(match go_build_info(&binary).and_then(go_version) {
        Some(version) => Runtime {
            language: Language::Go,
            version,
        },
        None => Runtime {
            language: Language::Native,
            version: None,
        },
    })
}

/// A runtime that a mapped library gives away: `libjvm.so`, `libpython3.11.so.1.0`, ...
fn from_libraries(maps: &str) -> Option<Runtime> {
    let libraries = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter_map(|path| path.rsplit('/').next());
    for library in libraries {
        let runtime = |language| {
            Some(Runtime {
                language,
                version: None,
            })
        };
        if library == "libjvm.so" {
            return runtime(Language::Java);
        }
        if library == "libcoreclr.so" {
            return runtime(Language::DotNet);
        }
        if library.starts_with("libruby") {
            return runtime(Language::Ruby);
        }
        if let Some(rest) = library.strip_prefix("libpython") {
            let version: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let version = version.trim_end_matches('.').to_string();
            return Some(Runtime {
                language: Language::Python,
                version: (!version.is_empty()).then_some(version),
            });
        }
    }
    None
}

/// A runtime that the executable's name gives away: `python3.11`, `node`, `php-fpm8.2`, ...
fn from_name(name: &str) -> Option<Runtime> {
    let versioned = |prefix: &str| {
        let rest = name.strip_prefix(prefix)?;
        let version = rest.trim_start_matches(|c: char| !c.is_ascii_digit());
        let plain = rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit() || c == '-');
        plain.then(|| (!version.is_empty()).then(|| version.to_string()))
    };
    let known = [
        ("python", Language::Python),
        ("node", Language::NodeJs),
        ("java", Language::Java),
        ("ruby", Language::Ruby),
        ("php", Language::Php),
        ("dotnet", Language::DotNet),
    ];
    known.into_iter().find_map(|(prefix, language)| {
        versioned(prefix).map(|version| Runtime { language, version })
    })
}

/// The `.go.buildinfo` section of an ELF executable, which the Go toolchain writes into every
/// binary it links.
fn go_build_info(binary: &[u8]) -> Option<&[u8]> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(binary).ok()?;
    file.section_by_name(".go.buildinfo")?.data().ok()
}

/// The version in Go's build information (`\xff Go buildinf:`, then pointer size, flags and
/// padding to 32 bytes): `Some(version)` when it is well formed, with the version when it is
/// stored inline, as Go 1.18 and later store it.
fn go_version(section: &[u8]) -> Option<Option<String>> {
    let header = section.get(..32)?;
    if !header.starts_with(b"\xff Go buildinf:") {
        return None;
    }
    if header[15] & 0x2 == 0 {
        return Some(None);
    }
    let (length, used) = varint(&section[32..])?;
    let version = section.get(32 + used..32 + used + length as usize)?;
    Some(Some(String::from_utf8_lossy(version).into_owned()))
}

/// An unsigned LEB128 number and how many bytes it took.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// The runtime of a child, once it has become it (a launcher script may `exec` it).
    fn runtime_of(mut command: Command) -> Runtime {
        let mut child = command.stdout(Stdio::null()).spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let runtime = loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let runtime = detect(Path::new("/proc"), child.id()).unwrap();
            if runtime.language != Language::Native || std::time::Instant::now() > deadline {
                break runtime;
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        runtime
    }

    #[test]
    fn tells_python_and_node_from_a_native_program() {
        let mut python = Command::new("python3");
        python.args(["-c", "import time; time.sleep(30)"]);
        let runtime = runtime_of(python);
        assert_eq!(runtime.language, Language::Python);
        assert!(
            runtime
                .version
                .as_deref()
                .is_some_and(|v| v.starts_with('3')),
            "{runtime:?}"
        );
        let mut node = Command::new("node");
        node.args(["-e", "setTimeout(() => {}, 30000)"]);
        assert_eq!(runtime_of(node).language, Language::NodeJs);
        let me = detect(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(me.language, Language::Native);
    }

    #[test]
    fn reads_the_runtime_from_mapped_libraries_and_names() {
        let maps = "7f0-7f1 r-xp 00000000 08:01 123 /usr/lib/jvm/lib/server/libjvm.so\n";
        assert_eq!(from_libraries(maps).unwrap().language, Language::Java);
        let maps = "7f0-7f1 r-xp 00000000 08:01 9 /usr/lib/libpython3.11.so.1.0\n";
        assert_eq!(
            from_libraries(maps).unwrap().version.as_deref(),
            Some("3.11")
        );
        assert_eq!(from_name("php-fpm8.2").unwrap().language, Language::Php);
        assert_eq!(
            from_name("python3.12").unwrap().version.as_deref(),
            Some("3.12")
        );
        assert_eq!(from_name("nodejs-exporter"), None);
        assert_eq!(from_name("odigos"), None);
    }

    #[test]
    fn finds_the_go_version_in_build_information() {
        let mut section = b"\xff Go buildinf:".to_vec();
        section.extend([8, 0x2]);
        section.resize(32, 0);
        section.push(8);
        section.extend(b"go1.22.4");
        section.extend([0u8; 16]);
        assert_eq!(go_version(&section), Some(Some("go1.22.4".into())));
        assert_eq!(go_version(&[0u8; 64]), None);
        // A binary that merely holds the bytes has no such section.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(go_build_info(&me), None);
    }
}
