//! The Kubernetes shell: `dx-macsec-operator run`.
//!
//! Two kube-runtime controllers (DxConnection and MacSecKey) share one [`Context`]: the AWS
//! engine and its observation cache, the event recorder, metrics and the reflector stores.
//! Decisions come from `engine`/`plan`; this module reads Kubernetes, writes status with
//! server-side apply, publishes events and chooses when to look again. Secrets are read
//! with `get` by name, their metadata first and their data only when labelled as key
//! material; with `--watch-secrets`, a metadata-only watch also tells when one changed.

pub mod connection;
mod generate;
pub mod key;
pub mod leader;
pub(crate) mod relations;
mod schedule;
mod shell;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::access::{Access, Namespaces};
use crate::aws::BoxFut;
use crate::crd::{DxAccess, DxConnection, MacSecKey};
use crate::engine::Engine;
use crate::material::{ReadFailure, SecretRead, SecretReader};
use crate::metrics::Metrics;
use crate::plan::Requeue;
use relations::{key_relevance, references};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "dx-macsec-operator";

/// Errors of one reconcile; each decides how soon to retry. Its reason in the metrics is
/// the name the variant is given here (`strum`), and `Error::VARIANTS` lists them all.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr, strum::VariantNames)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    #[strum(serialize = "KubeError")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    #[strum(serialize = "FinalizerError")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("deletion waits: {0}")]
    CleanupPending(String),
    #[error(
        "MacSecKey is in use by {0}; remove it from their spec.keys first (a key of a scheduled rotation goes when it retires)"
    )]
    #[strum(serialize = "InUse")]
    KeyInUse(String),
}

impl Error {
    fn reason(&self) -> &'static str {
        self.into()
    }
}

/// How long a Kubernetes API request other than a watch may wait for its answer: a status
/// write, an event, a Secret read, a finalizer patch. A hung API server then fails the
/// reconcile (retried later) instead of holding a worker forever.
pub const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The controller's Kubernetes clients: watches stay open and may be idle for minutes (kube's
/// watcher has an idle timeout of its own), every other request must be answered within
/// [`API_REQUEST_TIMEOUT`].
#[derive(Clone)]
pub struct KubeClients {
    pub watches: Client,
    pub requests: Client,
}

impl KubeClients {
    /// Both clients from one configuration (in-cluster, or KUBECONFIG).
    pub fn new(config: kube::Config) -> Result<Self, kube::Error> {
        let watches = Client::try_from(config.clone())?;
        let mut bounded = config;
        bounded.read_timeout = Some(API_REQUEST_TIMEOUT);
        // Time an answer from when its request was written, not from when its pooled
        // connection went idle.
        bounded.reset_reader_on_write = true;
        Ok(KubeClients {
            watches,
            requests: Client::try_from(bounded)?,
        })
    }
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Region for DxConnections without `spec.region`.
    pub default_region: Option<String>,
    /// Look again this soon while something is in flight.
    pub short_requeue: Duration,
    /// Periodic resync once converged: drift made in AWS is found within this time.
    pub resync: Duration,
    /// Reconciles in flight at once, per kind.
    pub concurrency: u16,
    /// Namespaces whose DxConnections may use the operator's own credentials without a
    /// DxAccess.
    pub default_access_namespaces: Namespaces,
    /// This cluster's name in the `dxmacsec.io/owner` tag.
    pub cluster_name: String,
    /// The namespaces whose DxConnections and MacSecKeys are watched; empty: all.
    pub watch_namespaces: Vec<String>,
    /// Watch Secrets' metadata, so MacSecKeys re-read a Secret only when it changed.
    pub watch_secrets: bool,
}

/// The reflector stores of one kind: one for the whole cluster, or one per watched
/// namespace; read as one.
#[derive(Clone)]
pub struct Stores<K: Resource<DynamicType = ()> + Clone + 'static>(pub Vec<Store<K>>);

impl<K: Resource<DynamicType = ()> + Clone + 'static> Stores<K> {
    pub fn state(&self) -> Vec<Arc<K>> {
        self.0.iter().flat_map(Store::state).collect()
    }

    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>> {
        self.0.iter().find_map(|s| s.get(key))
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub engine: Engine,
    /// Warnings go through this one: a repeated warning becomes a series of one Event.
    pub recorder: Recorder,
    /// Who publishes the events.
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub connections: Stores<DeserializeGuard<DxConnection>>,
    pub keys: Stores<DeserializeGuard<MacSecKey>>,
    pub grants: Store<DxAccess>,
    /// The Secrets' names and resourceVersions (nothing else is kept), when watched.
    pub secret_versions: Option<Stores<PartialObjectMeta<Secret>>>,
    /// The Secrets Manager sources' versions, as last looked at.
    pub source_versions: key::SourceVersions,
}

