//! Property tests: the planner driven against the in-memory model from random start states,
//! with random async delays, random router readiness and random crashes (lost memory).

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;

use super::fixtures::*;
use super::model::{Dice, Model};
use super::*;
use crate::crd::{EncryptionMode, ManagementPolicy, ResourceType};

const POOL: [char; 6] = ['a', 'b', 'c', 'd', 'e', 'f'];
const MAX_PASSES: usize = 400;

#[derive(Debug, Clone)]
struct Case {
    kind: ResourceType,
    start_mode: &'static str,
    /// (pool index, associated?) for keys already on AWS.
    start_keys: Vec<(usize, bool)>,
    /// Router CKNs before the spec's keys reach it.
    router_start: Vec<usize>,
    wanted: Option<Vec<usize>>,
    mode: Option<EncryptionMode>,
    overlap_secs: u64,
    /// The rotation guard window (0: off).
    guard_secs: u64,
    require_up: bool,
    /// Pass at which the customer configures the wanted keys on the router.
    router_ready_at: usize,
    /// Seconds between passes.
    step_secs: u64,
    tape: Vec<u8>,
}

fn mode_strategy() -> impl Strategy<Value = Option<EncryptionMode>> {
    prop_oneof![
        Just(None),
        Just(Some(EncryptionMode::NoEncrypt)),
        Just(Some(EncryptionMode::ShouldEncrypt)),
        Just(Some(EncryptionMode::MustEncrypt)),
    ]
}

fn distinct(max: usize, min: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::sample::subsequence((0..POOL.len()).collect::<Vec<_>>(), min..=max).prop_shuffle()
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(ResourceType::Connection),
            Just(ResourceType::Interconnect),
            Just(ResourceType::Lag)
        ],
        prop_oneof![
            Just("no_encrypt"),
            Just("should_encrypt"),
            Just("must_encrypt"),
            Just("unknown")
        ],
        distinct(3, 0).prop_flat_map(|ids| {
            let n = ids.len();
            (Just(ids), proptest::collection::vec(any::<bool>(), n))
        }),
        distinct(2, 0),
        proptest::option::weighted(0.85, distinct(3, 0)),
        mode_strategy(),
        (
            prop_oneof![Just(0u64), Just(60), Just(300)],
            prop_oneof![Just(0u64), Just(300)],
        ),
        any::<bool>(),
        0usize..30,
        30u64..120,
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(
            |(
                kind,
                start_mode,
                (ids, assoc),
                router_start,
                wanted,
                mode,
                (overlap_secs, guard_secs),
                require_up,
                router_ready_at,
                step_secs,
                tape,
            )| Case {
                kind,
                start_mode,
                start_keys: ids.into_iter().zip(assoc).collect(),
                router_start,
                wanted,
                mode,
                overlap_secs,
                guard_secs,
                require_up,
                router_ready_at,
                step_secs,
                tape,
            },
        )
        // What the CRD's CEL rules reject.
        .prop_filter("must_encrypt with an empty key list", |c| {
            !(c.mode == Some(EncryptionMode::MustEncrypt)
                && c.wanted.as_ref().is_some_and(Vec::is_empty))
        })
}

fn setup(c: &Case) -> (Desired, Model) {
    let keys = c
        .start_keys
        .iter()
        .map(|(i, assoc)| key(POOL[*i], if *assoc { "associated" } else { "associating" }))
        .collect();
    let resource = match c.kind {
        ResourceType::Lag => lag(c.start_mode, &[false, false], keys),
        ResourceType::Connection => connection(c.start_mode, false, keys),
        ResourceType::Interconnect => interconnect(c.start_mode, false, keys),
    };
    let mut model = Model::new(resource);
    model.router = c.router_start.iter().map(|i| ckn(POOL[*i])).collect();
    model.refresh_port();
    let mut d = desired(
        &model.resource.id.clone(),
        c.mode,
        c.wanted.as_ref().map(|w| {
            w.iter()
                .enumerate()
                .map(|(n, i)| wanted(&format!("key{n}"), POOL[*i]))
                .collect()
        }),
    );
    d.overlap = Duration::from_secs(c.overlap_secs);
    d.guard = Duration::from_secs(c.guard_secs);
    d.require_encryption_up = c.require_up;
    (d, model)
}

