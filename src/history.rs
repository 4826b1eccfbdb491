//! Client operation histories: what the load generator records
//! (`electrode client --history FILE`, one JSON object per line) and what
//! the linearizability checker ([`crate::check`]) reads. The simulator
//! records the same [`Operation`]s in memory.

use std::io::{BufRead, Write};

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
    pub result: Option<KvResult>,
    /// Invocation time, ns (or ticks in the simulator) on one clock.
    pub invoke: u64,
    /// Return time on the same clock; None if it never returned.
    pub ret: Option<u64>,
}

/// The JSON shape of one line. Keys and values are written as strings
/// (the load generator uses ASCII keys and values).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub client_id: u64,
    pub request_number: u64,
    /// get | put | del | cas
    pub kind: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// value:<v> | absent | stored | deleted | not_found | swapped | not_swapped | bad_op;
    /// absent from the line if the operation never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    pub invoke_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_ns: Option<u64>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn result_text(result: &KvResult) -> String {
    match result {
        KvResult::Value(Some(v)) => format!("value:{}", text(v)),
        KvResult::Value(None) => "absent".to_string(),
        KvResult::Stored => "stored".to_string(),
        KvResult::Deleted(true) => "deleted".to_string(),
        KvResult::Deleted(false) => "not_found".to_string(),
        KvResult::Swapped(true) => "swapped".to_string(),
        KvResult::Swapped(false) => "not_swapped".to_string(),
        KvResult::BadOp => "bad_op".to_string(),
    }
}

fn parse_result(s: &str) -> Option<KvResult> {
    if let Some(v) = s.strip_prefix("value:") {
        return Some(KvResult::Value(Some(v.as_bytes().to_vec())));
    }
    Some(match s {
        "absent" => KvResult::Value(None),
        "stored" => KvResult::Stored,
        "deleted" => KvResult::Deleted(true),
        "not_found" => KvResult::Deleted(false),
        "swapped" => KvResult::Swapped(true),
        "not_swapped" => KvResult::Swapped(false),
        "bad_op" => KvResult::BadOp,
        _ => return None,
    })
}

impl From<&Operation> for Record {
    fn from(o: &Operation) -> Record {
        let (value, expected) = match &o.op {
            KvOp::Get { .. } | KvOp::Del { .. } => (None, None),
            KvOp::Put { value, .. } => (Some(text(value)), None),
            KvOp::Cas { expected, value, .. } => (Some(text(value)), Some(text(expected))),
        };
        Record {
            client_id: o.client_id,
            request_number: o.request_number,
            kind: o.op.kind().to_string(),
            key: text(o.op.key()),
            value,
            expected,
            result: o.result.as_ref().map(result_text),
            invoke_ns: o.invoke,
            return_ns: o.ret,
        }
    }
}

impl TryFrom<&Record> for Operation {
    type Error = anyhow::Error;

    fn try_from(r: &Record) -> anyhow::Result<Operation> {
        let key = r.key.as_bytes().to_vec();
        let need = |field: &Option<String>, name: &str| {
            field
                .as_ref()
                .map(|s| s.as_bytes().to_vec())
                .with_context(|| format!("{} without {name}", r.kind))
        };
        let op = match r.kind.as_str() {
            "get" => KvOp::Get { key },
            "del" => KvOp::Del { key },
            "put" => KvOp::Put { key, value: need(&r.value, "value")? },
            "cas" => {
                KvOp::Cas { key, expected: need(&r.expected, "expected")?, value: need(&r.value, "value")? }
            }
            other => bail!("unknown op kind {other:?}"),
        };
        let result = match &r.result {
            Some(s) => Some(parse_result(s).with_context(|| format!("unknown result {s:?}"))?),
            None => None,
        };
        if result.is_some() != r.return_ns.is_some() {
            bail!("result and return_ns must be both present or both absent");
        }
        Ok(Operation {
            client_id: r.client_id,
            request_number: r.request_number,
            op,
            result,
            invoke: r.invoke_ns,
            ret: r.return_ns,
        })
    }
}

/// Writes operations as JSON lines.
pub fn write_history(out: &mut impl Write, ops: &[Operation]) -> anyhow::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut *out, &Record::from(op))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads JSON lines; an error names the line.
pub fn read_history(input: impl BufRead) -> anyhow::Result<Vec<Operation>> {
    let mut ops = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record =
            serde_json::from_str(&line).with_context(|| format!("history line {}", index + 1))?;
        ops.push(Operation::try_from(&record).with_context(|| format!("history line {}", index + 1))?);
    }
    Ok(ops)
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
        .filter_map(|(_, takes_effect, mut op)| {
            if !takes_effect {
                return Some(op);
            }
            let result = store.apply(&op.op);
            if op.ret.is_some() {
                op.result = Some(result);
            }
            Some(op)
        })
        .collect();
    history.sort_by_key(|o| o.invoke);
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_through_json_lines() {
        let ops = vec![
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
        ];
        let mut buf = Vec::new();
        write_history(&mut buf, &ops).unwrap();
        assert_eq!(read_history(&buf[..]).unwrap(), ops);
        assert!(read_history(&b"{\"kind\":1}\n"[..]).unwrap_err().to_string().contains("line 1"));
    }
}
