//! Generated applicant lifecycles for tests and benchmarks: every event comes out of
//! `vetted_domain::decide`, so the log is one the real engine could have written. Seeded and
//! deterministic (a small xorshift generator, no external randomness).
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;
use vetted_domain::{
    decide, evolve, AppKey, Applicant, ApplicantEvent, ApplicantId, Command, Context, DecisionKind,
    Flow, FlowSettings, StepOutcome, StepSpec, StepType, WarningId,
};
use vetted_store::{chain, Actor, ActorKind, NewEvent, RecordedEvent};

/// One append a client would make: a command's events on one applicant stream.
#[derive(Debug, Clone)]
pub struct Append {
    /// The applicant stream.
    pub stream: String,
    /// The events of one decided command.
    pub events: Vec<NewEvent>,
    /// When the command happened (stores stamp their own time; [`record`] uses this one).
    pub at: DateTime<Utc>,
}

/// Deterministic xorshift64* generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A number in `lo..hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// A random (version 4) UUID.
    pub fn uuid(&mut self) -> Uuid {
        let bytes = ((self.next_u64() as u128) << 64 | self.next_u64() as u128).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

/// The architecture's example flow: document check (3 attempts), liveness (5), face match
/// (threshold 85), AML; auto-approval on.
pub fn kyc_basic() -> Flow {
    Flow {
        id: Uuid::from_u128(0xf10e_0000_0000_4000_8000_0000_0000_0001),
        name: "kyc-basic".into(),
        version: 1,
        steps: vec![
            StepSpec::new(StepType::DocumentCheck).with_max_attempts(3),
            StepSpec::new(StepType::Liveness).with_max_attempts(5),
            StepSpec::new(StepType::FaceMatch).with_threshold(85.0),
            StepSpec::new(StepType::Aml),
        ],
        settings: FlowSettings {
            auto_approval: true,
            ..FlowSettings::default()
        },
    }
}

const COUNTRIES: [&str; 8] = ["UTO", "DEU", "FRA", "GBR", "USA", "ESP", "ITA", "NLD"];
const REVIEWERS: [&str; 3] = ["rev-1", "rev-2", "rev-3"];
const BROWSERS: [(&str, &str, &str); 3] = [
    (
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        "Linux",
        "Firefox",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Safari/604.1",
        "iOS",
        "Safari",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0) Chrome/126.0",
        "Windows",
        "Chrome",
    ),
];

/// Builds one applicant's life through `decide`.
struct Life<'a> {
    rng: &'a mut Rng,
    app: AppKey,
    id: ApplicantId,
    state: Applicant,
    clock: DateTime<Utc>,
    appends: Vec<Append>,
    device: (String, usize),
}

impl Life<'_> {
    fn actor(&mut self, kind: ActorKind) -> Actor {
        match kind {
            ActorKind::Applicant => {
                let (ua, os, browser) = BROWSERS[self.device.1];
                Actor {
                    kind,
                    id: Some(self.id.to_string()),
                    ip: Some(self.device.0.clone()),
                    user_agent: Some(ua.into()),
                    os: Some(os.into()),
                    browser: Some(browser.into()),
                }
            }
            ActorKind::Api => Actor {
                kind,
                id: Some("key-backend".into()),
                ip: Some("10.0.0.7".into()),
                user_agent: Some("vetted-client/1.0".into()),
                os: None,
                browser: None,
            },
            ActorKind::Reviewer => Actor {
                kind,
                id: self.state.reviewer.clone().or_else(|| Some("rev-1".into())),
                ip: Some("192.168.1.20".into()),
                user_agent: Some(BROWSERS[2].0.into()),
                os: Some("Windows".into()),
                browser: Some("Chrome".into()),
            },
            _ => Actor::system(),
        }
    }

    /// Decides `command`; if accepted, folds and records its events. Refusals are skipped,
    /// as a client would see a 409 and move on.
    fn run(&mut self, command: Command, actor: ActorKind) -> bool {
        self.clock += Duration::seconds(self.rng.between(1, 900) as i64);
        let Ok(events) = decide(&self.state, command, &Context::at(self.clock)) else {
            return false;
        };
        if events.is_empty() {
            return false;
        }
        let actor = self.actor(actor);
        let correlation_id = self.rng.uuid();
        let mut new_events = Vec::with_capacity(events.len());
        for event in &events {
            self.state = evolve(std::mem::take(&mut self.state), event);
            new_events.push(to_new_event(
                event,
                &self.app,
                actor.clone(),
                correlation_id,
                self.rng.uuid(),
            ));
        }
        self.appends.push(Append {
            stream: self.id.stream(),
            events: new_events,
            at: self.clock,
        });
        true
    }

    fn step(
        &mut self,
        step: StepType,
        outcome: StepOutcome,
        data: serde_json::Value,
        actor: ActorKind,
    ) -> bool {
        self.run(
            Command::SubmitStepResult {
                step,
                outcome,
                data: vetted_domain::testing::step_data(data),
                attempt: None,
                reason: None,
            },
            actor,
        )
    }
}

