//! What the runtime counts of the datagrams it handles: printed while it
//! runs (`--report-interval`), at exit (a line for people and one JSON line
//! for scripts and tests), and copied for scrapes (transport/metrics.rs).

use std::collections::HashMap;

use crate::wire::MsgType;

/// Datagrams the runtime handled, by outcome.
#[derive(Clone, Debug, Default)]
pub struct DatagramCounts {
    pub received: u64,
    pub by_type: [u64; MsgType::ALL.len() + 1],
    pub dropped: HashMap<&'static str, u64>,
    pub sent: u64,
    pub send_errors: u64,
}

impl DatagramCounts {
    pub fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// One line for people: the types and drops seen, in a fixed order.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("received {}", self.received), format!("sent {}", self.sent)];
        for t in MsgType::ALL {
            let n = self.by_type[t as usize];
            if n > 0 {
                parts.push(format!("{} {}", t.name(), n));
            }
        }
        let mut drops: Vec<_> = self.dropped.iter().collect();
        drops.sort();
        for (reason, n) in drops {
            parts.push(format!("dropped[{reason}] {n}"));
        }
        if self.send_errors > 0 {
            parts.push(format!("send errors {}", self.send_errors));
        }
        parts.join(", ")
    }

    /// The same numbers as one JSON object for scripts and tests, every
    /// message type included (zeros too), keys in this order:
    /// `{"received":R,"sent":S,"send_errors":E,"messages":{..},"dropped":{..}}`.
    pub fn exit_json(&self) -> String {
        let messages: Vec<String> = MsgType::ALL
            .iter()
            .map(|t| format!("{}:{}", json_string(t.name()), self.by_type[*t as usize]))
            .collect();
        let mut drops: Vec<_> = self.dropped.iter().collect();
        drops.sort();
        let dropped: Vec<String> =
            drops.iter().map(|(reason, n)| format!("{}:{n}", json_string(reason))).collect();
        format!(
            "{{\"received\":{},\"sent\":{},\"send_errors\":{},\"messages\":{{{}}},\"dropped\":{{{}}}}}",
            self.received,
            self.sent,
            self.send_errors,
            messages.join(","),
            dropped.join(",")
        )
    }
}

/// A JSON string literal (serde_json escapes).
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_json_names_every_type_and_each_drop() {
        let mut counts = DatagramCounts { received: 7, sent: 5, send_errors: 1, ..Default::default() };
        counts.by_type[MsgType::Prepare as usize] = 3;
        counts.drop("bad magic");
        counts.drop("bad magic");
        counts.drop("sender address is not the replica's");
        let text = counts.exit_json();
        assert!(text.starts_with("{\"received\":7,\"sent\":5,\"send_errors\":1,\"messages\":{"), "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["messages"]["prepare"], 3);
        for t in MsgType::ALL {
            assert!(value["messages"][t.name()].is_u64(), "{} missing in {text}", t.name());
        }
        assert_eq!(value["dropped"]["bad magic"], 2);
        assert_eq!(value["dropped"]["sender address is not the replica's"], 1);
        assert_eq!(value["dropped"].as_object().unwrap().len(), 2);
    }
}
