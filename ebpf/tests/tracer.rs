//! The eBPF programs against real processes: a Python HTTP server and curl.

use std::process::{Command, Stdio};
use std::time::Duration;

use odigos_ebpf::tracer::{Direction, Event, Role, Tracer};

#[tokio::test]
async fn sees_connections_and_bytes_of_traced_processes() {
    let (mut tracer, mut events) = match Tracer::load() {
        Ok(loaded) => loaded,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped outside CI: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let port = 18000 + std::process::id() % 1000;
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tracer.trace(server.id(), 512).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/?q=1"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.iter().any(|e| matches!(e, Event::Close { .. })) {
        tokio::time::timeout_at(deadline, events.next(&mut seen))
            .await
            .expect("events within 5 s")
            .unwrap();
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let pid = server.id();
    let mine: Vec<&Event> = seen
        .iter()
        .filter(|e| !matches!(e, Event::Exec { .. } | Event::Exit { .. }))
        .collect();
    assert_eq!(
        tracer.connections(),
        0,
        "closed connections stay in the map"
    );
    assert_eq!(tracer.calls_in_flight(), 0);
    assert_eq!(tracer.lost(), 0, "events lost to a full ring buffer");
    let open = mine
        .iter()
        .find_map(|e| match e {
            Event::Open {
                pid: p,
                role,
                local,
                remote,
                ..
            } if *p == pid => Some((*role, *local, *remote)),
            _ => None,
        })
        .expect("the accept");
    assert_eq!(open.0, Role::Server);
    assert_eq!(open.1.port(), port as u16);
    assert!(open.2.ip().is_loopback());
    let request = mine
        .iter()
        .find_map(|e| match e {
            Event::Data {
                direction: Direction::Received,
                bytes,
                ..
            } => Some(bytes.clone()),
            _ => None,
        })
        .expect("the request's bytes");
    assert!(
        request.starts_with(b"GET /?q=1 HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request)
    );
    assert!(mine.iter().any(|e| matches!(e, Event::Data { direction: Direction::Sent, bytes, .. } if bytes.starts_with(b"HTTP/1.0 200"))));
}
