//! The planner scenario table: one test per rule of README "How a reconcile decides"
//! (docs/design.md has the same rules, named as in `rules.rs`).

use std::time::Duration;

use super::fixtures::*;
use super::*;
use crate::crd::EncryptionMode::*;
use crate::crd::{ManagementPolicy, ResourceType};

const CON: &str = "dxcon-abc123";
const LAG: &str = "dxlag-ffff01";

fn run(d: &Desired, o: Option<&ObservedResource>, now: i64) -> Plan {
    plan(d, o, &PriorState::default(), t(now))
}

fn only_action(p: &Plan) -> &Action {
    assert_eq!(p.actions.len(), 1, "expected one action, got {:?}", p);
    &p.actions[0]
}

fn assert_associates(p: &Plan, c: char) {
    match only_action(p) {
        Action::Associate { ckn: Some(k), .. } => assert_eq!(k.as_str(), ckn(c)),
        other => panic!("expected associate of {c}, got {other}"),
    }
}

fn assert_removes(p: &Plan, c: char) {
    match only_action(p) {
        Action::Disassociate { secret_arn, .. } => assert_eq!(secret_arn, &managed_arn(c)),
        other => panic!("expected disassociate of {c}, got {other}"),
    }
}

fn assert_sets(p: &Plan, mode: EncryptionMode, op: &str) {
    let a = only_action(p);
    assert!(
        matches!(a, Action::SetMode { mode: m, .. } if *m == mode),
        "{a}"
    );
    assert_eq!(a.operation(), op);
}

fn assert_waits(p: &Plan, reason: Reason) {
    assert!(
        p.actions.is_empty(),
        "expected no action, got {:?}",
        p.actions
    );
    assert_eq!(p.reason, reason, "{}", p.message);
    assert!(!p.ready);
}

/// What the planner must do at one row of a step table.
enum Then {
    Associates(char),
    Removes(char),
    /// Sets this mode, with UpdateConnection or UpdateLag as the resource asks.
    Sets(EncryptionMode),
    Waits(Reason),
    Ready,
}

/// A connection whose keys are given as (digit, state).
fn con(mode: &str, up: bool, keys: &[(char, &str)]) -> ObservedResource {
    connection(mode, up, keys.iter().map(|(c, s)| key(*c, s)).collect())
}

/// Runs the planner over rows of (seconds, what AWS shows, what it must do), with no
/// memory between rows, and returns the plans for further checks.
fn steps(d: &Desired, rows: Vec<(i64, ObservedResource, Then)>) -> Vec<Plan> {
    rows.into_iter()
        .map(|(at, o, then)| {
            let p = run(d, Some(&o), at);
            match then {
                Then::Associates(c) => assert_associates(&p, c),
                Then::Removes(c) => assert_removes(&p, c),
                Then::Sets(mode) => {
                    let op = Target {
                        id: o.id.clone(),
                        kind: o.kind,
                    }
                    .update_operation();
                    assert_sets(&p, mode, op)
                }
                Then::Waits(reason) => assert_waits(&p, reason),
                Then::Ready => assert!(p.ready && p.actions.is_empty(), "t={at}: {p:?}"),
            }
            p
        })
        .collect()
}

/// First enable: associate, wait for associated, wait for Encryption Up, then must_encrypt.
#[test]
fn first_enable_goes_key_then_port_then_must_encrypt() {
    use Then::*;
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let a = [('a', "associated")];
    let p = steps(
        &d,
        vec![
            (0, con("no_encrypt", false, &[]), Associates('a')),
            (
                10,
                con("no_encrypt", false, &[('a', "associating")]),
                Waits(Reason::Progressing),
            ),
            // MACsec is not negotiated under no_encrypt: should_encrypt first, so the port
            // can come up.
            (20, con("no_encrypt", false, &a), Sets(ShouldEncrypt)),
            (
                25,
                con("should_encrypt", false, &a),
                Waits(Reason::WaitingForEncryptionUp),
            ),
            (30, con("should_encrypt", true, &a), Sets(MustEncrypt)),
            (40, con("must_encrypt", true, &a), Ready),
        ],
    );
    assert!(matches!(
        &p[0].actions[0],
        Action::Associate {
            with: Association::CknCak(..),
            ..
        }
    ));
    assert_eq!(p[0].requeue, Requeue::Soon);
    assert!(p[3].message.contains("Encryption Down"), "{}", p[3].message);
    assert!(p[3].message.contains("router"), "{}", p[3].message);
    assert!(p[5].synced);
    assert_eq!(p[5].reason, Reason::Converged);
    assert_eq!(p[5].requeue, Requeue::Resync);
    assert_eq!(p[5].keys[0].mac_sec_key.as_deref(), Some("k1"));
}