/// The `NewEvent` a server would append for a domain event.
pub fn to_new_event(
    event: &ApplicantEvent,
    app: &AppKey,
    actor: Actor,
    correlation_id: Uuid,
    event_id: Uuid,
) -> NewEvent {
    NewEvent {
        event_id,
        event_type: event.event_type().to_string(),
        schema_version: event.schema_version(),
        tenant: app.to_string(),
        actor,
        correlation_id,
        causation_id: None,
        payload: event.to_payload(),
    }
}

/// One applicant's whole life from `start` on `flow`: created, steps passed or failed with
/// retries, warnings raised and resolved, a reviewer assigned, comments, approval or decline
/// (by a reviewer or automatically), sometimes a restart. Then `extra_comments` comments.
pub fn lifecycle(
    rng: &mut Rng,
    app: AppKey,
    flow: &Flow,
    start: DateTime<Utc>,
    extra_comments: usize,
) -> Vec<Append> {
    let id = ApplicantId(rng.uuid());
    let device = (
        format!("203.0.113.{}", rng.between(1, 255)),
        rng.between(0, 3) as usize,
    );
    let mut life = Life {
        rng,
        app,
        id,
        state: Applicant::default(),
        clock: start,
        appends: Vec::new(),
        device,
    };
    let external_user_id = format!("user-{}", life.rng.between(1, 1_000_000));
    life.run(
        Command::CreateApplicant {
            id,
            app_key: app,
            external_user_id,
            email: Some("applicant@example.com".into()),
            phone: Some("+15550100".into()),
            lang: Some("en".into()),
            flow: flow.clone(),
        },
        ActorKind::Api,
    );
    if life.rng.chance(0.1) {
        // Some applicants never start.
        return life.appends;
    }
    life.run(Command::StartVerification, ActorKind::Applicant);
    let country = *life.rng.pick(&COUNTRIES);
    for round in 0..2 {
        for _ in 0..3 {
            let passed = life.rng.chance(0.8);
            let data = serde_json::json!({"documentNumber": format!("L{:08}", life.rng.between(0, 99_999_999)), "country": country});
            let outcome = if passed {
                StepOutcome::Passed
            } else {
                StepOutcome::Failed
            };
            if life.step(StepType::DocumentCheck, outcome, data, ActorKind::Applicant) && passed {
                break;
            }
        }
        for _ in 0..5 {
            let passed = life.rng.chance(0.85);
            let outcome = if passed {
                StepOutcome::Passed
            } else {
                StepOutcome::Failed
            };
            let data = serde_json::json!({"confidence": life.rng.between(50, 100)});
            if life.step(StepType::Liveness, outcome, data, ActorKind::Applicant) && passed {
                break;
            }
        }
        let mut warnings = Vec::new();
        if life.rng.chance(0.2) {
            let wid = WarningId(life.rng.uuid());
            let raised = life.run(
                Command::RaiseWarning {
                    id: wid,
                    code: "DOCUMENT_EXPIRED".into(),
                    message: "the document expired before the check".into(),
                    step: Some(StepType::DocumentCheck),
                },
                ActorKind::Api,
            );
            if raised {
                warnings.push(wid);
            }
        }
        let score = life.rng.between(60, 100);
        let face = if score >= 70 {
            StepOutcome::Passed
        } else {
            StepOutcome::Failed
        };
        life.step(
            StepType::FaceMatch,
            face,
            serde_json::json!({"score": score as f64 + 0.5}),
            ActorKind::Api,
        );
        let aml = if life.rng.chance(0.92) {
            StepOutcome::Passed
        } else {
            StepOutcome::Failed
        };
        life.step(
            StepType::Aml,
            aml,
            serde_json::json!({"hits": 0}),
            ActorKind::Api,
        );
        if life.rng.chance(0.7) {
            let reviewer = life.rng.pick(&REVIEWERS).to_string();
            life.run(
                Command::AssignReviewer {
                    reviewer_id: reviewer,
                },
                ActorKind::Reviewer,
            );
        }
        for wid in warnings {
            if life.rng.chance(0.7) {
                life.run(
                    Command::ResolveWarning {
                        id: wid,
                        comment: Some("renewed document seen".into()),
                    },
                    ActorKind::Reviewer,
                );
            }
        }
        if life.rng.chance(0.3) {
            let cid = life.rng.uuid();
            let author = life.state.reviewer.clone();
            life.run(
                Command::AddComment {
                    id: cid,
                    text: "called the applicant".into(),
                    author,
                },
                ActorKind::Reviewer,
            );
        }
        if life.state.reviewer.is_some() && life.rng.chance(0.8) {
            let decision = if life.rng.chance(0.75) {
                DecisionKind::Approve
            } else {
                DecisionKind::Decline
            };
            life.run(
                Command::Decide {
                    decision,
                    reviewer_id: None,
                    reasons: vec!["checked".into()],
                    comment: None,
                },
                ActorKind::Reviewer,
            );
        }
        if life.rng.chance(0.03) {
            // A provider outage: the step is taken out of the flow for a while.
            let step = StepType::Aml;
            life.run(
                Command::DeactivateStep {
                    step,
                    reason: Some("provider outage".into()),
                },
                ActorKind::Api,
            );
            life.run(Command::ReactivateStep { step }, ActorKind::Api);
        }
        if round == 0 && life.rng.chance(0.05) {
            life.run(Command::RestartFlow, ActorKind::Api);
        } else {
            break;
        }
    }
    for _ in 0..extra_comments {
        let cid = life.rng.uuid();
        life.run(
            Command::AddComment {
                id: cid,
                text: "note".into(),
                author: Some("rev-1".into()),
            },
            ActorKind::Reviewer,
        );
    }
    life.appends
}

