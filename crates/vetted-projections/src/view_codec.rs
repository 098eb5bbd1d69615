//! The applicant view row's fold in the compact layout of `crate::codec`: every field of
//! [`ApplicantFold`] but the applicant's flow (stored once in its own row), in declaration
//! order. Step results' provider data are their canonical JSON text (an empty string for
//! `null`), written and read back as they are held.
//!
//! Every struct is destructured exhaustively, so a field added to a domain type fails to
//! compile here until the layout carries it.
use vetted_domain::{
    AppKey, Applicant, ApplicantId, Comment, Decision, DecisionKind, StepData, StepState,
    StepStatus, StepType, Warning, WarningId,
};

use crate::applicant_view::{ApplicantFold, Device};
use crate::codec::{Reader, Writer};
use crate::ProjectionError;

/// Writes `fold` without `fold.applicant.flow`.
pub(crate) fn encode_fold(w: &mut Writer<'_>, fold: &ApplicantFold) {
    let ApplicantFold {
        applicant,
        created_at,
        updated_at,
        device,
    } = fold;
    w.opt_time(created_at.as_ref())
        .opt_time(updated_at.as_ref());
    match device {
        None => w.u8(0),
        Some(Device {
            ip,
            user_agent,
            os,
            browser,
        }) => w
            .u8(1)
            .opt_str(ip.as_deref())
            .opt_str(user_agent.as_deref())
            .opt_str(os.as_deref())
            .opt_str(browser.as_deref()),
    };
    let Applicant {
        id,
        app_key,
        external_user_id,
        email,
        phone,
        lang,
        status,
        verification_started,
        flow: _,
        steps,
        history,
        warnings,
        reviewer,
        decision,
        comments,
        deletion_scheduled,
        version,
    } = applicant;
    opt_uuid(w, id.map(|i| i.0));
    opt_uuid(w, app_key.map(|k| k.0));
    w.str(external_user_id)
        .opt_str(email.as_deref())
        .opt_str(phone.as_deref())
        .opt_str(lang.as_deref())
        .status(*status)
        .bool(*verification_started);
    for list in [steps, history] {
        w.varint(list.len() as u64);
        for step in list {
            encode_step(w, step);
        }
    }
    w.varint(warnings.len() as u64);
    for Warning {
        id,
        code,
        message,
        step,
        resolved,
        resolution,
    } in warnings
    {
        w.uuid(&id.0).str(code).str(message);
        match step {
            None => w.u8(0),
            Some(step) => w.u8(1).u8(step_code(*step)),
        };
        w.bool(*resolved).opt_str(resolution.as_deref());
    }
    w.opt_str(reviewer.as_deref());
    match decision {
        None => w.u8(0),
        Some(Decision {
            kind,
            by,
            reasons,
            comment,
            at,
        }) => {
            w.u8(1)
                .u8(match kind {
                    DecisionKind::Approve => 0,
                    DecisionKind::Decline => 1,
                })
                .opt_str(by.as_deref())
                .varint(reasons.len() as u64);
            for reason in reasons {
                w.str(reason);
            }
            w.opt_str(comment.as_deref()).time(at)
        }
    };
    w.varint(comments.len() as u64);
    for Comment { id, text, author } in comments {
        w.uuid(id).str(text).opt_str(author.as_deref());
    }
    w.opt_time(deletion_scheduled.as_ref());
    match version {
        None => w.u8(0),
        Some(v) => w.u8(1).varint(*v),
    };
}

