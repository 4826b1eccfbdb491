//! Client operation histories: what the load generator records
//! (`electrode client --history FILE`) and what the linearizability checker
//! ([`crate::check`]) reads. The simulator records the same [`Operation`]s
//! in memory.
//!
//! The file is JSON lines, one event per line, written as it happens (one
//! `write(2)` per line, so a killed client leaves everything up to its last
//! event; at most the final line is cut short, and the reader skips a cut
//! final line and says so). Every operation has an `invoke` line, written
//! before its request is sent, and at most one completion line:
//!
//! ```text
//! {"type":"invoke","client":7,"seq":1,"op":"put","key":"key-3","value":"7-1","time_ns":1000}
//! {"type":"ok","client":7,"seq":1,"op":"put","key":"key-3","result":true,"time_ns":1200}
//! ```
//!
//! - `type`: `invoke`; or the completion: `ok` (a reply came, `result`
//!   holds it), `fail` (the replicas rejected the operation; it had no
//!   effect; `error` says why) or `timeout` (no reply within the client's
//!   deadline: it may or may not have taken effect; with `error` "session
//!   evicted" the replicas answered that they no longer know the client, and
//!   an earlier copy of the request may have executed before the eviction).
//!   An `invoke` without a completion (a killed client) counts as a timeout.
//! - `client`, `seq`: client id and its request number; together they name
//!   the operation.
//! - `op`: `get` | `put` | `del` | `cas`; `key`; `value` for put and cas;
//!   `expected` for cas. Keys and values are UTF-8 strings.
//! - `result` (only on `ok`): get: the value, or `null` if the key is
//!   absent; put: `true`; del: `true` if the key existed, else `false`;
//!   cas: `true` if it swapped, else `false`.
//! - `time_ns`: CLOCK_MONOTONIC in nanoseconds, one clock for every client
//!   on the host, so the histories of successive or concurrent client
//!   processes check as one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Mutex;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::app::kv::{KvOp, KvResult};

/// One client operation: its invocation, and its response if one came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client_id: u64,
    pub request_number: u64,
    pub op: KvOp,
    /// None: the operation never returned (it may or may not have happened).
    /// `Some(KvResult::BadOp)`: the replicas rejected it (no effect).
    pub result: Option<KvResult>,
    /// Invocation time, ns (or ticks in the simulator) on one clock.
    pub invoke: u64,
    /// Return time on the same clock; None if it never returned.
    pub ret: Option<u64>,
}

/// How an operation ended, as a completion line records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// A reply came with this result.
    Ok(KvResult),
    /// No reply within the deadline: it may or may not have taken effect.
    Timeout,
    /// The replicas answered "session evicted": not executed on that
    /// request, but a copy sent before the eviction may have executed, so
    /// recorded as a timeout (unknown effect) with this reason.
    SessionEvicted,
}

/// `result` of an `ok` line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum ResultField<'a> {
    Flag(bool),
    #[serde(borrow)]
    Value(Cow<'a, str>),
}

/// One line of a history file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Line<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    client: u64,
    seq: u64,
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    value: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    expected: Option<Cow<'a, str>>,
    /// Present (possibly null) on `ok` lines only.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option", borrow)]
    result: Option<Option<ResultField<'a>>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    error: Option<Cow<'a, str>>,
    time_ns: u64,
}

/// Tells a missing `result` from `"result": null` (an absent key).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn invoke_line(client: u64, seq: u64, op: &KvOp, time_ns: u64) -> Line<'_> {
    let (value, expected) = match op {
        KvOp::Get { .. } | KvOp::Del { .. } => (None, None),
        KvOp::Put { value, .. } => (Some(text(value)), None),
        KvOp::Cas { expected, value, .. } => (Some(text(value)), Some(text(expected))),
    };
    Line {
        kind: "invoke".into(),
        client,
        seq,
        op: op.kind().into(),
        key: text(op.key()),
        value,
        expected,
        result: None,
        error: None,
        time_ns,
    }
}

