use super::*;

const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

fn open(a: &mut Assembler, pid: u32, fd: i32, role: Role) {
    let (local, remote) = match role {
        Role::Server => (SERVER, CLIENT),
        Role::Client => (CLIENT, SERVER),
    };
    a.push(&Event::Open {
        pid,
        tid: pid,
        fd,
        role,
        at: 1,
        local,
        remote,
    });
}

fn data(
    a: &mut Assembler,
    pid: u32,
    tid: u32,
    fd: i32,
    direction: Direction,
    at: u64,
    bytes: &[u8],
) {
    a.push(&Event::Data {
        pid,
        tid,
        fd,
        direction,
        at: at + 1,
        len: bytes.len() as u64,
        bytes,
    });
}

use Direction::{Received as In, Sent as Out};

#[test]
fn keep_alive_requests_become_one_span_each() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    data(
        &mut a,
        1,
        1,
        3,
        In,
        10,
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Id: 7\r\n\r\n",
    );
    data(
        &mut a,
        1,
        1,
        3,
        Out,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    );
    data(
        &mut a,
        1,
        1,
        3,
        In,
        30,
        b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    data(
        &mut a,
        1,
        1,
        3,
        Out,
        40,
        b"HTTP/1.1 503 Busy\r\nContent-Length: 10\r\n\r\n",
    );
    assert!(
        a.take().len() == 1,
        "the second response's body is still to come"
    );
    data(&mut a, 1, 1, 3, Out, 50, b"0123456789");
    let spans = a.take();
    assert_eq!(spans.len(), 1);
    assert_eq!((spans[0].method, spans[0].target.as_str()), ("POST", "/b"));
    assert_eq!(
        (spans[0].status, spans[0].start, spans[0].end),
        (Some(503), 31, 51)
    );
    assert!(!spans[0].partial);
    a.push(&Event::Close {
        pid: 1,
        fd: 3,
        at: 60,
    });
    assert!(a.take().is_empty());
    assert_eq!(a.connections(), 0);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    data(
        &mut a,
        1,
        1,
        3,
        In,
        10,
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
    );
    data(
        &mut a,
        1,
        1,
        3,
        Out,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    data(
        &mut a,
        1,
        1,
        3,
        Out,
        30,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    );
    let spans = a.take();
    let seen: Vec<_> = spans
        .iter()
        .map(|s| (s.target.as_str(), s.status))
        .collect();
    assert_eq!(seen, [("/1", Some(200)), ("/2", Some(404))]);
}

#[test]
fn a_chunked_response_ends_with_its_last_chunk() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    data(&mut a, 1, 1, 3, In, 10, b"GET / HTTP/1.1\r\n\r\n");
    data(
        &mut a,
        1,
        1,
        3,
        Out,
        20,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    assert!(a.take().is_empty());
    data(&mut a, 1, 1, 3, Out, 30, b"0\r\n\r\n");
    assert_eq!(a.take()[0].end, 31);
}

#[test]
fn a_response_without_length_ends_with_the_connection() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    data(&mut a, 1, 1, 3, In, 10, b"GET / HTTP/1.0\r\n\r\n");
    data(&mut a, 1, 1, 3, Out, 20, b"HTTP/1.0 200 OK\r\n\r\nbody");
    data(&mut a, 1, 1, 3, Out, 30, b"more body");
    a.push(&Event::Close {
        pid: 1,
        fd: 3,
        at: 40,
    });
    let spans = a.take();
    assert_eq!((spans[0].end, spans[0].partial), (31, false));
}

#[test]
fn a_request_cut_by_close_or_exit_is_partial() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    open(&mut a, 1, 4, Role::Server);
    data(&mut a, 1, 1, 3, In, 10, b"GET /slow HTTP/1.1\r\n\r\n");
    data(&mut a, 1, 1, 4, In, 10, b"GET /gone HTTP/1.1\r\n\r\n");
    a.push(&Event::Close {
        pid: 1,
        fd: 3,
        at: 50,
    });
    a.push(&Event::Exit { pid: 1 });
    let spans = a.take();
    assert_eq!(spans.len(), 2);
    assert!(spans.iter().all(|s| s.partial && s.status.is_none()));
    assert_eq!(a.connections(), 0);
}

#[test]
fn binary_and_oversized_input_is_ignored_or_partial() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    data(
        &mut a,
        1,
        1,
        3,
        In,
        10,
        &[0xff, 0x00, 0x16, 0x03, 0x01, b'\r', b'\n'],
    );
    data(&mut a, 1, 1, 3, In, 11, b"GET /");
    assert!(a.take().is_empty());
    let mut long = b"GET /long HTTP/1.1\r\nCookie: ".to_vec();
    long.resize(1023, b'x');
    data(&mut a, 1, 1, 3, In, 20, &long);
    data(
        &mut a,
        1,
        1,
        3,
        Out,
        30,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let spans = a.take();
    assert_eq!(
        (spans[0].target.as_str(), spans[0].partial),
        ("/long", true)
    );
}

#[test]
fn an_incoming_traceparent_makes_the_server_span_its_child() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    data(
        &mut a,
        1,
        1,
        3,
        In,
        10,
        b"GET / HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
    );
    data(
        &mut a,
        1,
        1,
        3,
        Out,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let span = &a.take()[0];
    assert_eq!(
        span.trace_id,
        hex::<16>("0af7651916cd43dd8448eb211c80319c").unwrap()
    );
    assert_eq!(span.parent, hex::<8>("b7ad6b7169203331"));
}

