//! Snapshot streaming: state transfer beyond the log. A replica whose
//! log cannot reach the asker's offers a snapshot, pulled a window of
//! chunks at a time.

use super::client_table::{checkpoint_digest, CheckpointStream};
use super::replica::Replica;
use super::timeout::Timeout;
use super::{Action, Status};
use crate::wire::{
    self, LogEntry, Message, NewState, NewStateKind, SnapshotChunk, SnapshotRequest, StateBlob,
};

/// Chunks one SnapshotRequest asks for (ELECTRODE_SNAPSHOT_WINDOW).
pub(super) const SNAPSHOT_WINDOW: u64 = wire::consts::SNAPSHOT_WINDOW as u64;
/// Snapshot bytes one SnapshotChunk carries (ELECTRODE_SNAPSHOT_CHUNK_SIZE;
/// not wire::CHUNK_LEN, the payload of one chunk of a large message).
const SNAPSHOT_CHUNK_LEN: u64 = wire::SNAPSHOT_CHUNK_LEN as u64;
/// Resends of a SnapshotRequest without progress before giving up on its
/// source (the next GetState may find another).
const SNAPSHOT_STALLS_MAX: u64 = 8;

/// A snapshot we froze for a replica behind our log, encoded a window at
/// a time as it is pulled. While it is kept, the log is not trimmed above
/// it, so that the puller finds the ops that follow it in our log once it
/// has installed it.
pub(super) struct SnapshotOut {
    pub(super) op: u64,
    pub(super) stream: CheckpointStream,
    /// Runs from the last SnapshotRequest: one nobody pulls any more is
    /// forgotten.
    pub(super) timeout: Timeout,
}

/// A snapshot being pulled, window by window, from the replica that
/// offered it. Chunks land in place; it is installed only complete and
/// with the digest the chunks announced.
pub(super) struct SnapshotIn {
    pub(super) from: u8,
    pub(super) op: u64,
    /// 0 until the first chunk tells.
    pub(super) total_len: u64,
    /// 0 until a chunk announces it (the source knows it once it has
    /// encoded the whole snapshot).
    pub(super) digest: u64,
    pub(super) bytes: Vec<u8>,
    pub(super) have: Vec<bool>,
    pub(super) have_count: u64,
    /// First chunk index not received.
    pub(super) next_missing: u64,
    /// Chunk index up to which windows were requested.
    pub(super) requested_until: u64,
    /// Runs from the last chunk received: a stalled window is asked again.
    pub(super) timeout: Timeout,
    /// Timeouts in a row without a chunk.
    pub(super) stalls: u64,
}

impl Replica {
    /// A NewState that carries no state but offers snapshot `op` (our log
    /// cannot reach it otherwise).
    pub(super) fn snapshot_offer(&self, m: &NewState) -> bool {
        m.kind == NewStateKind::SnapshotOffer
            && m.state.snapshot.is_empty()
            && m.state.entries.is_empty()
            && m.state.checkpoint_op == m.op
            && m.commit == m.op
            && m.op > self.commit
    }

    /// Answers a replica behind our log: freezes our state at commit (or
    /// reuses the snapshot being pulled) and offers it; the asker pulls it,
    /// and each window it asks for is encoded then, so that serving a GiB
    /// costs this replica's loop a window at a time, never the whole state
    /// at once.
    pub(super) fn offer_snapshot(&mut self, to: u8, out: &mut Vec<Action>) {
        // Reuse the snapshot being pulled while our log still follows it.
        if self.snapshot_out.as_ref().is_some_and(|s| s.op < self.checkpoint_op) {
            self.snapshot_out = None;
        }
        if self.snapshot_out.is_none() {
            let Some(stream) = CheckpointStream::new(self.app.as_ref(), &self.client_table) else {
                return; // No memory for it: another replica may answer.
            };
            let timeout = Timeout::started(50 * self.config.resend_interval_ticks);
            self.snapshot_out = Some(SnapshotOut { op: self.commit, stream, timeout });
        }
        let op = self.snapshot_out.as_ref().map_or(self.commit, |s| s.op);
        let state = StateBlob { checkpoint_op: op, snapshot: Vec::new(), entries: Vec::new() };
        let message = NewState {
            view: self.view,
            op,
            commit: op,
            head: self.op,
            kind: NewStateKind::SnapshotOffer,
            state,
        };
        out.push(Action::Send { to, message: Message::NewState(message) });
    }

