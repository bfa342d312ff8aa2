//! A plain HTTP/1.1 server in Rust with no OpenTelemetry in it: what odiglet traces with eBPF.
//!
//! Usage: http_app PORT (0: any; the port is printed as `listening PORT`). GET /hello answers
//! 200, GET /fail 500, anything else 404; a thread per connection, kept alive.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "0".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind");
    println!("listening {}", listener.local_addr().expect("bound").port());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        // The head ends with an empty line; these requests have no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        let path = request.split(' ').nth(1).unwrap_or("/");
        let (status, body) = match path.split('?').next() {
            Some("/hello") => ("200 OK", "hello\n"),
            Some("/fail") => ("500 Internal Server Error", "failed\n"),
            _ => ("404 Not Found", "not found\n"),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(response.as_bytes())?;
    }
}