fn completion_line<'a>(
    client: u64,
    seq: u64,
    op: &'a KvOp,
    completion: &'a Completion,
    time_ns: u64,
) -> Line<'a> {
    let (kind, result, error) = match completion {
        Completion::Timeout => ("timeout", None, None),
        Completion::SessionEvicted => ("timeout", None, Some("session evicted".into())),
        Completion::Ok(KvResult::BadOp) => ("fail", None, Some("bad_op".into())),
        Completion::Ok(KvResult::Value(v)) => {
            ("ok", Some(v.as_deref().map(|v| ResultField::Value(text(v)))), None)
        }
        Completion::Ok(KvResult::Stored) => ("ok", Some(Some(ResultField::Flag(true))), None),
        Completion::Ok(KvResult::Deleted(existed)) => ("ok", Some(Some(ResultField::Flag(*existed))), None),
        Completion::Ok(KvResult::Swapped(swapped)) => ("ok", Some(Some(ResultField::Flag(*swapped))), None),
    };
    Line {
        kind: kind.into(),
        client,
        seq,
        op: op.kind().into(),
        key: text(op.key()),
        value: None,
        expected: None,
        result,
        error,
        time_ns,
    }
}

/// Streams history lines to a file as operations start and end; shared by
/// the client threads. Each line is one `write(2)` of a whole line, so the
/// file holds every event up to the moment the process dies.
pub struct HistoryWriter<W: Write> {
    out: Mutex<W>,
}

impl<W: Write> HistoryWriter<W> {
    pub fn new(out: W) -> HistoryWriter<W> {
        HistoryWriter { out: Mutex::new(out) }
    }

    fn write_line(&self, line: &Line<'_>) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec(line).context("encoding history line")?;
        bytes.push(b'\n');
        let mut out = self.out.lock().map_err(|_| anyhow::anyhow!("history writer poisoned"))?;
        out.write_all(&bytes).context("writing history line")
    }

    /// Records that `op` starts; call before its request is sent.
    pub fn invoke(&self, client: u64, seq: u64, op: &KvOp, time_ns: u64) -> anyhow::Result<()> {
        self.write_line(&invoke_line(client, seq, op, time_ns))
    }

