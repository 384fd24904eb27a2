//! Rotation on a schedule (`spec.rotation.schedule`): which key the router must hold in
//! which state, which keys are wanted on AWS, which MacSecKey to make or retire, and when to
//! look again. Pure: the controller supplies the last status and the MacSecKeys, then makes
//! and deletes the MacSecKeys this decides and gives `wanted` to the planner, whose rules
//! (the overlap, the guard and its rollback) remove the old key. The timeline is in
//! docs/rotation.md.
//!
//! Every decision is made from the status the last reconcile wrote, so a restarted operator
//! or a new leader resumes where the last one stopped: the names of the keys it makes follow
//! from `status.schedule.sequence`, and nothing is made twice.

use std::time::Duration;

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};

use crate::conditions::{ConditionValue, RotationReason};
use crate::crd::{
    DxConnectionStatus, KeyStatus, MaterialLocation, RotationSchedule, RotationStage, RouterKey,
    RouterKeyState, RouterStatus, ScheduleStatus,
};
use crate::observed::KeyState;

/// The annotation that starts a rotation at once: a new value starts one (the last value
/// used is `status.schedule.rotateNowUsed`). The CLI's `rotate` sets it.
pub const ROTATE_NOW_ANNOTATION: &str = "dxmacsec.io/rotate-now";

/// The label on the MacSecKeys a schedule makes: the DxConnection's name.
pub const ROTATED_FOR_LABEL: &str = "dxmacsec.io/rotated-for";

/// The shortest period a schedule may have.
pub const MIN_PERIOD: Duration = Duration::from_secs(60);

/// A schedule's durations, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    pub every: Duration,
    pub lead: Duration,
    pub retain: Duration,
}

/// A duration such as `90d`, `1h30m` or `45s` (days of 24 hours), read by jiff.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, String> {
    let span: Span = value.parse().map_err(|e| {
        format!("{field}: {value:?} is not a duration such as 90d, 12h or 1m ({e})")
    })?;
    span.to_duration(SpanRelativeTo::days_are_24_hours())
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| format!("{field}: {value:?} is not a duration such as 90d, 12h or 1m"))
}

/// The schedule's durations, or what is wrong with them (naming the field).
pub fn periods(schedule: &RotationSchedule) -> Result<Periods, String> {
    let every = parse_duration("spec.rotation.schedule.every", &schedule.every)?;
    if every < MIN_PERIOD {
        return Err(format!(
            "spec.rotation.schedule.every: {} is shorter than the shortest period, 1m",
            schedule.every
        ));
    }
    let lead = parse_duration(
        "spec.rotation.schedule.routerLeadTime",
        &schedule.router_lead_time,
    )?;
    let retain = parse_duration("spec.rotation.schedule.retainFor", &schedule.retain_for)?;
    Ok(Periods {
        every,
        lead,
        retain,
    })
}

/// What the schedule needs of one MacSecKey it lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyView {
    /// Its CKN, once its material was read and found valid.
    pub ckn: Option<String>,
    /// Where its material is, for the router.
    pub material: Option<MaterialLocation>,
    /// Why it is not ready, when it is not.
    pub problem: Option<String>,
}

/// What AWS held at the last pass, as the status reports it.
#[derive(Debug, Clone, Default)]
pub struct OnAws {
    /// The keys on the connection or LAG.
    pub keys: Vec<KeyStatus>,
    /// The port is Encryption Up (every member, for a LAG).
    pub port_up: bool,
    /// CKNs the guard may still associate again.
    pub guarded: Vec<String>,
    /// CKNs a rollback associated again.
    pub rolled_back: Vec<String>,
}

impl OnAws {
    /// From the status the last pass wrote.
    pub fn from_status(status: Option<&DxConnectionStatus>) -> Self {
        let Some(s) = status else {
            return OnAws::default();
        };
        let port_up = match s.resource_type {
            Some(t) if t.is_lag() => {
                !s.members.is_empty()
                    && s.members
                        .iter()
                        .all(|m| crate::observed::is_port_up(m.port_encryption_status.as_deref()))
            }
            _ => crate::observed::is_port_up(s.port_encryption_status.as_deref()),
        };
        let rotation = s.rotation.as_ref();
        OnAws {
            keys: s.keys.clone(),
            port_up,
            guarded: rotation
                .iter()
                .flat_map(|r| r.removed.iter())
                .filter_map(|r| r.ckn.clone())
                .collect(),
            rolled_back: rotation
                .iter()
                .flat_map(|r| r.rolled_back.iter())
                .flat_map(|r| r.keys.iter())
                .filter_map(|r| r.ckn.clone())
                .collect(),
        }
    }