/// Rotation with overlap: the new key is associated first; the old one goes only after the
/// overlap, counted from when every wanted key was first seen associated.
#[test]
fn rotation_keeps_the_old_key_for_the_overlap() {
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k2", 'b')]));
    let p = run(
        &d,
        Some(&connection(
            "must_encrypt",
            true,
            vec![key('a', "associated")],
        )),
        0,
    );
    assert_associates(&p, 'b');

    let both = |s: &str| {
        connection(
            "must_encrypt",
            true,
            vec![key('a', "associated"), key('b', s)],
        )
    };
    assert_waits(
        &run(&d, Some(&both("associating")), 10),
        Reason::Progressing,
    );

    // First seen associated at t=20: the overlap runs to t=320.
    let first = run(&d, Some(&both("associated")), 20);
    assert_waits(&first, Reason::Progressing);
    assert_eq!(first.requeue, Requeue::After(Duration::from_secs(300)));
    let prior = PriorState::from_key_status(&first.keys, false);
    assert_eq!(prior.associated_since.get(&ckn('b')), Some(&t(20)));

    let p = plan(&d, Some(&both("associated")), &prior, t(319));
    assert_waits(&p, Reason::Progressing);
    assert_eq!(p.requeue, Requeue::After(Duration::from_secs(1)));

    let p = plan(&d, Some(&both("associated")), &prior, t(320));
    assert_removes(&p, 'a');
    assert!(p.actions[0].to_string().contains("no longer wanted"));
}

/// Rotation under must_encrypt keeps the old key while the port is down (the router may not
/// have the new key yet).
#[test]
fn rotation_waits_for_port_up_before_removing() {
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k2", 'b')]));
    let o = connection(
        "must_encrypt",
        false,
        vec![key('a', "associated"), key('b', "associated")],
    );
    let p = run(&d, Some(&o), 10_000);
    assert_waits(&p, Reason::WaitingForEncryptionUp);
}

/// Keychain full: the oldest unwanted key goes first to make room, never the only associated.
#[test]
fn keychain_full_removes_oldest_unwanted_first() {
    let d = desired(CON, Some(ShouldEncrypt), Some(vec![wanted("new", 'd')]));
    let mut keys = vec![
        key('a', "associated"),
        key('b', "associated"),
        key('c', "associated"),
    ];
    keys[0].start_on = Some("2026-03-01T00:00:00Z".into());
    keys[1].start_on = Some("2026-01-01T00:00:00Z".into());
    keys[2].start_on = Some("2026-02-01T00:00:00Z".into());
    let p = run(&d, Some(&connection("should_encrypt", true, keys)), 0);
    assert_removes(&p, 'b');
    assert!(matches!(
        p.actions[0],
        Action::Disassociate {
            why: Removal::KeychainFull,
            ..
        }
    ));

    // The only associated key is never the one removed for room.
    let d = desired(
        CON,
        Some(ShouldEncrypt),
        Some(vec![
            wanted("w1", 'a'),
            wanted("w2", 'b'),
            wanted("w3", 'd'),
        ]),
    );
    let keys = vec![
        key('a', "associating"),
        key('b', "associating"),
        key('c', "associated"),
    ];
    let p = run(&d, Some(&connection("should_encrypt", true, keys)), 0);
    assert_waits(&p, Reason::Progressing);
    assert!(p.message.contains("keychain full"), "{}", p.message);
}

/// Turning encryption off: the mode goes first, then the keys, so AWS never flips the mode.
#[test]
fn turning_off_sets_the_mode_before_removing_keys() {
    use Then::*;
    let d = desired(CON, Some(NoEncrypt), Some(vec![]));
    steps(
        &d,
        vec![
            (
                0,
                con("must_encrypt", true, &[('a', "associated")]),
                Sets(NoEncrypt),
            ),
            (
                1,
                con("no_encrypt", false, &[('a', "associated")]),
                Removes('a'),
            ),
            (
                2,
                con("no_encrypt", false, &[('a', "disassociating")]),
                Waits(Reason::Progressing),
            ),
            (
                3,
                con("no_encrypt", false, &[('a', "disassociated")]),
                Ready,
            ),
        ],
    );
}

/// LAG: the mode is set with UpdateLag, only when every member is up; members are reported.
#[test]
fn lag_uses_update_lag_and_waits_for_every_member() {
    use Then::*;
    let d = desired(LAG, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let a = || vec![key('a', "associated")];
    let p = steps(
        &d,
        vec![
            (
                0,
                lag("should_encrypt", &[true, false], vec![]),
                Associates('a'),
            ),
            (
                1,
                lag("should_encrypt", &[true, false], a()),
                Waits(Reason::WaitingForEncryptionUp),
            ),
            (
                2,
                lag("should_encrypt", &[true, true], a()),
                Sets(MustEncrypt),
            ),
        ],
    );
    assert_eq!(p[0].actions[0].target().kind, ResourceType::Lag);
    assert_eq!(p[2].actions[0].operation(), "UpdateLag");
    assert!(p[1].message.contains("dxcon-member1"), "{}", p[1].message);
    assert_eq!(
        lag("should_encrypt", &[true, false], a())
            .port_summary()
            .as_deref(),
        Some("Encryption Down (1/2 up)")
    );

    // A member whose mode differs from the LAG is reported, not changed.
    let mut o = lag("must_encrypt", &[true, true], a());
    o.members[1].encryption_mode = Some("should_encrypt".into());
    let p = run(&d, Some(&o), 3);
    assert!(p.ready);
    assert!(
        p.message.contains("dxcon-member1 (should_encrypt)"),
        "{}",
        p.message
    );
}

/// Not MACsec-capable: terminal, no calls, a message saying it cannot be turned on later.
#[test]
fn not_capable_is_terminal() {
    let d = desired(CON, Some(ShouldEncrypt), Some(vec![wanted("k1", 'a')]));
    let mut o = connection("no_encrypt", false, vec![]);
    o.mac_sec_capable = false;
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::NotMacSecCapable);
    assert!(!p.synced);
    assert_eq!(p.requeue, Requeue::Resync);

    // Asking for no encryption on such a port, which reports no mode, is simply converged.
    let d = desired(CON, Some(NoEncrypt), Some(vec![]));
    o.encryption_mode = None;
    assert!(run(&d, Some(&o), 0).ready);
}