#[test]
fn client_and_server_on_one_node_share_a_trace_and_outgoing_calls_nest() {
    let mut a = Assembler::new();
    // Process 1 serves a request on thread 11 and, while doing so, calls process 2.
    a.push(&Event::Open {
        pid: 1,
        tid: 1,
        fd: 3,
        role: Role::Server,
        at: 1,
        local: SERVER,
        remote: "127.0.0.1:40000".parse().unwrap(),
    });
    data(&mut a, 1, 11, 3, In, 10, b"GET /front HTTP/1.1\r\n\r\n");
    open(&mut a, 1, 5, Role::Client);
    data(&mut a, 1, 11, 5, Out, 20, b"GET /back HTTP/1.1\r\n\r\n");
    open(&mut a, 2, 7, Role::Server);
    data(&mut a, 2, 2, 7, In, 21, b"GET /back HTTP/1.1\r\n\r\n");
    data(
        &mut a,
        2,
        2,
        7,
        Out,
        30,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    data(
        &mut a,
        1,
        11,
        5,
        In,
        31,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    data(
        &mut a,
        1,
        11,
        3,
        Out,
        40,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let spans = a.take();
    let [back, call, front] = [&spans[0], &spans[1], &spans[2]];
    assert_eq!(
        (front.kind, call.kind, back.kind),
        (Role::Server, Role::Client, Role::Server)
    );
    assert_eq!(front.parent, None);
    assert_eq!(call.parent, Some(front.span_id));
    assert_eq!(back.parent, Some(call.span_id));
    assert!(spans.iter().all(|s| s.trace_id == front.trace_id));
}

#[test]
fn pending_requests_and_connections_are_bounded() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    for i in 0..(MAX_PENDING as u64 + 10) {
        data(&mut a, 1, 1, 3, In, i, b"GET / HTTP/1.1\r\n\r\n");
    }
    assert_eq!(
        a.take().len(),
        10,
        "the oldest unanswered requests are given up"
    );
    for fd in 0..(MAX_CONNECTIONS as i32 + 5) {
        a.push(&Event::Open {
            pid: 2,
            tid: 2,
            fd,
            role: Role::Server,
            at: 2 + fd as u64,
            local: SERVER,
            remote: CLIENT,
        });
    }
    assert_eq!(a.connections(), MAX_CONNECTIONS);
}

#[test]
fn a_call_from_another_thread_nests_under_the_only_request_its_process_serves() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    data(&mut a, 1, 11, 3, In, 10, b"GET /front HTTP/1.1\r\n\r\n");
    open(&mut a, 1, 5, Role::Client);
    data(&mut a, 1, 12, 5, Out, 20, b"GET /back HTTP/1.1\r\n\r\n");
    data(
        &mut a,
        1,
        12,
        5,
        In,
        30,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let call = a.take().pop().unwrap();
    // A second request in flight makes the owner of another thread's call unknowable.
    open(&mut a, 1, 4, Role::Server);
    data(&mut a, 1, 13, 4, In, 40, b"GET /other HTTP/1.1\r\n\r\n");
    data(&mut a, 1, 12, 5, Out, 50, b"GET /back HTTP/1.1\r\n\r\n");
    data(
        &mut a,
        1,
        12,
        5,
        In,
        60,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let unowned = a.take().pop().unwrap();
    data(
        &mut a,
        1,
        11,
        3,
        Out,
        70,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let front = a.take().pop().unwrap();
    assert_eq!(call.parent, Some(front.span_id));
    assert_eq!(unowned.parent, None);
}

#[test]
fn a_duplicated_descriptor_is_the_same_connection() {
    let mut a = Assembler::new();
    open(&mut a, 1, 4, Role::Server);
    a.push(&Event::Dup {
        pid: 1,
        fd: 4,
        new_fd: 5,
    });
    // Read on the duplicate, answered on the original (Rust's try_clone).
    data(&mut a, 1, 1, 5, In, 10, b"GET /a HTTP/1.1\r\n\r\n");
    data(
        &mut a,
        1,
        1,
        4,
        Out,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(a.take()[0].target, "/a");
    // The original closes first; the duplicate carries on.
    a.push(&Event::Close {
        pid: 1,
        fd: 4,
        at: 30,
    });
    data(&mut a, 1, 1, 5, In, 40, b"GET /b HTTP/1.1\r\n\r\n");
    data(&mut a, 1, 1, 5, Out, 50, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(a.take()[0].status, Some(204));
    a.push(&Event::Close {
        pid: 1,
        fd: 5,
        at: 60,
    });
    assert_eq!(a.connections(), 0);
}

#[test]
fn a_head_whose_first_byte_came_alone_is_joined() {
    let mut a = Assembler::new();
    open(&mut a, 1, 3, Role::Server);
    data(&mut a, 1, 1, 3, In, 10, b"G");
    data(&mut a, 1, 1, 3, In, 20, b"ET /late HTTP/1.1\r\n\r\n");
    data(
        &mut a,
        1,
        1,
        3,
        Out,
        30,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let span = a.take().pop().unwrap();
    assert_eq!((span.target.as_str(), span.start), ("/late", 11));
}

#[test]
fn a_forked_child_serves_the_connection_its_parent_accepted() {
    let mut a = Assembler::new();
    open(&mut a, 1, 4, Role::Server);
    a.push(&Event::Fork { pid: 2, parent: 1 });
    // The parent lets go of its copy; the child serves the request on its own.
    a.push(&Event::Close {
        pid: 1,
        fd: 4,
        at: 5,
    });
    data(&mut a, 2, 2, 4, In, 10, b"GET /forked HTTP/1.1\r\n\r\n");
    data(
        &mut a,
        2,
        2,
        4,
        Out,
        20,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let spans = a.take();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!((spans[0].pid, spans[0].target.as_str()), (2, "/forked"));
    assert_eq!(spans[0].remote, CLIENT);
    a.push(&Event::Close {
        pid: 2,
        fd: 4,
        at: 30,
    });
    assert_eq!(a.connections(), 0);
}
