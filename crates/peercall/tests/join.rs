//! `peercall join` against a real `peercall serve`: two native peers call each other (host candidates, then
//! TURN only), record each other, and the refusals end with one clear line and exit status 1.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Server, command, free_port, run};
use serde_json::Value;

fn serve(extra: &[&str]) -> (Server, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--http",
        "127.0.0.1:0",
        "--listen",
        &listen,
        "--relay-ip",
        "127.0.0.1",
        "--allow-loopback-peers",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args, &[]);
    let base = format!("http://{}", server.http_addr());
    (server, base)
}

fn spawn_join(args: &[&str]) -> Child {
    command(&[&["join"], args].concat(), &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peercall join")
}

/// Waits (at most `limit`) for a join to exit; returns its status code, JSON lines and stderr.
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, Vec<Value>, String) {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_stats(lines: &[Value]) -> Value {
    lines
        .iter()
        .rev()
        .find(|l| l["event"] == "stats")
        .cloned()
        .unwrap_or(Value::Null)
}

fn ffprobe_frames(path: &str) -> Option<u64> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "0",
            "-show_entries",
            "stream=nb_read_frames,codec_name",
            "-of",
            "default=nw=1",
            path,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("nb_read_frames="))
        .and_then(|n| n.trim().parse().ok())
}