/// Reads a fold written by [`encode_fold`]; its applicant's flow is `None`.
pub(crate) fn decode_fold(r: &mut Reader<'_>) -> Result<ApplicantFold, ProjectionError> {
    let created_at = r.opt_time()?;
    let updated_at = r.opt_time()?;
    let device = match r.bool()? {
        false => None,
        true => Some(Device {
            ip: r.opt_string()?,
            user_agent: r.opt_string()?,
            os: r.opt_string()?,
            browser: r.opt_string()?,
        }),
    };
    let id = read_opt_uuid(r)?.map(ApplicantId);
    let app_key = read_opt_uuid(r)?.map(AppKey);
    let external_user_id = r.string()?;
    let email = r.opt_string()?;
    let phone = r.opt_string()?;
    let lang = r.opt_string()?;
    let status = r.status()?;
    let verification_started = r.bool()?;
    let steps = read_list(r, decode_step)?;
    let history = read_list(r, decode_step)?;
    let warnings = read_list(r, |r| {
        Ok(Warning {
            id: WarningId(r.uuid()?),
            code: r.string()?,
            message: r.string()?,
            step: match r.bool()? {
                false => None,
                true => Some(read_step_type(r)?),
            },
            resolved: r.bool()?,
            resolution: r.opt_string()?,
        })
    })?;
    let reviewer = r.opt_string()?;
    let decision = match r.bool()? {
        false => None,
        true => Some(Decision {
            kind: match r.u8()? {
                0 => DecisionKind::Approve,
                1 => DecisionKind::Decline,
                k => return Err(r.error(format_args!("unknown decision kind {k}"))),
            },
            by: r.opt_string()?,
            reasons: read_list(r, |r| r.string())?,
            comment: r.opt_string()?,
            at: r.time()?,
        }),
    };
    let comments = read_list(r, |r| {
        Ok(Comment {
            id: r.uuid()?,
            text: r.string()?,
            author: r.opt_string()?,
        })
    })?;
    let deletion_scheduled = r.opt_time()?;
    let version = match r.bool()? {
        false => None,
        true => Some(r.varint()?),
    };
    Ok(ApplicantFold {
        applicant: Applicant {
            id,
            app_key,
            external_user_id,
            email,
            phone,
            lang,
            status,
            verification_started,
            flow: None,
            steps,
            history,
            warnings,
            reviewer,
            decision,
            comments,
            deletion_scheduled,
            version,
        },
        created_at,
        updated_at,
        device,
    })
}

fn opt_uuid(w: &mut Writer<'_>, id: Option<uuid::Uuid>) {
    match id {
        None => w.u8(0),
        Some(id) => w.u8(1).uuid(&id),
    };
}

fn read_opt_uuid(r: &mut Reader<'_>) -> Result<Option<uuid::Uuid>, ProjectionError> {
    match r.bool()? {
        false => Ok(None),
        true => r.uuid().map(Some),
    }
}

fn read_list<T>(
    r: &mut Reader<'_>,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T, ProjectionError>,
) -> Result<Vec<T>, ProjectionError> {
    let n = r.varint()?;
    // Every item takes at least one byte: a length beyond the row is corrupt, not a reason
    // to reserve memory.
    if n > r.remaining() as u64 {
        return Err(r.error(format_args!("a list of {n} items in a shorter row")));
    }
    (0..n).map(|_| item(r)).collect()
}

/// Writes a provider's step result: its canonical JSON text, empty for `null`.
fn write_data(w: &mut Writer<'_>, data: &StepData) {
    w.str(if data.is_null() { "" } else { data.as_json() });
}

/// Reads step data written by [`write_data`].
fn read_data(r: &mut Reader<'_>) -> Result<StepData, ProjectionError> {
    match r.str()? {
        "" => Ok(StepData::null()),
        text => StepData::from_json(text).map_err(|e| r.error(e)),
    }
}

fn step_code(step: StepType) -> u8 {
    StepType::ALL
        .iter()
        .position(|s| *s == step)
        .map_or(u8::MAX, |i| i as u8)
}

fn read_step_type(r: &mut Reader<'_>) -> Result<StepType, ProjectionError> {
    let i = r.u8()?;
    StepType::ALL
        .get(usize::from(i))
        .copied()
        .ok_or_else(|| r.error(format_args!("unknown step type {i}")))
}

fn encode_step(w: &mut Writer<'_>, step: &StepState) {
    let StepState {
        step_type,
        status,
        attempts,
        max_attempts,
        data,
        failed_for_good,
    } = step;
    w.u8(step_code(*step_type))
        .u8(match status {
            StepStatus::Pending => 0,
            StepStatus::Passed => 1,
            StepStatus::Failed => 2,
        })
        .varint(u64::from(*attempts));
    match max_attempts {
        None => w.u8(0),
        Some(m) => w.u8(1).varint(u64::from(*m)),
    };
    write_data(w, data);
    w.bool(*failed_for_good);
}

