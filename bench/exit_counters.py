#!/usr/bin/env python3
"""The replicas' exit counters, read from their logs: the one parser the
scripts share (bench/run.sh, scripts/demo.sh).

A replica stopped by SIGTERM logs, right after its `stopped; ...` summary,
one JSON line (behind the logger's time stamp and level):

    electrode replica N: exit counters {"received":R,"sent":S,"send_errors":E,
        "messages":{"prepare_ok":n,...},"dropped":{"<reason>":n,...}}

received: datagrams received in user space; sent: datagrams sent;
messages: received messages by type name (every type, 0 included);
dropped: datagrams dropped, by reason.

As a module (the scripts run from the repository and put bench/ on
sys.path):
    exit_counters(path) -> that object, from the log's last such line; a log
        without one (a replica killed, not stopped) gives zeros and a note
        on stderr.
    count(counters, name) -> one number: "received", "sent", "send_errors",
        a message type ("prepare_ok"), or "dropped[reason]".
As a command:
    bench/exit_counters.py LOG [NAME]   the object as JSON, or one number.
"""
import json
import sys

MARKER = ": exit counters "
ZERO = {"received": 0, "sent": 0, "send_errors": 0, "messages": {}, "dropped": {}}


def exit_counters(path):
    """The exit counters of the replica whose log is PATH."""
    line = None
    with open(path, errors="replace") as log:
        for candidate in log:
            if MARKER in candidate:
                line = candidate
    if line is None:
        print(f"exit_counters: no exit counters line in {path} (a replica killed rather than stopped, or a binary "
              "older than that line); counted as 0", file=sys.stderr)
        return json.loads(json.dumps(ZERO))
    try:
        counters = json.loads(line.split(MARKER, 1)[1])
    except ValueError as e:
        raise ValueError(f"{path}: exit counters line is not JSON ({e}): {line.strip()}") from None
    for key, value in ZERO.items():
        counters.setdefault(key, value)
    return counters


def count(counters, name):
    """One counter by the name the `stopped;` summary gives it; 0 if absent."""
    if name.startswith("dropped[") and name.endswith("]"):
        return counters["dropped"].get(name[len("dropped["):-1], 0)
    if name in counters and not isinstance(counters[name], dict):
        return counters[name]
    return counters["messages"].get(name, 0)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: bench/exit_counters.py LOG [NAME]")
    c = exit_counters(sys.argv[1])
    print(count(c, sys.argv[2]) if len(sys.argv) == 3 else json.dumps(c, indent=1))
