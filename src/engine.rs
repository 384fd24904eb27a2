//! One reconcile pass, shared by the CLI and the controller: observe through the cache,
//! plan, and execute the plan's one step.
//!
//! Idempotent across crashes: a process starts from a fresh read; within one, what a call
//! changed comes from its answer (or, when the answer does not carry it or the call failed,
//! from a re-read), a resource it waits on is read again before its next pass, and the
//! planner finds keys by CKN, so a key associated just before a crash is found and not
//! associated again. When a re-read has to wait for the cache's Describe budget, the pass
//! is deferred and does nothing.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::aws::{
    Answer, AwsError, AwsProvider, ErrorClass, ErrorKind, Observation, ObservationCache, Scope,
    SecretsProvider,
};
pub use crate::conditions::ConditionValue;
use crate::keys::Ckn;
use crate::observed::ObservedResource;
use crate::plan::{Action, Association, Desired, Plan, PriorState, Reason, Requeue, plan};

/// AWS access shared by every pass: the one way the CLI and the controller reach Direct
/// Connect.
#[derive(Clone)]
pub struct Engine {
    aws: Arc<dyn AwsProvider>,
    cache: Arc<ObservationCache>,
}

/// How long a throttled pass waits before it runs again (the shells add jitter). The SDK has
/// already retried the call; this spreads the next attempts of many resources.
pub const THROTTLED_RETRY: Duration = Duration::from_secs(5);

/// What one pass saw, decided and did.
#[derive(Debug)]
pub enum PassOutcome {
    /// The resource needs a fresh read that must wait this long for the Describe budget:
    /// nothing was read, planned or done; run the pass again then.
    Deferred(Duration),
    /// AWS could not be read (credentials, role, the Describe call).
    Unread(AwsError),
    /// AWS was read and the planner decided.
    Planned(Box<Planned>),
}

/// A pass that read AWS: what it saw, decided and did.
#[derive(Debug)]
pub struct Planned {
    /// `None`: Direct Connect does not know the connection.
    pub observed: Option<ObservedResource>,
    pub plan: Plan,
    /// The plan's actions that succeeded.
    pub executed: Vec<Action>,
    /// The call that failed, if any; the actions after it were not tried.
    pub failed: Option<AwsError>,
}

/// Whether a pass may change AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan only (`plan` subcommand).
    DryRun,
    /// Execute the plan's step.
    Execute,
}

/// How a resource stands after a pass, for whoever decides whether to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Ready: AWS matches the spec and the link is encrypted as asked.
    Converged,
    /// Changes in flight, AWS to wait for, or a call to retry.
    Pending,
    /// Only a person can move it on: a bad spec, a missing key, an unknown connection, a
    /// terminal AWS error, a port that is Encryption Down while AWS matches the spec.
    NeedsAPerson,
}

impl PassOutcome {
    pub fn plan(&self) -> Option<&Plan> {
        match self {
            PassOutcome::Planned(p) => Some(&p.plan),
            _ => None,
        }
    }

    pub fn observed(&self) -> Option<&ObservedResource> {
        match self {
            PassOutcome::Planned(p) => p.observed.as_ref(),
            _ => None,
        }
    }

    /// The actions performed successfully.
    pub fn executed(&self) -> &[Action] {
        match self {
            PassOutcome::Planned(p) => &p.executed,
            _ => &[],
        }
    }

    /// The AWS error of the pass: the read, or the call that failed.
    pub fn error(&self) -> Option<&AwsError> {
        match self {
            PassOutcome::Unread(e) => Some(e),
            PassOutcome::Planned(p) => p.failed.as_ref(),
            PassOutcome::Deferred(_) => None,
        }
    }

    /// The `Ready` condition: the plan's verdict, or the read error.
    pub fn ready(&self) -> ConditionValue {
        match (self.plan(), self.error()) {
            (Some(p), _) => ConditionValue::new(p.ready, p.reason, &p.message),
            (None, Some(e)) => ConditionValue::new(false, e.reason(), e.to_string()),
            (None, None) => ConditionValue::new(false, Reason::AwsError, "AWS was not read"),
        }
    }