/// Lifecycles of `applicants` applicants of `app` starting over `days` days from `start`,
/// their appends interleaved in time order (each applicant's own order kept).
pub fn population(
    seed: u64,
    app: AppKey,
    applicants: usize,
    start: DateTime<Utc>,
    days: i64,
) -> Vec<Append> {
    let mut rng = Rng::new(seed);
    let flow = kyc_basic();
    let span = (days.max(1) * 86_400) as u64;
    let mut all: Vec<Append> = Vec::new();
    for _ in 0..applicants {
        let begin = start + Duration::seconds(rng.between(0, span) as i64);
        all.extend(lifecycle(&mut rng, app, &flow, begin, 0));
    }
    // Stable: an applicant's appends have increasing times and keep their order.
    all.sort_by_key(|a| a.at);
    all
}

/// Lifecycles of `app` started 64 at a time and their appends taken in turn, one from each
/// live lifecycle per round, as concurrent traffic interleaves them, until a round ends with
/// at least `events` events (the log the rebuild benchmarks and `rebuild_cost` use).
pub fn interleaved(seed: u64, app: AppKey, events: usize) -> impl Iterator<Item = Append> {
    let mut rng = Rng::new(seed);
    let flow = kyc_basic();
    let mut wave: Vec<std::vec::IntoIter<Append>> = Vec::new();
    let (mut at, mut progressed, mut produced) = (0, false, 0);
    std::iter::from_fn(move || loop {
        if at == wave.len() {
            if produced >= events {
                return None;
            }
            if !progressed {
                wave = (0..64)
                    .map(|_| lifecycle(&mut rng, app, &flow, Utc::now(), 0).into_iter())
                    .collect();
            }
            (at, progressed) = (0, false);
        }
        let next = wave[at].next();
        at += 1;
        if let Some(append) = next {
            produced += append.events.len();
            progressed = true;
            return Some(append);
        }
    })
}

/// `applicants` lifecycles of `app` one after another (each with `extra_comments` more
/// comments), recorded (see [`record`]): the events of a small log for tests.
pub fn recorded_lives(
    seed: u64,
    app: AppKey,
    applicants: usize,
    extra_comments: usize,
) -> Vec<RecordedEvent> {
    let mut rng = Rng::new(seed);
    let flow = kyc_basic();
    let appends: Vec<Append> = (0..applicants)
        .flat_map(|_| lifecycle(&mut rng, app, &flow, Utc::now(), extra_comments))
        .collect();
    record(&appends)
}

/// Records `appends` as a store would, but at their own `at` times: positions from 1,
/// versions per stream, hash chain sealed. For logs spanning days in tests and benchmarks.
pub fn record(appends: &[Append]) -> Vec<RecordedEvent> {
    let mut heads: std::collections::HashMap<String, (u64, String)> =
        std::collections::HashMap::new();
    let mut out = Vec::new();
    for append in appends {
        for event in &append.events {
            let head = heads
                .entry(append.stream.clone())
                .or_insert((0, chain::GENESIS.to_string()));
            let mut recorded = RecordedEvent {
                global_position: out.len() as u64 + 1,
                stream_id: append.stream.clone(),
                stream_version: head.0,
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                recorded_at: chain::truncate_to_micros(append.at),
                tenant: event.tenant.clone(),
                actor: event.actor.clone(),
                correlation_id: event.correlation_id,
                causation_id: event.causation_id,
                payload: event.payload.clone(),
                prev_hash: String::new(),
                hash: String::new(),
            };
            chain::seal(&mut recorded, &head.1);
            *head = (head.0 + 1, recorded.hash.clone());
            out.push(recorded);
        }
    }
    out
}
