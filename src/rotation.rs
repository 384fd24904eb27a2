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
    KeyStatus, MaterialLocation, RotationSchedule, RotationStage, RouterKey, RouterKeyState,
    RouterStatus, ScheduleStatus,
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
    pub fn from_status(dxc: &crate::crd::DxConnection) -> Self {
        let Some(s) = dxc.status.as_ref() else {
            return OnAws::default();
        };
        OnAws {
            keys: s.keys.clone(),
            // For a LAG the status's summary is `Encryption Up` only when every member is.
            port_up: crate::observed::is_port_up(s.port_encryption_status.as_deref()),
            guarded: crate::desired::removed_ckns(dxc),
            rolled_back: s
                .rotation
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
        schedule,
        router,
        rotate_now,
        aws,
        now,
    } = input;
    let mut s = Stepper::new(schedule, router.keys.clone(), periods, now);
    s.start(&spec_keys);
    s.refresh(&key);
    s.rotate_now(rotate_now);
    s.stage_next(name);
    if let Some(i) = s.staged() {
        let view = key(&s.keys[i].mac_sec_key);
        if view.is_none() && s.create.is_none() {
            // Made before a restart, or deleted by someone: made (again) under its name.
            s.create = Some(s.keys[i].mac_sec_key.clone());
        }
        match s.keys[i].ckn.clone() {
            None => s.generating(i, view.and_then(|v| v.problem)),
            Some(ckn) => s.hand_over(i, name, &ckn, router.confirmed_ckn.as_deref(), &aws),
        }
    }
    s.retire_old(&aws);
    s.finish(router.confirmed_ckn)
}

/// One step's working state.
struct Stepper {
    schedule: ScheduleStatus,
    keys: Vec<RouterKey>,
    periods: Periods,
    now: Timestamp,
    next: Timestamp,
    stage: RotationStage,
    condition: ConditionValue<RotationReason>,
    associating: bool,
    create: Option<String>,
    retire: Vec<String>,
    notes: Vec<Note>,
    wake: Option<Duration>,
}

impl Stepper {
    fn new(
        schedule: ScheduleStatus,
        keys: Vec<RouterKey>,
        periods: Periods,
        now: Timestamp,
    ) -> Self {
        Stepper {
            schedule,
            keys,
            periods,
            now,
            next: now,
            stage: RotationStage::Idle,
            condition: ConditionValue::new(true, RotationReason::OnSchedule, String::new()),
            associating: false,
            create: None,
            retire: Vec::new(),
            notes: Vec::new(),
            wake: None,
        }
    }

    fn note(&mut self, reason: &'static str, message: String) {
        self.notes.push(Note {
            warning: false,
            reason,
            message,
        });
    }

    /// Look again in `d` at the latest.
    fn soon(&mut self, d: Duration) {
        self.wake = Some(self.wake.map_or(d, |w| w.min(d)));
    }

    fn key(name: &str, state: RouterKeyState, now: Timestamp, generated: bool) -> RouterKey {
        RouterKey {
            mac_sec_key: name.to_string(),
            ckn: None,
            material: None,
            state,
            since: now.to_string(),
            confirmed_at: None,
            generated,
        }
    }

    /// The schedule starts: the keys in spec.keys are in use; the first rotation is due a
    /// period later, or at once when there is none.
    fn start(&mut self, spec_keys: &[String]) {
        if self.keys.is_empty() && self.schedule.next_rotation.is_none() {
            for k in spec_keys {
                self.keys
                    .push(Self::key(k, RouterKeyState::Active, self.now, false));
            }
            let first = if self.keys.is_empty() {
                self.now
            } else {
                plus(self.now, self.periods.every)
            };
            self.schedule.next_rotation = Some(first.to_string());
        }
        self.next = at(self.schedule.next_rotation.as_deref()).unwrap_or(self.now);
    }

    /// Each key's CKN and material as its MacSecKey now says; a staged key that got its CKN
    /// is told to the router.
    fn refresh(&mut self, key: &impl Fn(&str) -> Option<KeyView>) {
        let mut staged = None;
        for k in &mut self.keys {
            let Some(view) = key(&k.mac_sec_key) else {
                continue;
            };
            if k.state == RouterKeyState::Staged && k.ckn.is_none() && view.ckn.is_some() {
                staged = Some(format!(
                    "the next key, CKN {} (MacSecKey {}), is listed as staged in status.router.keys: configure it on the router, then confirm it",
                    view.ckn.as_deref().unwrap_or_default(),
                    k.mac_sec_key
                ));
            }
            k.ckn = k.ckn.take().or(view.ckn);
            k.material = k.material.take().or(view.material);
        }
        if let Some(message) = staged {
            self.note("KeyStaged", message);
        }
    }

