//! HTTP/1.x exchanges, assembled from the bytes that cross traced connections.
//!
//! A server connection turns each request it receives and the response it sends into a SERVER
//! span; a client connection each request it sends and the response it receives into a CLIENT
//! span. Keep-alive and pipelined requests follow each other on one connection; a response
//! ends once its `Content-Length` bytes (or its last chunk) went by, or else when the next
//! response starts or the connection closes. Only the first bytes of each call are seen, so
//! heads longer than that yield what they show and the span is marked partial.
//!
//! Trace context needs no code change: an incoming `traceparent` makes a server span its
//! child; without one, a server span whose connection was opened by a traced client on this
//! node joins that client's trace (matched by the connection's addresses); and a client call
//! made by a thread that is serving a request is a child of that request's span, as is one
//! made by any thread of a process that serves just one request then.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::tracer::{Direction, Event, Role};

/// Connections followed at once; beyond this the oldest idle one is dropped.
const MAX_CONNECTIONS: usize = 65_536;
/// Requests waiting for their response on one connection (pipelining).
const MAX_PENDING: usize = 64;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// One request and its response, as a span.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSpan {
    pub pid: u32,
    pub kind: Role,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    /// Nanoseconds since boot.
    pub start: u64,
    pub end: u64,
    pub method: &'static str,
    /// The request target as sent: path and query.
    pub target: String,
    /// `1.0` or `1.1`.
    pub version: &'static str,
    pub status: Option<u16>,
    /// The request headers kept (see [`Assembler::keep_headers`]), names lower-cased.
    pub headers: Vec<(String, String)>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// What was seen is not the whole exchange: the connection closed or the process ended
    /// before the response did, or the head was longer than the capture.
    pub partial: bool,
}

/// The maps below are keyed by pids, descriptors and local addresses, which the kernel
/// chooses: a fast hash suits them.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Follows every traced connection and yields finished spans.
pub struct Assembler {
    connections: HashMap<(u32, i32), Connection>,
    /// Duplicated descriptors: (pid, fd) -> the descriptor its connection is kept under.
    aliases: HashMap<(u32, i32), (u32, i32)>,
    /// Client connections by (local, remote) address, for servers on this node to join.
    clients: HashMap<(SocketAddr, SocketAddr), (u32, i32)>,
    /// The request each thread is serving: (pid, tid) -> (trace, span).
    serving: HashMap<(u32, u32), (TraceId, SpanId)>,
    finished: Vec<HttpSpan>,
    clock: u64,
    /// Request headers a span keeps besides a client's `host`, lower-cased.
    keep: Vec<String>,
    /// Trace and span ids: unique, not secret.
    ids: SmallRng,
    /// Reused to join a carried head start with the bytes that follow it.
    joined: Vec<u8>,
}

struct Connection {
    role: Role,
    local: SocketAddr,
    remote: SocketAddr,
    /// Requests in order; those before `answered` have had their response start.
    exchanges: VecDeque<Exchange>,
    last_seen: u64,
    /// The first bytes of a head that came in a call of their own (Go's HTTP server reads
    /// one byte ahead between requests), with when they came: joined to the next call's.
    carry: Option<Carry>,
}

struct Carry {
    direction: Direction,
    bytes: [u8; MAX_CARRY],
    len: usize,
    at: u64,
}

/// The longest head start kept to be joined with what follows.
const MAX_CARRY: usize = 8;

struct Exchange {
    span: HttpSpan,
    tid: u32,
    /// Whether the response head was seen, and how many of its bytes are still to come.
    answered: bool,
    remaining: Option<u64>,
    chunked: bool,
}

impl Default for Assembler {
    fn default() -> Assembler {
        Assembler {
            connections: HashMap::default(),
            aliases: HashMap::default(),
            clients: HashMap::default(),
            serving: HashMap::default(),
            finished: Vec::new(),
            clock: 0,
            keep: Vec::new(),
            ids: SmallRng::from_rng(&mut rand::rng()),
            joined: Vec::new(),
        }
    }
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// Takes one event.
    pub fn push(&mut self, event: &Event) {
        match event {
            Event::Open {
                pid,
                fd,
                role,
                at,
                local,
                remote,
                ..
            } => self.open(*pid, *fd, *role, *at, *local, *remote),
            Event::Data { .. } => self.data(event),
            Event::Close { pid, fd, at } => self.close(*pid, *fd, *at),
            Event::Dup { pid, fd, new_fd } => self.dup(*pid, *fd, *new_fd),
            Event::Exit { pid } => self.exit(*pid),
            Event::Fork { pid, parent } => self.fork(*parent, *pid),
            Event::Exec { .. } => {}
        }
    }

