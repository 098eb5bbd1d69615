//! How fast the pure core runs a realistic applicant life: `decide` + `evolve` for each command,
//! then a full replay with `fold`. Run with `cargo run --release -p vetted-domain --example throughput`.

use std::time::Instant;

use serde_json::json;
use vetted_domain::testing::{
    after, assign, create, decline, fail, kyc_basic, pass, raise, warning,
};
use vetted_domain::{fold, ApplicantEvent, Command, StepType::*};

fn life() -> Vec<Command> {
    vec![
        create(kyc_basic()),
        Command::StartVerification,
        fail(DocumentCheck, "glare"),
        pass(DocumentCheck, json!({"documentNumber": "L898902C3"})),
        raise(1, "DOCUMENT_EXPIRED"),
        pass(Liveness, json!({})),
        Command::ResolveWarning {
            id: warning(1),
            comment: None,
        },
        assign("rev-1"),
        pass(FaceMatch, json!({"score": 80})),
        pass(Aml, json!({"hits": 0})),
        decline("face match too low"),
        Command::RestartFlow,
    ]
}

fn main() {
    let lives = 20_000;
    let started = Instant::now();
    let mut events = 0usize;
    let mut last: Vec<ApplicantEvent> = Vec::new();
    for _ in 0..lives {
        last = after(life());
        events += last.len();
    }
    let decided = started.elapsed();
    let started = Instant::now();
    let mut sink = 0usize;
    for _ in 0..lives {
        let state = fold(&last);
        sink += state.steps.len();
    }
    let folded = started.elapsed();
    let started = Instant::now();
    for _ in 0..lives {
        for event in &last {
            let payload = event.to_payload();
            let back =
                ApplicantEvent::from_payload(event.event_type(), event.schema_version(), &payload);
            sink += usize::from(back.is_ok());
        }
    }
    let coded = started.elapsed();
    println!(
        "decide+evolve: {lives} lives, {events} events in {decided:?} = {:.0} events/s",
        events as f64 / decided.as_secs_f64()
    );
    println!(
        "fold replay: {:.0} events/s; payload round trip: {:.0} events/s (checksum {sink})",
        (lives * last.len()) as f64 / folded.as_secs_f64(),
        (lives * last.len()) as f64 / coded.as_secs_f64()
    );
}