/// A LAG member addressed directly is refused and pointed at its LAG.
#[test]
fn lag_member_is_managed_by_lag() {
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let mut o = connection("no_encrypt", false, vec![]);
    o.lag_id = Some(LAG.into());
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::ManagedByLag);
    assert!(p.message.contains(LAG));
}

/// Not available: wait and look again soon; nothing is called.
#[test]
fn not_available_waits() {
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let mut o = connection("no_encrypt", false, vec![]);
    o.state = "pending".into();
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::NotAvailable);
    assert!(p.synced);
    assert_eq!(p.requeue, Requeue::Soon);
}

/// ObserveOnly: the step is computed and reported, never returned as an action.
#[test]
fn observe_only_withholds_the_step() {
    let mut d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    d.policy = ManagementPolicy::ObserveOnly;
    let p = run(&d, Some(&connection("no_encrypt", false, vec![])), 0);
    assert!(p.actions.is_empty());
    assert_eq!(p.withheld.len(), 1);
    assert_eq!(p.reason, Reason::DriftDetected);
    assert!(p.planned_actions()[0].starts_with("AssociateMacSecKey: associate MacSecKey k1"));
    assert_eq!(p.requeue, Requeue::Resync);
}

/// An unknown mode string from AWS (`unknown`) does not fail: the wanted mode is set.
#[test]
fn unknown_mode_string_is_tolerated() {
    let d = desired(CON, Some(ShouldEncrypt), None);
    let p = run(&d, Some(&connection("unknown", false, vec![])), 0);
    assert_sets(&p, ShouldEncrypt, "UpdateConnection");

    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let o = connection("unknown", true, vec![key('a', "associated")]);
    assert_sets(&run(&d, Some(&o), 0), MustEncrypt, "UpdateConnection");

    // Unknown key states are waited on, not matched as associated.
    let o = connection("unknown", true, vec![key('a', "pending-something")]);
    assert_waits(&run(&d, Some(&o), 0), Reason::Progressing);
}

/// Crash recovery: the wanted key is already on AWS (in any case), so it is not associated
/// again.
#[test]
fn crash_recovery_finds_the_key_by_ckn() {
    let d = desired(CON, Some(ShouldEncrypt), Some(vec![wanted("k1", 'a')]));
    let mut k = key('a', "associating");
    k.ckn = Some(ckn('a').to_uppercase());
    let p = run(&d, Some(&connection("should_encrypt", false, vec![k])), 0);
    assert_waits(&p, Reason::Progressing);
}

/// requireEncryptionUp false: must_encrypt as soon as a wanted key is associated.
#[test]
fn require_encryption_up_false_skips_the_port_gate() {
    let mut d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    d.require_encryption_up = false;
    let o = connection("no_encrypt", false, vec![key('a', "associated")]);
    assert_sets(&run(&d, Some(&o), 0), MustEncrypt, "UpdateConnection");
}

/// A known managed secret ARN is used instead of the CAK.
#[test]
fn associates_by_managed_arn_when_known() {
    let mut w = wanted("k1", 'a');
    if let Ok(m) = &mut w.material {
        m.secret_arn = Some(managed_arn('a'));
    }
    let d = desired(CON, None, Some(vec![w]));
    let p = run(&d, Some(&connection("no_encrypt", false, vec![])), 0);
    assert!(matches!(
        &p.actions[0],
        Action::Associate { with: Association::SecretArn(a), .. } if *a == managed_arn('a')
    ));

    // An ARN-only key is matched by ARN when its CKN is unknown.
    let d = desired(
        CON,
        None,
        Some(vec![WantedKey {
            name: "arn-only".into(),
            material: Ok(KeyMaterial::managed_secret(managed_arn('a'), None)),
        }]),
    );
    let p = run(
        &d,
        Some(&connection(
            "no_encrypt",
            false,
            vec![key('a', "associated")],
        )),
        0,
    );
    assert!(p.ready, "{}", p.message);
    assert_eq!(p.keys[0].mac_sec_key.as_deref(), Some("arn-only"));
}