    /// The spans finished since the last call.
    pub fn take(&mut self) -> Vec<HttpSpan> {
        std::mem::take(&mut self.finished)
    }

    /// Keeps the request headers named in `names` on each span, besides a client's `host`.
    pub fn keep_headers(&mut self, names: Vec<String>) {
        self.keep = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    }

    /// Spans finished and not taken yet.
    pub fn finished(&self) -> usize {
        self.finished.len()
    }

    /// Connections followed now (bounded by `MAX_CONNECTIONS`).
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    fn open(
        &mut self,
        pid: u32,
        fd: i32,
        role: Role,
        at: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        // A descriptor reused without a close seen ends the old connection first.
        self.close(pid, fd, at);
        if self.connections.len() >= MAX_CONNECTIONS {
            self.evict_oldest();
        }
        if role == Role::Client {
            self.clients.insert((local, remote), (pid, fd));
        }
        self.connections.insert(
            (pid, fd),
            Connection {
                role,
                local,
                remote,
                exchanges: VecDeque::new(),
                last_seen: at,
                carry: None,
            },
        );
        self.clock = self.clock.max(at);
    }

    /// The key a descriptor's connection is kept under.
    fn key(&self, pid: u32, fd: i32) -> (u32, i32) {
        self.aliases.get(&(pid, fd)).copied().unwrap_or((pid, fd))
    }

    /// A forked child holds its parent's connections: a forking server's child serves the
    /// one its parent accepted.
    fn fork(&mut self, parent: u32, child: u32) {
        let inherited: Vec<(i32, Connection)> = self
            .connections
            .iter()
            .filter(|((pid, _), _)| *pid == parent)
            .map(|(&(_, fd), c)| {
                let connection = Connection {
                    role: c.role,
                    local: c.local,
                    remote: c.remote,
                    exchanges: VecDeque::new(),
                    last_seen: c.last_seen,
                    carry: None,
                };
                (fd, connection)
            })
            .collect();
        for (fd, connection) in inherited {
            if self.connections.len() >= MAX_CONNECTIONS {
                self.evict_oldest();
            }
            self.connections.insert((child, fd), connection);
        }
        let aliases: Vec<_> = self
            .aliases
            .iter()
            .filter(|((pid, _), _)| *pid == parent)
            .map(|(&(_, fd), &(_, target))| ((child, fd), (child, target)))
            .collect();
        self.aliases.extend(aliases);
    }

    fn dup(&mut self, pid: u32, fd: i32, new_fd: i32) {
        // dup2 onto an open descriptor closes it first.
        self.close(pid, new_fd, self.clock);
        let key = self.key(pid, fd);
        if self.connections.contains_key(&key) {
            self.aliases.insert((pid, new_fd), key);
        }
    }

    fn data(&mut self, event: &Event) {
        let &Event::Data {
            pid,
            tid,
            fd,
            direction,
            at,
            len,
            bytes,
        } = event
        else {
            return;
        };
        self.clock = self.clock.max(at);
        let (pid, fd) = self.key(pid, fd);
        let Some(connection) = self.connections.get_mut(&(pid, fd)) else {
            return;
        };
        connection.last_seen = at;
        let role = connection.role;
        let (mut first_at, mut len) = (at, len);
        // A head that starts in this call on its own leaves a fragment before it behind.
        let carried = connection.carry.take().filter(|c| {
            c.direction == direction
                && RequestHead::parse(bytes).is_none()
                && ResponseHead::parse(bytes).is_none()
        });
        let mut joined = std::mem::take(&mut self.joined);
        joined.clear();
        let bytes = match carried {
            Some(carry) => {
                first_at = carry.at;
                len += carry.len as u64;
                joined.extend_from_slice(&carry.bytes[..carry.len]);
                joined.extend_from_slice(bytes);
                &joined
            }
            None => bytes,
        };
        if bytes.len() < MAX_CARRY && bytes.len() as u64 == len && starts_a_head(bytes) {
            let mut carry = Carry {
                direction,
                bytes: [0; MAX_CARRY],
                len: bytes.len(),
                at: first_at,
            };
            carry.bytes[..bytes.len()].copy_from_slice(bytes);
            connection.carry = Some(carry);
        } else if matches!(
            (role, direction),
            (Role::Server, Direction::Received) | (Role::Client, Direction::Sent)
        ) {
            // A request starts when its first bytes cross.
            self.requests(pid, tid, fd, first_at, bytes);
        } else {
            self.responses(pid, fd, at, len, bytes);
        }
        self.joined = joined;
    }