fn call(relay: bool, tcp: bool) {
    let (_server, base) = serve(&[]);
    let url = format!("{base}/r/native-call-{relay}-{tcp}");
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let rec = rec.to_str().unwrap();
    let mut common = vec!["--json", "--stats-interval", "2", "--expect-peers", "1"];
    if relay {
        common.push("--relay");
    }
    if tcp {
        common.push("--turn-tcp");
    }
    let first = spawn_join(
        &[
            &[url.as_str(), "--name", "Ann", "--duration", "9"],
            &common[..],
        ]
        .concat(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let second = spawn_join(
        &[
            &[
                url.as_str(),
                "--name",
                "Bob",
                "--duration",
                "7",
                "--record",
                rec,
                "--say",
                "hi Ann",
            ],
            &common[..],
        ]
        .concat(),
    );
    let (code_b, lines_b, err_b) = finish(second, Duration::from_secs(30));
    let (code_a, lines_a, err_a) = finish(first, Duration::from_secs(30));
    assert_eq!(code_a, Some(0), "Ann: {lines_a:?} {err_a}");
    assert_eq!(code_b, Some(0), "Bob: {lines_b:?} {err_b}");
    for lines in [&lines_a, &lines_b] {
        let s = last_stats(lines);
        assert!(s["video_frames_rx"].as_u64().unwrap() > 40, "{s}");
        assert!(s["audio_packets_rx"].as_u64().unwrap() > 100, "{s}");
        assert_eq!(s["route"], if relay { "relay" } else { "host" }, "{s}");
        let summary = lines.iter().find(|l| l["event"] == "summary").unwrap();
        assert_eq!(summary["ok"], true, "{summary}");
    }
    // Bob's chat reached Ann over the data channel.
    assert!(
        lines_a
            .iter()
            .any(|l| l["event"] == "chat" && l["text"] == "hi Ann"),
        "{lines_a:?}"
    );
    // Bob recorded Ann: an IVF and an Ogg named after her, decodable.
    let recorded: Vec<&Value> = lines_b
        .iter()
        .filter(|l| l["event"] == "recorded")
        .collect();
    assert_eq!(recorded.len(), 2, "{lines_b:?}");
    for r in recorded {
        let path = r["path"].as_str().unwrap();
        assert!(path.contains("/Ann-"), "{path}");
        assert!(r["frames"].as_u64().unwrap() > 40, "{r}");
        if let Some(frames) = ffprobe_frames(path) {
            assert!(frames > 40, "ffprobe read {frames} frames of {path}");
        }
    }
}

#[test]
fn two_native_peers_call_through_peercall_serve_with_media_both_ways() {
    call(false, false);
}

#[test]
fn two_native_peers_call_through_turn_only() {
    call(true, false);
}

#[test]
fn two_native_peers_call_through_turn_over_tcp() {
    call(true, true);
}

fn one_line_error(args: &[&str]) -> String {
    let out = run(&[&["join"], args].concat(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_links_other_servers_and_bad_files_end_with_one_clear_line() {
    let e = one_line_error(&["some-room"]);
    assert!(e.contains("not a room link"), "{e}");
    let e = one_line_error(&["https://example.com/rooms/x"]);
    assert!(e.contains("not a room link"), "{e}");

    // A web server that is not peercall.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let e = one_line_error(&[&format!("http://{addr}/r/room"), "--duration", "5"]);
    assert!(e.contains("not a peercall"), "{e}");
    // Nobody listening.
    let port = free_port();
    let e = one_line_error(&[&format!("http://127.0.0.1:{port}/r/room")]);
    assert!(e.contains("cannot reach"), "{e}");

    // A file that is not VP8.
    let dir = tempfile::tempdir().unwrap();
    let vp9 = dir.path().join("vp9.ivf");
    let mut ivf = b"DKIF\0\0\x20\0VP90\x40\x01\xf0\0\x1e\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0".to_vec();
    ivf.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    std::fs::write(&vp9, ivf).unwrap();
    let e = one_line_error(&[
        "http://127.0.0.1:1/r/room",
        "--video",
        vp9.to_str().unwrap(),
    ]);
    assert!(e.contains("not VP8"), "{e}");
    let e = one_line_error(&[
        "http://127.0.0.1:1/r/room",
        "--audio",
        vp9.to_str().unwrap(),
    ]);
    assert!(e.contains("not an Ogg"), "{e}");
}

#[test]
fn wrong_password_and_full_room_are_refused_with_one_line() {
    let (_server, base) = serve(&["--room-capacity", "2"]);
    let url = format!("{base}/r/locked-room");
    let first = spawn_join(&[
        &url,
        "--password",
        "right",
        "--duration",
        "15",
        "--no-video",
    ]);
    std::thread::sleep(Duration::from_millis(800));
    let e = one_line_error(&[&url, "--password", "wrong", "--duration", "5"]);
    assert!(e.contains("wrong password"), "{e}");
    let e = one_line_error(&[&url, "--duration", "5"]);
    assert!(e.contains("has a password"), "{e}");
    let second = spawn_join(&[
        &url,
        "--password",
        "right",
        "--duration",
        "15",
        "--no-audio",
    ]);
    std::thread::sleep(Duration::from_millis(800));
    let e = one_line_error(&[&url, "--password", "right", "--duration", "5"]);
    assert!(e.contains("is full"), "{e}");
    for mut c in [first, second] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A VP8 IVF of ffmpeg's test pattern (with noise) at `bitrate`, a keyframe every 15 frames (so encodings line up).
fn encode(dir: &std::path::Path, name: &str, bitrate: &str) -> String {
    let path = dir.join(name);
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=15:duration=4",
            // Noise, so that the encoder needs the bitrate it is given (the bare pattern compresses to little).
            "-vf",
            "noise=alls=20:allf=t",
            "-c:v",
            "libvpx",
            "-b:v",
            bitrate,
            "-g",
            "15",
            "-keyint_min",
            "15",
            "-auto-alt-ref",
            "0",
        ])
        .arg(&path)
        .output()
        .expect("ffmpeg (apt install ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.to_str().unwrap().to_string()
}

#[test]
fn several_video_files_are_one_video_at_several_bitrates_and_the_estimate_picks() {
    let dir = tempfile::tempdir().unwrap();
    let low = encode(dir.path(), "low.ivf", "100k");
    let high = encode(dir.path(), "high.ivf", "700k");
    let rec = dir.path().join("rec");
    let (_server, base) = serve(&[]);
    let url = format!("{base}/r/native-ladder");
    let common = ["--json", "--stats-interval", "1", "--expect-peers", "1"];
    let first = spawn_join(
        &[
            &[url.as_str(), "--name", "Ann", "--duration", "14"],
            &["--video", high.as_str(), "--video", low.as_str()][..],
            &common[..],
        ]
        .concat(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let second = spawn_join(
        &[
            &[url.as_str(), "--name", "Bob", "--duration", "12"],
            &["--record", rec.to_str().unwrap()][..],
            &common[..],
        ]
        .concat(),
    );
    let (code_b, lines_b, err_b) = finish(second, Duration::from_secs(40));
    let (code_a, lines_a, err_a) = finish(first, Duration::from_secs(40));
    assert_eq!(code_a, Some(0), "Ann: {lines_a:?} {err_a}");
    assert_eq!(code_b, Some(0), "Bob: {lines_b:?} {err_b}");
    let stats: Vec<&Value> = lines_a.iter().filter(|l| l["event"] == "stats").collect();
    let s = stats.last().unwrap();
    assert_eq!(s["video_encodings"], 2, "{s}");
    // It starts on the one within the starting estimate (300 kbit/s, less the audio): the low one; on loopback
    // the estimate climbs, and the high one follows.
    assert!(
        stats
            .iter()
            .any(|l| l["video_encoding"] == 0 && l["video_frames_tx"].as_u64() > Some(0)),
        "{stats:?}"
    );
    assert_eq!(s["video_encoding"], 1, "{stats:?}");
    assert!(
        s["estimate_kbps"].as_f64().unwrap() > s["video_kbps"].as_f64().unwrap(),
        "{s}"
    );
    // Bob's recording across the switch decodes.
    let video = lines_b
        .iter()
        .find(|l| l["event"] == "recorded" && l["kind"] == "video")
        .unwrap();
    let written = video["frames"].as_u64().unwrap();
    let path = video["path"].as_str().unwrap();
    let decoded = ffprobe_frames(path).expect("ffprobe");
    assert!(written > 100, "{video}");
    assert!(
        decoded.abs_diff(written) <= written / 10,
        "ffprobe decodes {decoded} of {written} frames"
    );
}

#[test]
fn a_probe_nobody_answers_fails_and_a_bad_token_is_refused() {
    let (_server, base) = serve(&[]);
    // The monitoring probe in an empty room: exit 1, the JSON summary says why, the last line on stderr too.
    let probe = spawn_join(&[
        &format!("{base}/r/empty-room"),
        "--json",
        "--duration",
        "3",
        "--expect-peers",
        "1",
    ]);
    let (code, lines, err) = finish(probe, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{lines:?} {err}");
    let summary = lines.iter().find(|l| l["event"] == "summary").unwrap();
    assert_eq!(summary["ok"], false, "{summary}");
    assert_eq!(summary["media_both_ways"], 0, "{summary}");
    assert!(
        err.contains("expected 1 peer(s) with media both ways, got 0"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // A server that wants join tokens: a made-up one is refused with one line.
    let (_server, base) = serve(&["--join-token-secret", "s3cret-for-the-test"]);
    let e = one_line_error(&[&format!("{base}/r/room?token=made.up"), "--duration", "5"]);
    assert!(e.contains("token"), "{e}");
    let e = one_line_error(&[&format!("{base}/r/room"), "--duration", "5"]);
    assert!(e.contains("token"), "{e}");
}

#[test]
fn two_native_peers_keep_their_call_across_a_signaling_server_restart() {
    let (http, turn) = (free_port(), free_port());
    let http_arg = format!("127.0.0.1:{http}");
    let listen = format!("127.0.0.1:{turn}");
    let args = [
        "serve",
        "--http",
        http_arg.as_str(),
        "--listen",
        listen.as_str(),
        "--relay-ip",
        "127.0.0.1",
        "--allow-loopback-peers",
    ];
    let server = Server::start(&args, &[]);
    let url = format!("http://{http_arg}/r/native-restart");
    let common = ["--json", "--stats-interval", "1", "--expect-peers", "1"];
    let first = spawn_join(
        &[
            &[url.as_str(), "--name", "Ann", "--duration", "16"],
            &common[..],
        ]
        .concat(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let second = spawn_join(
        &[
            &[url.as_str(), "--name", "Bob", "--duration", "15"],
            &common[..],
        ]
        .concat(),
    );
    std::thread::sleep(Duration::from_secs(5));
    // The server goes away (killed: no goodbye) and comes back on the same ports, knowing nobody.
    drop(server);
    std::thread::sleep(Duration::from_secs(2));
    let _server = Server::start(&args, &[]);
    let (code_b, lines_b, err_b) = finish(second, Duration::from_secs(40));
    let (code_a, lines_a, err_a) = finish(first, Duration::from_secs(40));
    assert_eq!(code_a, Some(0), "Ann: {lines_a:?} {err_a}");
    assert_eq!(code_b, Some(0), "Bob: {lines_b:?} {err_b}");
    for (who, lines) in [("Ann", &lines_a), ("Bob", &lines_b)] {
        // Up to the last status line: Bob's `bye` at the end of his --duration makes Ann's last event a leave.
        let last = lines.iter().rposition(|l| l["event"] == "stats").unwrap();
        let events: Vec<&str> = lines[..last]
            .iter()
            .filter_map(|l| l["event"].as_str())
            .filter(|e| *e != "stats")
            .collect();
        let lost = lines.iter().position(|l| l["event"] == "signaling-lost");
        let lost = lost.unwrap_or_else(|| panic!("{who} noticed nothing: {events:?}"));
        let joins = lines.iter().filter(|l| l["event"] == "joined").count();
        assert_eq!(joins, 2, "{who} joined again: {events:?}");
        assert!(
            lines.iter().any(|l| l["event"] == "rekeyed"),
            "{who}: {events:?}"
        );
        for gone in ["peer-left", "disconnected", "ice-restart"] {
            assert!(!events.contains(&gone), "{who}: {gone} in {events:?}");
        }
        // Media both ways after the restart, on the one connection.
        let at_loss = last_stats(&lines[..lost]);
        let end = last_stats(lines);
        let more = |k: &str| end[k].as_u64().unwrap() - at_loss[k].as_u64().unwrap();
        assert!(
            more("video_frames_rx") > 80 && more("video_frames_tx") > 80,
            "{who}: {at_loss} → {end}"
        );
        assert_eq!(end["restarts"], 0, "{end}");
        let summary = lines.iter().find(|l| l["event"] == "summary").unwrap();
        assert_eq!(summary["peers"], 1, "one person, not two ids: {summary}");
        assert_eq!(summary["ok"], true, "{summary}");
    }
}