    /// A new value of the rotate-now annotation makes the rotation due now.
    fn rotate_now(&mut self, value: Option<String>) {
        if let Some(value) = value.filter(|v| self.schedule.rotate_now_used.as_ref() != Some(v)) {
            self.schedule.rotate_now_used = Some(value);
            self.next = self.next.min(self.now);
            self.note(
                "RotationRequested",
                format!("{ROTATE_NOW_ANNOTATION} changed: the next rotation is due now"),
            );
        }
    }

    fn staged(&self) -> Option<usize> {
        self.keys
            .iter()
            .position(|k| k.state == RouterKeyState::Staged)
    }

    /// A lead time before the rotation is due, the next key is made and staged.
    fn stage_next(&mut self, name: &str) {
        let (next, staging) = (self.next, minus(self.next, self.periods.lead));
        self.condition.message = format!(
            "the next rotation is due at {next}; its key is made and staged for the router at {staging}"
        );
        if self.staged().is_some() {
            return;
        }
        if self.now < staging {
            self.soon(until(self.now, staging));
            return;
        }
        self.schedule.sequence += 1;
        let new = format!("{name}-k{}", self.schedule.sequence);
        let sequence = self.schedule.sequence;
        self.note(
            "RotationStarted",
            format!("rotation {sequence}: making key {new} for the router; due at {next}"),
        );
        self.keys
            .push(Self::key(&new, RouterKeyState::Staged, self.now, true));
        self.create = Some(new);
    }

    /// The staged key's material is being made.
    fn generating(&mut self, i: usize, problem: Option<String>) {
        let key = &self.keys[i].mac_sec_key;
        self.stage = RotationStage::Generating;
        self.condition = match problem {
            Some(problem) => ConditionValue::new(
                false,
                RotationReason::KeyGenerationFailed,
                format!("the next key, MacSecKey {key}, is not ready: {problem}"),
            ),
            None => ConditionValue::new(
                true,
                RotationReason::GeneratingKey,
                format!("making the next key, MacSecKey {key}"),
            ),
        };
    }

    /// The staged key `ckn` is with the router: waits for its confirmation and the due
    /// time, then for AWS to hold it with the port up, when it becomes the active key.
    fn hand_over(
        &mut self,
        i: usize,
        name: &str,
        ckn: &str,
        confirmed_ckn: Option<&str>,
        aws: &OnAws,
    ) {
        let (now, next) = (self.now, self.next);
        let confirmed = self.keys[i].confirmed_at.is_some()
            || confirmed_ckn.is_some_and(|c| c.trim().eq_ignore_ascii_case(ckn));
        if confirmed && self.keys[i].confirmed_at.is_none() {
            self.keys[i].confirmed_at = Some(now.to_string());
            self.note("RouterConfirmed", format!("the router holds CKN {ckn}"));
        }
        if !confirmed {
            self.stage = RotationStage::WaitingForRouter;
            let ask = format!(
                "configure CKN {ckn} (MacSecKey {}) on the router, then confirm: {}",
                self.keys[i].mac_sec_key,
                confirm_command(name, ckn)
            );
            self.condition = if now >= next {
                ConditionValue::new(
                    false,
                    RotationReason::WaitingForRouter,
                    format!(
                        "the rotation was due at {next} and waits for the router; nothing is associated until it confirms: {ask}"
                    ),
                )
            } else {
                self.soon(until(now, next));
                ConditionValue::new(
                    true,
                    RotationReason::KeyStaged,
                    format!("the next key is staged; the rotation is due at {next}: {ask}"),
                )
            };
        } else if now < next {
            // Confirmed early: associated when due, so the period holds.
            self.stage = RotationStage::Confirmed;
            self.soon(until(now, next));
            self.condition = ConditionValue::new(
                true,
                RotationReason::KeyStaged,
                format!(
                    "the router confirmed CKN {ckn}; it is associated when the rotation is due, at {next}"
                ),
            );
        } else if aws.state_of(ckn) == Some(KeyState::Associated) && aws.port_up {
            // In use: the new key is active, the others retire.
            for other in &mut self.keys {
                if other.state == RouterKeyState::Active {
                    other.state = RouterKeyState::Retiring;
                    other.since = now.to_string();
                }
            }
            self.keys[i].state = RouterKeyState::Active;
            self.keys[i].since = now.to_string();
            self.schedule.last_rotation = Some(now.to_string());
            self.next = plus(now, self.periods.every);
            let next = self.next;
            self.note(
                "KeyActivated",
                format!("CKN {ckn} is associated and the port is Encryption Up: it is the active key; the old key is removed after the overlap; next rotation due at {next}"),
            );
        } else {
            self.associating = true;
            self.stage = RotationStage::Associating;
            self.condition = ConditionValue::new(
                true,
                RotationReason::Associating,
                format!(
                    "the router confirmed CKN {ckn} and the rotation is due: associating it, and waiting for Encryption Up"
                ),
            );
        }
    }

