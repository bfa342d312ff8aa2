//! Processes as odiglet sees them, read from `/proc`: each keyed by pid and start time (a pid
//! the kernel reuses is another process), with its executable, command line and cgroup, and, in
//! Kubernetes, the pod and container the cgroup path names.

use std::path::{Path, PathBuf};

/// A process, told apart from a later one that reuses its pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessKey {
    pub pid: u32,
    /// When it started, in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// What a process runs, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub key: ProcessKey,
    /// The executable, as `/proc/PID/exe` links to it.
    pub exe: PathBuf,
    pub cmdline: Vec<String>,
    /// The process's cgroup path (the unified hierarchy's, or the first one listed).
    pub cgroup: String,
    /// The pod and container, when the cgroup path is a Kubernetes one.
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

impl Process {
    /// Reads process `pid` from `proc` (normally `/proc`).
    pub fn read(proc: &Path, pid: u32) -> std::io::Result<Process> {
        let dir = proc.join(pid.to_string());
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        let start_time = start_time(&stat).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: no start time", dir.join("stat").display()),
            )
        })?;
        let cmdline = std::fs::read(dir.join("cmdline"))?
            .split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let cgroup = cgroup_path(&std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default());
        let (pod_uid, container_id) = kubernetes_ids(&cgroup);
        Ok(Process {
            key: ProcessKey { pid, start_time },
            // Kernel threads and processes of other users may not show theirs.
            exe: std::fs::read_link(dir.join("exe")).unwrap_or_default(),
            cmdline,
            cgroup,
            pod_uid,
            container_id,
        })
    }

    /// The executable's file name: what a Source of kind `Process` names.
    pub fn exe_name(&self) -> &str {
        self.exe
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }
}

/// Every process `proc` shows that can still be read (processes exit while they are read).
pub fn scan(proc: &Path) -> std::io::Result<Vec<Process>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(proc)? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(process) = Process::read(proc, pid) {
            found.push(process);
        }
    }
    found.sort_by_key(|p| p.key);
    Ok(found)
}

/// Field 22 of `/proc/PID/stat`, counted after the command name, which may hold spaces and
/// parentheses.
fn start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the name; the start time is the 20th of them.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The cgroup path from `/proc/PID/cgroup`: the unified hierarchy's (`0::PATH`), or else the
/// first listed.
fn cgroup_path(text: &str) -> String {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?;
            let _controllers = parts.next()?;
            Some((id, parts.next()?))
        })
        .collect();
    paths
        .iter()
        .find(|(id, _)| *id == "0")
        .or(paths.first())
        .map(|(_, path)| path.to_string())
        .unwrap_or_default()
}

/// The pod uid and container id a Kubernetes cgroup path names, with either cgroup driver:
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, _ for ->.slice/
/// cri-containerd-<id>.scope` (systemd) or `/kubepods/burstable/pod<uid>/<id>` (cgroupfs).
fn kubernetes_ids(cgroup: &str) -> (Option<String>, Option<String>) {
    let segments: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    if !segments.iter().any(|s| s.starts_with("kubepods")) {
        return (None, None);
    }
    let pod = segments.iter().find_map(|segment| {
        let name = segment.strip_suffix(".slice").unwrap_or(segment);
        let at = name.rfind("pod")?;
        let uid = name[at + 3..].replace('_', "-");
        (uid.len() == 36).then_some(uid)
    });
    let container = segments.last().and_then(|last| {
        let name = last.strip_suffix(".scope").unwrap_or(last);
        let id = name.rsplit('-').next().unwrap_or(name);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    });
    (pod, container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_with_its_start_time() {
        let proc = Path::new("/proc");
        let me = Process::read(proc, std::process::id()).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap());
        assert!(me.key.start_time > 0);
        assert_eq!(Process::read(proc, me.key.pid).unwrap().key, me.key);
        let all = scan(proc).unwrap();
        assert!(all.iter().any(|p| p.key == me.key));
        assert!(all.iter().any(|p| p.key.pid == 1));
    }

    #[test]
    fn the_start_time_is_counted_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 \
                    9 0 777123 200000000 5000 18446744073709551615";
        assert_eq!(start_time(stat), Some(777123));
        assert_eq!(start_time("4242 (short) S 1"), None);
    }

    #[test]
    fn kubernetes_cgroup_paths_name_the_pod_and_container() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let uid = "8f3c1e2a-4b5d-4c6e-9f70-a1b2c3d4e5f6";
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        );
        let cgroupfs = format!("/kubepods/besteffort/pod{uid}/{id}");
        for path in [systemd, cgroupfs] {
            let (pod, container) = kubernetes_ids(&path);
            assert_eq!(pod.as_deref(), Some(uid), "{path}");
            assert_eq!(container.as_deref(), Some(id), "{path}");
        }
        assert_eq!(
            kubernetes_ids("/user.slice/user-0.slice/session-1.scope"),
            (None, None)
        );
        let v1 = format!("12:pids:/kubepods/pod{uid}/{id}\n1:name=systemd:/init.scope\n");
        assert_eq!(cgroup_path(&v1), format!("/kubepods/pod{uid}/{id}"));
        assert_eq!(cgroup_path(&format!("{v1}0::/unified\n")), "/unified");
    }
}