impl Context {
    /// Every DxConnection in the reflector, shared rather than copied (a reconcile scans
    /// them for the Conflict rule and usedBy; copying would cost O(N) per reconcile).
    pub fn all_connections(&self) -> Vec<Arc<DeserializeGuard<DxConnection>>> {
        self.connections.state()
    }

    /// Who may reach what, from the DxAccesses as the reflector holds them now.
    pub fn access(&self) -> Access {
        Access::new(
            self.grants.state().iter().map(|g| DxAccess::clone(g)),
            self.settings.default_access_namespaces.clone(),
            self.settings.default_region.clone(),
        )
    }

    /// The MacSecKeys of `namespace` that `pick` chooses.
    pub fn keys_in(&self, namespace: &str, pick: impl Fn(&MacSecKey) -> bool) -> Vec<MacSecKey> {
        self.keys
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|k| k.metadata.namespace.as_deref() == Some(namespace) && pick(k))
            .cloned()
            .collect()
    }

    /// The resourceVersion of Secret `namespace/name` as the metadata watch last saw it;
    /// `None` without the watch or before it saw the Secret.
    pub fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secret_versions
            .as_ref()?
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|m| m.metadata.resource_version.clone())
    }

    pub fn find_key(&self, namespace: &str, name: &str) -> Option<MacSecKey> {
        self.keys
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|g| g.0.as_ref().ok().cloned())
    }

    /// When to reconcile again for a planner requeue hint, with jitter so many resources do
    /// not move in lockstep.
    pub fn requeue(&self, hint: Requeue) -> Action {
        let base = match hint {
            Requeue::Soon => self.settings.short_requeue,
            Requeue::After(d) => d.min(self.settings.resync),
            Requeue::Resync => self.settings.resync,
        };
        Action::requeue(crate::engine::jitter(base))
    }

    pub async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            // Events hold at most 1 kB of note.
            note: Some(note.chars().take(1000).collect()),
            action: action.to_string(),
            secondary: None,
        };
        // A Normal event says what one AWS call did: each is an Event of its own. Through
        // the shared Recorder, a second UpdateConnection within 6 minutes would be folded
        // into the first one's series, keeping the first one's note, and every event would
        // be kept for those 6 minutes (kube-runtime's cache has no bound on their number,
        // which grows with every call while many resources converge). Warnings repeat
        // while a failure lasts: their series fold is kept.
        let recorder = match type_ {
            EventType::Normal => &Recorder::new(self.client.clone(), self.reporter.clone()),
            EventType::Warning => &self.recorder,
        };
        if let Err(e) = recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, "cannot publish an event");
        }
    }
}

/// Reads Secrets with `get`: first their metadata alone, and their data only when they
/// carry the key-material label, so the data of a Secret not meant for the operator never
/// reaches it.
pub struct KubeSecrets(pub Client);

impl SecretReader for KubeSecrets {
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<SecretRead, ReadFailure>> {
        Box::pin(async move {
            tracing::debug!(namespace, name, "reading Secret");
            let api: Api<Secret> = Api::namespaced(self.0.clone(), namespace);
            let failed = |e: kube::Error| match e {
                kube::Error::Api(s) if s.code == 403 => ReadFailure {
                    message: format!(
                        "the operator may not get Secret {namespace}/{name} (check its RBAC)"
                    ),
                    transient: false,
                },
                // Other answers of the API server (400, 422) do not mend by retrying.
                kube::Error::Api(s) if s.code < 500 && s.code != 429 => ReadFailure {
                    message: s.to_string(),
                    transient: false,
                },
                // A timeout, a refused connection, an overloaded or failing API server.
                other => ReadFailure {
                    message: other.to_string(),
                    transient: true,
                },
            };
            match api.get_metadata_opt(name).await.map_err(failed)? {
                None => return Ok(SecretRead::Missing),
                Some(meta) if !crate::material::marked(&meta.metadata) => {
                    return Ok(SecretRead::Unmarked);
                }
                Some(_) => {}
            }
            // Checked again on the Secret itself: the label may have gone in between.
            Ok(api
                .get_opt(name)
                .await
                .map_err(failed)?
                .map_or(SecretRead::Missing, SecretRead::of))
        })
    }
}

