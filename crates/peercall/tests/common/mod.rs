//! Drives the real `peercall` binary on loopback ports.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(unsafe_code)] // kill(2) sends the signals under test
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_peercall");

/// A command with an empty environment (so no outer PEERCALL_* or RUST_LOG leaks in) plus `env`.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().envs(env.iter().copied());
    cmd
}

/// Runs a command that is expected to exit by itself (help, errors, --print-config) within 20 s.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = command(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peercall");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "peercall {args:?} did not exit within 20 s; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (for --listen, whose UDP and TCP share the port).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP+TCP port found");
}

/// A running peercall server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub banner: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stdout_rest: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts peercall and waits (up to 30 s) for its banner.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(command(args, env), args)
    }

    /// Starts `cmd` (peercall, or a shell that execs it) and waits (up to 30 s) for its banner.
    pub fn spawn(mut cmd: Command, args: &[&str]) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peercall");
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_sink = stderr.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                stderr_sink.lock().expect("stderr lock").push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout_rest = Arc::new(Mutex::new(Vec::new()));
        let rest = stdout_rest.clone();
        std::thread::spawn(move || {
            let mut in_banner = true;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if in_banner {
                    let last = line.contains("stop with Ctrl-C");
                    if tx.send(line).is_err() {
                        break;
                    }
                    if last {
                        in_banner = false;
                    }
                } else {
                    rest.lock().expect("stdout lock").push(line);
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let last = line.contains("stop with Ctrl-C");
                    banner.push(line);
                    if last {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "peercall {args:?} printed no complete banner; stdout so far: {banner:?}; stderr: {}",
                        stderr.lock().expect("stderr lock")
                    );
                }
            }
        }
        Server {
            child,
            banner,
            stderr,
            stdout_rest,
        }
    }

    /// The text after `label` on the banner line that holds it, e.g. "health" → the health URL.
    pub fn banner_value(&self, label: &str) -> String {
        let line = self
            .banner
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no banner line {label:?} in {:#?}", self.banner));
        line.trim_start()[label.len()..]
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("banner line {line:?} has no value"))
            .to_owned()
    }

    /// The HTTP(S) address from the banner's health URL.
    pub fn http_addr(&self) -> SocketAddr {
        let url = self.banner_value("health");
        let host_port = url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches("/healthz");
        host_port
            .parse()
            .unwrap_or_else(|e| panic!("health URL {url}: {e}"))
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on the pid of a child we started and have not reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET; returns the status code, the headers (lower-cased names) and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

/// A plain HTTP/1.1 request with extra header lines (`"Name: value"`); returns status, headers, body.
pub fn http_request(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("connection:"))
    {
        request.push_str("Connection: close\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The JSON of /healthz.
pub fn healthz(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (status, _, body) = http_get(addr, "/healthz");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("healthz body {body:?}: {e}"));
    (status, json)
}

/// Asserts `stderr` is one `peercall: error:` line without panic or backtrace, and returns it.
pub fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status of a start-up failure; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr:?}");
    assert!(lines[0].starts_with("peercall: error: "), "{stderr:?}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr:?}"
    );
    lines[0].to_owned()
}