    fn state_of(&self, ckn: &str) -> Option<KeyState> {
        self.keys
            .iter()
            .find(|k| {
                k.ckn
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(ckn))
            })
            .map(|k| KeyState::parse(k.state.as_deref()))
    }
}

/// Everything one step decides from.
pub struct Input<'a> {
    /// The DxConnection's name (the MacSecKeys it makes are named after it).
    pub name: &'a str,
    pub periods: Periods,
    /// `spec.keys`: the keys in use when the schedule starts.
    pub spec_keys: Vec<String>,
    pub schedule: ScheduleStatus,
    pub router: RouterStatus,
    /// The `dxmacsec.io/rotate-now` annotation.
    pub rotate_now: Option<String>,
    pub aws: OnAws,
    pub now: Timestamp,
}

/// Something worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What one step decided.
#[derive(Debug, Clone)]
pub struct Step {
    pub schedule: ScheduleStatus,
    pub router: RouterStatus,
    /// The MacSecKeys wanted on AWS, in order: the planner's `keys`.
    pub wanted: Vec<String>,
    /// A MacSecKey to make (with the schedule's `key` as its `generate`).
    pub create: Option<String>,
    /// MacSecKeys the schedule made that retired: to delete (their finalizer deletes the
    /// material once no connection can need it).
    pub retire: Vec<String>,
    pub notes: Vec<Note>,
    pub condition: ConditionValue<RotationReason>,
    /// When something is due next, if sooner than a resync.
    pub wake: Option<Duration>,
}