/// The kube-system namespace's UID: a name for this cluster that no other cluster shares.
pub async fn cluster_uid(client: &Client) -> Result<String, String> {
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    ns.get("kube-system")
        .await
        .ok()
        .and_then(|n| n.metadata.uid)
        .ok_or_else(|| {
            "cannot read the kube-system namespace's UID to name this cluster in the dxmacsec.io/owner tag: grant get on it, or set --cluster-name (DXM_CLUSTER_NAME)".to_string()
        })
}

/// `Api::all`, or `Api::namespaced` for a watched namespace.
fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Fails with a clear message when the CRDs are not installed (or, watching some
/// namespaces, the operator may not list in the first of them).
pub async fn preflight(client: &Client, watch_namespaces: &[String]) -> Result<(), String> {
    let lp = kube::api::ListParams::default().limit(1);
    let ns = watch_namespaces.first().map(String::as_str);
    for (kind, result) in [
        (
            "DxConnection",
            api_in::<DxConnection>(client, ns)
                .list(&lp)
                .await
                .map(|_| ()),
        ),
        (
            "MacSecKey",
            api_in::<MacSecKey>(client, ns).list(&lp).await.map(|_| ()),
        ),
        (
            "DxAccess",
            Api::<DxAccess>::all(client.clone())
                .list(&lp)
                .await
                .map(|_| ()),
        ),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Err(format!(
                    "the {kind} CRD is not installed: kubectl apply --server-side -f crds/ (Helm installs CRDs on install only, not on upgrade)"
                ));
            }
            Err(e) => return Err(format!("cannot list {kind} objects: {e}")),
        }
    }
    Ok(())
}

/// The object reference events are published on.
pub fn reference<K: Resource<DynamicType = ()>>(
    obj: &K,
) -> k8s_openapi::api::core::v1::ObjectReference {
    obj.object_ref(&())
}