    /// Every request head at the start of `bytes`, and those pipelined after it.
    fn requests(&mut self, pid: u32, tid: u32, fd: i32, at: u64, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(head) = RequestHead::parse(rest) {
            self.request(pid, tid, fd, at, &head);
            match head
                .body
                .and_then(|body| rest.get(head.len + body as usize..))
            {
                Some(next) if !next.is_empty() => rest = next,
                _ => break,
            }
        }
    }

    fn request(&mut self, pid: u32, tid: u32, fd: i32, at: u64, head: &RequestHead) {
        let Some(connection) = self.connections.get(&(pid, fd)) else {
            return;
        };
        let (role, local, remote) = (connection.role, connection.local, connection.remote);
        // The first `traceparent` counts, parsed or not.
        let mut traceparent = None;
        let mut headers = Vec::new();
        for (name, value) in head.headers() {
            if traceparent.is_none() && name.eq_ignore_ascii_case("traceparent") {
                traceparent = Some(parse_traceparent(value));
            }
            if (role == Role::Client && name.eq_ignore_ascii_case("host"))
                || self.keep.iter().any(|k| name.eq_ignore_ascii_case(k))
            {
                headers.push((name.to_ascii_lowercase(), value.to_string()));
            }
        }
        let context = traceparent.flatten().or_else(|| match role {
            Role::Server => self.client_of(remote, local),
            Role::Client => self.served_by(pid, tid),
        });
        let span_id: SpanId = self.ids.random();
        let trace_id = match context {
            Some((trace, _)) => trace,
            None => self.ids.random(),
        };
        if role == Role::Server {
            self.serving.insert((pid, tid), (trace_id, span_id));
        }
        let span = HttpSpan {
            pid,
            kind: role,
            trace_id,
            span_id,
            parent: context.map(|(_, span)| span),
            start: at,
            end: at,
            method: head.method,
            target: head.target.to_string(),
            version: head.version,
            status: None,
            headers,
            local,
            remote,
            partial: !head.complete,
        };
        let connection = self
            .connections
            .get_mut(&(pid, fd))
            .expect("looked up above");
        let dropped = (connection.exchanges.len() >= MAX_PENDING)
            .then(|| connection.exchanges.pop_front())
            .flatten();
        connection.exchanges.push_back(Exchange {
            span,
            tid,
            answered: false,
            remaining: None,
            chunked: false,
        });
        if let Some(dropped) = dropped {
            finish(&mut self.serving, &mut self.finished, dropped, at, true);
        }
    }

