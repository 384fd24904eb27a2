//! One reconcile pass, shared by the CLI and the controller: observe through the cache,
//! plan, and execute the plan's one step.
//!
//! Idempotent across crashes: it always re-reads before acting (a resource it changed is
//! re-read alone), and the planner finds keys by CKN, so a key associated just before a
//! crash is found and not associated again.

use std::sync::Arc;

use jiff::Timestamp;

use crate::aws::{AwsError, AwsProvider, ErrorClass, ObservationCache, Scope};
use crate::observed::ObservedResource;
use crate::plan::{Action, Desired, Plan, PriorState, Reason, Requeue, plan};

/// AWS access shared by every pass.
#[derive(Clone)]
pub struct Engine {
    pub aws: Arc<dyn AwsProvider>,
    pub cache: Arc<ObservationCache>,
}

/// What one pass saw, decided and did.
#[derive(Debug)]
pub struct PassResult {
    /// `None` when AWS could not be read.
    pub plan: Option<Plan>,
    pub observed: Option<ObservedResource>,
    /// Actions performed successfully.
    pub executed: Vec<Action>,
    /// The call that failed, if any.
    pub error: Option<AwsError>,
}

/// Whether a pass may change AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan only (`plan` subcommand).
    DryRun,
    /// Execute the plan's step.
    Execute,
}

impl PassResult {
    /// Ready, and the reason and message to report.
    pub fn ready(&self) -> (bool, Reason, String) {
        match (&self.plan, &self.error) {
            (Some(p), _) => (p.ready, p.reason, p.message.clone()),
            (None, Some(e)) => (false, error_reason(e), e.to_string()),
            (None, None) => (false, Reason::AwsError, "AWS was not read".into()),
        }
    }

    /// Synced, and the reason and message to report.
    pub fn synced(&self) -> (bool, Reason, String) {
        if let Some(e) = &self.error {
            return (false, error_reason(e), e.to_string());
        }
        match &self.plan {
            Some(p) if p.synced => (true, p.reason, p.message.clone()),
            Some(p) => (false, p.reason, p.message.clone()),
            None => (false, Reason::AwsError, "AWS was not read".into()),
        }
    }

    /// When to run the next pass.
    pub fn requeue(&self) -> Requeue {
        match (&self.error, &self.plan) {
            (Some(e), _) if e.class == ErrorClass::Terminal => Requeue::Resync,
            (Some(_), _) => Requeue::Soon,
            (None, Some(p)) => p.requeue,
            (None, None) => Requeue::Soon,
        }
    }
}

/// `Throttled` for throttling, `AwsError` for everything else.
pub fn error_reason(e: &AwsError) -> Reason {
    if e.class == ErrorClass::Throttled {
        Reason::Throttled
    } else {
        Reason::AwsError
    }
}

impl Engine {
    pub fn new(aws: Arc<dyn AwsProvider>, cache: Arc<ObservationCache>) -> Self {
        Engine { aws, cache }
    }

    /// One pass for one DxConnection in `scope`.
    pub async fn pass(
        &self,
        scope: &Scope,
        desired: &Desired,
        prior: &PriorState,
        now: Timestamp,
        mode: Mode,
    ) -> PassResult {
        let mut result = PassResult {
            plan: None,
            observed: None,
            executed: Vec::new(),
            error: None,
        };
        let api = match self.aws.direct_connect(scope).await {
            Ok(api) => api,
            Err(e) => {
                result.error = Some(e);
                return result;
            }
        };
        match self
            .cache
            .observe(scope, api.as_ref(), &desired.connection_id)
            .await
        {
            Ok(o) => result.observed = o,
            Err(e) => {
                result.error = Some(e);
                return result;
            }
        }
        let desired = self.with_known_secret_arns(scope, desired).await;
        let plan = plan(&desired, result.observed.as_ref(), prior, now);
        if mode == Mode::Execute {
            for action in &plan.actions {
                let target = action.target();
                let outcome = match action {
                    Action::Associate { with, .. } => api.associate(target, with).await,
                    Action::Disassociate { secret_arn, .. } => {
                        api.disassociate(target, secret_arn).await
                    }
                    Action::SetMode { mode, .. } => api.set_mode(target, *mode).await,
                };
                // Changed, or perhaps changed: re-read it (and a LAG's members) next time.
                self.cache.mark_changed(scope, &target.id).await;
                if let Some(o) = &result.observed {
                    for m in &o.members {
                        self.cache.mark_changed(scope, &m.connection_id).await;
                    }
                }
                match outcome {
                    Ok(()) => result.executed.push(action.clone()),
                    Err(e) => {
                        result.error = Some(e);
                        break;
                    }
                }
            }
        }
        result.plan = Some(plan);
        result
    }

    /// Fills in the managed secret ARN of wanted keys whose CKN is already on some
    /// connection of the scope, so the CAK is sent only when no such ARN is known.
    async fn with_known_secret_arns(&self, scope: &Scope, desired: &Desired) -> Desired {
        let mut desired = desired.clone();
        for key in desired.keys.iter_mut().flatten() {
            if let Ok(m) = &mut key.material
                && m.secret_arn.is_none()
                && let Some(ckn) = &m.ckn
            {
                m.secret_arn = self.cache.managed_secret_arn(scope, ckn).await;
            }
        }
        desired
    }
}
