//! The cluster configuration, in the original Electrode's format:
//!
//! ```text
//! f 1
//! replica 10.77.0.11:7001
//! replica 10.77.0.12:7001
//! replica 10.77.0.13:7001
//! ```
//!
//! `f <n>` once, then exactly 2f+1 `replica <host>:<port>` lines (the order
//! gives the replica index). `#` starts a comment; blank lines are ignored.
//! Hosts are IPv4 literals or names that resolve to IPv4 (the eBPF programs
//! parse IPv4). An optional `cluster <id>` line sets the cluster id carried by
//! every datagram; by default it is derived from the replica addresses, so
//! two different clusters never accept each other's traffic.
//!
//! Every error is one line: `file:line: problem`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::app::{fnv1a, FNV_OFFSET};
use crate::wire::MAX_REPLICA_COUNT;

/// Largest f whose 2f+1 replicas fit ELECTRODE_MAX_REPLICAS.
pub const F_MAX: usize = (MAX_REPLICA_COUNT - 1) / 2;

/// A parsed, validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Failures tolerated.
    pub f: usize,
    /// 2f+1 replica addresses, index = position.
    pub replicas: Vec<SocketAddrV4>,
    /// Carried in every datagram header.
    pub cluster_id: u32,
}

/// A configuration error: file, line (0 when it concerns the whole file)
/// and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.problem)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            problem: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses `text` (named `path` in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let error = |line: usize, problem: String| ConfigError { path: path.to_path_buf(), line, problem };
        let mut f: Option<(usize, usize)> = None; // (value, line)
        let mut cluster: Option<u32> = None;
        let mut replicas: Vec<(SocketAddrV4, usize)> = Vec::new();

        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("");
            let argument = words.next();
            if let Some(extra) = words.next() {
                return Err(error(line_no, format!("unexpected {extra:?} after `{keyword}` argument")));
            }
            match keyword {
                "f" => {
                    if let Some((_, first)) = f {
                        return Err(error(line_no, format!("`f` given twice (first on line {first})")));
                    }
                    let arg = argument.ok_or_else(|| error(line_no, "`f` needs a number".into()))?;
                    let value: usize =
                        arg.parse().map_err(|_| error(line_no, format!("f {arg:?} is not a number")))?;
                    if value == 0 || value > F_MAX {
                        return Err(error(line_no, format!("f {value} out of range: must be 1..={F_MAX}")));
                    }
                    f = Some((value, line_no));
                }
                "cluster" => {
                    if cluster.is_some() {
                        return Err(error(line_no, "`cluster` given twice".into()));
                    }
                    let arg = argument.ok_or_else(|| error(line_no, "`cluster` needs a number".into()))?;
                    let value = arg
                        .parse()
                        .map_err(|_| error(line_no, format!("cluster {arg:?} is not a 32-bit number")))?;
                    cluster = Some(value);
                }
                "replica" => {
                    let arg =
                        argument.ok_or_else(|| error(line_no, "`replica` needs <host>:<port>".into()))?;
                    let address = parse_address(arg).map_err(|p| error(line_no, p))?;
                    if let Some((_, first)) = replicas.iter().find(|(a, _)| *a == address) {
                        return Err(error(
                            line_no,
                            format!("duplicate address {address} (also on line {first})"),
                        ));
                    }
                    replicas.push((address, line_no));
                }
                other => {
                    return Err(error(
                        line_no,
                        format!("unknown keyword {other:?} (expected f, replica or cluster)"),
                    ));
                }
            }
        }

        let Some((f, f_line)) = f else {
            return Err(error(0, "missing `f <n>` line".into()));
        };
        let wanted = 2 * f + 1;
        if replicas.len() != wanted {
            return Err(error(
                f_line,
                format!("f {f} needs exactly {wanted} replica lines (2f+1), found {}", replicas.len()),
            ));
        }
        let replicas: Vec<SocketAddrV4> = replicas.into_iter().map(|(a, _)| a).collect();
        let cluster_id = cluster.unwrap_or_else(|| derived_cluster_id(&replicas));
        Ok(Config { path: path.to_path_buf(), f, replicas, cluster_id })
    }

    /// 2f+1.
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// Index of the replica with this address, if it is one.
    pub fn index_of(&self, address: SocketAddrV4) -> Option<usize> {
        self.replicas.iter().position(|a| *a == address)
    }
}

/// A stable id from the addresses: equal configs agree without coordination.
fn derived_cluster_id(replicas: &[SocketAddrV4]) -> u32 {
    let mut hash = FNV_OFFSET;
    for a in replicas {
        hash = fnv1a(hash, &a.ip().octets());
        hash = fnv1a(hash, &a.port().to_be_bytes());
    }
    (hash ^ (hash >> 32)) as u32
}