    /// The `Synced` condition: false when a call failed or the spec cannot be acted on.
    pub fn synced(&self) -> ConditionValue {
        match (self.error(), self.plan()) {
            (Some(e), _) => ConditionValue::new(false, e.reason(), e.to_string()),
            (None, Some(p)) => ConditionValue::new(p.synced, p.reason, &p.message),
            (None, None) => ConditionValue::new(false, Reason::AwsError, "AWS was not read"),
        }
    }

    /// What to tell a person in one line: the failed call when there is one, else `Ready`.
    pub fn headline(&self) -> ConditionValue {
        if self.error().is_some() {
            self.synced()
        } else {
            self.ready()
        }
    }

    /// When to run the next pass, for the controller and the CLI alike: after the wait of a
    /// deferred read, after [`THROTTLED_RETRY`] when throttled, at the resync after a
    /// terminal error, soon after another error, else as the plan says.
    pub fn next_look(&self) -> Requeue {
        if let PassOutcome::Deferred(wait) = self {
            return Requeue::After(*wait);
        }
        match (self.error(), self.plan()) {
            (Some(e), _) => match e.class {
                ErrorClass::Throttled => Requeue::After(THROTTLED_RETRY),
                ErrorClass::Terminal => Requeue::Resync,
                ErrorClass::RetrySoon => Requeue::Soon,
            },
            // A step just made, its answers in the cache: the next may follow at once (a
            // pass that then waits for AWS asks for a fresh read and looks again soon).
            (None, Some(p)) if p.requeue == Requeue::Soon && !self.executed().is_empty() => {
                Requeue::After(Duration::ZERO)
            }
            (None, Some(p)) => p.requeue,
            (None, None) => Requeue::Soon,
        }
    }

    /// Whether a deletion's pass left nothing to do: no call failed, and the owner tag was
    /// released now or nothing is left to change.
    pub fn deletion_done(&self) -> bool {
        self.error().is_none()
            && (self.released_owner_tag()
                || self.plan().is_some_and(|p| p.ready && p.actions.is_empty()))
    }

    /// Whether this pass removed the owner tag (a deletion's last step).
    pub fn released_owner_tag(&self) -> bool {
        self.executed()
            .iter()
            .any(|a| matches!(a, Action::Release { .. }))
    }

    pub fn standing(&self) -> Standing {
        if let Some(e) = self.error() {
            return if e.class == ErrorClass::Terminal {
                Standing::NeedsAPerson
            } else {
                Standing::Pending
            };
        }
        match self.plan() {
            Some(p) if p.ready => Standing::Converged,
            Some(p) if p.needs_a_person() => Standing::NeedsAPerson,
            _ => Standing::Pending,
        }
    }
}

/// `base` plus up to 20% of it, so many resources (or CLI rounds) do not move in lockstep.
pub fn jitter(base: Duration) -> Duration {
    let extra = rand::random_range(0..=base.as_millis() as u64 / 5);
    base + Duration::from_millis(extra)
}

impl Engine {
    pub fn new(aws: Arc<dyn AwsProvider>, cache: Arc<ObservationCache>) -> Self {
        Engine { aws, cache }
    }

    /// Secrets Manager, for reading key material; Direct Connect is reached only by a pass.
    pub fn secrets(&self) -> &dyn SecretsProvider {
        self.aws.as_ref()
    }

    /// The ARN of the Direct Connect-managed secret of `ckn` in `scope`, when the scope has
    /// shown one (see [`ObservationCache::managed_secret_arn`]).
    pub fn managed_secret_arn(&self, scope: &Scope, ckn: &Ckn) -> Option<String> {
        self.cache.managed_secret_arn(scope, ckn)
    }

