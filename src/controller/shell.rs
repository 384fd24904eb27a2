//! The shell every controller of this operator runs in, whatever the kind: skip an object
//! that does not deserialize, dispatch through the finalizer to `apply` or `cleanup`, count
//! the reconcile in the metrics, name the object in a tracing span, pick the retry after an
//! error, and write status by server-side apply. The kinds supply only `apply` and
//! `cleanup` ([`Reconciled`]); what they decide lives in their own modules.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::{Context, Error, FIELD_MANAGER};
use crate::crd::FINALIZER;
use crate::plan::Requeue;

/// A kind reconciled in the shell.
pub(crate) trait Reconciled:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The kind's name in metrics and logs.
    const KIND: &'static str;

    /// Brings the world in line with the object (the finalizer is in place).
    fn apply(obj: &Self, ctx: &Context) -> impl Future<Output = Result<Action, Error>> + Send;

    /// Runs once the object is being deleted; `Ok` lets the finalizer go.
    fn cleanup(obj: &Self, ctx: &Context) -> impl Future<Output = Result<Action, Error>> + Send;
}

/// One reconcile of `obj`, for any kind: the finalizer, metrics and a span.
pub(crate) async fn reconcile<K: Reconciled>(
    obj: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let obj = match &obj.0 {
        Ok(o) => Arc::new(o.clone()),
        Err(invalid) => {
            // One malformed object is reported and skipped; the watch goes on.
            tracing::warn!(kind = K::KIND, name = ?invalid.metadata.name, error = %invalid.error, "skipping an object that does not deserialize");
            return Ok(Action::await_change());
        }
    };
    let namespace = obj.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", kind = K::KIND, %namespace, name = %obj.name_any());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(o) => K::apply(&o, &ctx).await,
            Event::Cleanup(o) => K::cleanup(&o, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let reason = match &result {
        Ok(_) => "Reconciled",
        Err(e) => e.reason(),
    };
    ctx.metrics
        .reconciled(K::KIND, reason, started.elapsed(), result.is_err());
    result
}

/// After a failed reconcile: expected waits (a deletion in progress, a key still in use) are
/// logged at info, everything else at warn; a key in use is looked at again after a while
/// (a DxConnection change re-triggers it at once), anything else soon.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime's Controller::run takes"
)]
pub(crate) fn error_policy<K: Reconciled>(
    obj: Arc<DeserializeGuard<K>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let name = obj.0.as_ref().ok().map(|o| o.name_any());
    let expected = match error {
        Error::Finalizer(e) => match &**e {
            FinalizerError::CleanupFailed(Error::CleanupPending(_) | Error::KeyInUse(_)) => true,
            // The finalizer removed from an object that is already gone.
            FinalizerError::RemoveFinalizer(kube::Error::Api(status)) => status.code == 404,
            _ => false,
        },
        Error::CleanupPending(_) | Error::KeyInUse(_) => true,
        Error::Kube(_) => false,
    };
    if expected {
        tracing::info!(kind = K::KIND, ?name, %error, "waiting");
    } else {
        tracing::warn!(kind = K::KIND, ?name, %error, "reconcile failed");
    }
    let in_use = matches!(error, Error::Finalizer(e) if matches!(&**e, FinalizerError::CleanupFailed(Error::KeyInUse(_))));
    ctx.requeue(if in_use {
        Requeue::After(Duration::from_secs(15))
    } else {
        Requeue::Soon
    })
}

/// The server-side apply body of a status: apiVersion, kind and the status alone.
pub(crate) fn status_patch<K: Reconciled>(status: &impl Serialize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// Writes `status` on `obj` with server-side apply as this operator's field manager.
pub(crate) async fn write_status<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    status: &impl Serialize,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(status_patch::<K>(status)),
    )
    .await?;
    Ok(())
}