fn at(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn minus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// The command that confirms `ckn`, for messages.
pub fn confirm_command(name: &str, ckn: &str) -> String {
    format!(
        "kubectl patch dxconnection {name} --subresource=status --type=merge -p '{{\"status\":{{\"router\":{{\"confirmedCkn\":\"{ckn}\"}}}}}}'"
    )
}

/// The MacSecKeys in use on a scheduled DxConnection as its status says: the `active` keys
/// of `status.router.keys`, else (before the schedule's first step) `spec.keys`.
pub fn keys_in_use(dxc: &crate::crd::DxConnection) -> Vec<String> {
    let listed: Vec<String> = dxc
        .status
        .as_ref()
        .and_then(|s| s.router.as_ref())
        .map(|r| {
            r.keys
                .iter()
                .filter(|k| k.state == RouterKeyState::Active)
                .map(|k| k.mac_sec_key.clone())
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        dxc.spec
            .keys
            .iter()
            .flatten()
            .map(|k| k.name.clone())
            .collect()
    } else {
        listed
    }
}

/// What `plan` and `apply` say of a DxConnection's schedule: when the next rotation is due
/// (from the status the manifest carries, as `kubectl get -o yaml` writes it) and what it
/// will do, or why `apply` does not rotate. `None` without a schedule.
pub fn describe(dxc: &crate::crd::DxConnection, now: Timestamp, applying: bool) -> Option<String> {
    let schedule = dxc.spec.rotation.schedule.as_ref()?;
    if let Err(e) = periods(schedule) {
        return Some(format!("rotation: the schedule cannot be read: {e}"));
    }
    let name = dxc.metadata.name.as_deref().unwrap_or_default();
    let state = dxc.status.as_ref().and_then(|s| s.schedule.as_ref());
    let next = state.and_then(|s| at(s.next_rotation.as_deref()));
    let when = match next {
        Some(t) if t <= now => format!("the next rotation was due at {t} (stage {:?})", state.and_then(|s| s.stage).unwrap_or(RotationStage::Idle)),
        Some(t) => format!("the next rotation is due at {t}"),
        None => "no rotation has been scheduled yet: the controller schedules the first one a period after it first sees the schedule (at once without a key)".to_string(),
    };
    let seq = state.map_or(0, |s| s.sequence) + 1;
    let what = format!(
        "it makes MacSecKey {name}-k{seq} {} before it is due, lists it as staged in status.router.keys, waits for the router's confirmation (status.router.confirmedCkn), associates it, removes the old key after the overlap under the guard and deletes the old material after retainFor ({})",
        schedule.router_lead_time, schedule.retain_for
    );
    let every = &schedule.every;
    Some(if applying {
        format!(
            "rotation every {every}: {when}. apply does not rotate: a rotation waits for the router's confirmation, which only the controller (run) reads from the DxConnection's status; apply keeps the keys in use. To rotate now: dx-macsec-operator rotate -n {} {name}",
            crate::crd::namespace_of(dxc)
        )
    } else {
        format!("rotation every {every}: {when}; then {what}")
    })
}

/// One step of the schedule. `key` looks up a MacSecKey by name.
pub fn step(input: Input<'_>, key: impl Fn(&str) -> Option<KeyView>) -> Step {
    let Input {
        name,
        periods,
        spec_keys,
        mut schedule,
        router,
        rotate_now,
        aws,
        now,
    } = input;
    let mut keys = router.keys.clone();
    let mut notes = Vec::new();
    let mut create = None;
    let mut wake: Option<Duration> = None;
    let mut soon = |d: Duration| wake = Some(wake.map_or(d, |w| w.min(d)));

    // The schedule starts: the keys in spec.keys are in use; the first rotation is due a
    // period later, or at once when there is none.
    if keys.is_empty() && schedule.next_rotation.is_none() {
        for k in &spec_keys {
            keys.push(RouterKey {
                mac_sec_key: k.clone(),
                ckn: None,
                material: None,
                state: RouterKeyState::Active,
                since: now.to_string(),
                confirmed_at: None,
                generated: false,
            });
        }
        let first = if keys.is_empty() {
            now
        } else {
            plus(now, periods.every)
        };
        schedule.next_rotation = Some(first.to_string());
    }
    for k in &mut keys {
        if let Some(view) = key(&k.mac_sec_key) {
            if k.state == RouterKeyState::Staged && k.ckn.is_none() && view.ckn.is_some() {
                notes.push(Note {
                    warning: false,
                    reason: "KeyStaged",
                    message: format!(
                        "the next key, CKN {} (MacSecKey {}), is listed as staged in status.router.keys: configure it on the router, then confirm it",
                        view.ckn.as_deref().unwrap_or_default(),
                        k.mac_sec_key
                    ),
                });
            }
            k.ckn = k.ckn.take().or(view.ckn);
            k.material = k.material.take().or(view.material);
        }
    }
    let mut next = at(schedule.next_rotation.as_deref()).unwrap_or(now);

    // A new value of the rotate-now annotation makes the rotation due now.
    if let Some(value) = rotate_now.filter(|v| schedule.rotate_now_used.as_ref() != Some(v)) {
        schedule.rotate_now_used = Some(value);
        next = next.min(now);
        notes.push(Note {
            warning: false,
            reason: "RotationRequested",
            message: format!("{ROTATE_NOW_ANNOTATION} changed: the next rotation is due now"),
        });
    }
    let staging = minus(next, periods.lead);
    if !keys.iter().any(|k| k.state == RouterKeyState::Staged) {
        if now >= staging {
            schedule.sequence += 1;
            let new = format!("{name}-k{}", schedule.sequence);
            notes.push(Note {
                warning: false,
                reason: "RotationStarted",
                message: format!(
                    "rotation {}: making key {new} for the router; due at {next}",
                    schedule.sequence
                ),
            });
            keys.push(RouterKey {
                mac_sec_key: new.clone(),
                ckn: None,
                material: None,
                state: RouterKeyState::Staged,
                since: now.to_string(),
                confirmed_at: None,
                generated: true,
            });
            create = Some(new);
        } else {
            soon(until(now, staging));
        }
    }

    let mut stage = RotationStage::Idle;
    let mut associating = false;
    let mut condition = ConditionValue::new(
        true,
        RotationReason::OnSchedule,
        format!(
            "the next rotation is due at {next}; its key is made and staged for the router at {staging}"
        ),
    );
    if let Some(i) = keys.iter().position(|k| k.state == RouterKeyState::Staged) {
        let view = key(&keys[i].mac_sec_key);
        if view.is_none() && create.is_none() {
            // Made before a restart, or deleted by someone: made (again) under its name.
            create = Some(keys[i].mac_sec_key.clone());
        }
        let staged = &mut keys[i];
        match staged.ckn.clone() {
            None => {
                stage = RotationStage::Generating;
                condition = match view.and_then(|v| v.problem) {
                    Some(problem) => ConditionValue::new(
                        false,
                        RotationReason::KeyGenerationFailed,
                        format!(
                            "the next key, MacSecKey {}, is not ready: {problem}",
                            staged.mac_sec_key
                        ),
                    ),
                    None => ConditionValue::new(
                        true,
                        RotationReason::GeneratingKey,
                        format!("making the next key, MacSecKey {}", staged.mac_sec_key),
                    ),
                };
            }
            Some(ckn) => {
                let confirmed = staged.confirmed_at.is_some()
                    || router
                        .confirmed_ckn
                        .as_deref()
                        .is_some_and(|c| c.trim().eq_ignore_ascii_case(&ckn));
                if confirmed && staged.confirmed_at.is_none() {
                    staged.confirmed_at = Some(now.to_string());
                    notes.push(Note {
                        warning: false,
                        reason: "RouterConfirmed",
                        message: format!("the router holds CKN {ckn}: associating it"),
                    });
                }
                if !confirmed {
                    stage = RotationStage::WaitingForRouter;
                    let ask = format!(
                        "configure CKN {ckn} (MacSecKey {}) on the router, then confirm: {}",
                        staged.mac_sec_key,
                        confirm_command(name, &ckn)
                    );
                    condition = if now >= next {
                        ConditionValue::new(
                            false,
                            RotationReason::WaitingForRouter,
                            format!(
                                "the rotation was due at {next} and waits for the router; nothing is associated until it confirms: {ask}"
                            ),
                        )
                    } else {
                        soon(until(now, next));
                        ConditionValue::new(
                            true,
                            RotationReason::KeyStaged,
                            format!("the next key is staged; the rotation is due at {next}: {ask}"),
                        )
                    };
                } else if now < next {
                    // Confirmed early: associated when due, so the period holds.
                    stage = RotationStage::Confirmed;
                    soon(until(now, next));
                    condition = ConditionValue::new(
                        true,
                        RotationReason::KeyStaged,
                        format!(
                            "the router confirmed CKN {ckn}; it is associated when the rotation is due, at {next}"
                        ),
                    );
                } else if aws.state_of(&ckn) == Some(KeyState::Associated) && aws.port_up {
                    // In use: the new key is active, the others retire.
                    for other in keys.iter_mut() {
                        if other.state == RouterKeyState::Active {
                            other.state = RouterKeyState::Retiring;
                            other.since = now.to_string();
                        }
                    }
                    let staged = &mut keys[i];
                    staged.state = RouterKeyState::Active;
                    staged.since = now.to_string();
                    schedule.last_rotation = Some(now.to_string());
                    next = plus(now, periods.every);
                    notes.push(Note {
                        warning: false,
                        reason: "KeyActivated",
                        message: format!(
                            "CKN {ckn} is associated and the port is Encryption Up: it is the active key; the old key is removed after the overlap; next rotation due at {next}"
                        ),
                    });
                } else {
                    associating = true;
                    stage = RotationStage::Associating;
                    condition = ConditionValue::new(
                        true,
                        RotationReason::Associating,
                        format!(
                            "the router confirmed CKN {ckn} and the rotation is due: associating it, and waiting for Encryption Up"
                        ),
                    );
                }
            }
        }
    }

    // Retiring keys leave once AWS holds them no more, the guard cannot bring them back and
    // their retention has passed.
    let mut retire = Vec::new();
    let mut kept = Vec::with_capacity(keys.len());
    for k in keys {
        if k.state != RouterKeyState::Retiring {
            kept.push(k);
            continue;
        }
        let ckn = k.ckn.as_deref().unwrap_or_default();
        if aws.rolled_back.iter().any(|c| c.eq_ignore_ascii_case(ckn)) {
            stage = RotationStage::RolledBack;
            condition = ConditionValue::new(
                false,
                RotationReason::RotationRolledBack,
                format!(
                    "removing CKN {ckn} took the port to Encryption Down, so the guard associated it again: the router does not use the new key. Fix the router, then set the annotation dxmacsec.io/confirm-removal to a new value"
                ),
            );
            kept.push(k);
            continue;
        }
        let on_aws = k.ckn.is_none()
            || aws
                .state_of(ckn)
                .is_some_and(|s| s != KeyState::Disassociated);
        let guarded = aws.guarded.iter().any(|c| c.eq_ignore_ascii_case(ckn));
        let retire_at = plus(at(Some(&k.since)).unwrap_or(now), periods.retain);
        if on_aws || guarded || now < retire_at {
            if !on_aws && !guarded {
                soon(until(now, retire_at));
            }
            if stage == RotationStage::Idle {
                stage = RotationStage::Retiring;
                condition = ConditionValue::new(
                    true,
                    RotationReason::Retiring,
                    format!(
                        "CKN {ckn} (MacSecKey {}) is retiring: removed after the overlap, its material deleted from {retire_at} once AWS no longer holds it; the router keeps it until it leaves status.router.keys",
                        k.mac_sec_key
                    ),
                );
            }
            kept.push(k);
            continue;
        }
        notes.push(Note {
            warning: false,
            reason: "KeyRetired",
            message: format!(
                "CKN {ckn} (MacSecKey {}) retired: the router may delete it{}",
                k.mac_sec_key,
                if k.generated {
                    "; its MacSecKey and material are deleted"
                } else {
                    ""
                }
            ),
        });
        if k.generated {
            retire.push(k.mac_sec_key);
        }
    }
    schedule.next_rotation = Some(next.to_string());
    schedule.stage = Some(stage);
    let wanted = kept
        .iter()
        .filter(|k| {
            k.state == RouterKeyState::Active || (k.state == RouterKeyState::Staged && associating)
        })
        .map(|k| k.mac_sec_key.clone())
        .collect();
    Step {
        schedule,
        router: RouterStatus {
            keys: kept,
            confirmed_ckn: router.confirmed_ckn,
        },
        wanted,
        create,
        retire,
        notes,
        condition,
        wake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn periods() -> Periods {
        Periods {
            every: Duration::from_secs(3600),
            lead: Duration::from_secs(600),
            retain: Duration::from_secs(300),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn aws_key(ckn: &str, state: &str) -> KeyStatus {
        KeyStatus {
            ckn: Some(ckn.into()),
            secret_arn: Some(format!("arn:{ckn}")),
            state: Some(state.into()),
            start_on: None,
            mac_sec_key: None,
            associated_since: None,
        }
    }

    /// A world: the last step's status, AWS as the last pass saw it, the MacSecKeys.
    struct World {
        schedule: ScheduleStatus,
        router: RouterStatus,
        aws: OnAws,
        keys: Vec<(String, KeyView)>,
        rotate_now: Option<String>,
    }

    impl World {
        fn new() -> Self {
            World {
                schedule: ScheduleStatus::default(),
                router: RouterStatus::default(),
                aws: OnAws::default(),
                keys: vec![(
                    "hand".into(),
                    KeyView {
                        ckn: Some(OLD.into()),
                        ..KeyView::default()
                    },
                )],
                rotate_now: None,
            }
        }

        fn step(&mut self, now: Timestamp) -> Step {
            let input = Input {
                name: "edge",
                periods: periods(),
                spec_keys: vec!["hand".into()],
                schedule: self.schedule.clone(),
                router: self.router.clone(),
                rotate_now: self.rotate_now.clone(),
                aws: self.aws.clone(),
                now,
            };
            let step = step(input, |name| {
                self.keys
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            });
            self.schedule = step.schedule.clone();
            self.router = step.router.clone();
            step
        }

        fn states(&self) -> Vec<(String, RouterKeyState)> {
            self.router
                .keys
                .iter()
                .map(|k| (k.mac_sec_key.clone(), k.state))
                .collect()
        }
    }

    /// One rotation end to end: the hand-made key is in use; the next key is made a lead
    /// time before it is due, staged for the router and not wanted on AWS until the router
    /// confirms; once AWS holds it and the port is up it is active and the old key retires;
    /// the old key leaves the list (its MacSecKey is not deleted: the schedule did not make
    /// it) once AWS no longer holds it, the guard is over and its retention has passed.
    #[test]
    fn one_rotation_waits_for_the_router_then_retires_the_old_key() {
        let mut w = World::new();
        let s = w.step(t(0));
        assert_eq!(s.wanted, ["hand"]);
        assert_eq!(s.create, None);
        assert_eq!(
            w.schedule.next_rotation.as_deref(),
            Some(t(3600).to_string().as_str())
        );
        assert_eq!(
            s.wake,
            Some(Duration::from_secs(3000)),
            "wakes to stage the next key"
        );
        assert_eq!(w.states(), [("hand".to_string(), RouterKeyState::Active)]);
        assert_eq!(w.router.keys[0].ckn.as_deref(), Some(OLD));

        // The lead time before it is due: the next key is made and staged.
        let s = w.step(t(3000));
        assert_eq!(s.create.as_deref(), Some("edge-k1"));
        assert_eq!(s.wanted, ["hand"]);
        assert_eq!(w.schedule.stage, Some(RotationStage::Generating));
        let s = w.step(t(3001));
        assert_eq!(
            s.create.as_deref(),
            Some("edge-k1"),
            "made again until it exists"
        );
        w.keys.push((
            "edge-k1".into(),
            KeyView {
                ckn: Some(NEW.into()),
                ..KeyView::default()
            },
        ));
        let s = w.step(t(3010));
        assert_eq!(s.create, None);
        assert!(
            s.notes
                .iter()
                .any(|n| n.reason == "KeyStaged" && n.message.contains(NEW))
        );
        assert_eq!(w.schedule.stage, Some(RotationStage::WaitingForRouter));
        assert_eq!(s.condition.reason, RotationReason::KeyStaged);
        assert!(
            s.condition.message.contains("confirmedCkn"),
            "{}",
            s.condition.message
        );
        assert_eq!(
            s.wanted,
            ["hand"],
            "not associated before the router confirms"
        );

        // Due, and still not confirmed: nothing is associated, the condition turns False.
        let s = w.step(t(3700));
        assert_eq!(s.wanted, ["hand"]);
        assert!(!s.condition.status);
        assert_eq!(s.condition.reason, RotationReason::WaitingForRouter);

        // Another CKN confirmed is no confirmation of this one.
        w.router.confirmed_ckn = Some(OLD.into());
        assert_eq!(w.step(t(3701)).wanted, ["hand"]);
        w.router.confirmed_ckn = Some(NEW.to_uppercase());
        let s = w.step(t(3702));
        assert_eq!(s.wanted, ["hand", "edge-k1"]);
        assert_eq!(w.schedule.stage, Some(RotationStage::Associating));
        assert!(s.notes.iter().any(|n| n.reason == "RouterConfirmed"));

        // Associated but the port is not up yet: still associating.
        w.aws.keys = vec![aws_key(OLD, "associated"), aws_key(NEW, "associated")];
        let s = w.step(t(3710));
        assert_eq!(s.wanted, ["hand", "edge-k1"]);
        w.aws.port_up = true;
        let s = w.step(t(3720));
        assert_eq!(
            s.wanted,
            ["edge-k1"],
            "the old key is outgoing: the planner removes it"
        );
        assert_eq!(
            w.states(),
            [
                ("hand".to_string(), RouterKeyState::Retiring),
                ("edge-k1".to_string(), RouterKeyState::Active)
            ]
        );
        assert_eq!(
            w.schedule.last_rotation.as_deref(),
            Some(t(3720).to_string().as_str())
        );
        assert_eq!(
            w.schedule.next_rotation.as_deref(),
            Some(t(7320).to_string().as_str())
        );

        // Removed, but within the guard window: kept.
        w.aws.keys = vec![aws_key(NEW, "associated")];
        w.aws.guarded = vec![OLD.into()];
        w.step(t(4100));
        assert_eq!(w.router.keys.len(), 2);
        // The guard is over, the retention has passed: it leaves the list.
        w.aws.guarded.clear();
        let s = w.step(t(4100));
        assert_eq!(w.router.keys.len(), 1);
        assert!(s.retire.is_empty(), "a hand-made key is never deleted");
        assert_eq!(w.schedule.stage, Some(RotationStage::Idle));
    }

    /// A key the schedule made retires with its MacSecKey, and only after its retention;
    /// the rotate-now annotation starts a rotation once per value; a rolled-back removal
    /// keeps the old key and says what to do.
    #[test]
    fn generated_keys_retire_after_retention_and_rotate_now_starts_one_rotation() {
        let mut w = World::new();
        w.step(t(0));
        w.rotate_now = Some("a".into());
        let s = w.step(t(10));
        assert_eq!(s.create.as_deref(), Some("edge-k1"), "started at once");
        assert!(s.notes.iter().any(|n| n.reason == "RotationRequested"));
        w.keys.push((
            "edge-k1".into(),
            KeyView {
                ckn: Some(NEW.into()),
                ..KeyView::default()
            },
        ));
        w.router.confirmed_ckn = Some(NEW.into());
        w.step(t(20));
        w.aws = OnAws {
            keys: vec![aws_key(NEW, "associated"), aws_key(OLD, "associated")],
            port_up: true,
            ..OnAws::default()
        };
        w.step(t(30));
        // The same annotation value does not start another rotation.
        let s = w.step(t(40));
        assert_eq!(s.create, None);
        assert_eq!(w.schedule.sequence, 1);

        // A rollback: the old key came back.
        w.aws.rolled_back = vec![OLD.into()];
        let s = w.step(t(50));
        assert_eq!(w.schedule.stage, Some(RotationStage::RolledBack));
        assert!(!s.condition.status);
        assert!(s.condition.message.contains("confirm-removal"));
        w.aws.rolled_back.clear();

        // The next rotation (a new value): edge-k1 retires with its MacSecKey.
        w.rotate_now = Some("b".into());
        let s = w.step(t(60));
        assert_eq!(s.create.as_deref(), Some("edge-k2"));
        const THIRD: &str = "3333333333333333333333333333333333333333333333333333333333333333";
        w.keys.push((
            "edge-k2".into(),
            KeyView {
                ckn: Some(THIRD.into()),
                ..KeyView::default()
            },
        ));
        w.router.confirmed_ckn = Some(THIRD.into());
        w.step(t(70));
        w.aws.keys = vec![aws_key(NEW, "associated"), aws_key(THIRD, "associated")];
        w.step(t(80));
        w.aws.keys = vec![aws_key(THIRD, "associated")];
        let s = w.step(t(90));
        assert!(s.retire.is_empty(), "kept for its retention");
        // The first key (retiring since t(30)) is due to leave first.
        assert_eq!(s.wake, Some(Duration::from_secs(240)));
        let s = w.step(t(380));
        assert_eq!(s.retire, ["edge-k1"]);
        assert!(s.notes.iter().any(|n| n.reason == "KeyRetired"));
        assert_eq!(
            w.states(),
            [("edge-k2".to_string(), RouterKeyState::Active)]
        );
    }

    /// A router that confirms before the rotation is due does not make it early: the key is
    /// associated at the due time, so the period holds.
    #[test]
    fn a_key_confirmed_early_is_associated_when_due() {
        let mut w = World::new();
        w.step(t(0));
        w.step(t(3000));
        w.keys.push((
            "edge-k1".into(),
            KeyView {
                ckn: Some(NEW.into()),
                ..KeyView::default()
            },
        ));
        w.router.confirmed_ckn = Some(NEW.into());
        let s = w.step(t(3010));
        assert_eq!(w.schedule.stage, Some(RotationStage::Confirmed));
        assert_eq!(s.wanted, ["hand"]);
        assert_eq!(s.wake, Some(Duration::from_secs(590)));
        assert!(s.condition.status);
        let s = w.step(t(3600));
        assert_eq!(w.schedule.stage, Some(RotationStage::Associating));
        assert_eq!(s.wanted, ["hand", "edge-k1"]);
    }

    /// Without a key in use the first rotation is due at once; durations read as jiff reads
    /// them, and a period under a minute is refused naming the field.
    #[test]
    fn a_schedule_without_keys_starts_at_once_and_durations_are_checked() {
        let mut w = World::new();
        let input = Input {
            name: "edge",
            periods: periods(),
            spec_keys: vec![],
            schedule: ScheduleStatus::default(),
            router: RouterStatus::default(),
            rotate_now: None,
            aws: OnAws::default(),
            now: t(0),
        };
        let s = step(input, |_| None);
        assert_eq!(s.create.as_deref(), Some("edge-k1"));
        assert!(s.wanted.is_empty());
        w.step(t(0));

        assert_eq!(
            parse_duration("f", "90d"),
            Ok(Duration::from_secs(90 * 86400))
        );
        assert_eq!(parse_duration("f", "1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("f", "45s"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("f", "soon").unwrap_err().starts_with("f: "));
        let schedule: RotationSchedule =
            serde_json::from_value(serde_json::json!({"every": "30s"})).unwrap();
        let e = periods_of(&schedule);
        assert!(e.unwrap_err().contains("spec.rotation.schedule.every"));
        let schedule: RotationSchedule =
            serde_json::from_value(serde_json::json!({"every": "1m"})).unwrap();
        assert_eq!(
            periods_of(&schedule).unwrap(),
            Periods {
                every: Duration::from_secs(60),
                lead: Duration::from_secs(7 * 86400),
                retain: Duration::from_secs(86400)
            }
        );
    }

    fn periods_of(s: &RotationSchedule) -> Result<Periods, String> {
        super::periods(s)
    }
}