fn decode_step(r: &mut Reader<'_>) -> Result<StepState, ProjectionError> {
    let step_type = read_step_type(r)?;
    let status = match r.u8()? {
        0 => StepStatus::Pending,
        1 => StepStatus::Passed,
        2 => StepStatus::Failed,
        s => return Err(r.error(format_args!("unknown step status {s}"))),
    };
    let attempts = r.u32()?;
    let max_attempts = match r.bool()? {
        false => None,
        true => Some(r.u32()?),
    };
    let data = read_data(r)?;
    Ok(StepState {
        step_type,
        status,
        attempts,
        max_attempts,
        data,
        failed_for_good: r.bool()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applicant_view::decode;
    use crate::sample;
    use chrono::Utc;

    fn round_trip(fold: &ApplicantFold) -> ApplicantFold {
        let mut row = Vec::new();
        encode_fold(&mut Writer(&mut row), fold);
        let mut r = Reader::new(b"view/x", &row);
        let back = decode_fold(&mut r).unwrap();
        assert!(r.is_done());
        // A cut row is an error, never a shorter fold.
        for cut in [1, row.len() / 2, row.len() - 1] {
            let mut r = Reader::new(b"view/x", &row[..cut]);
            assert!(decode_fold(&mut r).is_err());
        }
        back
    }

    #[test]
    fn every_fold_of_generated_lives_reads_back_exactly_but_its_flow() {
        let mut rng = sample::Rng::new(3);
        let app = AppKey(uuid::Uuid::from_u128(5));
        let flow = sample::kyc_basic();
        let mut seen_decision = false;
        for _ in 0..60 {
            let life = sample::lifecycle(&mut rng, app, &flow, Utc::now(), 2);
            let mut fold = ApplicantFold::default();
            assert_eq!(round_trip(&fold), fold);
            for event in sample::record(&life) {
                fold.apply_decoded(&event, &decode(&event).unwrap());
                let mut expected = fold.clone();
                expected.applicant.flow = None;
                assert_eq!(round_trip(&fold), expected);
                seen_decision |= fold.applicant.decision.is_some();
            }
        }
        assert!(seen_decision);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any step result a provider sends reads back as the same data, byte for byte.
        #[test]
        fn step_data_reads_back_exactly(value in json_value()) {
            let data = StepData::from_value(&value).unwrap();
            let mut row = Vec::new();
            write_data(&mut Writer(&mut row), &data);
            let mut r = Reader::new(b"view/x", &row);
            let back = read_data(&mut r).unwrap();
            proptest::prop_assert!(r.is_done());
            proptest::prop_assert_eq!(back.as_json(), data.as_json());
            proptest::prop_assert_eq!(back.to_value(), value);
        }
    }

    #[test]
    fn step_data_that_is_not_json_is_a_corrupt_row() {
        let mut row = Vec::new();
        Writer(&mut row).str("{\"score\":");
        let e = read_data(&mut Reader::new(b"view/x", &row)).unwrap_err();
        assert!(e.to_string().contains("view/x"), "{e}");
    }

    #[test]
    fn rare_fields_read_back_too() {
        let t = chrono::DateTime::from_timestamp(1_764_000_000, 7).unwrap();
        let mut fold = ApplicantFold::default();
        let a = &mut fold.applicant;
        a.deletion_scheduled = Some(t);
        a.history.push(StepState {
            step_type: StepType::ThankYou,
            status: StepStatus::Failed,
            attempts: 9,
            max_attempts: Some(3),
            data: StepData::from_json(r#"{"score": 0.1, "list": [1, "two", null]}"#).unwrap(),
            failed_for_good: true,
        });
        a.warnings.push(Warning {
            id: WarningId(uuid::Uuid::from_u128(1)),
            code: "X".into(),
            message: "m".into(),
            step: Some(StepType::IpCheck),
            resolved: true,
            resolution: Some("ok".into()),
        });
        a.decision = Some(Decision {
            kind: DecisionKind::Decline,
            by: None,
            reasons: vec!["a".into(), "b".into()],
            comment: Some("c".into()),
            at: t,
        });
        a.comments.push(Comment {
            id: uuid::Uuid::from_u128(2),
            text: "note".into(),
            author: None,
        });
        fold.device = Some(Device::default());
        assert_eq!(round_trip(&fold), fold);
    }
}
