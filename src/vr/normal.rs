//! Normal operation (VRR 4.1): the leader takes requests and prepares
//! them, followers append Prepares and ack, committed ops execute.

use super::client_table::ClientEntry;
use super::replica::{batch_digest, Replica};
use super::{Action, Status};
use crate::app::App;
use crate::wire::{self, Commit, LogEntry, Message, Prepare, PrepareOk, Reply, Request};

impl Replica {
    pub(super) fn handle_request(&mut self, request: Request, out: &mut Vec<Action>) {
        if !self.is_leader() || request.op.len() > wire::MAX_OP_LEN {
            self.stats.dropped_inputs += 1;
            return;
        }
        if request.request_number == 0 || request.request_number == u64::MAX {
            // Clients number requests from 1 and never get near u64::MAX: a
            // forged u64::MAX would make every later request of that client
            // look older than what it already got.
            self.stats.dropped_inputs += 1;
            return;
        }
        if let Some(entry) = self.client_table.get(request.client_id) {
            if request.request_number < entry.request_number {
                return; // Older than what the client already got.
            }
            if request.request_number == entry.request_number {
                // The reply was lost: send it again.
                let reply = self.reply_to(&request, entry.result.clone());
                out.push(reply);
                return;
            }
        }
        if self.pending.get(&request.client_id).is_some_and(|n| *n >= request.request_number) {
            return; // In progress (or older): its reply will come.
        }
        if request.request_number > 1
            && self.client_table.get(request.client_id).is_none()
            && self.sessions_may_be_evicted()
        {
            // A client has one request outstanding and numbers them from 1,
            // so request n > 1 follows n - 1, which committed (the client
            // got its reply) and so is in our log. If it is not in the
            // uncommitted suffix (a new leader executes that only once it
            // commits), we executed it and the table no longer holds it: the
            // session was evicted (or never existed). This may be a
            // retransmission of a request that executed before the eviction:
            // never prepare it, tell the client.
            if self.uncommitted_holds_client(request.client_id) {
                self.stats.dropped_inputs += 1;
                return; // Its session is not executed yet here: retry later.
            }
            self.stats.sessions_evicted_replies += 1;
            out.push(self.session_evicted_reply(&request));
            return;
        }
        if self.request_queue.len() >= self.config.request_queue_max {
            self.stats.dropped_inputs += 1;
            return; // Overloaded: the client retries.
        }
        self.pending.insert(request.client_id, request.request_number);
        self.request_queue.push_back(request);
        // A hold batches only behind ops in flight: with nothing in flight
        // the followers are idle, and waiting would only add latency.
        if !self.holding_prepares || self.op == self.commit {
            self.send_prepares(out);
        }
    }

    /// From now on, requests queue while ops are in flight: the caller is
    /// about to hand over a burst of inputs and wants them prepared
    /// together. Must be followed by [`Replica::release_prepares`].
    pub fn hold_prepares(&mut self) {
        self.holding_prepares = true;
    }

    /// Ends a hold: packs the queued requests into Prepares (batches, as
    /// far as the pipeline allows).
    pub fn release_prepares(&mut self, out: &mut Vec<Action>) {
        let start = out.len();
        self.holding_prepares = false;
        if self.is_leader() && self.status == Status::Normal && !self.kernel_disarming {
            self.send_prepares(out);
        }
        self.finish(start, out);
    }

    /// Whether a prepared, not yet executed op holds a request of the client
    /// (at most pipeline_max entries of at most batch_max requests).
    fn uncommitted_holds_client(&self, client_id: u64) -> bool {
        let executed = self.commit.saturating_sub(self.checkpoint_op) as usize;
        self.log.iter().skip(executed).any(|entry| entry.batch.iter().any(|r| r.client_id == client_id))
    }

    /// Whether the client table can have evicted anyone: entries leave it
    /// only by eviction and only when it is full, so a table that is not
    /// full never evicted, and an unknown client there is a new one (or
    /// one whose first request our state does not show yet), never an
    /// evicted session. The same on every replica at the same op.
    fn sessions_may_be_evicted(&self) -> bool {
        self.client_table.len() >= self.config.client_table_max
    }

    /// The "session evicted" reply to `request`: not executed now.
    fn session_evicted_reply(&self, request: &Request) -> Action {
        self.reply(request, Vec::new(), true)
    }

    /// The reply to `request` carrying `result`, in our view.
    fn reply_to(&self, request: &Request, result: Vec<u8>) -> Action {
        self.reply(request, result, false)
    }

    /// Our reply to `request`, in our view.
    fn reply(&self, request: &Request, result: Vec<u8>, session_evicted: bool) -> Action {
        Action::Reply {
            client_id: request.client_id,
            reply: Reply {
                view: self.view,
                client_id: request.client_id,
                request_number: request.request_number,
                result,
                session_evicted,
            },
        }
    }

