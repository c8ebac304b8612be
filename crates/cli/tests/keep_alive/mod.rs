//! HTTP/1.1 over raw kept-alive connections, for tests of what a server does with connections
//! left open: one request at a time, answers read whole, and whether the server closed one.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Sends a GET of `path` on a connection that stays open afterwards.
pub fn send_get(stream: &mut TcpStream, addr: SocketAddr, path: &str, authorization: &str) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\n\r\n"
    )
    .unwrap();
}

/// Reads one answer from a kept-alive connection: its status and JSON body.
pub fn read_answer(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Value)> {
    let mut status = None;
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if status.is_none() {
            status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
        chunked |= lower.starts_with("transfer-encoding: chunked");
    }
    let body = if chunked {
        let mut raw = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..size]);
        }
        raw
    } else {
        let mut raw = vec![0; length.expect("an answer without a length")];
        reader.read_exact(&mut raw)?;
        raw
    };
    Ok((status.unwrap(), serde_json::from_slice(&body).unwrap()))
}

/// Whether the simulator closed the connection within `limit`, and after how long.
pub fn closed_within(reader: &mut BufReader<TcpStream>, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    reader.get_ref().set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match reader.read(&mut byte) {
        Ok(0) => Some(started.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(started.elapsed()),
        _ => None,
    }
}

/// Connections held open on a server whose every answer is delayed: many idle after a call,
/// a few that never sent a request, and one whose request is inside its delay.
pub struct Held {
    idle: Vec<BufReader<TcpStream>>,
    busy: JoinHandle<(std::io::Result<(u16, Value)>, Instant)>,
}

/// Opens the connections of [`Held`], each call a GET of `path`; returns once the busy one's
/// request has been inside its delay for a moment.
pub fn hold_connections(addr: SocketAddr, path: &str, authorization: &str) -> Held {
    let idle: Vec<_> = (0..32)
        .map(|_| {
            let (path, authorization) = (path.to_owned(), authorization.to_owned());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                send_get(&mut stream, addr, &path, &authorization);
                let mut reader = BufReader::new(stream);
                let (status, body) = read_answer(&mut reader).unwrap();
                assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
                reader
            })
        })
        .collect();
    let mut idle: Vec<_> = idle.into_iter().map(|t| t.join().unwrap()).collect();
    idle.extend((0..4).map(|_| BufReader::new(TcpStream::connect(addr).unwrap())));
    let mut busy = TcpStream::connect(addr).unwrap();
    send_get(&mut busy, addr, path, authorization);
    let busy = std::thread::spawn(move || {
        let mut reader = BufReader::new(busy);
        let answer = read_answer(&mut reader);
        (answer, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    Held { idle, busy }
}

impl Held {
    /// Checks, from the moment of the signal on, that every idle connection is closed within
    /// half the `delay` of answers (so before the busy request is answered), and that the
    /// busy request is answered. Returns when that answer came, after the signal.
    pub fn check_after_sigterm(mut self, signalled: Instant, delay: Duration) -> Duration {
        for (i, reader) in self.idle.iter_mut().enumerate() {
            let waited = signalled.elapsed();
            let after = closed_within(reader, Duration::from_secs(5)).map(|c| waited + c);
            assert!(
                after.is_some_and(|a| a < delay / 2),
                "idle connection {i} closed {after:?} after SIGTERM"
            );
        }
        let (answer, answered) = self.busy.join().unwrap();
        let (status, body) = answer.expect("the request in progress at SIGTERM got no answer");
        assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
        answered.duration_since(signalled)
    }
}

/// The process exited (`exited` after the signal) soon after its last answer.
pub fn exited_right_after(exited: Duration, answered: Duration) {
    assert!(
        exited < answered + Duration::from_secs(1),
        "exited {exited:?} after SIGTERM, the last answer went at {answered:?}"
    );
}