    pub(super) fn start_snapshot_pull(&mut self, from: u8, op: u64, out: &mut Vec<Action>) {
        if self.snapshot_in.as_ref().is_some_and(|s| s.from == from && s.op == op) {
            return; // Already pulling it.
        }
        self.snapshot_in = Some(SnapshotIn {
            from,
            op,
            total_len: 0,
            digest: 0,
            bytes: Vec::new(),
            have: Vec::new(),
            have_count: 0,
            next_missing: 0,
            requested_until: SNAPSHOT_WINDOW,
            timeout: Timeout::started(self.config.resend_interval_ticks),
            stalls: 0,
        });
        self.request_snapshot(0, out);
    }

    fn request_snapshot(&mut self, chunk: u64, out: &mut Vec<Action>) {
        let Some(pull) = self.snapshot_in.as_ref() else { return };
        let message = SnapshotRequest {
            view: self.view,
            snapshot_op: pull.op,
            offset: chunk * SNAPSHOT_CHUNK_LEN,
            replica: self.config.index,
        };
        out.push(Action::Send { to: pull.from, message: Message::SnapshotRequest(message) });
    }

    /// Sends one window of the snapshot we offered, from the asked offset.
    pub(super) fn on_snapshot_request(&mut self, from: u8, m: SnapshotRequest, out: &mut Vec<Action>) {
        let Some(snapshot) = self.snapshot_out.as_mut() else { return };
        if m.replica != from || m.snapshot_op != snapshot.op || m.offset % SNAPSHOT_CHUNK_LEN != 0 {
            return;
        }
        snapshot.timeout.reset();
        let total = snapshot.stream.len();
        snapshot.stream.encode_until(m.offset.saturating_add(SNAPSHOT_WINDOW * SNAPSHOT_CHUNK_LEN));
        // 0 until the whole snapshot is encoded: the chunks sent after that,
        // the last one among them, tell the puller what to verify.
        let digest = snapshot.stream.digest().unwrap_or(0);
        let mut offset = m.offset;
        for _ in 0..SNAPSHOT_WINDOW {
            if offset >= total {
                break;
            }
            let end = (offset + SNAPSHOT_CHUNK_LEN).min(total);
            let message = SnapshotChunk {
                view: self.view,
                snapshot_op: snapshot.op,
                total_len: total,
                digest,
                offset,
                replica: self.config.index,
                data: snapshot.stream.encoded()[offset as usize..end as usize].to_vec(),
            };
            out.push(Action::Send { to: from, message: Message::SnapshotChunk(message) });
            offset = end;
        }
    }