/// Invalid spec (bad ID, too many keys, duplicate names or CKNs): no call, a message naming
/// the field.
#[test]
fn invalid_spec_blocks_every_call() {
    let o = connection("no_encrypt", false, vec![]);
    let cases = [
        (desired("dxcon_bad", None, None), "spec.connectionId"),
        (
            desired(
                CON,
                None,
                Some(vec![
                    wanted("a", 'a'),
                    wanted("b", 'b'),
                    wanted("c", 'c'),
                    wanted("d", 'd'),
                ]),
            ),
            "at most 3",
        ),
        (
            desired(CON, None, Some(vec![wanted("a", 'a'), wanted("a", 'b')])),
            "twice",
        ),
        (
            desired(CON, None, Some(vec![wanted("a", 'a'), wanted("b", 'a')])),
            "same CKN",
        ),
        (
            desired(CON, Some(MustEncrypt), Some(vec![])),
            "at least one key",
        ),
    ];
    for (d, needle) in cases {
        let p = run(&d, Some(&o), 0);
        assert_waits(&p, Reason::InvalidSpec);
        assert!(!p.synced);
        assert!(p.message.contains(needle), "{} lacks {needle}", p.message);
    }
}

/// Key material not ready (missing Secret): no AWS mutation at all, even of the mode, and
/// a retry soon.
#[test]
fn key_not_ready_blocks_every_call() {
    let d = desired(
        CON,
        Some(NoEncrypt),
        Some(vec![
            wanted("ok", 'a'),
            broken("k2", "Secret default/k2 not found"),
        ]),
    );
    let p = run(&d, Some(&connection("must_encrypt", true, vec![])), 0);
    assert_waits(&p, Reason::KeyNotReady);
    assert!(
        p.message
            .contains("MacSecKey k2: Secret default/k2 not found")
    );
    assert_eq!(p.requeue, Requeue::Soon);
}

/// A key whose source failed for a passing reason (AWS throttled or failing) stops the pass
/// the same way, but as a wait: Synced, not a person's problem (no Stalled), read again soon.
/// One key a person must fix among them makes it a person's problem again.
#[test]
fn a_key_unreadable_for_a_moment_waits_without_a_person() {
    let mut passing = broken("k2", "GetSecretValue failed: DirectConnectServerException");
    if let Err(problem) = &mut passing.material {
        problem.transient = true;
    }
    let d = desired(
        CON,
        Some(NoEncrypt),
        Some(vec![wanted("ok", 'a'), passing.clone()]),
    );
    let p = run(&d, Some(&connection("must_encrypt", true, vec![])), 0);
    assert_waits(&p, Reason::KeyNotReady);
    assert!(p.synced && !p.needs_a_person(), "{p:?}");
    assert_eq!(p.requeue, Requeue::Soon);

    let d = desired(
        CON,
        Some(NoEncrypt),
        Some(vec![passing, broken("k3", "Secret default/k3 not found")]),
    );
    let p = run(&d, Some(&connection("must_encrypt", true, vec![])), 0);
    assert_waits(&p, Reason::KeyNotReady);
    assert!(!p.synced && p.needs_a_person());
}

/// Not found and Conflict are reported without calls.
#[test]
fn not_found_and_conflict() {
    let d = desired(CON, None, Some(vec![wanted("k1", 'a')]));
    let p = run(&d, None, 0);
    assert_waits(&p, Reason::NotFound);
    assert!(p.message.contains("spec.region"));

    let mut d = d;
    d.conflict_with = Some("default/older".into());
    let p = run(&d, Some(&connection("no_encrypt", false, vec![])), 0);
    assert_waits(&p, Reason::Conflict);
    assert!(p.message.contains("default/older"));
}

/// Drift by AWS itself: after the last key went under must_encrypt AWS set should_encrypt;
/// must_encrypt comes back only once a key is associated again, and it is reported as drift.
#[test]
fn aws_made_drift_is_reported_and_repaired_in_order() {
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let prior = PriorState {
        converged: true,
        ..Default::default()
    };
    let p = plan(
        &d,
        Some(&connection("should_encrypt", false, vec![])),
        &prior,
        t(0),
    );
    assert_associates(&p, 'a');
    assert_eq!(p.reason, Reason::DriftDetected);

    let o = connection("should_encrypt", true, vec![key('a', "associated")]);
    let p = plan(&d, Some(&o), &prior, t(1));
    assert_sets(&p, MustEncrypt, "UpdateConnection");
    assert!(p.message.contains("AWS switched it"), "{}", p.message);
}

/// Keys not managed but must_encrypt observed: emptying is refused rather than taking the link
/// down; with keys unmanaged, any associated key unlocks must_encrypt.
#[test]
fn never_removes_the_last_key_under_must_encrypt() {
    let d = desired(CON, None, Some(vec![]));
    let o = connection("must_encrypt", true, vec![key('a', "associated")]);
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::InvalidSpec);
    assert!(p.message.contains("should_encrypt or no_encrypt first"));

    let d = desired(CON, Some(MustEncrypt), None);
    let o = connection("should_encrypt", true, vec![key('z', "associated")]);
    assert_sets(&run(&d, Some(&o), 0), MustEncrypt, "UpdateConnection");
    let o = connection("should_encrypt", true, vec![]);
    assert_waits(&run(&d, Some(&o), 0), Reason::Progressing);
}

