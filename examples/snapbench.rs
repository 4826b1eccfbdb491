use electrode::app::kv::{KvOp, KvStore};
use electrode::app::App;
use std::time::Instant;
fn main() {
    let n: u32 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(2_000_000);
    let mut s = KvStore::default();
    let t = Instant::now();
    for i in 0..n {
        s.apply(&KvOp::Put { key: format!("key{i}").into_bytes(), value: vec![i as u8; 500] });
    }
    println!("fill {:?}", t.elapsed());
    let t = Instant::now();
    let snap = s.snapshot();
    println!("snapshot {:?} {} MB", t.elapsed(), snap.len() >> 20);
    let t = Instant::now();
    let mut f = s.freeze();
    let mut out = Vec::with_capacity(snap.len());
    while (out.len() as u64) < f.len() {
        f.encode_next(&mut out, 65536);
    }
    println!("stream {:?}", t.elapsed());
    let t = Instant::now();
    let mut r = KvStore::default();
    r.restore(&snap).unwrap();
    println!("restore {:?}", t.elapsed());
    let t = Instant::now();
    drop(r);
    println!("drop {:?}", t.elapsed());
    let t = Instant::now();
    let d = xxhash_rust::xxh3::xxh3_64(&snap);
    println!("xxh3 {:?} {d}", t.elapsed());
}