    pub(super) fn on_snapshot_chunk(&mut self, from: u8, m: SnapshotChunk, out: &mut Vec<Action>) {
        self.stats.snapshot_chunks_received += 1;
        let Some(pull) = self.snapshot_in.as_mut() else { return };
        if from != pull.from || m.replica != from || m.snapshot_op != pull.op {
            return;
        }
        if pull.total_len == 0 {
            // The first chunk sizes the transfer: no limit but memory.
            let chunks = m.total_len.div_ceil(SNAPSHOT_CHUNK_LEN);
            let Ok(len) = usize::try_from(m.total_len) else { return };
            if len == 0 {
                return;
            }
            if pull.bytes.try_reserve_exact(len).is_err()
                || pull.have.try_reserve_exact(chunks as usize).is_err()
            {
                self.snapshot_in = None;
                return;
            }
            pull.bytes.resize(len, 0);
            pull.have.resize(chunks as usize, false);
            pull.total_len = m.total_len;
        } else if m.total_len != pull.total_len {
            return;
        }
        // The source announces the digest once it has encoded the whole
        // snapshot (0 before): the last chunk always carries it.
        if m.digest != 0 {
            if pull.digest == 0 {
                pull.digest = m.digest;
            } else if m.digest != pull.digest {
                return;
            }
        }
        // (wire::decode checks these too; the core trusts no caller.)
        let expected = pull.total_len.checked_sub(m.offset).map(|rest| rest.min(SNAPSHOT_CHUNK_LEN));
        if m.offset % SNAPSHOT_CHUNK_LEN != 0 || expected != Some(m.data.len() as u64) || m.data.is_empty() {
            return;
        }
        let index = m.offset / SNAPSHOT_CHUNK_LEN;
        if pull.have[index as usize] {
            return;
        }
        pull.bytes[m.offset as usize..m.offset as usize + m.data.len()].copy_from_slice(&m.data);
        pull.have[index as usize] = true;
        pull.have_count += 1;
        pull.timeout.reset();
        pull.stalls = 0;
        let chunks = pull.have.len() as u64;
        while pull.next_missing < chunks && pull.have[pull.next_missing as usize] {
            pull.next_missing += 1;
        }
        if pull.have_count == chunks {
            self.finish_snapshot(out);
            return;
        }
        // Keep about a window and a half in flight: ask for the next window
        // once half of the last one arrived.
        if pull.next_missing + SNAPSHOT_WINDOW / 2 >= pull.requested_until && pull.requested_until < chunks {
            let next = pull.requested_until;
            pull.requested_until += SNAPSHOT_WINDOW;
            self.request_snapshot(next, out);
        }
    }

    /// Nobody pulled the snapshot we offered for a long time: forget it.
    pub(super) fn on_snapshot_out_timeout(&mut self) {
        self.snapshot_out = None;
    }

    /// No chunk for a resend interval: ask again from the first missing
    /// chunk, or give up on the source after SNAPSHOT_STALLS_MAX stalls.
    pub(super) fn on_snapshot_in_timeout(&mut self, out: &mut Vec<Action>) {
        let Some(pull) = self.snapshot_in.as_mut() else { return };
        pull.timeout.reset();
        pull.stalls += 1;
        if pull.stalls > SNAPSHOT_STALLS_MAX {
            // The source is gone or forgot the snapshot: the next GetState
            // finds another.
            self.snapshot_in = None;
            return;
        }
        let next = pull.next_missing;
        pull.requested_until = pull.requested_until.max(next + SNAPSHOT_WINDOW);
        self.request_snapshot(next, out);
    }

    /// The whole snapshot arrived: verify and install it, then fetch what
    /// follows it from its source (whose log is pinned above it).
    fn finish_snapshot(&mut self, out: &mut Vec<Action>) {
        let Some(pull) = self.snapshot_in.take() else { return };
        if pull.digest == 0 || checkpoint_digest(&pull.bytes) != pull.digest || pull.op <= self.commit {
            return; // Corrupt or stale: the next GetState starts over.
        }
        // Our log above the snapshot stays (it may hold ops we acked in an
        // older view, which a view change could need): after the install we
        // claim exactly what we claimed before above it, and committed state
        // below it.
        let above: Vec<LogEntry> = if self.op > pull.op {
            self.log
                .iter()
                .skip((pull.op.max(self.checkpoint_op) - self.checkpoint_op) as usize)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let blob = StateBlob { checkpoint_op: pull.op, snapshot: pull.bytes, entries: Vec::new() };
        if !self.install(&blob, pull.op, pull.op) {
            return;
        }
        for entry in above {
            self.push_entry(entry);
        }
        self.stats.snapshots_installed += 1;
        if self.joining_view {
            // Committed state: the same in every view.
            self.catch_up_verified = self.catch_up_verified.max(pull.op);
        }
        self.commit_seen = self.commit_seen.max(pull.op);
        if self.repair_pending {
            self.repair_pending = false;
            self.try_start_view(out);
        } else if self.status == Status::Normal && !self.is_leader() {
            // What follows the snapshot, from its source's pinned log.
            self.state_transfer_attempts = 0;
            self.send_get_state_to(pull.from, out);
        }
    }
}