    /// Leader: packs queued requests into Prepares while the pipeline has room.
    pub(super) fn send_prepares(&mut self, out: &mut Vec<Action>) {
        assert!(self.is_leader());
        while !self.request_queue.is_empty() && self.op - self.commit < self.config.pipeline_max as u64 {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(next) = self.request_queue.front() {
                if batch.len() >= self.config.batch_max
                    || bytes + next.encoded_len() > wire::MAX_PREPARE_BATCH_LEN
                {
                    break;
                }
                bytes += next.encoded_len();
                batch.extend(self.request_queue.pop_front());
            }
            assert!(!batch.is_empty(), "one request always fits a Prepare");
            self.stats.requests_batched += batch.len() as u64;
            let op = self.op + 1;
            self.append(LogEntry { op, view: self.view, batch: batch.clone() });
            self.send_prepare(None, Prepare { view: self.view, op, commit: self.commit, batch }, out);
            if self.op - self.commit == 1 {
                // First uncommitted op: its retransmission clock starts now.
                self.prepare_timeout.reset();
            }
        }
        // A cluster of one commits alone.
        self.commit_quorum(out);
    }

    /// To one follower (retransmission) or all.
    pub(super) fn send_prepare(&mut self, to: Option<u8>, prepare: Prepare, out: &mut Vec<Action>) {
        self.stats.prepares_sent += 1;
        match to {
            Some(to) => out.push(Action::Send { to, message: Message::Prepare(prepare) }),
            None => {
                self.heartbeat_timeout.reset();
                out.push(Action::SendAll { message: Message::Prepare(prepare) });
            }
        }
    }

    /// Leader: nothing sent to all followers for a heartbeat interval: a
    /// Commit tells them we are alive, and our commit.
    pub(super) fn on_heartbeat_timeout(&mut self, out: &mut Vec<Action>) {
        self.send_commit(out);
    }

    fn send_commit(&mut self, out: &mut Vec<Action>) {
        self.heartbeat_timeout.reset();
        out.push(Action::SendAll {
            message: Message::Commit(Commit { view: self.view, commit: self.commit }),
        });
    }

    /// What a Prepare and a Commit from the leader have in common: drop
    /// stale or foreign ones, catch up by state transfer on a newer view,
    /// note that the leader is alive and its commit. True when the message
    /// is for our view and we are a follower not waiting for NewState (see
    /// joining_view: our suffix may be from an older view until then).
    fn hear_from_leader(&mut self, from: u8, view: u64, commit: u64, out: &mut Vec<Action>) -> bool {
        if self.status == Status::Recovering || view < self.view || from != self.leader_of(view) {
            return false;
        }
        if view > self.view || self.status == Status::ViewChange {
            // The view formed without us: catch up by state transfer (to
            // the head of the first page, as we missed the StartView).
            self.start_state_transfer(view, None, out);
            self.commit_seen = self.commit_seen.max(commit);
            return false;
        }
        if self.is_leader() {
            return false;
        }
        self.leader_timeout.reset();
        self.commit_seen = self.commit_seen.max(commit);
        !self.joining_view
    }

    pub(super) fn on_prepare(&mut self, from: u8, m: Prepare, out: &mut Vec<Action>) {
        if !self.hear_from_leader(from, m.view, m.commit, out) {
            return;
        }
        if m.op <= self.op {
            // Duplicate or retransmission: our ack may have been lost.
            // (Flagged if we still hold Prepares past a gap: an unflagged
            // ack never asks the leader for anything.)
            let gap = !self.prepare_buffer.is_empty();
            self.send_ack(gap, out);
        } else if m.op == self.op + 1 {
            if self.accept_prepare(m) {
                self.append_held();
                // Still holding Prepares past another gap: ask for it too.
                let gap = !self.prepare_buffer.is_empty();
                self.send_ack(gap, out);
            }
        } else if m.op - self.op <= self.config.pipeline_max as u64 {
            // A gap: keep it until the missing ones are retransmitted.
            let first_past_gap = self.prepare_buffer.is_empty();
            if self.prepare_buffer.len() < self.config.pipeline_max || self.prepare_buffer.contains_key(&m.op)
            {
                self.prepare_buffer.insert(m.op, m);
            }
            if first_past_gap {
                // Tell the leader at once (an ack of what we hold, flagged
                // as a gap): it re-sends the missing op without waiting for
                // its retransmission timeout, so a lost Prepare costs a
                // round trip, not prepare_retransmit_ticks.
                self.send_ack(true, out);
            }
        }
        self.execute_through(self.commit_seen, false, out);
        self.want_state_if_behind(out);
    }

    /// Appends the held Prepares that now continue the log (until one is
    /// refused) and forgets those the log has passed.
    pub(super) fn append_held(&mut self) {
        while let Some(next) = self.prepare_buffer.remove(&(self.op + 1)) {
            if !self.accept_prepare(next) {
                break;
            }
        }
        self.prepare_buffer.retain(|op, _| *op > self.op);
    }

