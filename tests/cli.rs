//! The `electrode client` command line without a cluster (no root): the
//! size limits are checked before anything is sent and a cluster that does
//! not answer ends the run with one error line and exit 1. The
//! configuration names loopback ports nothing listens on (UDP 1-3), so
//! the datagrams go nowhere.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_electrode");

fn down_config() -> tempfile_path::Path {
    tempfile_path::Path::new("f 1\nreplica 127.0.0.1:1\nreplica 127.0.0.1:2\nreplica 127.0.0.1:3\n")
}

/// A config file removed on drop.
mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);
    impl Path {
        pub fn new(text: &str) -> Path {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("electrode-cli-{}-{n}.txt", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Path(path)
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn client(config: &tempfile_path::Path, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(BIN).arg("client").arg("-c").arg(&config.0).args(args).output().unwrap();
    (out, start.elapsed())
}

fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one error line expected: {stderr:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", String::from_utf8_lossy(&out.stdout));
    stderr
}

#[test]
fn down_cluster_is_one_error_naming_the_replicas_within_the_bound() {
    let config = down_config();
    let (out, elapsed) = client(&config, &["-n", "10"]);
    assert_eq!(out.status.code(), Some(1));
    let error = one_error_line(&out);
    assert!(error.starts_with("electrode: no replica answered at all within 3.1 s"), "{error}");
    for address in ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"] {
        assert!(error.contains(address), "{error}");
    }
    assert!(error.contains("check that the replicas are running"), "{error}");
    assert!(elapsed >= Duration::from_millis(3150) && elapsed < Duration::from_secs(8), "{elapsed:?}");

    let (out, elapsed) = client(&config, &["-n", "10", "-t", "3", "--unreachable-ms", "300"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_error_line(&out).contains("within 0.3 s"));
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    // One command, option after the subcommand.
    let (out, _) = client(&config, &["get", "k", "--unreachable-ms", "200"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_error_line(&out).contains("no replica answered at all within 0.2 s"));
}

#[test]
fn value_size_limit_is_the_encoders_checked_before_sending() {
    let config = down_config();
    let max = electrode::client::value_size_max(1000);
    let (out, elapsed) = client(&config, &["--value-size", &(max + 1).to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let error = one_error_line(&out);
    assert_eq!(
        error.trim_end(),
        format!(
            "electrode: --value-size {} too large: at most {max} with --keys 1000 (a cas carries two values in one \
             1024-byte operation)",
            max + 1
        )
    );
    assert!(elapsed < Duration::from_secs(1), "refused before any send: {elapsed:?}");
    // The maximum passes the check and encodes: the run gets as far as
    // finding nobody to answer.
    let (out, _) = client(&config, &["--value-size", &max.to_string(), "-n", "5", "--unreachable-ms", "200"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_error_line(&out).contains("no replica answered"));
    // Fewer keys, shorter keys, a larger limit.
    assert!(electrode::client::value_size_max(10) > max);

    let big = "v".repeat(2000);
    let (out, elapsed) = client(&config, &["put", "k", &big]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_error_line(&out)
        .contains("put of 2006 encoded bytes too large: an operation is at most 1024 bytes"));
    assert!(elapsed < Duration::from_secs(1));
}

#[test]
fn duration_must_be_positive() {
    let config = down_config();
    for bad in ["0", "-1", "nan"] {
        let (out, _) = client(&config, &[&format!("--duration={bad}")]);
        assert_ne!(out.status.code(), Some(0), "--duration {bad}");
        assert!(one_error_line(&out).contains("--duration"), "--duration {bad}");
    }
}

#[test]
fn sessions_and_rate_are_checked_before_anything_is_sent() {
    let config = down_config();
    for (args, flag) in [
        (&["--sessions", "0"][..], "--sessions"),
        (&["--sessions", "4097"], "--sessions"),
        (&["--rate", "0"], "--rate"),
        (&["--rate", "1000000001"], "--rate"),
    ] {
        let (out, elapsed) = client(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(one_error_line(&out).contains(flag), "{args:?}");
        assert!(elapsed < Duration::from_secs(1), "{args:?}: refused before any send: {elapsed:?}");
    }
    // More sessions in all than the replicas' client table holds: they
    // would evict each other.
    let (out, elapsed) = client(&config, &["-t", "17", "--sessions", "4000"]);
    assert_eq!(out.status.code(), Some(1));
    let error = one_error_line(&out);
    assert!(error.contains("17 threads x 4000 sessions = 68000 client sessions: at most 65536"), "{error}");
    assert!(elapsed < Duration::from_secs(1), "refused before any send: {elapsed:?}");

    let help = Command::new(BIN).args(["client", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--sessions <SESSIONS>", "--rate <OPS_PER_S>", "intended send time"] {
        assert!(help.contains(flag), "client --help lacks {flag:?}:\n{help}");
    }
}

#[test]
fn check_history_exit_status_report_and_json() {
    use electrode::app::kv::{KvOp, KvResult};
    let dir = std::env::temp_dir().join(format!("electrode-cli-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, ops: &[electrode::history::Operation]| {
        let mut bytes = Vec::new();
        electrode::history::write_history(&mut bytes, ops).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let check = |args: &[&std::path::Path], json: bool| {
        let mut cmd = Command::new(BIN);
        cmd.arg("check-history").args(args);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let mut history = electrode::history::generate_valid(11, 20_000, 4, 10);
    let good = write("good.jsonl", &history);
    let out = check(&[&good], false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("linearizable (20000 operations"));

    // A get that sees a value no one wrote.
    let at = history.iter().rposition(|o| matches!(o.op, KvOp::Get { .. }) && o.result.is_some()).unwrap();
    history[at].result = Some(KvResult::Value(Some(b"never written".to_vec())));
    let bad = write("bad.jsonl", &history);
    let out = check(&[&bad], false);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not linearizable on key"), "{stdout}");
    assert!(stdout.contains("get -> \"never written\""), "{stdout}");
    assert!(stdout.lines().count() <= electrode::check::WINDOW_MAX + 2, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not linearizable on key"), "{stderr}");
    let out = check(&[&bad], true);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["linearizable"], false);
    assert!(json["window"].as_array().unwrap().iter().any(|w| w["result"] == "never written"), "{json}");

    // A final line cut short is skipped and said so.
    let text = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.jsonl");
    std::fs::write(&cut, &text[..text.len() - 10]).unwrap();
    let out = check(&[&cut], false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut short"));
    // A broken line elsewhere is an error naming it.
    let mut broken = b"{\"type\":\"invoke\"\n".to_vec();
    broken.extend_from_slice(&text);
    std::fs::write(&cut, broken).unwrap();
    let out = check(&[&cut], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("history line 1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_not_in_a_panic() {
    // The reading end is gone before the command starts, so its first
    // write fails (EPIPE): as with `electrode check-config | head -0`.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.txt");
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&config)
        .stdout(writer)
        .output()
        .expect("run electrode check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a closed pipe made it panic: {stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "ended by {:?}, stderr: {stderr}", out.status);
}

#[test]
fn accept_data_loss_is_a_replica_flag_whose_help_says_what_is_lost() {
    let out = Command::new(BIN).args(["replica", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let (_, text) = help.split_once("--accept-data-loss").unwrap_or_else(|| panic!("{help}"));
    let text = text.split("\n  -").next().unwrap_or("");
    for words in
        ["acknowledged writes", "LOST", "as few replicas as needed for a quorum", "f+1 minus the holders"]
    {
        assert!(text.contains(words), "--accept-data-loss help lacks {words:?}: {text}");
    }
    // Only the replica takes it.
    let out = Command::new(BIN).args(["status", "--accept-data-loss"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