    /// Records how `op` ended.
    pub fn complete(
        &self,
        client: u64,
        seq: u64,
        op: &KvOp,
        completion: &Completion,
        time_ns: u64,
    ) -> anyhow::Result<()> {
        self.write_line(&completion_line(client, seq, op, completion, time_ns))
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes finished operations in the file format, events in time order
/// (the generator and tests; the client streams with [`HistoryWriter`]).
pub fn write_history(out: &mut impl Write, ops: &[Operation]) -> anyhow::Result<()> {
    // (time, completion after invoke at equal times, op index)
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (index, o) in ops.iter().enumerate() {
        events.push((o.invoke, false, index));
        if o.result.is_some() {
            events.push((o.ret.unwrap_or(o.invoke), true, index));
        }
    }
    events.sort_unstable();
    for (time, is_completion, index) in events {
        let o = &ops[index];
        let line = if is_completion {
            let completion = Completion::Ok(o.result.clone().unwrap_or(KvResult::BadOp));
            let line = completion_line(o.client_id, o.request_number, &o.op, &completion, time);
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            continue;
        } else {
            invoke_line(o.client_id, o.request_number, &o.op, time)
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A history file as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadHistory {
    /// Operations in the order of their invoke lines.
    pub ops: Vec<Operation>,
    /// Line number of a final line cut short (a killed writer), skipped.
    pub truncated_final_line: Option<usize>,
}

fn parse_op(line: &Line<'_>) -> anyhow::Result<KvOp> {
    let key = line.key.as_bytes().to_vec();
    let need = |field: &Option<Cow<'_, str>>, name: &str| {
        field.as_ref().map(|s| s.as_bytes().to_vec()).with_context(|| format!("{} without {name}", line.op))
    };
    Ok(match line.op.as_ref() {
        "get" => KvOp::Get { key },
        "del" => KvOp::Del { key },
        "put" => KvOp::Put { key, value: need(&line.value, "value")? },
        "cas" => {
            KvOp::Cas { key, expected: need(&line.expected, "expected")?, value: need(&line.value, "value")? }
        }
        other => bail!("unknown op {other:?}"),
    })
}

fn parse_result(op: &KvOp, result: &Option<Option<ResultField<'_>>>) -> anyhow::Result<KvResult> {
    let Some(result) = result else { bail!("ok line without result") };
    Ok(match (op, result) {
        (KvOp::Get { .. }, None) => KvResult::Value(None),
        (KvOp::Get { .. }, Some(ResultField::Value(v))) => KvResult::Value(Some(v.as_bytes().to_vec())),
        (KvOp::Put { .. }, Some(ResultField::Flag(true))) => KvResult::Stored,
        (KvOp::Del { .. }, Some(ResultField::Flag(existed))) => KvResult::Deleted(*existed),
        (KvOp::Cas { .. }, Some(ResultField::Flag(swapped))) => KvResult::Swapped(*swapped),
        (op, result) => bail!("result {result:?} does not fit a {}", op.kind()),
    })
}

/// Reads a history file; an error names the line. A final line without
/// its newline that does not parse is what a killed writer leaves: it is
/// skipped and reported in [`ReadHistory::truncated_final_line`].
pub fn read(mut input: impl BufRead) -> anyhow::Result<ReadHistory> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).context("reading history")?;
    let mut ops: Vec<Operation> = Vec::new();
    let mut open: HashMap<(u64, u64), usize> = HashMap::new();
    let mut truncated_final_line = None;
    let line_count = bytes.split(|b| *b == b'\n').count();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let is_last_without_newline = number == line_count;
        let line: Line<'_> = match std::str::from_utf8(raw)
            .map_err(anyhow::Error::from)
            .and_then(|s| serde_json::from_str(s).map_err(anyhow::Error::from))
        {
            Ok(line) => line,
            Err(_) if is_last_without_newline => {
                truncated_final_line = Some(number);
                break;
            }
            Err(error) => return Err(error).with_context(|| format!("history line {number}")),
        };
        let id = (line.client, line.seq);
        if line.kind == "invoke" {
            let op = parse_op(&line).with_context(|| format!("history line {number}"))?;
            if open.insert(id, ops.len()).is_some() {
                bail!("history line {number}: client {} seq {} invoked twice", id.0, id.1);
            }
            ops.push(Operation {
                client_id: line.client,
                request_number: line.seq,
                op,
                result: None,
                invoke: line.time_ns,
                ret: None,
            });
            continue;
        }
        let Some(at) = open.remove(&id) else {
            bail!(
                "history line {number}: {} of client {} seq {} without its invoke line",
                line.kind,
                id.0,
                id.1
            );
        };
        let invoked = &mut ops[at];
        if invoked.op.kind() != line.op || invoked.op.key() != line.key.as_bytes() {
            bail!("history line {number}: client {} seq {} completes a different operation", id.0, id.1);
        }
        if line.time_ns < invoked.invoke {
            bail!("history line {number}: client {} seq {} ends before it starts", id.0, id.1);
        }
        match line.kind.as_ref() {
            "ok" => {
                invoked.result = Some(
                    parse_result(&invoked.op, &line.result)
                        .with_context(|| format!("history line {number}"))?,
                );
                invoked.ret = Some(line.time_ns);
            }
            "fail" => {
                invoked.result = Some(KvResult::BadOp);
                invoked.ret = Some(line.time_ns);
            }
            "timeout" => {}
            other => bail!("history line {number}: unknown type {other:?}"),
        }
    }
    Ok(ReadHistory { ops, truncated_final_line })
}

/// [`read`], operations only.
pub fn read_history(input: impl BufRead) -> anyhow::Result<Vec<Operation>> {
    Ok(read(input)?.ops)
}

/// A linearizable history by construction, for tests and for timing the
/// checker (`cargo run --release --example history_gen`): `clients`
/// sequential clients over `keys` keys; each operation gets a random
/// interval and a linearization point inside it, the results come from
/// applying the operations to a [`crate::app::kv::KvStore`] in the order of
/// those points, so intervals overlap as in a real run. About one operation
/// in a thousand never returns (and took effect or not, at random).
pub fn generate_valid(seed: u64, ops: usize, clients: u64, keys: u64) -> Vec<Operation> {
    use crate::app::kv::KvStore;
    use crate::transport::os::SplitMix;
    assert!(clients > 0 && keys > 0);
    let mut rng = SplitMix(seed);
    // (linearization point, takes effect, operation)
    let mut planned: Vec<(u64, bool, Operation)> = Vec::with_capacity(ops);
    let mut clock: Vec<u64> = vec![0; clients as usize];
    let mut written: Vec<Vec<u8>> = Vec::new();
    for index in 0..ops {
        let client = index as u64 % clients;
        let request_number = index as u64 / clients + 1;
        let invoke = clock[client as usize] + 1 + rng.below(50);
        let point = invoke + 1 + rng.below(200);
        let ret = point + 1 + rng.below(200);
        clock[client as usize] = ret;
        let key = format!("key-{}", rng.below(keys)).into_bytes();
        let value = format!("{client:x}-{request_number}").into_bytes();
        let op = match rng.below(100) {
            0..=44 => KvOp::Put { key, value: value.clone() },
            45..=89 => KvOp::Get { key },
            90..=94 => match written.len() {
                0 => KvOp::Get { key },
                n => KvOp::Cas {
                    key,
                    expected: written[rng.below(n as u64) as usize].clone(),
                    value: value.clone(),
                },
            },
            _ => KvOp::Del { key },
        };
        if written.len() < 64 {
            written.push(value);
        } else {
            let slot = rng.below(64) as usize;
            written[slot] = value;
        }
        let pending = rng.below(1000) == 0;
        let takes_effect = !pending || rng.below(2) == 0;
        planned.push((
            point,
            takes_effect,
            Operation {
                client_id: client,
                request_number,
                op,
                result: None,
                invoke,
                ret: (!pending).then_some(ret),
            },
        ));
    }
    planned.sort_by_key(|(point, _, _)| *point);
    let mut store = KvStore::default();
    let mut history: Vec<Operation> = planned
        .into_iter()
        .map(|(_, takes_effect, mut op)| {
            if takes_effect {
                let result = store.apply(&op.op);
                if op.ret.is_some() {
                    op.result = Some(result);
                }
            }
            op
        })
        .collect();
    history.sort_by_key(|o| o.invoke);
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Operation> {
        vec![
            Operation {
                client_id: 7,
                request_number: 1,
                op: KvOp::Cas { key: b"k".to_vec(), expected: b"a".to_vec(), value: b"b".to_vec() },
                result: Some(KvResult::Swapped(false)),
                invoke: 10,
                ret: Some(20),
            },
            Operation {
                client_id: 7,
                request_number: 2,
                op: KvOp::Get { key: b"k".to_vec() },
                result: None,
                invoke: 30,
                ret: None,
            },
            Operation {
                client_id: 8,
                request_number: 1,
                op: KvOp::Get { key: b"k".to_vec() },
                result: Some(KvResult::Value(None)),
                invoke: 12,
                ret: Some(14),
            },
            Operation {
                client_id: 8,
                request_number: 2,
                op: KvOp::Put { key: b"k".to_vec(), value: b"v".to_vec() },
                result: Some(KvResult::Stored),
                invoke: 15,
                ret: Some(16),
            },
            Operation {
                client_id: 8,
                request_number: 3,
                op: KvOp::Get { key: b"k".to_vec() },
                result: Some(KvResult::Value(Some(b"v".to_vec()))),
                invoke: 17,
                ret: Some(18),
            },
            Operation {
                client_id: 8,
                request_number: 4,
                op: KvOp::Del { key: b"k".to_vec() },
                result: Some(KvResult::BadOp),
                invoke: 19,
                ret: Some(21),
            },
        ]
    }

    #[test]
    fn history_round_trips_through_json_lines() {
        let mut ops = sample();
        let mut buf = Vec::new();
        write_history(&mut buf, &ops).unwrap();
        let read_back = read(&buf[..]).unwrap();
        assert_eq!(read_back.truncated_final_line, None);
        ops.sort_by_key(|o| o.invoke);
        assert_eq!(read_back.ops, ops);
        assert!(read_history(&b"{\"kind\":1}\n"[..]).unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn results_are_json_values_not_strings() {
        let mut buf = Vec::new();
        write_history(&mut buf, &sample()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains(r#""op":"get","key":"k","result":null"#), "{text}");
        assert!(text.contains(r#""op":"get","key":"k","result":"v""#), "{text}");
        assert!(text.contains(r#""op":"cas","key":"k","result":false"#), "{text}");
        assert!(text.contains(r#""op":"put","key":"k","result":true"#), "{text}");
        assert!(
            text.contains(r#""type":"fail","client":8,"seq":4,"op":"del","key":"k","error":"bad_op""#),
            "{text}"
        );
    }

    #[test]
    fn session_evicted_is_a_timeout_with_its_reason() {
        let writer = HistoryWriter::new(Vec::new());
        let cas = KvOp::Cas { key: b"k".to_vec(), expected: b"v".to_vec(), value: b"w".to_vec() };
        writer.invoke(3, 2, &cas, 140).unwrap();
        writer.complete(3, 2, &cas, &Completion::SessionEvicted, 950).unwrap();
        let bytes = writer.into_inner();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let line = r#""type":"timeout","client":3,"seq":2,"op":"cas","key":"k","error":"session evicted""#;
        assert!(text.contains(line), "{text}");
        let history = read(&bytes[..]).unwrap();
        assert_eq!(history.ops.len(), 1);
        assert_eq!(history.ops[0].result, None, "an eviction's effect is unknown");
        assert_eq!(history.ops[0].ret, None);
    }

    #[test]
    fn streamed_events_pair_up_and_a_cut_final_line_is_skipped() {
        let writer = HistoryWriter::new(Vec::new());
        let put = KvOp::Put { key: b"k".to_vec(), value: b"v".to_vec() };
        let get = KvOp::Get { key: b"k".to_vec() };
        writer.invoke(1, 1, &put, 100).unwrap();
        writer.invoke(2, 1, &get, 110).unwrap();
        writer.complete(1, 1, &put, &Completion::Ok(KvResult::Stored), 120).unwrap();
        writer.complete(2, 1, &get, &Completion::Timeout, 900).unwrap();
        writer.invoke(1, 2, &get, 130).unwrap();
        let bytes = writer.into_inner();
        let history = read(&bytes[..]).unwrap();
        assert_eq!(history.ops.len(), 3);
        assert_eq!(history.ops[0].ret, Some(120));
        assert_eq!(history.ops[1].result, None, "a timeout is indeterminate");
        assert_eq!(history.ops[2].ret, None, "an invoke without completion is pending");
        // Cut anywhere inside the last line: the line is skipped, said so.
        let last_start = bytes[..bytes.len() - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        for cut in last_start + 1..bytes.len() - 1 {
            let history = read(&bytes[..cut]).unwrap();
            assert_eq!(history.ops.len(), 2, "cut at {cut}");
            assert_eq!(history.truncated_final_line, Some(5));
        }
        // A broken line in the middle is an error naming it.
        let mut broken = bytes[..last_start - 3].to_vec();
        broken.extend_from_slice(b"\n");
        broken.extend_from_slice(&bytes[last_start..]);
        let error = read(&broken[..]).unwrap_err();
        assert!(format!("{error:#}").contains("history line 4"), "{error:#}");
    }

    #[test]
    fn completions_must_match_their_invoke() {
        let lines = "{\"type\":\"ok\",\"client\":1,\"seq\":1,\"op\":\"put\",\"key\":\"k\",\"result\":true,\"time_ns\":5}\n";
        assert!(read(lines.as_bytes()).unwrap_err().to_string().contains("without its invoke line"));
        let lines = "{\"type\":\"invoke\",\"client\":1,\"seq\":1,\"op\":\"put\",\"key\":\"k\",\"value\":\"v\",\"time_ns\":5}\n\
                     {\"type\":\"ok\",\"client\":1,\"seq\":1,\"op\":\"put\",\"key\":\"k\",\"result\":\"v\",\"time_ns\":6}\n";
        let error = read(lines.as_bytes()).unwrap_err();
        assert!(format!("{error:#}").contains("does not fit a put"), "{error:#}");
    }
}