/// Whether the spec can be met by the operator alone (some specs deliberately wait on a person).
fn reachable(c: &Case) -> bool {
    let start_must = c.start_mode == "must_encrypt";
    let wanted_empty = c.wanted.as_ref().is_some_and(Vec::is_empty);
    // Refused on purpose: emptying a must_encrypt connection whose mode is not managed.
    if c.mode.is_none() && start_must && wanted_empty && !c.start_keys.is_empty() {
        return false;
    }
    // must_encrypt with unmanaged keys needs somebody else to associate one.
    if c.mode == Some(EncryptionMode::MustEncrypt) && c.wanted.is_none() {
        return false;
    }
    // Keys not managed: the keys already there stay, and the port comes up only if the router
    // has one of them. An encrypting mode with the port down waits on a person
    // (EncryptionDown), as it should.
    if c.wanted.is_none() && !c.start_keys.is_empty() {
        let router_has_one = c.start_keys.iter().any(|(i, _)| c.router_start.contains(i));
        let final_mode = c.mode.or(EncryptionMode::from_aws_str(c.start_mode));
        let encrypting = match final_mode {
            Some(EncryptionMode::MustEncrypt) => true,
            Some(EncryptionMode::ShouldEncrypt) => c.require_up,
            _ => false,
        };
        if encrypting && !router_has_one {
            return false;
        }
    }
    true
}

/// Ports that should carry MACsec and report Encryption Down: under must_encrypt (the port's
/// own mode, else the LAG's), or under should_encrypt with requireEncryptionUp while a key is
/// associated.
fn encrypted_ports_down(d: &Desired, o: &ObservedResource) -> Vec<String> {
    let associated = o.keys.iter().any(|k| k.state() == KeyState::Associated);
    let matters = |mode: Option<EncryptionMode>| match mode {
        Some(EncryptionMode::MustEncrypt) => true,
        Some(EncryptionMode::ShouldEncrypt) => d.require_encryption_up && associated,
        _ => false,
    };
    let up = |s: &Option<String>| s.as_deref() == Some(crate::observed::PORT_UP);
    match o.kind {
        ResourceType::Connection | ResourceType::Interconnect => (matters(o.mode())
            && !up(&o.port_encryption_status))
        .then(|| o.id.clone())
        .into_iter()
        .collect(),
        ResourceType::Lag => o
            .members
            .iter()
            .filter(|m| {
                let mode = m
                    .encryption_mode
                    .as_deref()
                    .and_then(EncryptionMode::from_aws_str)
                    .or(o.mode());
                matters(mode) && !up(&m.port_encryption_status)
            })
            .map(|m| m.connection_id.clone())
            .collect(),
    }
}

struct Run {
    passes_after_router: Option<usize>,
    model: Model,
    plan: Plan,
}