    /// Appends the held Prepares that now continue the log, and acks.
    pub(super) fn accept_buffered(&mut self, out: &mut Vec<Action>) {
        let before = self.op;
        self.append_held();
        if self.op > before {
            // Still holding Prepares past another gap: ask for it too (as
            // on_prepare does). Without the flag the leader re-sent the
            // second missing op only when its re-send clock ran out.
            let gap = !self.prepare_buffer.is_empty();
            self.send_ack(gap, out);
        }
        self.execute_through(self.commit_seen, false, out);
    }

    /// Appends a Prepare at op+1 if it is well formed and within bounds.
    fn accept_prepare(&mut self, m: Prepare) -> bool {
        let valid = m.op == self.op + 1
            && !m.batch.is_empty()
            && m.batch.len() <= wire::MAX_BATCH_LEN
            && m.batch.iter().map(Request::encoded_len).sum::<usize>() <= wire::MAX_PREPARE_BATCH_LEN
            && m.batch.iter().all(|r| r.op.len() <= wire::MAX_OP_LEN);
        let commit_after = self.commit.max(self.commit_seen.min(m.op));
        if !valid || m.op - commit_after > self.uncommitted_max() {
            return false;
        }
        self.append(LogEntry { op: m.op, view: m.view, batch: m.batch });
        true
    }

    pub(super) fn send_prepare_ok(&mut self, out: &mut Vec<Action>) {
        self.send_ack(false, out);
    }

    /// Acks our log head; `gap`: we hold Prepares past op + 1 and ask for it.
    /// Durable mode: the ack names only what is on our disk (`ack_op`);
    /// ops above it we hold are no gap to ask for.
    pub(super) fn send_ack(&mut self, gap: bool, out: &mut Vec<Action>) {
        let to = self.leader_of(self.view);
        let op = self.ack_op();
        let gap = gap && op == self.op;
        let message = Message::PrepareOk(PrepareOk { view: self.view, op, replica: self.config.index, gap });
        out.push(Action::Send { to, message });
    }

    pub(super) fn on_commit(&mut self, from: u8, m: Commit, out: &mut Vec<Action>) {
        if !self.hear_from_leader(from, m.view, m.commit, out) {
            return;
        }
        self.execute_through(self.commit_seen, false, out);
        self.want_state_if_behind(out);
    }

    /// Executes committed ops up to `target` (at most op), in order,
    /// updating the client table; the leader replies to clients.
    pub(super) fn execute_through(&mut self, target: u64, reply: bool, out: &mut Vec<Action>) {
        // Catching up, only the pages installed are this view's log.
        let head = if self.joining_view { self.catch_up_verified } else { self.op };
        let target = target.min(head);
        while self.commit < target {
            let op = self.commit + 1;
            let index = (op - self.checkpoint_op - 1) as usize;
            let entry = &self.log[index];
            let digest = batch_digest(&entry.batch);
            for request in &entry.batch {
                let known = self.client_table.get(request.client_id);
                if known.is_none() && request.request_number > 1 && self.sessions_may_be_evicted() {
                    // Evicted between the leader's check and this op (a
                    // duplicate logged across a view change, or fresh ids
                    // earlier in the pipeline): it may have executed before,
                    // so it never executes here. Deterministic: the table is
                    // the same on every replica at this op.
                    if self.pending.get(&request.client_id).is_some_and(|n| *n <= request.request_number) {
                        self.pending.remove(&request.client_id);
                    }
                    self.stats.sessions_evicted_replies += 1;
                    if reply {
                        out.push(self.session_evicted_reply(request));
                    }
                    continue;
                }
                let cached = match known {
                    Some(e) if e.request_number > request.request_number => continue,
                    // A duplicate that got into the log twice (a client
                    // retransmitted across a view change): not executed
                    // again, answered from the table.
                    Some(e) if e.request_number == request.request_number => Some(e.result.clone()),
                    Some(_) | None => None,
                };
                let result = match cached {
                    Some(result) => result,
                    None => {
                        let result = self.app.execute(&request.op);
                        let entry = ClientEntry {
                            request_number: request.request_number,
                            op,
                            result: result.clone(),
                        };
                        self.client_table.insert(request.client_id, entry, self.config.client_table_max);
                        result
                    }
                };
                if self.pending.get(&request.client_id).is_some_and(|n| *n <= request.request_number) {
                    self.pending.remove(&request.client_id);
                }
                if reply {
                    out.push(self.reply_to(request, result));
                }
            }
            self.commit = op;
            self.recent_commits.push_back((op, digest));
            while self.recent_commits.len() > self.recent_commits_max() {
                self.recent_commits.pop_front();
            }
            if op % self.config.checkpoint_interval_ops == 0 {
                self.trim_log();
            }
        }
    }
}