    /// Retiring keys leave once AWS holds them no more, the guard cannot bring them back and
    /// their retention has passed; a rolled-back removal keeps them and says so.
    fn retire_old(&mut self, aws: &OnAws) {
        let now = self.now;
        for k in std::mem::take(&mut self.keys) {
            if k.state != RouterKeyState::Retiring {
                self.keys.push(k);
                continue;
            }
            let ckn = k.ckn.clone().unwrap_or_default();
            if aws.rolled_back.iter().any(|c| c.eq_ignore_ascii_case(&ckn)) {
                self.stage = RotationStage::RolledBack;
                self.condition = ConditionValue::new(
                    false,
                    RotationReason::RotationRolledBack,
                    format!(
                        "removing CKN {ckn} took the port to Encryption Down, so the guard associated it again: the router does not use the new key. Fix the router, then set the annotation dxmacsec.io/confirm-removal to a new value"
                    ),
                );
                self.keys.push(k);
                continue;
            }
            let on_aws = k.ckn.is_none()
                || aws
                    .state_of(&ckn)
                    .is_some_and(|s| s != KeyState::Disassociated);
            let guarded = aws.guarded.iter().any(|c| c.eq_ignore_ascii_case(&ckn));
            let retire_at = plus(at(Some(&k.since)).unwrap_or(now), self.periods.retain);
            if on_aws || guarded || now < retire_at {
                if !on_aws && !guarded {
                    self.soon(until(now, retire_at));
                }
                if self.stage == RotationStage::Idle {
                    self.stage = RotationStage::Retiring;
                    self.condition = ConditionValue::new(
                        true,
                        RotationReason::Retiring,
                        format!(
                            "CKN {ckn} (MacSecKey {}) is retiring: removed after the overlap, its material deleted from {retire_at} once AWS no longer holds it; the router keeps it until it leaves status.router.keys",
                            k.mac_sec_key
                        ),
                    );
                }
                self.keys.push(k);
                continue;
            }
            let gone = if k.generated {
                "; its MacSecKey and material are deleted"
            } else {
                ""
            };
            self.note(
                "KeyRetired",
                format!(
                    "CKN {ckn} (MacSecKey {}) retired: the router may delete it{gone}",
                    k.mac_sec_key
                ),
            );
            if k.generated {
                self.retire.push(k.mac_sec_key);
            }
        }
    }

    fn finish(mut self, confirmed_ckn: Option<String>) -> Step {
        self.schedule.next_rotation = Some(self.next.to_string());
        self.schedule.stage = Some(self.stage);
        let associating = self.associating;
        let wanted = self
            .keys
            .iter()
            .filter(|k| {
                k.state == RouterKeyState::Active
                    || (k.state == RouterKeyState::Staged && associating)
            })
            .map(|k| k.mac_sec_key.clone())
            .collect();
        Step {
            schedule: self.schedule,
            router: RouterStatus {
                keys: self.keys,
                confirmed_ckn,
            },
            wanted,
            create: self.create,
            retire: self.retire,
            notes: self.notes,
            condition: self.condition,
            wake: self.wake,
        }
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

        /// The MacSecKey `name` exists with its material read: CKN `ckn`.
        fn made(&mut self, name: &str, ckn: &str) {
            let view = KeyView {
                ckn: Some(ckn.into()),
                ..KeyView::default()
            };
            self.keys.push((name.into(), view));
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
        w.made("edge-k1", NEW);
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
        w.made("edge-k1", NEW);
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
        w.made("edge-k2", THIRD);
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
        w.made("edge-k1", NEW);
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