/// The CAK appears in no action text, message, status line or Debug output.
#[test]
fn cak_never_appears_in_plan_output() {
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let p = run(&d, Some(&connection("no_encrypt", false, vec![])), 0);
    let secret = cak('a');
    let everything = format!(
        "{p:?} {} {} {:?}",
        p.message,
        p.planned_actions().join(" "),
        p.keys
    );
    assert!(!everything.contains(&secret));
    assert!(everything.contains("<redacted>"));
}

/// must_encrypt, the spec met, the port Encryption Down: not Ready, no call, a message that
/// names the mode, the port status, the associated CKN with its MacSecKey and the router; a
/// look again soon enough to see the router fixed.
#[test]
fn must_encrypt_port_down_is_not_ready() {
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k-b", 'b')]));
    let o = connection("must_encrypt", false, vec![key('b', "associated")]);
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::EncryptionDown);
    assert!(p.synced, "AWS matches the spec: {}", p.message);
    assert!(p.needs_a_person() && p.spec_met());
    assert_eq!(p.requeue, Requeue::After(ENCRYPTION_DOWN_RECHECK));
    for needle in [
        "dxcon-abc123 (must_encrypt) reports Encryption Down",
        "carries no traffic",
        &format!("CKN {} (MacSecKey k-b)", ckn('b')),
        "customer router",
    ] {
        assert!(p.message.contains(needle), "{} lacks {needle}", p.message);
    }

    // The router fixed: Ready again, with no spec change.
    let o = connection("must_encrypt", true, vec![key('b', "associated")]);
    assert!(run(&d, Some(&o), 30).ready);

    // The mode not managed changes nothing: a must_encrypt link that is down is not Ready.
    let d = desired(CON, None, None);
    let o = connection("must_encrypt", false, vec![key('z', "associated")]);
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::EncryptionDown);
    assert!(p.message.contains("(not in spec.keys)"), "{}", p.message);
}

/// should_encrypt with requireEncryptionUp and a key associated, port down: traffic is in
/// clear text, so not Ready; without requireEncryptionUp, or with no key at all, it is.
#[test]
fn should_encrypt_port_down_is_not_ready_when_encryption_is_required() {
    let mut d = desired(CON, Some(ShouldEncrypt), Some(vec![wanted("k1", 'a')]));
    let o = connection("should_encrypt", false, vec![key('a', "associated")]);
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::EncryptionDown);
    assert!(p.message.contains("clear text"), "{}", p.message);

    d.require_encryption_up = false;
    assert!(run(&d, Some(&o), 0).ready);

    let d = desired(CON, Some(ShouldEncrypt), Some(vec![]));
    assert!(
        run(&d, Some(&connection("should_encrypt", false, vec![])), 0).ready,
        "no key wanted or associated: nothing can be up"
    );
}

/// A LAG is down when any member is: the members that are down are named, with their mode.
#[test]
fn lag_member_down_under_must_encrypt_is_not_ready() {
    let d = desired(LAG, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let o = lag("must_encrypt", &[true, false], vec![key('a', "associated")]);
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::EncryptionDown);
    assert!(
        p.message.contains(
            "LAG dxlag-ffff01 members report Encryption Down: dxcon-member1 (must_encrypt)"
        ),
        "{}",
        p.message
    );
    assert!(!p.message.contains("dxcon-member0"), "{}", p.message);

    // A member left must_encrypt while the LAG says should_encrypt is judged by its own mode.
    let d = desired(LAG, Some(ShouldEncrypt), Some(vec![]));
    let mut o = lag("should_encrypt", &[false, false], vec![]);
    o.members[0].encryption_mode = Some("must_encrypt".into());
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::EncryptionDown);
    assert!(
        p.message.contains("dxcon-member0 (must_encrypt)"),
        "{}",
        p.message
    );
}

/// A rotation without overlap: router with key A only, keys [A] then [A, B] then [B] with no
/// overlap. A goes (the port was up through A), and then the link is down: that is reported,
/// never Converged.
#[test]
fn removing_the_key_the_router_uses_ends_encryption_down() {
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k-b", 'b')]));
    let mut d0 = d.clone();
    d0.overlap = Duration::ZERO;
    let both = connection(
        "must_encrypt",
        true,
        vec![key('a', "associated"), key('b', "associated")],
    );
    assert_removes(&run(&d0, Some(&both), 0), 'a');
    let after = connection("must_encrypt", false, vec![key('b', "associated")]);
    let p = run(&d0, Some(&after), 1);
    assert_waits(&p, Reason::EncryptionDown);
    assert_ne!(p.reason, Reason::Converged);
}

