//! The shipped systemd unit (dist/peercall.service): `systemd-analyze verify` accepts it without a warning, it has
//! the options docs/deploy.md promises, and its command line is one peercall accepts.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::Command;

const UNIT: &str = include_str!("../../../dist/peercall.service");

/// `Key=value` lines of the unit (comments and sections left out).
fn directives() -> Vec<(&'static str, &'static str)> {
    UNIT.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect()
}

fn value(key: &str) -> &'static str {
    directives()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("dist/peercall.service has no {key}="))
}

#[test]
fn unit_has_the_promised_options() {
    for (key, want) in [
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "peercall"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(value(key), want, "{key}");
    }
    let nofile: u64 = value("LimitNOFILE").parse().expect("a number");
    assert!(nofile >= 65_536, "LimitNOFILE={nofile} is low for a relay");
    assert!(value("ExecStart").starts_with("/usr/local/bin/peercall serve"));
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    // verify wants the ExecStart binary to exist: the unit as shipped, with the path of the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("peercall.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/peercall", common::BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze ({e}): apt-get install systemd"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt options are warnings with exit status 0: none may appear for our unit.
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("peercall.service"))
        .collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn exec_start_is_a_command_line_peercall_accepts() {
    let exec = value("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let mut with_print = args.clone();
    with_print.push("--print-config");
    let out = common::run(&with_print, &[]);
    assert!(
        out.status.success(),
        "peercall {with_print:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("http = \"0.0.0.0:443\""));
}
