//! Event write throughput through the single writer (group commit), on a
//! file in WAL mode and in memory: N `step_state` events sent as fast as the
//! channel takes them, timed until the last is reported committed.

use std::collections::BTreeMap;
use std::time::Instant;

use plandeck::engine::api::{Event, EventKind, Role, StepState};
use plandeck::store::Location;
use plandeck::store::writer::{NewRun, Owner, WriteOp, Writer};

fn main() {
    divan::main();
}

fn events_per_second(location: &Location, n: u64) -> f64 {
    let (writer, mut committed) = Writer::spawn(location).expect("store opens");
    let run_id = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now();
    let new = NewRun {
        id: run_id.clone(),
        plan_hash: run_id.clone(),
        plan_name: "bench".into(),
        plan_source: "{}".into(),
        plan_path: None,
        base_dir: ".".into(),
        inputs_json: "{}".into(),
        max_concurrency: 1,
        approval: None,
        owner: Owner::this_process(),
        containment: String::new(),
        created_at: now,
    };
    writer
        .tx
        .blocking_send(WriteOp::CreateRun(Box::new(new)))
        .expect("send");
    let start = Instant::now();
    for seq in 1..=n {
        let event = Event {
            seq,
            run_id: run_id.clone(),
            ts: now,
            kind: EventKind::StepState {
                step: format!("s{}", seq % 1000),
                attempt: 1,
                state: if seq % 2 == 0 {
                    StepState::Ready
                } else {
                    StepState::Pending
                },
                role: Role::Step,
                pgid: None,
                end: None,
                reason: None,
                stderr_tail: None,
                outputs: BTreeMap::new(),
            },
        };
        writer
            .tx
            .blocking_send(WriteOp::Event(Box::new(event), None))
            .expect("send");
    }
    // This caller waits for the last event: commit it now.
    writer.tx.blocking_send(WriteOp::Flush).expect("send");
    if let Some(t) = writer.thread() {
        t.unpark();
    }
    loop {
        match committed.blocking_recv() {
            Some(plandeck::store::writer::Committed::Events { last_seq, .. }) if last_seq == n => {
                break;
            }
            Some(_) => {}
            None => panic!("writer stopped"),
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    writer.finish();
    rate
}

#[divan::bench(args = ["file", "memory"], sample_count = 3)]
fn write_100k_events(bencher: divan::Bencher, kind: &str) {
    bencher.bench(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = match kind {
            "file" => Location::File(dir.path().join("bench.db")),
            _ => Location::Memory,
        };
        let rate = events_per_second(&location, 100_000);
        eprintln!("{kind}: {rate:.0} events/s");
    });
}