/// Drives planner and model until converged or `MAX_PASSES`, checking the safety properties
/// on every step.
fn drive(c: &Case) -> Result<Run, TestCaseError> {
    let (mut d, mut model) = setup(c);
    let mut dice = Dice::new(&c.tape);
    let mut prior = PriorState::default();
    let mut now = t(0);
    let wanted_ckns: BTreeSet<String> = c.wanted.iter().flatten().map(|i| ckn(POOL[*i])).collect();
    let mut had_associated = !model.associated_ckns().is_empty();
    let mut last = None;
    for pass in 0..MAX_PASSES {
        if pass == c.router_ready_at {
            model.router.extend(wanted_ckns.iter().cloned());
            model.refresh_port();
        }
        let p = plan(&d, Some(&model.resource), &prior, now);
        if p.reason == Reason::RotationRolledBack && !p.synced && pass >= c.router_ready_at {
            // The person the message asks for: the router has the keys now, they confirm.
            d.confirmation = Some(format!("router fixed at pass {pass}"));
        }
        let down = encrypted_ports_down(&d, &model.resource);
        prop_assert!(
            !p.ready || down.is_empty(),
            "Ready while {:?} are Encryption Down: {}",
            down,
            p.message
        );
        if p.ready {
            let after = pass.saturating_sub(c.router_ready_at);
            return Ok(Run {
                passes_after_router: Some(after),
                model,
                plan: p,
            });
        }
        for action in &p.actions {
            let associated_before = model.associated_ckns();
            if let Action::Disassociate { secret_arn, .. } = action
                && !wanted_ckns.is_empty()
                && associated_before.is_disjoint(&wanted_ckns)
            {
                // Only to make room in a full keychain, and never the only associated key.
                let live = model.live().count();
                prop_assert_eq!(
                    live,
                    KEYCHAIN_SIZE,
                    "removed {} while no wanted key was associated",
                    secret_arn
                );
                let victim_associated = model.live().any(|k| {
                    k.secret_arn.as_ref() == Some(secret_arn) && k.state() == KeyState::Associated
                });
                prop_assert!(
                    !(victim_associated && associated_before.len() == 1),
                    "removed the only associated key"
                );
            }
            model
                .apply(action, now)
                .map_err(|e| TestCaseError::fail(format!("AWS refused {action}: {e}")))?;
        }
        model.progress(&mut dice);
        let associated = model.associated_ckns();
        if d.encryption_mode == Some(EncryptionMode::MustEncrypt) {
            prop_assert!(
                !(had_associated && associated.is_empty()),
                "a must_encrypt connection dropped to zero associated keys"
            );
        }
        had_associated |= !associated.is_empty();
        // A crash loses the in-memory state now and then; status would be rebuilt from AWS.
        prior = if dice.rare(5) {
            PriorState::default()
        } else {
            PriorState::from_key_status(&p.keys, p.ready).with_rotation(Some(&p.rotation))
        };
        now = now
            .checked_add(jiff::SignedDuration::from_secs(c.step_secs as i64))
            .unwrap();
        last = Some(p);
    }
    Ok(Run {
        passes_after_router: None,
        model,
        plan: last.expect("at least one pass"),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// From any start state the model reaches the spec in a bounded number of passes once the
    /// router has the keys, while no wanted key is associated twice, a must_encrypt connection
    /// that had a key never drops to zero, and no unwanted key goes while no wanted key is
    /// associated (except to make room, never the only associated key).
    #[test]
    fn converges_safely(c in case_strategy()) {
        let run = drive(&c)?;
        if !reachable(&c) {
            return Ok(());
        }
        let Some(after) = run.passes_after_router else {
            return Err(TestCaseError::fail(format!(
                "did not converge in {MAX_PASSES} passes: {} / {}; state {:?}",
                run.plan.reason, run.plan.message, run.model.resource
            )));
        };
        prop_assert!(after <= 60, "took {after} passes after the router was ready");
        // Converged means AWS matches the spec.
        if let Some(w) = &c.wanted {
            let want: BTreeSet<String> = w.iter().map(|i| ckn(POOL[*i])).collect();
            prop_assert_eq!(run.model.associated_ckns(), want.clone());
            prop_assert_eq!(run.model.live().count(), want.len());
        }
        if let Some(mode) = c.mode {
            prop_assert_eq!(run.model.resource.mode(), Some(mode));
        }
        // The planner never removes a wanted key, so each is associated at most once.
        for i in c.wanted.iter().flatten() {
            let wanted_ckn = ckn(POOL[*i]);
            let times = run.model.associations.iter().filter(|a| **a == wanted_ckn).count();
            prop_assert!(times <= 1, "wanted CKN {} associated {} times", wanted_ckn, times);
        }
    }

    /// No observed state with an encrypted port down is Ready, whatever the spec, the policy
    /// and each port's own mode and status; such a state with the spec met is EncryptionDown.
    #[test]
    fn never_ready_while_an_encrypted_port_is_down(
        c in case_strategy(),
        observe_only in any::<bool>(),
        ports in proptest::collection::vec((any::<bool>(), 0usize..5), 3),
    ) {
        let (mut d, mut model) = setup(&c);
        if observe_only {
            d.policy = ManagementPolicy::ObserveOnly;
        }
        let modes = [None, Some("no_encrypt"), Some("should_encrypt"), Some("must_encrypt"), Some("unknown")];
        let r = &mut model.resource;
        match r.kind {
            ResourceType::Connection | ResourceType::Interconnect => {
                r.port_encryption_status = Some(port(ports[0].0))
            }
            ResourceType::Lag => {
                for (m, (up, mode)) in r.members.iter_mut().zip(&ports) {
                    m.port_encryption_status = Some(port(*up));
                    m.encryption_mode = modes[*mode].map(str::to_string);
                }
            }
        }
        let p = plan(&d, Some(&model.resource), &PriorState::default(), t(0));
        let down = encrypted_ports_down(&d, &model.resource);
        prop_assert!(!p.ready || down.is_empty(), "Ready while {:?} are down: {}", down, p.message);
        if p.reason == Reason::EncryptionDown {
            prop_assert!(!down.is_empty() && !p.ready && p.actions.is_empty() && p.withheld.is_empty());
            for id in &down {
                prop_assert!(p.message.contains(id.as_str()), "{} lacks {}", p.message, id);
            }
        }
    }

    /// ObserveOnly never yields a mutating action, whatever AWS looks like.
    #[test]
    fn observe_only_never_mutates(c in case_strategy(), at in 0i64..100_000) {
        let (mut d, model) = setup(&c);
        d.policy = ManagementPolicy::ObserveOnly;
        let p = plan(&d, Some(&model.resource), &PriorState::default(), t(at));
        prop_assert!(p.actions.is_empty());
        prop_assert!(p.withheld.len() <= 1);
    }
}
