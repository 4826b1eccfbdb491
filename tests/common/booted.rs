//! A booted VR core: a `vr::Replica` with the KV store, driven into normal
//! status in view 0, for tests that feed it messages directly.

use electrode::app::kv::KvStore;
use electrode::vr::{Action, Config, Replica, Status};
use electrode::wire::{self, consts, Message};

/// The core of `config` started and booted: with more than one replica,
/// every other replica answers its recovery nonce without memory (the whole
/// cluster is booting). Returns it, normal in view 0, with what it asked
/// the runtime to do meanwhile.
pub fn booted_core(config: Config) -> (Replica, Vec<Action>) {
    let nonce = 7;
    let (replica_count, me) = (config.replica_count, config.index);
    let mut core = Replica::new(config, Box::new(KvStore::default()), nonce);
    let mut out = Vec::new();
    core.start(&mut out);
    for peer in (0..replica_count).filter(|r| *r != me) {
        let answer = wire::RecoveryResponse {
            view: 0,
            nonce,
            op: u64::from(peer) + 100,
            commit: 0,
            replica: peer,
            status: consts::STATUS_RECOVERING as u8,
            state: wire::StateBlob::default(),
        };
        core.on_message(peer, Message::RecoveryResponse(answer), &mut out);
    }
    assert_eq!(core.status(), Status::Normal, "booted");
    assert_eq!(core.view(), 0);
    (core, out)
}