/// Two keys on a must_encrypt connection that wants only `b`, the port as given.
fn a_and_b(a: Option<&str>, up: bool) -> ObservedResource {
    let mut keys = vec![key('b', "associated")];
    if let Some(state) = a {
        keys.insert(0, key('a', state));
    }
    connection("must_encrypt", up, keys)
}

/// The guard: the router never got key b. Once the outgoing key a is removed the port goes
/// Encryption Down; a is associated again (by its managed secret) as soon as AWS has
/// finished removing it, the rollback is reported and remembered, and a is not removed
/// again until the confirmation annotation (or the spec) changes.
#[test]
fn a_removal_that_takes_the_port_down_is_rolled_back() {
    let mut d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k-b", 'b')]));
    d.overlap = Duration::ZERO;
    d.guard = Duration::from_secs(300);
    d.generation = Some(3);
    let removal = run(&d, Some(&a_and_b(Some("associated"), true)), 0);
    assert_removes(&removal, 'a');
    assert!(removal.guarding || removal.rotation.removed.len() == 1);
    assert_eq!(removal.rotation.removed[0].secret_arn, managed_arn('a'));
    let memory = |p: &Plan| PriorState::default().with_rotation(Some(&p.rotation));

    let p = plan(
        &d,
        Some(&a_and_b(Some("disassociating"), false)),
        &memory(&removal),
        t(5),
    );
    assert_waits(&p, Reason::RotationRolledBack);
    assert!(p.guarding && p.requeue == Requeue::Soon);

    let restore = plan(&d, Some(&a_and_b(None, false)), &memory(&removal), t(10));
    assert_eq!(
        restore.reason,
        Reason::RotationRolledBack,
        "{}",
        restore.message
    );
    match only_action(&restore) {
        Action::Restore { secret_arn, .. } => assert_eq!(secret_arn, &managed_arn('a')),
        other => panic!("expected the restore of a, got {other}"),
    }
    assert!(restore.rotation.removed.is_empty());
    let rb = restore.rotation.rolled_back.as_ref().unwrap();
    assert_eq!((rb.keys.len(), rb.generation), (1, Some(3)));

    // Back up on key a: not Ready, a person is needed, and a stays.
    let held = plan(
        &d,
        Some(&a_and_b(Some("associated"), true)),
        &memory(&restore),
        t(400),
    );
    assert_waits(&held, Reason::RotationRolledBack);
    assert!(!held.synced);
    assert!(
        held.message
            .contains(&format!("does not use CKN {}", ckn('b'))),
        "{}",
        held.message
    );
    assert!(
        held.message.contains("dxmacsec.io/confirm-removal"),
        "{}",
        held.message
    );
    assert!(
        held.rotation.rolled_back.is_some(),
        "remembered while it holds"
    );

    // The router is fixed and the person confirms: a goes again.
    d.confirmation = Some("router has b".into());
    let again = plan(
        &d,
        Some(&a_and_b(Some("associated"), true)),
        &memory(&held),
        t(410),
    );
    assert_removes(&again, 'a');
    assert!(again.rotation.rolled_back.is_none());

    // A spec change works as well.
    d.confirmation = None;
    d.generation = Some(4);
    assert_removes(
        &plan(
            &d,
            Some(&a_and_b(Some("associated"), true)),
            &memory(&held),
            t(410),
        ),
        'a',
    );
}

/// Past the guard window a port that goes down is only reported (EncryptionDown); turning
/// encryption off (no wanted key) is no rotation, so nothing is watched; with the guard off
/// nothing is remembered.
#[test]
fn the_guard_watches_only_a_rotation_within_its_window() {
    let mut d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k-b", 'b')]));
    d.overlap = Duration::ZERO;
    d.guard = Duration::from_secs(300);
    let removal = run(&d, Some(&a_and_b(Some("associated"), true)), 0);
    let prior = PriorState::default().with_rotation(Some(&removal.rotation));
    let late = plan(&d, Some(&a_and_b(None, false)), &prior, t(300));
    assert_waits(&late, Reason::EncryptionDown);
    assert!(late.rotation.removed.is_empty() && !late.guarding);

    let off = desired(CON, Some(ShouldEncrypt), Some(vec![]));
    let p = run(
        &off,
        Some(&connection(
            "should_encrypt",
            true,
            vec![key('a', "associated")],
        )),
        0,
    );
    assert_removes(&p, 'a');
    assert!(p.rotation.is_empty());

    d.guard = Duration::ZERO;
    assert!(
        run(&d, Some(&a_and_b(Some("associated"), true)), 0)
            .rotation
            .is_empty()
    );
}