/// One item per message sent on `tx` from now on, for `reconcile_all_on`; a receiver that
/// lagged gets one item for all it missed, since one "reconcile all" covers them.
fn triggers(
    tx: &tokio::sync::broadcast::Sender<()>,
) -> impl futures_util::Stream<Item = ()> + Send + 'static {
    futures_util::stream::unfold(tx.subscribe(), |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// The namespaces the controllers watch: `None` for the whole cluster, or each watched
/// namespace (then the operator needs Roles in those namespaces only, no cluster-wide read
/// of Secrets).
fn watch_scopes(settings: &Settings) -> Vec<Option<String>> {
    if settings.watch_namespaces.is_empty() {
        vec![None]
    } else {
        settings
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    }
}

/// DxAccesses in a reflector of their own, read by every DxConnection reconcile: the store,
/// a sender that ticks on every change once the store holds it (every DxConnection is then
/// reconciled again), and the watch task.
fn watch_grants(
    client: &Client,
    wc: &watcher::Config,
) -> (
    Store<DxAccess>,
    tokio::sync::broadcast::Sender<()>,
    tokio::task::AbortHandle,
) {
    let (grants, writer) = kube::runtime::reflector::store::<DxAccess>();
    let (changed_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let access_api: Api<DxAccess> = Api::all(client.clone());
    let tx = changed_tx.clone();
    let watch = kube::runtime::reflector(writer, watcher(access_api, wc.clone()).default_backoff())
        .touched_objects()
        .for_each(move |event| {
            match event {
                // No receiver yet: no controller runs yet, and each reconciles every
                // object when it starts.
                Ok(_) => {
                    let _ = tx.send(());
                }
                Err(e) => tracing::warn!(error = %e, "watching DxAccesses"),
            }
            std::future::ready(())
        });
    (grants, changed_tx, tokio::spawn(watch).abort_handle())
}

/// Secrets' names and versions in each scope (metadata only; data, labels and annotations,
/// which may hold a copy of the data, are dropped on arrival): the stores, a sender that
/// ticks when a Secret a MacSecKey names changes (the MacSecKeys are reconciled again; each
/// re-reads its Secret only if its version moved), and the watch tasks.
fn watch_secret_versions(
    client: &Client,
    wc: &watcher::Config,
    scopes: &[Option<String>],
    keys: &Stores<DeserializeGuard<MacSecKey>>,
) -> (
    Vec<Store<PartialObjectMeta<Secret>>>,
    tokio::sync::broadcast::Sender<()>,
    Vec<tokio::task::AbortHandle>,
) {
    let (secret_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut stores = Vec::new();
    let mut tasks = Vec::new();
    for ns in scopes {
        let (store, writer) = kube::runtime::reflector::store::<PartialObjectMeta<Secret>>();
        stores.push(store);
        // An Api of PartialObjectMeta makes metadata-only list and watch requests.
        let stream = watcher(
            api_in::<PartialObjectMeta<Secret>>(client, ns.as_deref()),
            wc.clone(),
        )
        .default_backoff()
        .modify(|m| {
            m.metadata = kube::core::ObjectMeta {
                name: m.metadata.name.take(),
                namespace: m.metadata.namespace.take(),
                resource_version: m.metadata.resource_version.take(),
                ..Default::default()
            };
        });
        let (keys, secret_tx) = (keys.clone(), secret_tx.clone());
        let watch = kube::runtime::reflector(writer, stream)
            .touched_objects()
            .for_each(move |event| {
                match event {
                    Ok(secret) => {
                        let (ns, name) = (secret.namespace(), secret.name_any());
                        let named = keys.state().iter().filter_map(|g| g.0.as_ref().ok()).any(|k| {
                            k.namespace() == ns
                                && k.spec.secret_ref.as_ref().is_some_and(|r| r.name == name)
                        });
                        if named {
                            let _ = secret_tx.send(());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch Secrets (metadata only): grant list and watch on secrets, or run with --watch-secrets=false (the chart's watchSecrets)"),
                }
                std::future::ready(())
            });
        tasks.push(tokio::spawn(watch).abort_handle());
    }
    (stores, secret_tx, tasks)
}

/// A MacSecKey, by namespace and name.
type KeyName = (String, String);

/// Which DxConnections a MacSecKey change must reconcile again: those that reference the key,
/// and only when what matters to them changed (`key_relevance`). Status writes that touch
/// only usedBy or conditions are skipped: with one key shared by N DxConnections each would
/// cost N reconciles.
struct KeyChanges {
    connections: Store<DeserializeGuard<DxConnection>>,
    /// What mattered of each key when last seen.
    seen: std::sync::Mutex<std::collections::HashMap<KeyName, relations::KeyRelevance>>,
}

impl KeyChanges {
    fn connections_to_reconcile(
        &self,
        key: &DeserializeGuard<MacSecKey>,
    ) -> Vec<ObjectRef<DeserializeGuard<DxConnection>>> {
        let ns = key.namespace().unwrap_or_default();
        let name = key.name_any();
        let relevant = key_relevance(key);
        let previous = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ns.clone(), name.clone()), relevant.clone());
        if previous.as_ref() == Some(&relevant) {
            return Vec::new();
        }
        self.connections
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|d| d.namespace().as_deref() == Some(ns.as_str()) && references(d, &name))
            .map(|d| ObjectRef::new(&d.name_any()).within(&ns))
            .collect()
    }
}

/// The MacSecKeys a DxConnection names: a DxConnection change (deletion included) updates
/// their usedBy.
fn keys_of(guard: &DeserializeGuard<DxConnection>) -> Vec<ObjectRef<DeserializeGuard<MacSecKey>>> {
    let ns = guard.namespace().unwrap_or_default();
    let Ok(dxc) = guard.0.as_ref() else {
        return Vec::new();
    };
    relations::key_names(dxc)
        .map(|k| ObjectRef::new(k).within(&ns))
        .collect()
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run_controllers(
    clients: KubeClients,
    engine: Engine,
    metrics: Arc<Metrics>,
    settings: Settings,
    reporter: Reporter,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = clients.watches;
    let wc = watcher::Config::default().any_semantic();
    // Bounded concurrency keeps memory flat and the AWS call rate smooth with many objects.
    let config = kube::runtime::controller::Config::default().concurrency(settings.concurrency);
    let scopes = watch_scopes(&settings);
    let mut pairs = Vec::new();
    for ns in &scopes {
        let dxc_api: Api<DeserializeGuard<DxConnection>> = api_in(&client, ns.as_deref());
        let key_api: Api<DeserializeGuard<MacSecKey>> = api_in(&client, ns.as_deref());
        let dxc_controller =
            Controller::new(dxc_api.clone(), wc.clone()).with_config(config.clone());
        let key_controller =
            Controller::new(key_api.clone(), wc.clone()).with_config(config.clone());
        pairs.push((dxc_api, key_api, dxc_controller, key_controller));
    }
    let connections = Stores(pairs.iter().map(|p| p.2.store()).collect());
    let keys = Stores(pairs.iter().map(|p| p.3.store()).collect());
    // Reconciles start once the grants' store holds every DxAccess, so a restart never
    // reports a granted DxConnection Forbidden.
    let (grants, changed_tx, grants_watch) = watch_grants(&client, &wc);
    // The watch tasks end with the controllers, also when shutdown cuts them off.
    let mut watches = AbortOnDrop(vec![grants_watch]);
    let (secret_stores, secret_tx, secret_watches) = if settings.watch_secrets {
        watch_secret_versions(&client, &wc, &scopes, &keys)
    } else {
        (
            Vec::new(),
            tokio::sync::broadcast::channel::<()>(1).0,
            Vec::new(),
        )
    };
    watches.0.extend(secret_watches);

    let mut runs = Vec::new();
    for (dxc_api, key_api, dxc_controller, key_controller) in pairs {
        let dxc_controller = dxc_controller.reconcile_all_on(triggers(&changed_tx));
        let changes = KeyChanges {
            connections: dxc_controller.store(),
            seen: std::sync::Mutex::default(),
        };
        let dxc_controller = dxc_controller.watches(key_api, wc.clone(), move |key| {
            changes.connections_to_reconcile(&key)
        });
        let key_controller = key_controller
            .reconcile_all_on(triggers(&secret_tx))
            .watches(dxc_api, wc.clone(), |guard| keys_of(&guard));
        runs.push((dxc_controller, key_controller));
    }

    let secret_versions = settings.watch_secrets.then(|| Stores(secret_stores));
    let client = clients.requests;
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter.clone()),
        reporter,
        client,
        engine,
        metrics,
        settings,
        connections,
        keys,
        grants: grants.clone(),
        secret_versions,
        source_versions: key::SourceVersions::default(),
    });
    let _ = grants.wait_until_ready().await;
    run_until(runs, ctx, shutdown).await;
    drop(watches);
}

/// The DxConnection and MacSecKey controllers of one watched scope.
type ControllerPair = (
    Controller<DeserializeGuard<DxConnection>>,
    Controller<DeserializeGuard<MacSecKey>>,
);

/// Runs every pair of controllers with `ctx` until `shutdown` resolves.
async fn run_until(
    runs: Vec<ControllerPair>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures_util::future::FutureExt::shared(Box::pin(shutdown));
    let mut all = Vec::new();
    for (dxc_controller, key_controller) in runs {
        all.push(
            dxc_controller
                .graceful_shutdown_on(shutdown.clone())
                .run(
                    shell::reconcile::<DxConnection>,
                    shell::error_policy::<DxConnection>,
                    ctx.clone(),
                )
                .for_each(|_| async {})
                .boxed(),
        );
        all.push(
            key_controller
                .graceful_shutdown_on(shutdown.clone())
                .run(
                    shell::reconcile::<MacSecKey>,
                    shell::error_policy::<MacSecKey>,
                    ctx.clone(),
                )
                .for_each(|_| async {})
                .boxed(),
        );
    }
    futures_util::future::join_all(all).await;
}

/// Aborts its tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One info line per resync period while acting: the DxConnections by Ready and reason, and
/// the AWS calls (and throttled ones) since the line before.
async fn log_summaries(metrics: Arc<Metrics>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut calls, mut throttled) = (0, 0);
    loop {
        ticks.tick().await;
        let s = metrics.summary();
        tracing::info!(
            connections = s.connections,
            ready = s.ready,
            aws_calls = s.aws_calls - calls,
            throttled = s.throttled - throttled,
            "resync summary: {s}; {} AWS calls ({} throttled) in the last {}s",
            s.aws_calls - calls,
            s.throttled - throttled,
            every.as_secs()
        );
        (calls, throttled) = (s.aws_calls, s.throttled);
    }
}