    /// What AWS answers when it refuses the scope's caller outright (credentials rejected or
    /// missing, access denied, a role STS will not hand out), from the shared observation:
    /// a reconcile then reports it without reading key material, which could not be used.
    /// `None` when the scope can be read (that read serves the pass that follows) or failed
    /// for another reason (the pass reports it).
    pub async fn refused(&self, scope: &Scope, connection_id: &str) -> Option<AwsError> {
        let outright = |e: AwsError| {
            matches!(e.kind, ErrorKind::Credentials | ErrorKind::AccessDenied).then_some(e)
        };
        let api = match self.aws.direct_connect(scope).await {
            Ok(api) => api,
            Err(e) => return outright(e),
        };
        match self.cache.observe(scope, api.as_ref(), connection_id).await {
            Err(e) => outright(e),
            Ok(_) => None,
        }
    }

    /// One pass for one DxConnection in `scope`.
    #[tracing::instrument(name = "pass", skip_all, fields(connection = %desired.connection_id, region = %scope.region, role = ?scope.role_arn))]
    pub async fn pass(
        &self,
        scope: &Scope,
        desired: &Desired,
        prior: &PriorState,
        now: Timestamp,
        mode: Mode,
    ) -> PassOutcome {
        let api = match self.aws.direct_connect(scope).await {
            Ok(api) => api,
            Err(e) => return PassOutcome::Unread(e),
        };
        let id = &desired.connection_id;
        let observation = if desired.deletion.is_some() {
            // A deletion acts on what AWS shows now, and waits out the read budget rather
            // than coming back later.
            self.cache.mark_changed(scope, id);
            self.cache
                .observe_now(scope, api.as_ref(), id)
                .await
                .map(|(o, read_at)| Observation::Current(o, read_at))
        } else {
            self.cache.observe(scope, api.as_ref(), id).await
        };
        let (observed, read_at) = match observation {
            Ok(Observation::Current(o, read_at)) => (o, read_at),
            Ok(Observation::Deferred(wait)) => return PassOutcome::Deferred(wait),
            Err(e) => return PassOutcome::Unread(e),
        };
        let desired = self.with_known_secret_arns(scope, desired);
        let plan = plan(&desired, observed.as_ref(), prior, now);
        let (mut executed, mut failed) = (Vec::new(), None);
        if mode == Mode::Execute {
            for action in &plan.actions {
                let target = action.target();
                tracing::info!(operation = action.operation(), target = %target.id, "{action}");
                let outcome = match action {
                    Action::Associate { with, .. } => api.associate(target, with).await,
                    Action::Disassociate { secret_arn, .. } => {
                        api.disassociate(target, secret_arn).await
                    }
                    Action::SetMode { mode, .. } => api.set_mode(target, *mode).await,
                    // A tag call answers with nothing; its success sets exactly the tag sent.
                    Action::Claim { arn, owner, .. } => api
                        .tag_resource(arn, crate::crd::OWNER_TAG, owner)
                        .await
                        .map(|()| Answer::Tag {
                            key: crate::crd::OWNER_TAG.into(),
                            value: Some(owner.clone()),
                        }),
                    Action::Release { arn, .. } => api
                        .untag_resource(arn, crate::crd::OWNER_TAG)
                        .await
                        .map(|()| Answer::Tag {
                            key: crate::crd::OWNER_TAG.into(),
                            value: None,
                        }),
                    Action::Restore {
                        secret_arn,
                        fallback,
                        ..
                    } => {
                        let by_arn = Association::SecretArn(secret_arn.clone());
                        match (api.associate(target, &by_arn).await, fallback) {
                            // The managed secret is gone: by CKN/CAK from the MacSecKey.
                            (Err(e), Some(pair)) if e.class == ErrorClass::Terminal => {
                                tracing::warn!(target = %target.id, error = %e, "the removed key's managed secret was refused; associating it by the pair its MacSecKey holds");
                                api.associate(target, pair).await
                            }
                            (outcome, _) => outcome,
                        }
                    }
                };
                // A LAG's members change with it: re-read them before they are used.
                for m in observed.iter().flat_map(|o| &o.members) {
                    self.cache.mark_changed(scope, &m.connection_id);
                }
                match outcome {
                    Ok(answer) => {
                        // What the answer carries is taken in; what it does not, re-read.
                        self.cache.take_answer(scope, &target.id, answer);
                        executed.push(action.clone());
                    }
                    Err(e) => {
                        // Perhaps changed: re-read it next time.
                        self.cache.mark_changed(scope, &target.id);
                        tracing::warn!(operation = action.operation(), target = %target.id, error = %e, "AWS call failed");
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        // Waiting for AWS (a key associating, the port coming up, the connection becoming
        // available, a port that is Encryption Down): the next pass needs newer data than
        // this one had.
        // So is a port watched in a rotation's guard window.
        let waiting = plan.requeue == Requeue::Soon || plan.reason == Reason::EncryptionDown;
        if plan.actions.is_empty() && ((plan.synced && !plan.ready && waiting) || plan.guarding) {
            self.cache
                .look_again(scope, &desired.connection_id, read_at);
        }
        PassOutcome::Planned(Box::new(Planned {
            observed,
            plan,
            executed,
            failed,
        }))
    }

    /// Fills in the managed secret ARN of wanted keys whose CKN the scope has shown on some
    /// connection or LAG (the one source of that ARN), so the CAK is sent only when no such
    /// ARN is known.
    fn with_known_secret_arns(&self, scope: &Scope, desired: &Desired) -> Desired {
        let mut desired = desired.clone();
        for key in desired.keys.iter_mut().flatten() {
            if let Ok(m) = &mut key.material
                && m.secret_arn.is_none()
                && let Some(ckn) = &m.ckn
            {
                m.secret_arn = self.cache.managed_secret_arn(scope, ckn);
            }
        }
        desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::SdkProvider;
    use crate::crd::EncryptionMode;
    use crate::plan::fixtures::{cak, ckn, desired, wanted};
    use crate::plan::{Action, Association};

    async fn setup(seed: &str, cache: ObservationCache) -> (dx_sim::Sim, Engine, Scope) {
        let sim = dx_sim::Sim::start(dx_sim::Seed::from_yaml(seed).unwrap())
            .await
            .unwrap();
        let engine = Engine::new(
            Arc::new(SdkProvider::for_emulator(&sim.endpoint(), "AKIDENGINE").await),
            Arc::new(cache),
        );
        let scope = Scope {
            region: "us-east-1".into(),
            role_arn: None,
        };
        (sim, engine, scope)
    }

    fn operations(sim: &dx_sim::Sim) -> Vec<String> {
        sim.shared
            .calls()
            .into_iter()
            .map(|c| c.operation)
            .collect()
    }

    /// Interconnects that cannot be listed (here DescribeInterconnects is denied, as under an
    /// IAM policy from before they were supported) stop nothing else: a connection is still
    /// managed, and a DxConnection naming an interconnect says AccessDenied with the action
    /// to grant, not NotFound.
    #[tokio::test]
    async fn unlisted_interconnects_leave_connections_managed() {
        let seed = "connections: [{ id: dxcon-c1, macSecCapable: true }]
interconnects: [{ id: dxcon-i1, macSecCapable: true }]
";
        let (sim, engine, scope) =
            setup(seed, ObservationCache::new(Duration::from_secs(3600))).await;
        sim.shared.add_fault(dx_sim::Fault {
            operation: "DescribeInterconnects".into(),
            error: Some("AccessDeniedException".into()),
            message: None,
            count: None,
            rate: None,
            latency_ms: 0,
        });
        let (engine, scope, prior) = (&engine, &scope, &PriorState::default());
        let pass = |id: &str| {
            let want = desired(id, Some(EncryptionMode::ShouldEncrypt), None);
            async move {
                engine
                    .pass(scope, &want, prior, Timestamp::now(), Mode::Execute)
                    .await
            }
        };
        let connection = pass("dxcon-c1").await;
        assert_eq!(connection.executed().len(), 1, "{connection:?}");
        let interconnect = pass("dxcon-i1").await;
        let ready = interconnect.ready();
        assert_eq!(ready.reason, Reason::AccessDenied);
        assert!(
            ready
                .message
                .contains("directconnect:DescribeInterconnects"),
            "{}",
            ready.message
        );
        // A LAG ID cannot be an interconnect: not found is not found.
        assert_eq!(pass("dxlag-none").await.ready().reason, Reason::NotFound);
    }

    /// A pass that waits for AWS gets newer data next time, even though the snapshot is
    /// young: the key's move to `associated` is seen at once, not after the snapshot's
    /// maximum age.
    #[tokio::test]
    async fn a_waiting_pass_reads_again_next_time() {
        let seed = format!(
            "delays: {{ associateMs: 300 }}\nconnections:\n  - {{ id: dxcon-w1, macSecCapable: true, router: [\"{}\"] }}\n",
            ckn('a')
        );
        let (sim, engine, scope) =
            setup(&seed, ObservationCache::new(Duration::from_secs(3600))).await;
        let want = desired(
            "dxcon-w1",
            Some(EncryptionMode::MustEncrypt),
            Some(vec![wanted("k1", 'a')]),
        );
        let prior = PriorState::default();
        let pass = || engine.pass(&scope, &want, &prior, Timestamp::now(), Mode::Execute);
        assert_eq!(pass().await.executed().len(), 1, "associates");
        let waiting = pass().await;
        assert!(waiting.executed().is_empty());
        assert!(
            waiting
                .plan()
                .unwrap()
                .message
                .contains("to become associated"),
            "still associating"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let next = pass().await;
        assert_eq!(
            next.executed()
                .iter()
                .map(|a| a.operation())
                .collect::<Vec<_>>(),
            vec!["UpdateConnection"],
            "the key is seen associated and should_encrypt follows"
        );
        // One fill; the association's answer carries the key (associating), so the pass
        // after it reads nothing; the wait then reads the connection alone.
        assert_eq!(
            operations(&sim),
            vec![
                "DescribeConnections",
                "DescribeLags",
                "DescribeInterconnects",
                "AssociateMacSecKey",
                "DescribeConnections",
                "UpdateConnection",
            ]
        );
    }

    /// With the re-read budget spent, a pass that needs a fresh read is deferred: no call,
    /// no plan, a wait; after the wait it goes on.
    #[tokio::test]
    async fn a_pass_without_budget_is_deferred_and_does_nothing() {
        let seed = "connections:\n  - { id: dxcon-d1, macSecCapable: true }\n  - { id: dxcon-d2, macSecCapable: true }\n";
        // One call per second, and the first fill (3 pages) overdraws it.
        let (sim, engine, scope) = setup(
            seed,
            ObservationCache::with_reread_rate(Duration::from_secs(3600), 1.0),
        )
        .await;
        let want = desired("dxcon-d1", Some(EncryptionMode::ShouldEncrypt), None);
        let prior = PriorState::default();
        let pass = || engine.pass(&scope, &want, &prior, Timestamp::now(), Mode::Execute);
        assert_eq!(pass().await.executed().len(), 1);
        // The update's answer is taken in; a mark (as after a failed call) asks for a read.
        engine.cache.mark_changed(&scope, "dxcon-d1");
        let calls = operations(&sim).len();
        let deferred = pass().await;
        let PassOutcome::Deferred(wait) = deferred else {
            panic!("not deferred: {deferred:?}");
        };
        assert!(deferred.plan().is_none() && deferred.executed().is_empty());
        assert!(deferred.error().is_none());
        assert_eq!(deferred.next_look(), Requeue::After(wait));
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
        assert_eq!(
            operations(&sim).len(),
            calls,
            "a deferred pass calls nothing"
        );
        tokio::time::sleep(wait + Duration::from_millis(10)).await;
        let done = pass().await;
        assert!(!matches!(done, PassOutcome::Deferred(_)));
        assert!(
            done.plan().unwrap().ready,
            "should_encrypt is seen after the re-read"
        );
    }

    /// The managed secret ARN comes from the Describe data of the connection's own region
    /// and account, and is remembered once the key has left every connection: a later
    /// association goes by that ARN, and the CAK is not sent again.
    #[tokio::test]
    async fn associations_go_by_the_managed_arn_the_scope_has_shown() {
        let seed = format!(
            "delays: {{ associateMs: 0, disassociateMs: 0 }}\nconnections:\n  - {{ id: dxcon-a1, macSecCapable: true, keys: [{{ckn: \"{}\", cak: \"{}\"}}] }}\n  - {{ id: dxcon-b2, macSecCapable: true }}\n",
            ckn('a'),
            cak('a')
        );
        let (sim, engine, scope) =
            setup(&seed, ObservationCache::new(Duration::from_secs(3600))).await;
        let prior = PriorState::default();
        let empty = desired("dxcon-a1", None, Some(vec![]));
        let mut removed = false;
        for _ in 0..20 {
            let out = engine
                .pass(&scope, &empty, &prior, Timestamp::now(), Mode::Execute)
                .await;
            removed |= out
                .executed()
                .iter()
                .any(|a| matches!(a, Action::Disassociate { .. }));
            if out.plan().is_some_and(|p| p.ready) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(removed, "key A was removed from dxcon-a1");
        let want = desired("dxcon-b2", None, Some(vec![wanted("k1", 'a')]));
        let out = engine
            .pass(&scope, &want, &prior, Timestamp::now(), Mode::Execute)
            .await;
        match out.executed() {
            [
                Action::Associate {
                    with: Association::SecretArn(arn),
                    ..
                },
            ] => {
                assert!(arn.contains("directconnect"), "{arn}")
            }
            other => panic!("expected an association by ARN, got {other:?}"),
        }
        assert_eq!(
            operations(&sim)
                .iter()
                .filter(|o| *o == "AssociateMacSecKey")
                .count(),
            1
        );
    }

    /// A rollback whose managed secret is gone: AWS refuses the ARN, and the removed key is
    /// associated by the CKN/CAK its MacSecKey still holds, in the same pass.
    #[tokio::test]
    async fn a_rollback_falls_back_to_the_pair_when_the_managed_secret_is_gone() {
        let seed = format!(
            "connections:\n  - {{ id: dxcon-abc123, macSecCapable: true, encryptionMode: must_encrypt, keys: [{{ckn: \"{}\", cak: \"{}\"}}], router: [\"{}\"] }}\n",
            ckn('b'),
            cak('b'),
            ckn('a')
        );
        let (sim, engine, scope) = setup(&seed, ObservationCache::new(Duration::ZERO)).await;
        let mut want = desired(
            "dxcon-abc123",
            Some(EncryptionMode::MustEncrypt),
            Some(vec![wanted("k-b", 'b')]),
        );
        want.guard = Duration::from_secs(300);
        let Ok(a) = wanted("k-a", 'a').material else {
            unreachable!("a fixture key is valid")
        };
        want.restorable = vec![a];
        let removed = crate::crd::RotationStatus {
            removed: vec![crate::crd::RemovedKey {
                ckn: Some(ckn('a')),
                secret_arn: crate::plan::fixtures::managed_arn('a'),
                removed_at: Timestamp::now().to_string(),
            }],
            ..Default::default()
        };
        let prior = PriorState::default().with_rotation(Some(&removed));
        let pass = engine
            .pass(&scope, &want, &prior, Timestamp::now(), Mode::Execute)
            .await;
        assert!(pass.error().is_none(), "{:?}", pass.error());
        assert!(matches!(pass.executed(), [Action::Restore { .. }]));
        let calls: Vec<(String, String)> = sim
            .shared
            .calls()
            .into_iter()
            .filter(|c| c.operation == "AssociateMacSecKey")
            .map(|c| (c.operation, c.outcome))
            .collect();
        assert_eq!(calls.len(), 2, "by ARN, then by CKN/CAK: {calls:?}");
        assert_ne!(calls[0].1, "ok");
        assert_eq!(calls[1].1, "ok");
        let state = sim.shared.state();
        let ckns: Vec<&str> = state["connections"][0]["macSecKeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["ckn"].as_str().unwrap())
            .collect();
        assert!(ckns.contains(&ckn('a').as_str()), "{ckns:?}");
    }
}