/// `rotation.confirm: Manual`: outgoing keys wait for a confirmation value not used before.
#[test]
fn manual_confirmation_removes_outgoing_keys_once_per_value() {
    let mut d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k-b", 'b')]));
    d.overlap = Duration::ZERO;
    d.manual_confirmation = true;
    let o = a_and_b(Some("associated"), true);
    let p = run(&d, Some(&o), 0);
    assert_waits(&p, Reason::WaitingForConfirmation);
    assert!(
        p.synced && p.message.contains("dxmacsec.io/confirm-removal"),
        "{}",
        p.message
    );

    d.confirmation = Some("1".into());
    let p = run(&d, Some(&o), 0);
    assert_removes(&p, 'a');
    assert_eq!(p.rotation.confirmation_used.as_deref(), Some("1"));
    let used = PriorState::default().with_rotation(Some(&p.rotation));
    assert_waits(
        &plan(&d, Some(&o), &used, t(1)),
        Reason::WaitingForConfirmation,
    );
    d.confirmation = Some("2".into());
    assert_removes(&plan(&d, Some(&o), &used, t(1)), 'a');
}

/// Ownership on AWS: another owner's tag is a Conflict; an untagged resource with MACsec
/// state needs `adopt` (or an earlier status of this DxConnection); one without state is
/// claimed with the first step; ours stays ours; ObserveOnly never tags.
#[test]
fn the_owner_tag_decides_who_acts() {
    let me = "cluster-a/net/x";
    let mut d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k", 'a')]));
    d.owner = Some(me.into());
    let claims =
        |p: &Plan| matches!(p.actions.first(), Some(Action::Claim { owner, .. }) if owner == me);

    let fresh = con("no_encrypt", false, &[]);
    let p = run(&d, Some(&fresh), 0);
    assert!(claims(&p) && p.actions.len() == 2, "{:?}", p.actions);
    assert_eq!(p.actions[0].operation(), "TagResource");
    assert_associates(
        &Plan {
            actions: p.actions[1..].to_vec(),
            ..p.clone()
        },
        'a',
    );

    let mut foreign = fresh.clone();
    foreign
        .tags
        .insert(crate::crd::OWNER_TAG.into(), "cluster-b/net/x".into());
    let p = run(&d, Some(&foreign), 0);
    assert_waits(&p, Reason::Conflict);
    assert!(
        p.message.contains("managed by cluster-b/net/x"),
        "{}",
        p.message
    );

    let terraform = con("must_encrypt", true, &[('b', "associated")]);
    let p = run(&d, Some(&terraform), 0);
    assert_waits(&p, Reason::Conflict);
    assert!(p.message.contains("spec.adopt: true"), "{}", p.message);
    d.adopt = true;
    assert!(claims(&run(&d, Some(&terraform), 0)));
    d.adopt = false;
    let before = PriorState {
        managed_before: true,
        ..PriorState::default()
    };
    assert!(claims(&plan(&d, Some(&terraform), &before, t(0))));

    let mut ours = con("must_encrypt", true, &[('a', "associated")]);
    ours.tags.insert(crate::crd::OWNER_TAG.into(), me.into());
    let p = run(&d, Some(&ours), 0);
    assert!(p.ready && p.actions.is_empty(), "{:?}", p.actions);

    let mut converged_untagged = ours.clone();
    converged_untagged.tags.clear();
    d.adopt = true;
    let p = run(&d, Some(&converged_untagged), 0);
    assert!(
        p.ready && claims(&p) && p.actions.len() == 1,
        "claimed while Ready"
    );

    d.policy = ManagementPolicy::ObserveOnly;
    assert!(run(&d, Some(&fresh), 0).actions.is_empty());
}

/// An interconnect is managed like a dedicated connection: its keys and mode by its dxcon
/// ID, the mode with UpdateConnection, the port its own.
#[test]
fn an_interconnect_is_enabled_like_a_connection() {
    use Then::*;
    let d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k1", 'a')]));
    let ic = |mode: &str, up: bool, keys: &[(char, &str)]| {
        interconnect(mode, up, keys.iter().map(|(c, s)| key(*c, s)).collect())
    };
    let a = [('a', "associated")];
    let p = steps(
        &d,
        vec![
            (0, ic("no_encrypt", false, &[]), Associates('a')),
            (20, ic("no_encrypt", false, &a), Sets(ShouldEncrypt)),
            (
                25,
                ic("should_encrypt", false, &a),
                Waits(Reason::WaitingForEncryptionUp),
            ),
            (30, ic("should_encrypt", true, &a), Sets(MustEncrypt)),
            (40, ic("must_encrypt", true, &a), Ready),
        ],
    );
    assert_eq!(p[1].actions[0].operation(), "UpdateConnection");
    let down = run(&d, Some(&ic("must_encrypt", false, &a)), 50);
    assert_waits(&down, Reason::EncryptionDown);
    assert!(down.message.contains(CON), "{}", down.message);
}

