//! Child processes: reading a child's output while it runs, and a child
//! that attaches a program and is killed with SIGKILL (no Drop runs), as a
//! crashed replica: the test binary runs one of its own tests again,
//! selected by an environment variable only the parent sets.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

/// Reads `pipe` (a child's stdout or stderr) to its end on a thread of its
/// own, so that neither pipe can fill and stall the child; join for the
/// bytes.
pub fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// In the child test: the value of `key`, or None in a normal test run
/// (the child test is then a no-op).
pub fn child_spec(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// In the child test: tells the parent `line` (it waits for it) and waits
/// to be killed.
pub fn announce_and_wait(line: &str) {
    println!("{line}");
    std::io::Write::flush(&mut std::io::stdout()).expect("flush");
    std::thread::sleep(Duration::from_secs(60)); // killed long before
}

/// Runs test `child_test` of this binary with `key`=`value`, waits until it
/// prints a line containing `marker`, kills it with SIGKILL and returns
/// what followed the marker on that line and everything the child wrote on
/// stderr. Panics if the child exits without the marker.
pub fn run_child_and_kill_9(child_test: &str, key: &str, value: &str, marker: &str) -> (String, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(key, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    // libtest may print "test <name> ... " before the child's own line.
    let announced = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.trim_end().rsplit_once(marker).map(|(_, rest)| rest.to_string()));
    child.kill().expect("kill -9 the child"); // SIGKILL: no Drop runs
    child.wait().expect("reap child");
    let mut stderr = String::new();
    child.stderr.take().expect("child stderr").read_to_string(&mut stderr).expect("child stderr");
    let announced = announced.unwrap_or_else(|| panic!("child never said {marker:?}; stderr: {stderr}"));
    (announced, stderr)
}