/// Options of `dx-macsec-operator run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub settings: Settings,
    pub http_addr: std::net::SocketAddr,
    /// `None`: act without leader election (a single replica).
    pub lease: Option<leader::LeaseConfig>,
    pub identity: String,
    pub observation_max_age: Duration,
    /// The observation cache's re-read budget, Describe calls per second per scope.
    pub describe_rereads_per_second: f64,
}

/// SIGTERM or Ctrl-C.
async fn termination() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

/// How long passes in flight may take to end after SIGTERM, before they are cut off and
/// the Lease released. Short, so that a rolling update or a drained node hands over within
/// a few seconds even while AWS calls wait out throttling.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the controller process stopped acting.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The CRDs are missing or cannot be listed.
    #[error("{0}")]
    Preflight(String),
    /// Another replica holds the Lease now: exit, to restart as a follower.
    #[error("lost the leader Lease; exiting to restart as a follower")]
    LostLease,
}

/// The controller process: preflight, HTTP endpoints, leader election, controllers, and a
/// graceful stop on SIGTERM (`Ok`).
pub async fn run(
    clients: KubeClients,
    aws: Arc<dyn crate::aws::AwsProvider>,
    opts: RunOptions,
) -> Result<(), RunError> {
    preflight(&clients.requests, &opts.settings.watch_namespaces)
        .await
        .map_err(RunError::Preflight)?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let http = tokio::spawn(crate::http::serve(
        opts.http_addr,
        metrics.clone(),
        ready.clone(),
    ));
    metrics.expect(
        crate::aws::METERED_OPERATIONS,
        &[
            <DxConnection as shell::Reconciled>::KIND,
            <MacSecKey as shell::Reconciled>::KIND,
        ],
        <Error as strum::VariantNames>::VARIANTS,
    );
    let metered = Arc::new(crate::aws::MeteredProvider::new(aws, metrics.clone()));
    let engine = Engine::new(
        metered,
        Arc::new(crate::aws::ObservationCache::with_reread_rate(
            opts.observation_max_age,
            opts.describe_rereads_per_second,
        )),
    );
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(opts.identity.clone()),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Standing by is a healthy, ready state: only the leader acts.
    ready.store(true, Ordering::SeqCst);
    let client = &clients.requests;
    let held_since = match &opts.lease {
        Some(lease) => tokio::select! {
            since = leader::acquire(client.clone(), lease) => since,
            _ = termination() => return Ok(()),
        },
        None => tokio::time::Instant::now(),
    };
    metrics.set_leader(true);
    let summaries = tokio::spawn(log_summaries(metrics.clone(), opts.settings.resync));
    let mut controllers = Box::pin(run_controllers(
        clients.clone(),
        engine,
        metrics.clone(),
        opts.settings.clone(),
        reporter,
        stop,
    ));
    // Ends at the renew deadline at the latest, however a Lease request hangs.
    let mut lost_lease = std::pin::pin!(async {
        match &opts.lease {
            Some(lease) => leader::hold(client.clone(), lease, held_since).await,
            None => std::future::pending().await,
        }
    });
    // Biased: once the Lease is lost, the controllers are not polled again, so no AWS call
    // starts after the renew deadline.
    let outcome = tokio::select! {
        biased;
        _ = &mut lost_lease => {
            // Lost the Lease: stop acting at once, cutting off passes in flight as a crash
            // would (a follower may take over a renewal period from now), and exit to
            // restart as a follower.
            drop(controllers);
            Err(RunError::LostLease)
        }
        _ = termination() => {
            // No new pass starts; passes in flight get SHUTDOWN_GRACE to end, or less if
            // the renew deadline comes first. Every AWS call is safe to cut off, as in a
            // crash: the next leader reads the resource again. Then the Lease is released,
            // so the standby takes over at once.
            let _ = stop_tx.send(true);
            let passes = async {
                tokio::select! {
                    biased;
                    _ = &mut lost_lease => {}
                    _ = &mut controllers => {}
                }
            };
            if tokio::time::timeout(SHUTDOWN_GRACE, passes).await.is_err() {
                tracing::warn!(
                    grace = ?SHUTDOWN_GRACE,
                    "passes still in flight were cut off at shutdown; the next leader reads their resources again"
                );
            }
            drop(controllers);
            Ok(())
        }
        _ = &mut controllers => Ok(()),
    };
    metrics.set_leader(false);
    summaries.abort();
    if let Some(lease) = &opts.lease {
        leader::release(client.clone(), lease).await;
    }
    http.abort();
    outcome
}