/// Membership changes are seen at the next observation: a standalone connection that joins
/// a LAG becomes ManagedByLag; one that leaves is managed again on its own, and the keys and
/// mode it kept from the LAG are taken over without `adopt` (nobody configured them on the
/// connection), whereas the same state on a connection never seen in a LAG is a Conflict.
#[test]
fn a_connection_that_left_a_lag_is_managed_on_its_own() {
    let me = "cluster-a/net/member";
    let mut d = desired(CON, Some(MustEncrypt), Some(vec![wanted("k", 'a')]));
    d.owner = Some(me.into());
    let mut mine = con("must_encrypt", true, &[('a', "associated")]);
    mine.tags.insert(crate::crd::OWNER_TAG.into(), me.into());
    assert!(run(&d, Some(&mine), 0).ready);
    let mut joined = mine.clone();
    joined.lag_id = Some(LAG.into());
    assert_waits(&run(&d, Some(&joined), 1), Reason::ManagedByLag);

    // It left, keeping the LAG's key b and must_encrypt, without an owner tag.
    let left = con("must_encrypt", true, &[('b', "associated")]);
    assert_waits(&run(&d, Some(&left), 2), Reason::Conflict);
    let was_member = PriorState {
        left_lag: Some(LAG.into()),
        ..PriorState::default()
    };
    let p = plan(&d, Some(&left), &was_member, t(2));
    assert!(
        matches!(p.actions.first(), Some(Action::Claim { owner, .. }) if owner == me),
        "{:?}",
        p.actions
    );
    assert_associates(
        &Plan {
            actions: p.actions[1..].to_vec(),
            ..p.clone()
        },
        'a',
    );
    // Still in the LAG: nothing is claimed.
    let mut still = left.clone();
    still.lag_id = Some(LAG.into());
    assert_waits(
        &plan(&d, Some(&still), &was_member, t(3)),
        Reason::ManagedByLag,
    );
    // Another owner's tag stays a Conflict, whatever the memory.
    let mut foreign = left.clone();
    foreign
        .tags
        .insert(crate::crd::OWNER_TAG.into(), "cluster-b/net/y".into());
    assert_waits(
        &plan(&d, Some(&foreign), &was_member, t(3)),
        Reason::Conflict,
    );
}

/// A deletion is planned like any pass. Disassociate: must_encrypt is lowered, the managed
/// key goes, the key it did not manage stays, and the owner tag is released last. Retain:
/// only the release. Another owner's tag, or none, is left alone; a resource Direct Connect
/// no longer knows is done.
#[test]
fn a_deletion_ends_with_the_release_of_the_owner_tag() {
    let me = "cluster-a/net/x";
    let managed = |c: char| crate::crd::KeyStatus {
        ckn: Some(ckn(c)),
        secret_arn: None,
        state: Some("associated".into()),
        start_on: None,
        mac_sec_key: Some(format!("k{c}")),
        associated_since: None,
    };
    let deleting = |deletion: Deletion| Desired {
        owner: Some(me.into()),
        deletion: Some(deletion),
        ..Desired::new(CON)
    };
    let releases =
        |p: &Plan| matches!(p.actions.as_slice(), [Action::Release { owner, .. }] if owner == me);
    let d = deleting(Deletion::Disassociate {
        managed: vec![managed('a')],
    });
    let mut m = model::Model::new(con("must_encrypt", true, &[('a', "associated")]));
    m.resource
        .tags
        .insert(crate::crd::OWNER_TAG.into(), me.into());
    let p = run(&d, Some(&m.resource), 0);
    assert_sets(&p, ShouldEncrypt, "UpdateConnection");
    m.apply(&p.actions[0], t(0)).unwrap();
    let p = run(&d, Some(&m.resource), 0);
    assert_removes(&p, 'a');
    m.apply(&p.actions[0], t(0)).unwrap();
    m.resource.keys.clear();
    let p = run(&d, Some(&m.resource), 0);
    assert!(releases(&p) && !p.ready, "{:?}", p.actions);
    assert_eq!(p.actions[0].operation(), "UntagResource");
    m.apply(&p.actions[0], t(0)).unwrap();
    let p = run(&d, Some(&m.resource), 0);
    assert!(p.ready && p.actions.is_empty(), "{:?}", p.actions);

    // A key this DxConnection did not manage stays, with must_encrypt.
    let mut shared = con(
        "must_encrypt",
        true,
        &[('a', "associated"), ('b', "associated")],
    );
    shared.tags.insert(crate::crd::OWNER_TAG.into(), me.into());
    let p = run(&d, Some(&shared), 0);
    assert_removes(&p, 'a');

    let retain = deleting(Deletion::Retain);
    let p = run(&retain, Some(&shared), 0);
    assert!(releases(&p), "{:?}", p.actions);
    for owner in [Some("cluster-b/net/x"), None] {
        let mut other = shared.clone();
        other.tags.remove(crate::crd::OWNER_TAG);
        if let Some(o) = owner {
            other.tags.insert(crate::crd::OWNER_TAG.into(), o.into());
        }
        for d in [&d, &retain] {
            let p = run(d, Some(&other), 0);
            assert!(
                !p.actions
                    .iter()
                    .any(|a| matches!(a, Action::Release { .. })),
                "{owner:?}: {:?}",
                p.actions
            );
        }
    }
    let gone = run(&d, None, 0);
    assert!(gone.ready && gone.actions.is_empty());
    assert!(gone.message.contains("no longer knows"), "{}", gone.message);
}