/// `<host>:<port>` with an IPv4 literal or a name resolving to IPv4.
fn parse_address(text: &str) -> Result<SocketAddrV4, String> {
    let (host, port) =
        text.rsplit_once(':').ok_or_else(|| format!("address {text:?} is not <host>:<port>"))?;
    if host.is_empty() {
        return Err(format!("address {text:?} has no host"));
    }
    let port: u16 = match port.parse() {
        Ok(0) | Err(_) => return Err(format!("bad port {port:?} in {text:?}: must be 1..=65535")),
        Ok(p) => p,
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddrV4::new(ip, port));
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() || host.starts_with('[') {
        return Err(format!("host {host:?} is IPv6: only IPv4 is supported"));
    }
    let resolved =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve host {host:?}: {e}"))?;
    resolved
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| format!("host {host:?} has no IPv4 address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("test.txt"), text).map_err(|e| e.to_string())
    }

    const GOOD: &str = "# a cluster\nf 1\n\nreplica 10.77.0.11:7001  # first\nreplica 10.77.0.12:7001\nreplica localhost:7002\n";

    #[test]
    fn parses_example_with_comments_blank_lines_and_names() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.f, 1);
        assert_eq!(c.replica_count(), 3);
        assert_eq!(c.replicas[0], "10.77.0.11:7001".parse().unwrap());
        assert_eq!(c.replicas[2], "127.0.0.1:7002".parse().unwrap());
        assert_eq!(c.index_of("10.77.0.12:7001".parse().unwrap()), Some(1));
        // Derived ids are stable and depend on the addresses.
        assert_eq!(c.cluster_id, parse(GOOD).unwrap().cluster_id);
        assert_ne!(c.cluster_id, parse(&GOOD.replace("7002", "7003")).unwrap().cluster_id);
        assert_eq!(parse(&format!("cluster 42\n{GOOD}")).unwrap().cluster_id, 42);
    }

    #[test]
    fn shipped_config_is_valid() {
        let c = Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.txt"))).unwrap();
        assert_eq!(c.replica_count(), 2 * c.f + 1);
    }

    #[test]
    fn wrong_count_names_the_f_line_and_the_count() {
        let e = parse("\nf 1\nreplica 10.0.0.1:1\nreplica 10.0.0.2:1\n").unwrap_err();
        assert_eq!(e, "test.txt:2: f 1 needs exactly 3 replica lines (2f+1), found 2");
        assert!(parse(
            "f 1\nreplica 10.0.0.1:1\nreplica 10.0.0.2:1\nreplica 10.0.0.3:1\nreplica 10.0.0.4:1\n"
        )
        .unwrap_err()
        .contains("found 4"));
    }

    #[test]
    fn each_error_is_one_line_naming_file_line_and_problem() {
        let cases = [
            ("f 1\nreplica 10.0.0.1:0\n", "test.txt:2: bad port \"0\""),
            ("f 1\nreplica 10.0.0.1:70000\n", "test.txt:2: bad port \"70000\""),
            ("f 1\nreplica 10.0.0.1:x\n", "test.txt:2: bad port \"x\""),
            ("f 1\nreplica 10.0.0.1\n", "test.txt:2: address \"10.0.0.1\" is not <host>:<port>"),
            ("f 1\nreplica :80\n", "test.txt:2: address \":80\" has no host"),
            (
                "f 1\nreplica 10.0.0.1:5\nreplica 10.0.0.1:5\n",
                "test.txt:3: duplicate address 10.0.0.1:5 (also on line 2)",
            ),
            ("f 1\nleader 10.0.0.1:5\n", "test.txt:2: unknown keyword \"leader\""),
            ("f x\n", "test.txt:1: f \"x\" is not a number"),
            ("f 0\n", "test.txt:1: f 0 out of range"),
            ("f 9\n", "test.txt:1: f 9 out of range"),
            ("f 1\nf 1\n", "test.txt:2: `f` given twice (first on line 1)"),
            ("f\n", "test.txt:1: `f` needs a number"),
            ("f 1 2\n", "test.txt:1: unexpected \"2\" after `f` argument"),
            ("replica 10.0.0.1:5\n", "test.txt: missing `f <n>` line"),
            ("f 1\nreplica ::1:5\n", "is IPv6"),
            ("f 1\nreplica no-such-host.invalid:5\n", "test.txt:2: cannot resolve host"),
            ("cluster x\n", "test.txt:1: cluster \"x\" is not a 32-bit number"),
            ("cluster 1\ncluster 2\n", "test.txt:2: `cluster` given twice"),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_err();
            assert!(got.starts_with(want) || got.contains(want), "{text:?}: got {got:?}, want {want:?}");
            assert!(!got.contains('\n'), "multi-line error {got:?}");
        }
        let missing = Config::load(Path::new("/nonexistent/electrode.txt")).unwrap_err().to_string();
        assert!(missing.starts_with("/nonexistent/electrode.txt: cannot read"), "{missing}");
    }
}
