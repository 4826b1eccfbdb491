/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * electrode.h - the ONE definition shared by the eBPF programs and Rust.
 *
 * Everything on the wire and every constant both sides need lives here:
 *   - build.rs turns every `#define ELECTRODE_<NAME> <integer>` line into
 *     `pub const <NAME>: u32` in Rust (`wire::consts`, src/wire/mod.rs), so
 *     a constant is never typed twice;
 *   - build.rs turns the counter list (`enum electrode_counter`) into the
 *     Rust counters (src/fastpath/counters.rs), names and all;
 *   - every struct is mirrored by a #[repr(C)] struct (wire structs in
 *     src/wire/mod.rs, map values in src/fastpath/), and a layout test
 *     compares size and field offsets with the skeleton's generated
 *     `types::` (which libbpf-cargo derives from this file's BTF).
 *
 * Rules for this file: multi-byte fields are network byte order (__be*),
 * padding is explicit (`pad` fields, always sent as zero), no `bool`, and
 * every struct has a _Static_assert on its size.  Only integer literals go
 * after `#define ELECTRODE_` (build.rs parses them); relations between
 * constants are _Static_asserts below.
 *
 * Contents (sections in this order):
 *   Identity of a datagram   magic, version, message types, sender and
 *                            flag values, reply and replica status
 *   Limits                   replicas, MTU, datagram/body/op sizes, batch,
 *                            chunk, transfer, pipeline
 *   Wire structs             the header and every message body, state blob
 *   Maps and their owners    every map and global, who writes it, who
 *                            reads it, where its handover rule is
 *   Counters                 enum electrode_counter: one slot per thing the
 *                            programs count, and the name users see
 *   Membership               the one rule for trusting a sender id
 *   fast_reply               follower_state, prepare_ring, handover rule
 *   fast_quorum_prune        qp_config, qp_state, verdict rules
 *   fast_intake              intake_config, intake_ring, wake-ups
 *   tc_broadcast             broadcast_config/_targets/_macs
 *
 * The programs: electrode.bpf.c (the XDP entry point electrode_xdp, which
 * includes a header per fast path: fast_reply.h, quorum_prune.h, intake.h,
 * and tc_broadcast.h with the TC program electrode_tc); common.h, which
 * every one of them includes (the read-only config, the counters and
 * replica_addrs maps, count(), the membership check, pass-with-reason and
 * the ring-buffer fill), itself including parse.h (bounds-checked parsing)
 * and checksum.h (IPv4 and UDP checksums).
 */
#ifndef ELECTRODE_H
#define ELECTRODE_H

/* ---------------------------------------------------------------------- */
/* Identity of a datagram                                                 */
/* ---------------------------------------------------------------------- */

/* "ELEC" in ASCII: makes stray traffic on our port easy to reject. */
#define ELECTRODE_MAGIC 1162626371
/* Bumped on any incompatible change of this file. */
#define ELECTRODE_PROTOCOL_VERSION 2

/* Message types: a numeric enum on the wire, never a string. 0 is unused so
 * a zeroed buffer is never a valid message. */
#define ELECTRODE_MSG_REQUEST 1
#define ELECTRODE_MSG_REPLY 2
#define ELECTRODE_MSG_PREPARE 3
#define ELECTRODE_MSG_PREPARE_OK 4
#define ELECTRODE_MSG_COMMIT 5
#define ELECTRODE_MSG_START_VIEW_CHANGE 6
#define ELECTRODE_MSG_DO_VIEW_CHANGE 7
#define ELECTRODE_MSG_START_VIEW 8
#define ELECTRODE_MSG_GET_STATE 9
#define ELECTRODE_MSG_NEW_STATE 10
#define ELECTRODE_MSG_RECOVERY 11
#define ELECTRODE_MSG_RECOVERY_RESPONSE 12
/* Operator view (`electrode status`): not part of VR, answered by any replica. */
#define ELECTRODE_MSG_STATUS_REQUEST 13
#define ELECTRODE_MSG_STATUS_REPLY 14
/* Snapshot streaming (state transfer of a replica behind the log): pulled in
 * windows, so it resumes after loss and never floods receive buffers. */
#define ELECTRODE_MSG_SNAPSHOT_REQUEST 15
#define ELECTRODE_MSG_SNAPSHOT_CHUNK 16
/* Highest valid type; counters are indexed by type, so arrays are MAX+1 long. */
#define ELECTRODE_MSG_TYPE_MAX 16

/* `sender` of a datagram that does not come from a replica (clients,
 * `electrode status`). */
#define ELECTRODE_SENDER_CLIENT 255

/* Header flag: the leader sent this once and the tc_broadcast egress program
 * is asked to clone it to every follower. Ignored by receivers. */
#define ELECTRODE_FLAG_BROADCAST 1

/* Reply.status. OK: the result is the request's. SESSION_EVICTED: the
 * replicas no longer remember the client (the client table evicted it, or it
 * never existed) and a request numbered above 1 may be a retransmission of
 * one already executed, so it is not executed; result_len is 0. The outcome
 * of that request is unknown to the client. The outcome lives in the reply
 * body, not in a header flag, so the decoder checks it with the body
 * (unknown values and a result next to an eviction are rejected). */
#define ELECTRODE_REPLY_OK 0
#define ELECTRODE_REPLY_SESSION_EVICTED 1

/* Replica status values (StatusReply.status, and kernel state later). */
#define ELECTRODE_STATUS_NORMAL 1
#define ELECTRODE_STATUS_VIEW_CHANGE 2
#define ELECTRODE_STATUS_RECOVERING 3
/* RecoveryResponse only: "I booted counting your very incarnation (nonce) as
 * booting": that incarnation never left recovery, so it never acknowledged
 * anything, and it boots too (joins view 0 as an empty follower) whatever
 * the others hold. `op` carries the sender's nonce, as for RECOVERING. */
#define ELECTRODE_STATUS_BOOTED_WITH_YOU 4

/* ---------------------------------------------------------------------- */
/* Limits                                                                 */
/* ---------------------------------------------------------------------- */

/* Replica ids are one byte and 255 is the client marker; 9 replicas (f = 4)
 * is the largest cluster tc_broadcast is tested with, and keeps per-op quorum
 * bitmaps in one word. */
#define ELECTRODE_MAX_REPLICAS 9
/* Ethernet MTU of the namespace cluster and of ordinary LANs. */
#define ELECTRODE_MTU 1500
/* Largest UDP payload that fits the MTU without IP fragmentation:
 * 1500 - 20 (IPv4 header, no options) - 8 (UDP header). Every datagram we
 * send is at most this long; larger messages are chunked, never fragmented. */
#define ELECTRODE_MAX_DATAGRAM 1472
/* Largest body after the 24-byte header: 1472 - 24. */
#define ELECTRODE_MAX_BODY 1448
/* Largest operation (KV command) a client may submit. It must fit alone in
 * one Prepare (1448 - 24 prepare - 24 entry = 1400 bytes available); 1024
 * leaves room and is a round number users can remember. */
#define ELECTRODE_MAX_OP_SIZE 1024
/* Largest result in a Reply (1448 - 24 = 1424 available). A KV result is at
 * most one value, and values are bounded by the op size. */
#define ELECTRODE_MAX_RESULT_SIZE 1024
/* Most client requests the leader packs into one Prepare. The byte budget of
 * one datagram bounds a batch too; 32 covers small KV ops (~40 bytes each)
 * while keeping a Prepare inside one ring-buffer record of the fast path. */
#define ELECTRODE_MAX_BATCH 32
/* Payload bytes carried by one chunk of a large message (DoViewChange,
 * StartView, NewState, RecoveryResponse). The largest fixed part of a
 * chunked body is 48 bytes, so 1448 - 48 = 1400 are available; 1024 leaves
 * headroom for future fields. */
#define ELECTRODE_CHUNK_SIZE 1024
/* Upper bound on a reassembled large message: 64 MiB. A receiver never
 * allocates more than this for one transfer, whatever a sender claims. */
#define ELECTRODE_MAX_TRANSFER 67108864
/* Most operations the leader has prepared but not yet committed. The
 * fast_quorum_prune window in the kernel has exactly this many slots. */
#define ELECTRODE_PIPELINE_MAX 64

/* ---------------------------------------------------------------------- */
/* Wire structs                                                           */
/* ---------------------------------------------------------------------- */

/* Every datagram starts with this header. */
struct electrode_hdr {
	__be32 magic;       /* ELECTRODE_MAGIC */
	__u8 version;       /* ELECTRODE_PROTOCOL_VERSION */
	__u8 msg_type;      /* ELECTRODE_MSG_* */
	__u8 sender;        /* replica index, or ELECTRODE_SENDER_CLIENT */
	__u8 flags;         /* ELECTRODE_FLAG_* */
	__be32 cluster_id;  /* from the config; other clusters are dropped */
	__be16 body_len;    /* bytes after this header, exactly */
	__u8 pad[2];
	__be64 view;        /* sender's view number (0 from clients) */
};
_Static_assert(sizeof(struct electrode_hdr) == 24, "electrode_hdr size");

/* Request (client -> replicas), also the header of each entry in a Prepare
 * batch and in a log. Followed by op_len bytes of operation. */
struct electrode_request {
	__be64 client_id;
	__be64 request_number;
	__be16 op_len;      /* <= ELECTRODE_MAX_OP_SIZE */
	__u8 pad[6];
};
_Static_assert(sizeof(struct electrode_request) == 24, "electrode_request size");

/* Reply (replica -> client). Followed by result_len bytes. The header's view
 * tells the client who leads (view % replica count). */
struct electrode_reply {
	__be64 client_id;
	__be64 request_number;
	__be16 result_len;  /* <= ELECTRODE_MAX_RESULT_SIZE */
	__u8 status;        /* ELECTRODE_REPLY_* */
	__u8 pad[5];
};
_Static_assert(sizeof(struct electrode_reply) == 24, "electrode_reply size");

/* Prepare (leader -> followers): one log entry, op number `op`, holding a
 * batch of request_count requests (each a struct electrode_request and its
 * op bytes) that together take batch_len bytes. Always one datagram. */
struct electrode_prepare {
	__be64 op;
	__be64 commit;      /* leader's commit number, piggybacked */
	__be16 request_count; /* 1..ELECTRODE_MAX_BATCH */
	__be16 batch_len;
	__u8 pad[4];
};
_Static_assert(sizeof(struct electrode_prepare) == 24, "electrode_prepare size");

/* PrepareOK (follower -> leader): the follower has logged every op <= op. */
struct electrode_prepare_ok {
	__be64 op;
	__u8 replica;
	__u8 flags; /* ELECTRODE_PREPARE_OK_*; other bits: malformed */
	__u8 pad[6];
};
/* The sender holds Prepares past a gap at op + 1 and asks for that one
 * (a negative ack: the leader re-sends it at once). Sent once per gap by the
 * follower's user space; the leader's XDP always passes it. */
#define ELECTRODE_PREPARE_OK_GAP 1
_Static_assert(sizeof(struct electrode_prepare_ok) == 16, "electrode_prepare_ok size");

/* Commit (leader -> followers): alone, it is the idle heartbeat. */
struct electrode_commit {
	__be64 commit;
};
_Static_assert(sizeof(struct electrode_commit) == 8, "electrode_commit size");

/* StartViewChange (any -> all) for the header's view. */
struct electrode_start_view_change {
	__u8 replica;
	__u8 pad[7];
};
_Static_assert(sizeof(struct electrode_start_view_change) == 8,
	       "electrode_start_view_change size");

/* Describes one chunk of a large message. The chunks of one message share
 * transfer_id and total_len; each carries `len` payload bytes at `offset`.
 * The payload is a state blob (struct electrode_state_blob below; StateBlob
 * in src/wire/mod.rs): checkpoint snapshot and log entries.
 * total_len <= ELECTRODE_MAX_TRANSFER, len <= CHUNK_SIZE. */
struct electrode_chunk {
	__be32 transfer_id;
	__be32 total_len;
	__be32 offset;
	__be16 len;
	__u8 pad[2];
};
_Static_assert(sizeof(struct electrode_chunk) == 16, "electrode_chunk size");

/* DoViewChange (any -> new leader), chunked. */
struct electrode_do_view_change {
	__be64 last_normal_view;
	__be64 op;
	__be64 commit;
	__u8 replica;
	__u8 pad[7];
	struct electrode_chunk chunk;
};
_Static_assert(sizeof(struct electrode_do_view_change) == 48,
	       "electrode_do_view_change size");

/* StartView (new leader -> all), chunked. */
struct electrode_start_view {
	__be64 op;
	__be64 commit;
	struct electrode_chunk chunk;
};
_Static_assert(sizeof(struct electrode_start_view) == 32, "electrode_start_view size");

/* GetState (lagging replica -> a peer): send me what follows `op`. */
struct electrode_get_state {
	__be64 op;
	__u8 replica;
	__u8 pad[7];
};
_Static_assert(sizeof(struct electrode_get_state) == 16, "electrode_get_state size");

/* SnapshotRequest (replica behind the log -> the peer that offered a
 * snapshot in a NewState): send up to ELECTRODE_SNAPSHOT_WINDOW chunks of
 * snapshot `snapshot_op` from byte `offset` on. */
struct electrode_snapshot_request {
	__be64 snapshot_op;
	__be64 offset;
	__u8 replica;
	__u8 pad[7];
};
_Static_assert(sizeof(struct electrode_snapshot_request) == 24, "electrode_snapshot_request size");

/* SnapshotChunk (peer -> asker): `len` bytes of the snapshot at `offset`
 * (a multiple of ELECTRODE_SNAPSHOT_CHUNK_SIZE; every chunk but the last is
 * full).
 * Every chunk repeats the total length, so that any one of them starts the
 * transfer. The source encodes the snapshot as it is pulled (from a state
 * frozen at snapshot_op), so it knows the digest (xxh3-64 of the whole
 * snapshot, never 0) only once all of it is encoded: chunks sent before
 * carry 0, those sent after (the last chunk always) carry the digest. */
struct electrode_snapshot_chunk {
	__be64 snapshot_op;
	__be64 total_len;
	__be64 digest;
	__be64 offset;
	__be16 len;
	__u8 replica;
	__u8 pad[5];
};
_Static_assert(sizeof(struct electrode_snapshot_chunk) == 40, "electrode_snapshot_chunk size");
/* Snapshot bytes per SnapshotChunk: as many as one datagram holds after the
 * 40-byte chunk header (1448 - 40 = 1408, rounded down). A GiB is ~767k
 * datagrams instead of ~1M with ELECTRODE_CHUNK_SIZE, and each datagram
 * costs both ends a fixed amount of work. */
#define ELECTRODE_SNAPSHOT_CHUNK_SIZE 1400
_Static_assert(40 + ELECTRODE_SNAPSHOT_CHUNK_SIZE <= ELECTRODE_MAX_BODY, "a snapshot chunk fits");
/* Chunks one SnapshotRequest asks for: ~88 KiB, a fraction of a receive buffer. */
#define ELECTRODE_SNAPSHOT_WINDOW 64

/* What a NewState is (its `kind`): never inferred from the other fields, so
 * that an empty page (the asker already holds the answerer's head) is not
 * taken for a snapshot offer. */
#define ELECTRODE_NEW_STATE_PAGE 1           /* log entries after the asked op */
#define ELECTRODE_NEW_STATE_SNAPSHOT_OFFER 2 /* no entries: pull snapshot `op` */
#define ELECTRODE_NEW_STATE_REPAIR 3         /* committed entries for a new leader */

/* NewState (peer -> lagging replica), chunked. `head` is the answerer's log
 * head when it answered: a replica catching up in a view stays catching up
 * until its log reaches the head of the first page it got in that view (the
 * answerer, a caught-up member, held the view's StartView prefix then). */
struct electrode_new_state {
	__be64 op;
	__be64 commit;
	__be64 head;
	__u8 kind;          /* ELECTRODE_NEW_STATE_* */
	__u8 pad[7];
	struct electrode_chunk chunk;
};
_Static_assert(sizeof(struct electrode_new_state) == 48, "electrode_new_state size");

/* Recovery (restarted replica -> all). */
struct electrode_recovery {
	__be64 nonce;
	__u8 replica;
	__u8 pad[7];
};
_Static_assert(sizeof(struct electrode_recovery) == 16, "electrode_recovery size");

/* RecoveryResponse (any -> recovering replica), chunked; only the leader of
 * the header's view sends a non-empty state (op, commit and blob). */
struct electrode_recovery_response {
	__be64 nonce;
	/* Log head of the sender; a sender answering as booting (status
	 * RECOVERING) puts its own Recovery nonce here instead, so the asker
	 * learns which incarnation it boots with even when the two messages
	 * cross or reorder. */
	__be64 op;
	__be64 commit;
	__u8 replica;
	__u8 status;        /* ELECTRODE_STATUS_* of the sender */
	__u8 pad[6];
	struct electrode_chunk chunk;
};
_Static_assert(sizeof(struct electrode_recovery_response) == 48,
	       "electrode_recovery_response size");

/* StatusRequest (operator -> replica). */
struct electrode_status_request {
	__be64 nonce;
};
_Static_assert(sizeof(struct electrode_status_request) == 8,
	       "electrode_status_request size");

/* StatusReply (replica -> operator). A replica that is not normal says why
 * it cannot serve yet: `waiting` when its recovery is blocked (more than f
 * replicas lost their memory while replica `holder` holds state, so it
 * waits for the operator instead of booting an empty cluster beside it). */
struct electrode_status_reply {
	__be64 nonce;
	__be64 op;
	__be64 commit;
	__be64 digest;      /* digest of the application state at `commit` */
	__u8 status;        /* ELECTRODE_STATUS_* */
	__u8 replica;
	__u8 catching_up;   /* 1: normal but still fetching the state; else 0 */
	__u8 waiting;       /* 1: recovering and blocked (holder fields set); else 0 */
	__u8 holder;        /* waiting: the most advanced replica holding state */
	__u8 pad[3];
	__be64 holder_view; /* waiting: the view and log head the holder reported */
	__be64 holder_op;
};
_Static_assert(sizeof(struct electrode_status_reply) == 56,
	       "electrode_status_reply size");

/* A state blob is the payload of a chunked message once reassembled: the
 * sender's checkpoint (application snapshot with its client table) followed
 * by its log entries after the checkpoint. Entries are in op order. */
struct electrode_state_blob {
	__be64 checkpoint_op;  /* the snapshot reflects ops 1..checkpoint_op */
	__be32 snapshot_len;   /* snapshot bytes follow this struct */
	__be32 entry_count;    /* then entry_count log entries */
};
_Static_assert(sizeof(struct electrode_state_blob) == 16, "electrode_state_blob size");

/* One log entry in a state blob; followed by request_count requests (each a
 * struct electrode_request and its op bytes) taking batch_len bytes, exactly
 * as in a Prepare. */
struct electrode_log_entry {
	__be64 op;
	__be64 view;           /* view in which the entry was prepared */
	__be16 request_count;
	__be16 batch_len;
	__u8 pad[4];
};
_Static_assert(sizeof(struct electrode_log_entry) == 24, "electrode_log_entry size");

/* Relations between the limits above. */
_Static_assert(ELECTRODE_MAX_DATAGRAM == ELECTRODE_MTU - 20 - 8, "datagram fits MTU");
_Static_assert(ELECTRODE_MAX_BODY == ELECTRODE_MAX_DATAGRAM - 24, "body after header");
_Static_assert(24 + 24 + ELECTRODE_MAX_OP_SIZE <= ELECTRODE_MAX_BODY,
	       "one maximal request fits one Prepare");
_Static_assert(24 + ELECTRODE_MAX_RESULT_SIZE <= ELECTRODE_MAX_BODY, "a reply fits");
_Static_assert(48 + ELECTRODE_CHUNK_SIZE <= ELECTRODE_MAX_BODY, "a chunk fits");
_Static_assert(ELECTRODE_MAX_REPLICAS < ELECTRODE_SENDER_CLIENT, "replica ids");

/* ---------------------------------------------------------------------- */
/* Maps and their owners                                                  */
/* ---------------------------------------------------------------------- */
/*
 * Every piece of kernel state user space shares: the header that defines
 * it, who writes it and who only reads it. "user" is the replica process
 * (src/fastpath/ reads and writes the maps, src/transport/kernel.rs decides
 * when to arm what). Where both sides act, the handover rule is in the
 * section named last. Maps are ARRAYs unless marked (the *_config and
 * *_state ones have one entry), electrode_intake_awake and _barrier are
 * .bss globals; a path's state exists only in a build with its feature.
 *
 * |state                      |defined in    |owner (writes)  |other side   |rules in         |
 * |---------------------------|--------------|----------------|-------------|-----------------|
 * |rodata electrode_port,     |common.h      |user, before    |kernel r/o   |(never change)   |
 * |  cluster_id, replica_count|              |load            |             |                 |
 * |counters (per-CPU array)   |common.h      |kernel, adds    |user sums    |Counters         |
 * |replica_addrs              |common.h      |user, once      |kernel r/o   |Membership       |
 * |follower_state             |fast_reply.h  |user; kernel    |both, locked |fast_reply       |
 * |                           |              |advances next_op|             |                 |
 * |prepare_ring (ringbuf)     |fast_reply.h  |kernel produces |user consumes|fast_reply       |
 * |qp_config                  |quorum_prune.h|user            |kernel r/o   |fast_quorum_prune|
 * |qp_state                   |quorum_prune.h|kernel          |user reads   |fast_quorum_prune|
 * |intake_config              |intake.h      |user            |kernel r/o   |fast_intake      |
 * |intake_ring (ringbuf)      |intake.h      |kernel produces |user consumes|fast_intake      |
 * |electrode_intake_awake     |intake.h      |user (mmap)     |kernel r/o   |fast_intake      |
 * |electrode_intake_barrier   |intake.h      |kernel          |nobody       |fast_intake      |
 * |broadcast_config           |tc_broadcast.h|user            |kernel r/o   |tc_broadcast     |
 * |broadcast_targets          |tc_broadcast.h|user            |kernel r/o   |tc_broadcast     |
 * |broadcast_macs             |tc_broadcast.h|kernel (XDP)    |user reads   |tc_broadcast     |
 */

/* ---------------------------------------------------------------------- */
/* Counters                                                               */
/* ---------------------------------------------------------------------- */
/*
 * The per-CPU ARRAY map `counters`, ELECTRODE_CNT_MAX slots of one u64: the
 * kernel only adds (count() in common.h), user space sums each slot over
 * the CPUs (src/fastpath/counters.rs). The classifier counts every frame
 * electrode_xdp sees exactly once, under its message type or under the
 * reason it is not a datagram of ours; a fast path then counts what it did
 * with the frame, and electrode_tc what it did with each egress frame.
 *
 *   slot 0                         never counted (no message type is 0)
 *   1..ELECTRODE_MSG_TYPE_MAX      well-formed datagrams of our cluster, by
 *                                  type: the index is the ELECTRODE_MSG_*
 *   ELECTRODE_CNT_* (the enum)     one slot each, in this order, right
 *                                  after the message types
 *
 * An enum, so the slots have no gaps and a new message type or counter
 * moves the ones after it; nothing outside this object depends on a slot
 * number (user space reads the slots with the same build's numbers).
 *
 * Each entry is ELECTRODE_CNT_<PATH>_<WHAT>, followed on its line by a
 * comment "<name>: <what it counts>". <PATH> is the program or fast path
 * that counts it (CLASSIFY, REPLY for fast_reply, QP for
 * fast_quorum_prune, TC for tc_broadcast, INTAKE for fast_intake). <name>
 * is what users see: the rows of `electrode stats`, the `event` label of
 * electrode_kernel_events_total on the replica's metrics, the "eBPF
 * counters" line of its exit log, and the Rust field path of
 * fastpath::Counters (a name `group.field` is field `field` of the struct
 * in Counters::group). build.rs generates the Rust fields, their docs and
 * the index of each from these lines, so adding a counter is one line
 * here; renaming a <name> renames a metric, which users notice.
 *
 * A name starting with pass_ (after its group) counts frames the program
 * passed on to the stack (XDP_PASS); drop_, frames the kernel dropped.
 * User space sums a group's verdicts by that prefix.
 */
enum electrode_counter {
	/* The classifier (parse_frame in parse.h): why a frame is not a
	 * well-formed datagram of our cluster. */
	ELECTRODE_CNT_CLASSIFY_FOREIGN = ELECTRODE_MSG_TYPE_MAX + 1, /* foreign: not UDP/IPv4 to our
						 * port: ARP, IPv6, other ports, runts */
	ELECTRODE_CNT_CLASSIFY_MALFORMED,       /* malformed: our port, but truncated, fragmented or
						 * with inconsistent lengths */
	ELECTRODE_CNT_CLASSIFY_BAD_MAGIC,       /* bad_magic: our port, wrong magic or protocol
						 * version */
	ELECTRODE_CNT_CLASSIFY_WRONG_CLUSTER,   /* wrong_cluster: our port, well formed, another
						 * cluster id */
	ELECTRODE_CNT_CLASSIFY_UNKNOWN_TYPE,    /* unknown_type: our port, type 0 or above
						 * ELECTRODE_MSG_TYPE_MAX */

	/* fast_reply (follower XDP, fast_reply.h): what happened to each
	 * well-formed Prepare (also counted under its type). */
	ELECTRODE_CNT_REPLY_TX,                 /* fast_reply_tx: in-order Prepare logged to
						 * prepare_ring and acked by XDP_TX */
	ELECTRODE_CNT_REPLY_REACK_TX,           /* reack_tx: already acked Prepare (a retransmit)
						 * acked again by XDP_TX */
	ELECTRODE_CNT_REPLY_PASS_VIEW,          /* pass_view: passed: a Prepare of another view than
						 * the armed one */
	ELECTRODE_CNT_REPLY_PASS_GAP,           /* pass_gap: passed: op beyond the next one (a gap:
						 * user space fetches state) */
	ELECTRODE_CNT_REPLY_PASS_DISARMED,      /* pass_disarmed: passed: disarmed (this replica is
						 * not a normal follower) */
	ELECTRODE_CNT_REPLY_PASS_RINGBUF_FULL,  /* pass_ringbuf_full: passed: an in-order Prepare
						 * found prepare_ring full */
	ELECTRODE_CNT_REPLY_PASS_NOT_LEADER,    /* pass_not_leader: passed: source IPv4/port or
						 * sender is not the armed leader's */
	ELECTRODE_CNT_REPLY_PASS_IP_OPTIONS,    /* pass_ip_options: passed: IPv4 options (the
						 * in-place rewrite wants a 20-byte header) */
	ELECTRODE_CNT_REPLY_PASS_BAD_BATCH,     /* pass_bad_batch: passed, not acked: body lengths
						 * (batch length, request count, request sizes) user
						 * space cannot decode */
	ELECTRODE_CNT_REPLY_PASS_BAD_CHECKSUM,  /* pass_bad_checksum: passed, not acked: a full UDP
						 * checksum that does not verify (the stack then
						 * drops it) */
	ELECTRODE_CNT_REPLY_PASS_OP_LIMIT,      /* pass_op_limit: passed, not acked: op 2^64 - 1,
						 * after which next_op would wrap */

	/* fast_quorum_prune (leader XDP, quorum_prune.h): verdicts on
	 * PrepareOKs; the rules are in the fast_quorum_prune section. */
	ELECTRODE_CNT_QP_PASS_QUORUM,           /* quorum_prune.pass_quorum: passed: the ack that
						 * completed the quorum of an op */
	ELECTRODE_CNT_QP_PASS_AFTER_QUORUM,     /* quorum_prune.pass_after_quorum: passed: a
						 * repeated ack of an op that has a quorum (the
						 * follower answered a retransmitted Prepare) */
	ELECTRODE_CNT_QP_DROP_BELOW_QUORUM,     /* quorum_prune.drop_below_quorum: dropped: a new
						 * ack, recorded; its op is still short of a
						 * quorum */
	ELECTRODE_CNT_QP_DROP_REDUNDANT,        /* quorum_prune.drop_redundant: dropped: a
						 * duplicate, a late follower's ack, or an op below
						 * the window */
	ELECTRODE_CNT_QP_PASS_WINDOW,           /* quorum_prune.pass_window: passed: op at or beyond
						 * the top of the window */
	ELECTRODE_CNT_QP_PASS_VIEW,             /* quorum_prune.pass_view: passed: another view than
						 * the armed one, or the config changed
						 * mid-packet */
	ELECTRODE_CNT_QP_PASS_DISARMED,         /* quorum_prune.pass_disarmed: passed: not armed (a
						 * follower, a view change) */
	ELECTRODE_CNT_QP_PASS_NOT_MEMBER,       /* quorum_prune.pass_not_member: passed: cannot be
						 * credited to a follower (self, not a member,
						 * sender and replica differ, odd body) */
	ELECTRODE_CNT_QP_DROP_FOREIGN_SOURCE,   /* quorum_prune.drop_foreign_source: dropped,
						 * nothing recorded: claims replica r, but its
						 * source IPv4 address or UDP port is not r's
						 * (membership rule) */
	ELECTRODE_CNT_QP_PASS_GAP,              /* quorum_prune.pass_gap: passed, nothing recorded:
						 * a follower's negative ack
						 * (ELECTRODE_PREPARE_OK_GAP: it asks for op + 1) */

	/* tc_broadcast (electrode_tc, and MAC learning in electrode_xdp;
	 * tc_broadcast.h). */
	ELECTRODE_CNT_TC_MARKED,                /* tc_marked: marked datagram from our port seen on
						 * egress */
	ELECTRODE_CNT_TC_COPIES,                /* tc_copies: copies sent to followers: clones plus
						 * the original, rewritten for the last */
	ELECTRODE_CNT_TC_ERROR,                 /* tc_error: a rewrite helper or bpf_clone_redirect
						 * failed: the packet was dropped */
	ELECTRODE_CNT_TC_NO_TARGET,             /* tc_no_target: marked, but disarmed or no follower
						 * MAC known: passed as is */
	ELECTRODE_CNT_TC_PASS_UNMARKED,         /* tc_pass_unmarked: electrode datagram from our
						 * port, not marked (each of our clones re-enters
						 * once) */
	ELECTRODE_CNT_TC_PASS_OTHER,            /* tc_pass_other: egress frame that is not UDP/IPv4
						 * from our port */
	ELECTRODE_CNT_TC_MALFORMED,             /* tc_malformed: from our port, but not a
						 * well-formed datagram of our cluster */
	ELECTRODE_CNT_TC_MAC_LEARNED,           /* tc_mac_learned: electrode_xdp stored a new or
						 * changed follower MAC */

	/* fast_intake (leader XDP, intake.h): verdicts on client Requests;
	 * the rules are in the fast_intake section. */
	ELECTRODE_CNT_INTAKE_RING,              /* intake.ring: copied into intake_ring and dropped
						 * from the stack */
	ELECTRODE_CNT_INTAKE_PASS_DISARMED,     /* intake.pass_disarmed: passed: not armed (a
						 * follower, a view change) */
	ELECTRODE_CNT_INTAKE_PASS_NOT_CLIENT,   /* intake.pass_not_client: passed: the header's
						 * sender is a replica id (user space applies the
						 * membership rule) */
	ELECTRODE_CNT_INTAKE_PASS_NOT_FOR_US,   /* intake.pass_not_for_us: passed: another
						 * destination, a martian source, an IPv4 total
						 * length or header checksum the stack would
						 * refuse */
	ELECTRODE_CNT_INTAKE_PASS_BAD_BODY,     /* intake.pass_bad_body: passed: body lengths
						 * wire::decode refuses for a Request */
	ELECTRODE_CNT_INTAKE_PASS_BAD_CHECKSUM, /* intake.pass_bad_checksum: passed: a full UDP
						 * checksum that does not verify */
	ELECTRODE_CNT_INTAKE_PASS_RINGBUF_FULL, /* intake.pass_ringbuf_full: passed: no room in
						 * intake_ring (the request goes by the socket) */
	ELECTRODE_CNT_INTAKE_PASS_ASLEEP,       /* intake.pass_asleep: passed: user space was
						 * asleep; the socket wakes it (see "Wake-ups") */

	ELECTRODE_CNT_MAX                       /* slots of the map (not a counter) */
};

/* ---------------------------------------------------------------------- */
/* Membership: the one rule for trusting a sender id                      */
/* ---------------------------------------------------------------------- */

/*
 * A datagram whose header (or body) says it comes from replica r is trusted
 * by a kernel program only if its IPv4 source address AND its UDP source
 * port are r's configured ones, the same rule user space applies ("sender
 * address is not the replica's"). The configured addresses are the ARRAY map
 * `replica_addrs` (ELECTRODE_MAX_REPLICAS entries, key = replica index),
 * checked by from_member() in common.h and used by:
 *   - quorum_prune: an ack for replica r from anywhere else records nothing
 *     and is dropped (ELECTRODE_CNT_QP_DROP_FOREIGN_SOURCE): user space would
 *     drop it too, and passing it would only cost the leader a wake-up;
 *   - fast_reply: a Prepare is acked only if it passes the rule for the
 *     armed leader index (on top of follower_state's leader_ip/port, which
 *     user space arms with the same configured address);
 *   - tc_broadcast MAC learning: only a member's configured address teaches
 *     the kernel that member's MAC.
 * electrode_tc trusts no sender id (it sees only our own egress datagrams),
 * nor does fast_intake: it takes only Requests with the client sender id
 * and passes one that names a replica (user space applies this rule).
 *
 * What the rule does not cover: a host on the same L2 that spoofs a
 * member's IPv4 address and port, and a member that lies. Neither is
 * distinguishable from the member by address; VR assumes crash faults.
 *
 * Ownership: user space writes every entry ONCE, from the config, after
 * load and before it arms any fast path or attaches any program
 * (Loaded::set_members; every arm refuses to run before it); the kernel
 * only reads. The config never changes while a replica runs, so there is
 * no handover: an entry with configured = 0 (nothing written yet, or an
 * index >= replica_count) matches no datagram, so a program attached too
 * early trusts nobody rather than anybody.
 */
struct electrode_replica_addr {
	__be32 ip;          /* IPv4 source address of replica r's datagrams */
	__be16 port;        /* UDP source port of replica r's datagrams */
	__u8 configured;    /* 1: written from the config; 0: matches nothing */
	__u8 pad;
};
_Static_assert(sizeof(struct electrode_replica_addr) == 8, "electrode_replica_addr size");

/* ---------------------------------------------------------------------- */
/* fast_reply: follower state and the Prepare ring buffer                 */
/* ---------------------------------------------------------------------- */

/* vmlinux.h defines struct bpf_spin_lock for the eBPF build. Anything else
 * that includes this header without vmlinux.h (a host-side C tool) gets the
 * same 4-byte layout. build.rs only reads `#define ELECTRODE_` lines. */
#ifndef __VMLINUX_H__
struct bpf_spin_lock {
	__u32 val;
};
#endif

/* The only entry (key 0) of the 1-entry ARRAY map `follower_state`.
 * Unlike the wire structs, view and next_op are HOST byte order (a map
 * value, never sent); leader_ip/leader_port are network order because the
 * kernel compares them with packet fields as they are. User space writes and
 * reads it only with BPF_F_LOCK, the kernel only between bpf_spin_lock and
 * bpf_spin_unlock, so every read sees one consistent version. */
struct electrode_follower_state {
	struct bpf_spin_lock lock; /* taken by the kernel; ignored in BPF_F_LOCK copies */
	__u32 armed;        /* 1: the kernel acks Prepares of `view`; 0: it passes them */
	__u64 view;         /* the view the follower is normal in */
	__u64 next_op;      /* the op the kernel acks next (log head + 1) */
	__be32 leader_ip;   /* IPv4 source a Prepare must come from */
	__be16 leader_port; /* UDP source port a Prepare must come from */
	__u8 leader_index;  /* header `sender` a Prepare must carry */
	__u8 self_index;    /* this replica: `sender` and `replica` of the PrepareOK */
};
_Static_assert(sizeof(struct electrode_follower_state) == 32, "electrode_follower_state size");

/* One record of the `prepare_ring` ring buffer: an acked Prepare datagram,
 * header included, exactly as it arrived. Records are fixed size because
 * bpf_ringbuf_reserve needs a constant size; `len` says how much of `data`
 * is used. */
struct electrode_prepare_record {
	__u32 len;          /* bytes of data used, 48..ELECTRODE_MAX_DATAGRAM (host order) */
	__u8 pad[4];
	__u8 data[ELECTRODE_MAX_DATAGRAM];
};
_Static_assert(sizeof(struct electrode_prepare_record) == 1480, "electrode_prepare_record size");

/* Size of `prepare_ring` in bytes. One record takes 1480 bytes plus the
 * ring's 8-byte record header = 1488. The leader has at most
 * ELECTRODE_PIPELINE_MAX (64) uncommitted ops, so a follower that drains
 * once per commit needs 64 x 1488 = 95,232 bytes; a factor 2 covers a drain
 * that runs late by a full pipeline (ops of the next window arrive before
 * user space drained the last) = 190,464, rounded up to the next power of two
 * pages (the kernel requires a power of two multiple of the page size):
 * 262,144 = 256 KiB = 64 pages of 4 KiB, room for 176 records. When full,
 * Prepares pass to user space (counted), nothing is lost. */
#define ELECTRODE_RINGBUF_BYTES 262144
_Static_assert(ELECTRODE_PIPELINE_MAX * (1480 + 8) * 2 <= ELECTRODE_RINGBUF_BYTES,
	       "prepare_ring holds two pipelines of maximal Prepares");
_Static_assert((ELECTRODE_RINGBUF_BYTES & (ELECTRODE_RINGBUF_BYTES - 1)) == 0,
	       "prepare_ring size is a power of two");

/*
 * Ownership (the overview is "Maps and their owners" above).
 *
 * fast_reply (only with -DFAST_REPLY), map `follower_state`, key 0. User
 * space accesses it only with BPF_F_LOCK, the kernel only under the lock:
 *
 * | field                     | owner while armed | owner while disarmed       |
 * |---------------------------|-------------------|----------------------------|
 * | armed                     | user (writes 0)   | user (writes 1 with arm)   |
 * | view                      | user, constant    | user                       |
 * | next_op                   | KERNEL (advances) | user                       |
 * | leader_ip/port/index      | user, constant    | user                       |
 * | self_index                | user, constant    | user                       |
 * | prepare_ring records      | kernel produces, user consumes (always)        |
 *
 * Handover rule. While armed, the kernel owns next_op: for each in-order
 * Prepare of `view` from the leader it reserves a ring record, then under
 * the lock re-checks armed/view/next_op and advances next_op, and submits
 * the record; user space only reads the state and consumes the ring. The
 * kernel never changes armed, view or the leader. Before user space changes
 * its view, status or log position it (1) disarms: one locked update with
 * armed=0 (after it no critical section advances next_op); (2) drains the
 * ring completely, waiting until the consumer position reaches the producer
 * position (a CPU may be between its critical section and its submit);
 * (3) appends every drained Prepare to its log; (4) acts; (5) re-arms with
 * the new view, leader and next_op = log head + 1 in ONE locked update with
 * armed=1. Arming is refused while armed, so user space never overwrites a
 * next_op the kernel advanced. Nothing the kernel acked is lost: an op is
 * acked by XDP only after its record is reserved and filled, and the record
 * stays in the ring until user space consumed it into its log.
 *
 * The disarm update carries the other fields as user space last read them
 * (a BPF_F_LOCK update writes the whole value), so a CPU that acked between
 * that read and the update has its next_op advance overwritten. Its record
 * is in the ring, so after the drain of step (2) user space writes next_op
 * = highest drained op + 1 (still armed=0: nobody else writes then). This
 * is done by FollowerPath::disarm_follower in src/fastpath/follower.rs.
 *
 * Re-acks: a Prepare with op < next_op is answered with a PrepareOK for
 * next_op - 1 (cumulative: every op <= next_op - 1 is logged or in the ring).
 *
 * Numbers from the wire near 2^64. The kernel's only arithmetic on them:
 * fast_reply's next_op = op + 1 (op == 2^64 - 1 is passed, never acked:
 * ELECTRODE_CNT_REPLY_PASS_OP_LIMIT) and next_op - 1 for a re-ack (only
 * when op < next_op, so next_op >= 1); quorum_prune's window test op >= base + 64,
 * where arm keeps base < 2^62, so it cannot wrap and an op or view near
 * 2^64 is passed as outside the window or of another view. Views are only
 * compared for equality. Fixtures with u64::MAX views and ops pin this.
 *
 * The kernel acks only what user space can log. Before acking, fast_reply
 * checks the body exactly as wire::decode does (fr_batch_ok): 1..MAX_BATCH
 * requests, each op_len <= MAX_OP_SIZE, together exactly batch_len bytes,
 * body_len == 24 + batch_len, all inside the frame. A Prepare that fails
 * is passed, never acked (ELECTRODE_CNT_REPLY_PASS_BAD_BATCH): user space
 * drops and counts it, and the leader retransmits.
 *
 * UDP checksum. fast_reply verifies it when it is a full checksum, and
 * passes the Prepare unacked when it does not verify
 * (ELECTRODE_CNT_REPLY_PASS_BAD_CHECKSUM; the kernel stack then checks it
 * again and drops it). Two values are not full checksums and are skipped:
 *   - 0: the sender computed none (legal in IPv4);
 *   - the folded pseudo-header sum: a CHECKSUM_PARTIAL skb from a socket
 *     on this host or across a veth, whose checksum the NIC was to finish.
 *     Measured on this machine (docs/PLATFORM.md gotcha 5): XDP on veth sees
 *     exactly that value, and the fixture
 *     prepare_with_a_full_udp_checksum_that_does_not_verify_is_passed_not_acked
 *     pins both cases; verifying it would
 *     refuse every Prepare of the namespace cluster. Such a datagram never
 *     crossed a wire: it went from memory to memory, where a checksum
 *     protects nothing Ethernet's FCS would not.
 * A Prepare from a real NIC carries the full checksum and is verified. A
 * corrupt Prepare whose checksum still happens to equal its pseudo-header
 * sum (1 in 65,536 of those that escaped the FCS) is the residual risk.
 *
 * A record user space cannot log after the kernel acked it (a kernel or
 * build mismatch; the checks above make it impossible for any frame the
 * kernel accepts) must never make the follower skip an op it vouched for,
 * nor panic. The runtime (FollowerPath::drain_prepares) hands the core only
 * the valid, contiguous prefix of what the kernel acked (records in op
 * order from the armed next_op, of the armed view) and stops at the first
 * record that is not; then the replica exits with an error naming the op.
 * Why that is safe: the kernel already told the leader "I hold every op up
 * to n", so this replica's log is no longer a log it can vouch for. Exiting
 * is a crash in VR's model: a restarted replica boots into recovery, does
 * not vote until it has the state of a quorum's latest view, and with at
 * most f replicas failed at once every op a quorum acked survives on the
 * others. Continuing without the op instead could let it vote in a view
 * change with a log missing an op it acked.
 */

/* ---------------------------------------------------------------------- */
/* fast_quorum_prune                                                      */
/* ---------------------------------------------------------------------- */
/*
 * On the leader, electrode_xdp counts PrepareOKs and passes to user space
 * only the one that completes a quorum (f acks from followers); the other
 * acks are dropped in the kernel. Built with -DFAST_QUORUM_PRUNE (cargo
 * feature fast_quorum_prune); code in bpf/quorum_prune.h, Rust API in
 * src/fastpath/quorum.rs.
 *
 * State is per follower, not per op: a PrepareOK for op n from replica r
 * vouches for every op <= n (VR: a replica acks only with its log complete
 * up to n), so "highest op r vouched for" (acked_op[r]) holds exactly what
 * per-op bitmaps would, with no slot that two ops could alias. The ack
 * bitmap of op n is { r : acked_op[r] >= n }, and op n has a quorum when
 * that set holds >= f followers. quorum_op, the f-th largest acked_op, is
 * the highest op with a quorum; an ack that raises it is the one to pass.
 *
 * Two maps, each with one writer, so no side ever overwrites the other's
 * update (a single value written by both would lose kernel updates made
 * between a user-space read and write):
 *   qp_config  (ARRAY, 1 entry)  user space writes, kernel reads;
 *   qp_state   (ARRAY, 1 entry)  kernel writes, user space reads.
 * Both carry a bpf_spin_lock; user space reads and writes with BPF_F_LOCK,
 * the kernel copies qp_config out under its lock, then updates qp_state
 * under its own (never both at once). Values are host byte order.
 *
 * Ownership (the overview is "Maps and their owners" above):
 *
 * | state     | owner  | other side | handover                               |
 * |-----------|--------|------------|----------------------------------------|
 * | qp_config | user   | kernel r/o | the leader arms it with its view,      |
 * |           |        |            | window base and f (new generation);    |
 * |           |        |            | moves window_base_op up as ops commit; |
 * |           |        |            | disarms when it starts a view change   |
 * |           |        |            | or stops leading; the next leader arms |
 * |           |        |            | it with its own view and window        |
 * | qp_state  | kernel | user reads | never written by user space; the       |
 * |           |        |            | kernel resets it on the first ack      |
 * |           |        |            | under a newer qp_config generation     |
 *
 * Rules, in the order the kernel applies them (first match wins), for a
 * well-formed PrepareOK of our cluster (anything the classifier rejects
 * was already counted by reason and passes):
 *   disarmed (or a window base arm never writes:
 *     0 or >= 2^62)                              -> PASS  QP_PASS_DISARMED
 *   header view != armed view                    -> PASS  QP_PASS_VIEW
 *   replica >= replica_count, == self_index,
 *     != header sender, or body != 16 bytes      -> PASS  QP_PASS_NOT_MEMBER
 *   source IPv4 address or UDP port is not
 *     replica_addrs[replica] (membership rule)   -> DROP  QP_DROP_FOREIGN_SOURCE
 *   op >= window_base_op + QP_WINDOW             -> PASS  QP_PASS_WINDOW
 *   op < window_base_op (user space committed it) -> DROP QP_DROP_REDUNDANT
 *   replica already vouched for op (duplicate):
 *     op has a quorum                            -> PASS  QP_PASS_AFTER_QUORUM
 *     op short of a quorum                       -> DROP  QP_DROP_REDUNDANT
 *   new ack, recorded in acked_op[replica]:
 *     completes the quorum of an op in the window -> PASS QP_PASS_QUORUM
 *     op already had a quorum (late follower)    -> DROP  QP_DROP_REDUNDANT
 *     otherwise                                  -> DROP  QP_DROP_BELOW_QUORUM
 *
 * No lost commit (a passed quorum-completing ack can still be lost, e.g.
 * on a full socket buffer): (1) user space never relies on receiving it:
 * when an op's prepare timer fires it reads the quorum from qp_state
 * (quorum_acks) before retransmitting; (2) a follower re-acks a
 * retransmitted Prepare, and a repeated ack of an op that already has a
 * quorum is passed (QP_PASS_AFTER_QUORUM), so the retransmission alone
 * also gets a completing ack through. First acks of late followers carry no
 * news and are dropped, which is what makes pruning pay off at f = 1.
 *
 * User space stays the authority: on every passed PrepareOK it reads the
 * op's ack bitmap from qp_state and gives its core one PrepareOK per
 * replica in it; the core checks view, membership and count itself.
 */

/* Ops the leader may have in flight; an ack beyond window_base_op +
 * QP_WINDOW cannot be for an op we prepared in this window and is passed.
 * Equal to the core's pipeline bound (asserted below and in Rust). */
#define ELECTRODE_QP_WINDOW 64
_Static_assert(ELECTRODE_QP_WINDOW == ELECTRODE_PIPELINE_MAX,
	       "quorum prune window is the pipeline bound");

/* qp_config: written by user space only (BPF_F_LOCK), read by the kernel. */
struct electrode_qp_config {
	struct bpf_spin_lock lock;
	__u32 armed;            /* 1: prune; 0: pass every PrepareOK */
	__u64 generation;       /* bumped by every arm; qp_state follows it */
	__u64 view;             /* the view this replica leads */
	__u64 window_base_op;   /* lowest uncommitted op, >= 1 */
	__u32 quorum_followers; /* f: follower acks that make a quorum */
	__u32 replica_count;    /* 2f + 1, <= ELECTRODE_MAX_REPLICAS */
	__u32 self_index;       /* the leader's replica index */
	__u32 pad;
};
_Static_assert(sizeof(struct electrode_qp_config) == 48, "electrode_qp_config size");

/* qp_state: written by the kernel only, read by user space (BPF_F_LOCK).
 * Valid for the arm whose generation it carries; the kernel resets it on
 * the first ack it sees under a newer generation. */
struct electrode_qp_state {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 generation;       /* qp_config generation this state belongs to */
	__u64 quorum_op;        /* highest op acked by >= f followers (0: none) */
	__u64 acked_op[ELECTRODE_MAX_REPLICAS]; /* highest op replica i vouched for */
};
_Static_assert(sizeof(struct electrode_qp_state) == 24 + 8 * ELECTRODE_MAX_REPLICAS,
	       "electrode_qp_state size");

/* ---------------------------------------------------------------------- */
/* fast_intake                                                            */
/* ---------------------------------------------------------------------- */
/*
 * On the leader, electrode_xdp takes well-formed client Requests off the
 * wire and hands them to user space through the `intake_ring` ring buffer
 * instead of the UDP socket (XDP_DROP after the copy), waking user space
 * once per batch rather than once per datagram. Built with -DFAST_INTAKE
 * (cargo feature fast_intake); code in bpf/intake.h, Rust API in
 * src/fastpath/intake.rs, runtime in src/transport/kernel.rs.
 *
 * The kernel decides nothing about a request: user space feeds each record
 * to the same code a socket datagram goes through (decode, the membership
 * rule, client-address binding with the record's source as `from`, the
 * core's session rules). So the kernel takes only what the socket would
 * have delivered to user space byte for byte, and passes (XDP_PASS, the
 * stack and the socket decide) everything else.
 *
 * Rules, in the order the kernel applies them (first match wins), for a
 * frame the classifier counted as a Request (our port, our cluster,
 * lengths consistent up to the header's body_len):
 *   disarmed (not the leader in normal status)   -> PASS INTAKE_PASS_DISARMED
 *   header sender is not ELECTRODE_SENDER_CLIENT
 *     (a replica id: user space applies the
 *     membership rule to it, the kernel trusts no
 *     sender id)                                  -> PASS INTAKE_PASS_NOT_CLIENT
 *   the stack might not deliver it to our socket:
 *     IPv4 destination is not the armed address,
 *     source is 0/8, 127/8, 224/4 (multicast and
 *     above) or our own address (martians), IPv4
 *     total length != header + UDP length, or the
 *     IPv4 header checksum does not verify        -> PASS INTAKE_PASS_NOT_FOR_US
 *   body not exactly what wire::decode accepts
 *     for a Request (op_len <= MAX_OP_SIZE and
 *     body_len == 24 + op_len)                    -> PASS INTAKE_PASS_BAD_BODY
 *   a full UDP checksum that does not verify
 *     (rules of "UDP checksum" in fast_reply)     -> PASS INTAKE_PASS_BAD_CHECKSUM
 *   no room in intake_ring                        -> PASS INTAKE_PASS_RINGBUF_FULL
 *   user space asleep (electrode_intake_awake 0,
 *     read after the reserve; see "Wake-ups")     -> PASS INTAKE_PASS_ASLEEP
 *   re-check under the lock: disarmed or re-armed
 *     for another view since the first read       -> PASS INTAKE_PASS_DISARMED
 *   otherwise: record submitted                   -> DROP INTAKE_RING
 * A passed Request reaches user space by the socket as before: nothing is
 * lost when the ring is full, only the batching.
 *
 * Wake-ups. The ring never wakes user space: requests reach it by the
 * ring only while it is awake, and by the socket (whose wake-up is the
 * ordinary one) while it sleeps. A ring buffer's own wake-up is an
 * irq_work, a self-interrupt on the CPU that submitted, which in this VM
 * cost the sending client ~10 us and the leader a second wake-up per
 * request at one request outstanding (p50 42 -> 55 us, bench/README.md).
 * The flag electrode_intake_awake (.bss, written by user space through its
 * mmap, read by the kernel) decides, with a Dekker-style handshake:
 *   kernel: reserve a record (moves the producer position); full barrier
 *           (an atomic exchange: a fetching BPF atomic, which JITs order
 *           fully; a non-fetching atomic add is not a barrier); read
 *           awake; 0: discard the record and pass
 *           (INTAKE_PASS_ASLEEP); 1: fill it and submit with
 *           BPF_RB_NO_WAKEUP.
 *   user:   before it sleeps: awake = 0; full barrier; read the producer
 *           and consumer positions; if they differ, awake = 1 and drain
 *           instead of sleeping (a record between reserve and submit is
 *           waited for, as disarm does). On every wake-up, awake = 1
 *           before it reads the ring or the socket.
 * Each side writes, then reads the other's variable, with a full barrier
 * between: either user space sees the reserved record before it sleeps,
 * or the kernel sees it asleep and the request goes by the socket. So a
 * sleeping leader is woken by its socket, and the requests that arrive
 * while it works cost no wake-up and no syscall each (it drains the ring
 * after each round of work, before it would sleep).
 *
 * Ownership:
 *
 * | state              | owner  | other side  | handover                      |
 * |--------------------|--------|-------------|-------------------------------|
 * | intake_config      | user   | kernel r/o  | armed (with the view and the  |
 * |   (all fields)     |        |             | replica's own address) only   |
 * |                    |        |             | while this replica leads in   |
 * |                    |        |             | normal status; disarmed on    |
 * |                    |        |             | every view or status change   |
 * | intake_ring        | kernel produces, user consumes (always)            |
 * | records            |        |             |                               |
 * | electrode_intake_  | user   | kernel r/o  | the "Wake-ups" handshake      |
 * |   awake (.bss)     |        |             | above; arming does not touch  |
 * |                    |        |             | it                            |
 * | electrode_intake_  | kernel | nobody      | (the atomic exchange's target |
 * |   barrier (.bss)   |        |             | only)                         |
 *
 * Handover rule. User space writes intake_config only with BPF_F_LOCK; the
 * kernel reads it under the lock, reserves and fills a record, then
 * re-checks armed and view under the lock before it submits (else it
 * discards and passes). Before the core changes view or status, user space
 * drains the ring and feeds the requests to the core (in the view they
 * arrived in); after any input that left this replica not leading in
 * normal status (or leading another view), it (1) disarms: one locked write
 * with armed = 0, after which no re-check succeeds; (2) drains the ring
 * completely, waiting until the consumer position reaches the producer
 * position (a CPU may be between its re-check and its submit); (3) feeds
 * what it drained to the core like any socket datagram (a follower core
 * drops requests; the client re-sends to the new leader). The next leader
 * arms with its own view. A record whose view is not the one user space
 * armed cannot exist after (2); user space checks and counts it anyway.
 */

/* Largest Request datagram: header, request, largest op. */
#define ELECTRODE_MAX_REQUEST_DATAGRAM 1072
_Static_assert(ELECTRODE_MAX_REQUEST_DATAGRAM ==
	       sizeof(struct electrode_hdr) + sizeof(struct electrode_request) + ELECTRODE_MAX_OP_SIZE,
	       "largest request datagram");

/* The only entry (key 0) of the 1-entry ARRAY map `intake_config`. Host
 * byte order except self_ip (compared with the packet as is). */
struct electrode_intake_config {
	struct bpf_spin_lock lock; /* taken by the kernel; ignored in BPF_F_LOCK copies */
	__u32 armed;        /* 1: take Requests; 0: pass them */
	__u64 view;         /* the view this replica leads; records carry it */
	__be32 self_ip;     /* the replica's IPv4 address: requests must be sent to it */
	__u32 pad;
};
_Static_assert(sizeof(struct electrode_intake_config) == 24, "electrode_intake_config size");

/* One record of `intake_ring`: a Request datagram, header included, exactly
 * as the socket would have delivered it, with its source. Fixed size
 * (bpf_ringbuf_reserve needs a constant); `len` says how much of `data` is
 * used. data is a whole datagram long so the shared checksum loop's
 * constant bound stays inside the record. */
struct electrode_intake_record {
	__u64 view;         /* the armed view when the kernel took it (host order) */
	__be32 src_ip;      /* IPv4 source address: the `from` of client binding */
	__be16 src_port;    /* UDP source port */
	__u16 len;          /* bytes of data used, 48..ELECTRODE_MAX_REQUEST_DATAGRAM (host order) */
	__u8 data[ELECTRODE_MAX_DATAGRAM];
};
_Static_assert(sizeof(struct electrode_intake_record) == 1488, "electrode_intake_record size");

/* Size of `intake_ring`: 512 KiB, room for 512 KiB / (1488 + 8) = 350
 * records. A client session has one request outstanding, so the ring
 * overflows only when more than 350 sessions send between two drains of a
 * leader that drains at least once per tick (1 ms) and at every wake-up;
 * the overflow goes by the socket (counted). A power of two of pages, as
 * the kernel requires. */
#define ELECTRODE_INTAKE_RING_BYTES 524288
_Static_assert((ELECTRODE_INTAKE_RING_BYTES & (ELECTRODE_INTAKE_RING_BYTES - 1)) == 0,
	       "intake_ring size is a power of two");

/* ---------------------------------------------------------------------- */
/* tc_broadcast                                                           */
/* ---------------------------------------------------------------------- */

/*
 * The leader sends each all-follower message once, marked with
 * ELECTRODE_FLAG_BROADCAST; the TC egress program electrode_tc clones it to
 * every follower whose MAC is known, rewriting MAC, IP, port and checksums.
 * Nothing about the cluster is compiled in: addresses come from the config
 * (user space), MACs from the source of valid datagrams the followers send
 * (electrode_xdp learns them).
 */

/* Single entry (key 0) of the ARRAY map `broadcast_config`. */
struct electrode_broadcast_config {
	__be16 self_port;     /* UDP source port of the leader's socket */
	__u8 self_index;      /* this replica's index: never a target */
	__u8 replica_count;   /* targets at indices >= this are ignored */
	__u8 armed;           /* 1 only while this replica leads */
	__u8 pad[3];
};
_Static_assert(sizeof(struct electrode_broadcast_config) == 8,
	       "electrode_broadcast_config size");

/* ARRAY map `broadcast_targets`, ELECTRODE_MAX_REPLICAS entries, key = replica index. */
struct electrode_broadcast_target {
	__be32 ip;            /* replica's IPv4 address (from the config) */
	__be16 port;          /* replica's UDP port */
	__u8 in_use;          /* 1: a follower to send to */
	__u8 pad;
};
_Static_assert(sizeof(struct electrode_broadcast_target) == 8,
	       "electrode_broadcast_target size");

/* ARRAY map `broadcast_macs`, ELECTRODE_MAX_REPLICAS entries, key = replica
 * index. Exactly 8 bytes so the kernel writes and reads it as one 64-bit
 * word: a concurrent reader never sees half of a changed MAC. */
struct electrode_broadcast_mac {
	__u8 mac[6];          /* next-hop MAC of the replica (source MAC of its datagrams) */
	__u8 known;           /* 1 once learned */
	__u8 pad;
};
_Static_assert(sizeof(struct electrode_broadcast_mac) == 8,
	       "electrode_broadcast_mac size");

/*
 * Ownership (tc_broadcast). Targets and MACs are separate maps because a
 * BPF array update replaces a whole value: with both owners in one value,
 * user space re-writing a target would undo a MAC the kernel just learned.
 *
 * | state                          | owner  | other side  | handover                         |
 * |--------------------------------|--------|-------------|----------------------------------|
 * | broadcast_config (all fields)  | user   | kernel r/o  | any time; `armed` goes 0 before  |
 * |                                |        |             | targets change and 1 after       |
 * | broadcast_targets ip/port      | user   | kernel r/o  | from the config, only while      |
 * |                                |        |             | disarmed                         |
 * | broadcast_targets in_use       | user   | kernel r/o  | on view change: followers = all  |
 * |                                |        |             | but self; only while disarmed    |
 * | broadcast_macs mac/known       | kernel | user reads  | kernel (electrode_xdp) writes it |
 * |                                |        |             | from valid datagrams whose src   |
 * |                                |        |             | ip/port match target[sender];    |
 * |                                |        |             | user zeroes an entry only when   |
 * |                                |        |             | it changes that target's address |
 * |                                |        |             | (while disarmed), and fills one  |
 * |                                |        |             | that is not known from the       |
 * |                                |        |             | neighbour table (never overwrites|
 * |                                |        |             | a known MAC)                     |
 */

#endif /* ELECTRODE_H */
