//! Where the processes of each Source write their standard output and error, as odiglet sees
//! them: a directory of links per Source (`<namespace>.<name>/<pid>-<fd>.log`) to the files
//! `/proc/PID/fd/1` and `2` point to, kept current as processes come and go. The node
//! collector reads through the links when a Destination takes logs (the compiler points a
//! `filelog` receiver at each Source's directory), so the files are found wherever they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use odigos_ebpf::agent::Matched;

/// Makes the links in `dir` those of `processes` (found under `proc`): missing ones are made,
/// stale ones removed. Pipes, terminals and sockets have no file to link to.
pub fn update(dir: &Path, proc: &Path, processes: &BTreeMap<u32, Matched>) -> std::io::Result<()> {
    let mut wanted: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for (pid, process) in processes {
        let source = process.source.replace('/', ".");
        for fd in [1, 2] {
            let Ok(target) = std::fs::read_link(proc.join(format!("{pid}/fd/{fd}"))) else {
                continue;
            };
            if target.is_absolute() && std::fs::metadata(&target).is_ok_and(|m| m.is_file()) {
                wanted.insert(dir.join(&source).join(format!("{pid}-{fd}.log")), target);
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    for source in std::fs::read_dir(dir)?.flatten() {
        let Ok(links) = std::fs::read_dir(source.path()) else {
            continue;
        };
        for link in links.flatten() {
            let path = link.path();
            let current = std::fs::read_link(&path).ok();
            if wanted.get(&path) != current.as_ref() {
                std::fs::remove_file(&path)?;
            }
        }
        // Gone with its last process (a Source with none left has no directory).
        let _ = std::fs::remove_dir(source.path());
    }
    for (link, target) in wanted {
        if std::fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        std::fs::create_dir_all(link.parent().unwrap_or(dir))?;
        std::os::unix::fs::symlink(&target, &link)?;
    }
    Ok(())
}