    /// The request a client call is made for: the one its thread serves, or else the only one
    /// its process serves (runtimes that move a request between threads, as Go does).
    fn served_by(&self, pid: u32, tid: u32) -> Option<(TraceId, SpanId)> {
        if let Some(context) = self.serving.get(&(pid, tid)) {
            return Some(*context);
        }
        let mut of_process = self
            .serving
            .iter()
            .filter(|((p, _), _)| *p == pid)
            .map(|(_, context)| *context);
        match (of_process.next(), of_process.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// The span of the request a traced client on this node is sending on the connection
    /// `(client, server)`.
    fn client_of(&self, client: SocketAddr, server: SocketAddr) -> Option<(TraceId, SpanId)> {
        let key = self.clients.get(&(client, server))?;
        let connection = self.connections.get(key)?;
        let exchange = connection.exchanges.iter().find(|e| !e.answered)?;
        Some((exchange.span.trace_id, exchange.span.span_id))
    }

    fn responses(&mut self, pid: u32, fd: i32, end: u64, len: u64, bytes: &[u8]) {
        let head = ResponseHead::parse(bytes);
        if head
            .as_ref()
            .is_some_and(|h| h.status < 200 && h.status != 101)
        {
            return; // 100 Continue and friends: the real response follows.
        }
        let Some(connection) = self.connections.get_mut(&(pid, fd)) else {
            return;
        };
        if let Some(head) = head {
            // A response still open ends where this one starts.
            while let Some(exchange) = connection.exchanges.pop_front_if(|e| e.answered) {
                let end = exchange.span.end;
                finish(&mut self.serving, &mut self.finished, exchange, end, false);
            }
            // None left: a response to a request sent before tracing began.
            if let Some(exchange) = connection.exchanges.front_mut() {
                let bodyless =
                    exchange.span.method == "HEAD" || matches!(head.status, 101 | 204 | 304);
                exchange.answered = true;
                exchange.span.status = Some(head.status);
                exchange.span.end = end;
                exchange.chunked = head.chunked && !bodyless;
                exchange.remaining = if bodyless {
                    Some(0)
                } else {
                    head.body
                        .map(|body| (head.len as u64 + body).saturating_sub(len))
                };
            }
        } else if let Some(exchange) = connection.exchanges.front_mut().filter(|e| e.answered) {
            exchange.span.end = end;
            if let Some(remaining) = &mut exchange.remaining {
                *remaining = remaining.saturating_sub(len);
            }
        }
        let complete = connection.exchanges.front().is_some_and(|e| {
            let last_chunk =
                e.chunked && bytes.len() as u64 == len && bytes.ends_with(b"0\r\n\r\n");
            e.answered && (e.remaining == Some(0) || last_chunk)
        });
        if complete && let Some(exchange) = connection.exchanges.pop_front() {
            let end = exchange.span.end;
            finish(&mut self.serving, &mut self.finished, exchange, end, false);
        }
    }

    fn close(&mut self, pid: u32, fd: i32, at: u64) {
        if self.aliases.remove(&(pid, fd)).is_some() {
            return; // The connection lives on through the descriptor it duplicated.
        }
        let Some(connection) = self.connections.remove(&(pid, fd)) else {
            return;
        };
        // A duplicate still open takes the connection over.
        let heir = self
            .aliases
            .iter()
            .find(|(_, key)| **key == (pid, fd))
            .map(|(alias, _)| *alias);
        if let Some(heir) = heir {
            self.aliases.remove(&heir);
            for key in self.aliases.values_mut().filter(|k| **k == (pid, fd)) {
                *key = heir;
            }
            if connection.role == Role::Client {
                self.clients
                    .insert((connection.local, connection.remote), heir);
            }
            self.connections.insert(heir, connection);
            return;
        }
        if connection.role == Role::Client {
            self.clients.remove(&(connection.local, connection.remote));
        }
        for exchange in connection.exchanges {
            // A response without a length ends with its connection; anything else is cut.
            let whole = exchange.answered && exchange.remaining.is_none() && !exchange.chunked;
            let end = if exchange.answered {
                exchange.span.end
            } else {
                at
            };
            finish(&mut self.serving, &mut self.finished, exchange, end, !whole);
        }
    }

    fn exit(&mut self, pid: u32) {
        let fds: Vec<i32> = self
            .connections
            .keys()
            .filter(|(p, _)| *p == pid)
            .map(|(_, fd)| *fd)
            .collect();
        for fd in fds {
            self.close(pid, fd, self.clock);
        }
        self.serving.retain(|(p, _), _| *p != pid);
        self.aliases.retain(|(p, _), _| *p != pid);
    }

    fn evict_oldest(&mut self) {
        if let Some((&(pid, fd), _)) = self.connections.iter().min_by_key(|(_, c)| c.last_seen) {
            self.close(pid, fd, self.clock);
        }
    }
}

/// Ends an exchange's span at `end`, marked partial if `cut`, and takes it off what its
/// thread serves. A function of the two fields it changes, so that it may be called while a
/// connection is borrowed.
fn finish(
    serving: &mut HashMap<(u32, u32), (TraceId, SpanId)>,
    finished: &mut Vec<HttpSpan>,
    exchange: Exchange,
    end: u64,
    cut: bool,
) {
    let mut span = exchange.span;
    span.end = end.max(span.start);
    span.partial |= cut;
    if span.kind == Role::Server
        && serving.get(&(span.pid, exchange.tid)).map(|(_, s)| *s) == Some(span.span_id)
    {
        serving.remove(&(span.pid, exchange.tid));
    }
    finished.push(span);
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// Whether `bytes` may be the start of a request or response head.
fn starts_a_head(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && (b"HTTP/1.".starts_with(bytes)
            || METHODS
                .iter()
                .any(|m| m.as_bytes().starts_with(bytes) || bytes.starts_with(m.as_bytes())))
}

/// What a request head says, from the bytes seen.
#[derive(Debug, PartialEq)]
struct RequestHead<'a> {
    method: &'static str,
    target: &'a str,
    version: &'static str,
    /// The header lines, after the request line.
    fields: &'a [u8],
    /// Bytes of the head, up to and with the blank line (or all seen, if it was cut).
    len: usize,
    /// Body bytes that follow, when `Content-Length` says (0 when nothing says).
    body: Option<u64>,
    /// Whether the blank line ending the head was seen.
    complete: bool,
}

impl<'a> RequestHead<'a> {
    fn parse(bytes: &'a [u8]) -> Option<RequestHead<'a>> {
        // Most bytes are no head: they are told by their first ones.
        let method = *METHODS
            .iter()
            .find(|m| bytes.starts_with(m.as_bytes()) && bytes.get(m.len()) == Some(&b' '))?;
        let (line, next) = first_line(bytes)?;
        let (target, version) = line[method.len() + 1..].split_once(' ')?;
        let version = match version {
            "HTTP/1.0" => "1.0",
            "HTTP/1.1" => "1.1",
            _ => return None,
        };
        let fields = Fields::parse(bytes, next);
        Some(RequestHead {
            method,
            target,
            version,
            fields: &bytes[next..fields.len],
            body: if fields.chunked {
                None
            } else {
                Some(fields.content_length.unwrap_or(0))
            },
            len: fields.len,
            complete: fields.complete,
        })
    }

    /// Its header fields as sent: names as written, values trimmed.
    fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        header_lines(self.fields).filter_map(|line| {
            let (name, value) = std::str::from_utf8(line).ok()?.split_once(':')?;
            Some((name.trim(), value.trim()))
        })
    }
}

#[derive(Debug, PartialEq)]
struct ResponseHead {
    status: u16,
    len: usize,
    body: Option<u64>,
    chunked: bool,
}

impl ResponseHead {
    fn parse(bytes: &[u8]) -> Option<ResponseHead> {
        if !bytes.starts_with(b"HTTP/1.") {
            return None;
        }
        let (line, next) = first_line(bytes)?;
        let rest = line.strip_prefix("HTTP/1.")?;
        let status = rest.get(2..5)?.parse().ok()?;
        let fields = Fields::parse(bytes, next);
        Some(ResponseHead {
            status,
            len: fields.len,
            body: fields.content_length,
            chunked: fields.chunked,
        })
    }
}

/// What the header fields of a head say about its length.
struct Fields {
    content_length: Option<u64>,
    chunked: bool,
    len: usize,
    complete: bool,
}

impl Fields {
    /// The fields of the head `bytes`, whose first header line starts at `start`.
    fn parse(bytes: &[u8], start: usize) -> Fields {
        let mut fields = Fields {
            content_length: None,
            chunked: false,
            len: bytes.len(),
            complete: false,
        };
        let mut at = start;
        for line in header_lines(&bytes[start..]) {
            at += line.len() + 2;
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                fields.content_length =
                    std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                fields.chunked = value.eq_ignore_ascii_case(b"chunked");
            }
        }
        if bytes[at..].starts_with(b"\r\n") {
            fields.len = at + 2;
            fields.complete = true;
        }
        fields
    }
}

/// The complete header lines (without CRLF) up to the blank line that ends a head.
fn header_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let end = find_crlf(rest)?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        (!line.is_empty()).then_some(line)
    })
}

/// The first line (without its CRLF) and where the next starts; only if it is text.
fn first_line(bytes: &[u8]) -> Option<(&str, usize)> {
    let end = find_crlf(bytes)?;
    let line = std::str::from_utf8(&bytes[..end]).ok()?;
    Some((line, end + 2))
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    // The first LF after a CR ends the first CRLF.
    memchr::memchr_iter(b'\n', bytes).find_map(|i| (i > 0 && bytes[i - 1] == b'\r').then(|| i - 1))
}

/// `00-<trace id>-<parent id>-<flags>` (W3C Trace Context).
fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = value.split('-');
    if parts.next()? != "00" {
        return None;
    }
    let trace = hex::<16>(parts.next()?)?;
    let span = hex::<8>(parts.next()?)?;
    (trace != [0; 16] && span != [0; 8]).then_some((trace, span))
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
