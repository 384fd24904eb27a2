//! The commands besides `run`: the cluster-free `plan`, `apply` and `keygen`, and `rotate`,
//! which asks the controller in a cluster for a scheduled rotation.
//!
//! `plan` and `apply` read manifests from files, read AWS, and run the same planner and
//! engine as the controller. No Kubernetes cluster is involved. Key material and the CAK
//! stay inside `Desired`; output is built from plans, statuses and errors, none of which
//! can hold a CAK.

pub mod input;
pub mod progress;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::access::{Access, Namespaces, Refusal};
use crate::aws::{AwsProvider, BoxFut, ObservationCache, Scope};
use crate::crd::DxConnectionStatus;
use crate::desired;
use crate::engine::{Engine, Mode, PassOutcome, Standing};
use crate::material::{ReadFailure, SecretRead, SecretReader};
use crate::plan::{Desired, PriorState, Requeue};
use crate::status::dxconnection_status;

use input::Inputs;

/// The cluster name `plan` and `apply` write in the `dxmacsec.io/owner` tag by default.
pub const CLUSTER: &str = "cli";

/// How old `apply`'s snapshot of a region may grow before it is read whole again.
const CLI_SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(30);

/// Exit codes of `plan` and `apply`.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_CHANGES: i32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Secrets read from the input files.
struct FileSecrets(BTreeMap<(String, String), SecretRead>);

impl SecretReader for FileSecrets {
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<SecretRead, ReadFailure>> {
        let found = self
            .0
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or(SecretRead::Missing);
        Box::pin(async move { Ok(found) })
    }
}

/// One DxConnection from the files, ready for passes.
struct Item {
    name: String,
    connection_id: String,
    scope: Result<Scope, Refusal>,
    desired: Option<Desired>,
    prior: PriorState,
    status: Option<DxConnectionStatus>,
    /// The last pass that read AWS (a deferred pass leaves the one before).
    last: Option<PassOutcome>,
    /// When the next pass is due.
    due: Instant,
    /// A pass of it is in flight (`apply`).
    running: bool,
    done: bool,
    /// Since when the current reason has held (progress shows the slowest waits).
    since: Instant,
    /// The reason `apply` last reported for it (empty before its first pass).
    reason: String,
    /// The last line `apply` printed for it, so an unchanged one is not printed again.
    last_line: String,
    /// What its rotation schedule does, for `plan`, and why `apply` does not rotate.
    rotation: Option<(String, String)>,
}

/// Resolves every DxConnection of the inputs. Access is the controller's rule
/// ([`Access::scope_of`]) with the DxAccesses of the files; the CLI's own credentials serve
/// every namespace. The Conflict rule is the controller's ([`desired::conflict_owner`]):
/// the oldest by creationTimestamp acts; manifests without one (the usual case for files)
/// follow the order the files were read in, so the first one acts and the later ones get
/// Conflict naming it.
async fn prepare(
    inputs: &Inputs,
    aws: &dyn AwsProvider,
    default_region: Option<&str>,
    cluster: &str,
) -> Vec<Item> {
    let secrets = FileSecrets(inputs.secrets.clone());
    let access = Access::new(
        inputs.grants.values().map(|g| g.value.clone()),
        Namespaces::all(),
        default_region.map(str::to_string),
    );
    let all = || inputs.connections.iter().map(|c| &c.value).enumerate();
    let mut items = Vec::new();
    for (position, dxc) in all() {
        let ns = crate::crd::namespace_of(dxc).to_string();
        let name = format!("{ns}/{}", dxc.metadata.name.clone().unwrap_or_default());
        let scope = access.scope_of(dxc);
        let desired = match &scope {
            Ok(scope) => {
                let find = |key: &str| {
                    inputs
                        .keys
                        .get(&(ns.clone(), key.to_string()))
                        .map(|k| k.value.clone())
                };
                // Files carry no status: every key is read. With a schedule, the keys in use
                // are those a status in the file names, as the controller's.
                let scheduled;
                let dxc = if dxc.spec.rotation.schedule.is_some() {
                    scheduled = desired::with_keys(dxc, &crate::rotation::keys_in_use(dxc));
                    &scheduled
                } else {
                    dxc
                };
                let mut d = desired::desired(dxc, find, |_| None, &secrets, aws, scope).await;
                d.conflict_with = desired::conflict_owner(dxc, position, scope, all(), &access);
                d.owner = Some(desired::owner_tag(cluster, dxc));
                Some(d)
            }
            Err(_) => None,
        };
        items.push(Item {
            name,
            connection_id: dxc.spec.connection_id.clone(),
            scope,
            desired,
            prior: PriorState::default(),
            status: None,
            last: None,
            due: Instant::now(),
            running: false,
            done: false,
            since: Instant::now(),
            reason: String::new(),
            last_line: String::new(),
            rotation: crate::rotation::describe(dxc, jiff::Timestamp::now(), false)
                .zip(crate::rotation::describe(dxc, jiff::Timestamp::now(), true)),
        });
    }
    items
}

/// One pass for `item`; returns when the next one is due (`interval` stands for "soon").
async fn run_pass(engine: &Engine, item: &mut Item, mode: Mode, interval: Duration) {
    let (Ok(scope), Some(desired)) = (&item.scope, &item.desired) else {
        return;
    };
    let now = jiff::Timestamp::now();
    let result = engine.pass(scope, desired, &item.prior, now, mode).await;
    item.record(result, now, interval);
}

impl Item {
    /// Takes in what a pass of this item saw and did at `now`, and when the next is due
    /// (`interval` stands for "soon"). False for a deferred pass, which did nothing.
    fn record(&mut self, result: PassOutcome, now: jiff::Timestamp, interval: Duration) -> bool {
        let wait = match result.next_look() {
            Requeue::Soon | Requeue::Resync => interval,
            Requeue::After(d) => d,
        };
        self.due = Instant::now() + crate::engine::jitter(wait);
        if matches!(result, PassOutcome::Deferred(_)) {
            return false;
        }
        let status = dxconnection_status(self.status.as_ref(), &result, None, now);
        self.prior = PriorState::from_status(&status, false);
        self.status = Some(status);
        self.last = Some(result);
        true
    }
}

fn standing(item: &Item) -> Standing {
    if item.scope.is_err() {
        return Standing::NeedsAPerson;
    }
    item.last
        .as_ref()
        .map_or(Standing::Pending, PassOutcome::standing)
}

fn reason_and_message(item: &Item) -> (String, String) {
    match (&item.scope, &item.last) {
        (Err(refusal), _) => (refusal.reason.to_string(), refusal.message.clone()),
        (_, Some(r)) => {
            let headline = r.headline();
            (headline.reason.to_string(), headline.message)
        }
        (_, None) => ("Pending".into(), String::new()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    name: &'a str,
    connection_id: &'a str,
    region: Option<&'a str>,
    ready: bool,
    reason: String,
    message: String,
    planned_actions: Vec<String>,
    /// The rotation schedule: when the next rotation is due and what it does (`plan`), or
    /// why `apply` does not rotate.
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<&'a str>,
    status: Option<&'a DxConnectionStatus>,
}

fn report(item: &Item, applying: bool) -> Report<'_> {
    let (reason, message) = reason_and_message(item);
    Report {
        name: &item.name,
        connection_id: &item.connection_id,
        region: item.scope.as_ref().ok().map(|s| s.region.as_str()),
        ready: standing(item) == Standing::Converged,
        reason,
        message,
        planned_actions: item
            .last
            .as_ref()
            .and_then(PassOutcome::plan)
            .map(|p| p.planned_actions())
            .unwrap_or_default(),
        rotation: item.rotation.as_ref().map(|(plan, apply)| {
            if applying {
                apply.as_str()
            } else {
                plan.as_str()
            }
        }),
        status: item.status.as_ref(),
    }
}

fn print_text(item: &Item, applying: bool) {
    let r = report(item, applying);
    println!(
        "{}  {} ({})",
        r.name,
        r.connection_id,
        r.region.unwrap_or("no region")
    );
    if let Some(s) = r.status
        && s.connection_state.is_some()
    {
        println!(
            "  AWS: {} {}, mode {}, port {}, {} key(s) associated",
            s.resource_type
                .map(|t| format!("{t:?}"))
                .unwrap_or_default(),
            s.connection_state.as_deref().unwrap_or("?"),
            s.encryption_mode.as_deref().unwrap_or("none"),
            s.port_encryption_status.as_deref().unwrap_or("-"),
            s.associated_keys.unwrap_or(0)
        );
    }
    println!("  {}: {}", r.reason, r.message);
    for a in &r.planned_actions {
        println!("  next: {a}");
    }
    if let Some(rotation) = r.rotation {
        println!("  {rotation}");
    }
}

/// Loads inputs and builds the AWS access shared by `plan` and `apply`.
async fn setup(
    files: &[PathBuf],
    aws: Arc<dyn AwsProvider>,
    default_region: Option<&str>,
    cluster: &str,
) -> Result<(Engine, Vec<Item>, Inputs), i32> {
    let inputs = match input::load(files) {
        Ok(i) => i,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return Err(EXIT_ERROR);
        }
    };
    for s in &inputs.skipped {
        eprintln!("note: skipped {s}");
    }
    // What apply changes comes back in the calls' answers, and what a pass waits for is
    // read again, so the snapshot need not age out quickly: a whole refresh (one Describe
    // page per 100 resources, each taking AWS's latency) at most every 30 s.
    let engine = Engine::new(
        aws.clone(),
        Arc::new(ObservationCache::new(CLI_SNAPSHOT_MAX_AGE)),
    );
    let items = prepare(&inputs, aws.as_ref(), default_region, cluster).await;
    Ok((engine, items, inputs))
}

/// `plan -f`: what each DxConnection's next step would be. Exit 0 when nothing would
/// change, 2 when something would, 1 on any error (AWS not read, a call refused) or a
/// resource only a person can move on.
pub async fn plan(
    files: &[PathBuf],
    output: Output,
    aws: Arc<dyn AwsProvider>,
    default_region: Option<&str>,
    cluster: &str,
) -> i32 {
    let (engine, mut items, _) = match setup(files, aws, default_region, cluster).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    for item in &mut items {
        // A read deferred for the Describe budget is waited out: plan reads each once.
        while item.last.is_none() && item.scope.is_ok() {
            tokio::time::sleep_until(item.due.into()).await;
            run_pass(&engine, item, Mode::DryRun, Duration::ZERO).await;
        }
    }
    match output {
        Output::Text => items.iter().for_each(|i| print_text(i, false)),
        Output::Json => {
            let reports: Vec<Report<'_>> = items.iter().map(|i| report(i, false)).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&reports).expect("reports serialize")
            );
        }
    }
    let standings: Vec<Standing> = items.iter().map(standing).collect();
    // Any error is an error here, even one a later pass might get past: "changes pending"
    // must mean that AWS was read and differs.
    let failed_call = items
        .iter()
        .any(|i| i.last.as_ref().is_some_and(|r| r.error().is_some()));
    if standings.contains(&Standing::NeedsAPerson) || failed_call {
        EXIT_ERROR
    } else if standings.contains(&Standing::Pending) {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

/// How progress counts an item.
fn progress_state(item: &Item) -> progress::State {
    match standing(item) {
        Standing::Converged => progress::State::Ready,
        Standing::NeedsAPerson => progress::State::Failed,
        Standing::Pending if item.done => progress::State::Failed,
        Standing::Pending => progress::State::Progressing,
    }
}

fn tally(items: &[Item], now: Instant) -> progress::Tally {
    progress::Tally::of(
        items.iter().map(|item| progress::Entry {
            name: &item.name,
            state: progress_state(item),
            reason: &item.reason,
            since: item.since,
        }),
        now,
    )
}

/// How `apply` runs.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    pub output: Output,
    /// Give up after this long.
    pub timeout: Duration,
    /// Time between passes of one DxConnection while something is in flight.
    pub interval: Duration,
    /// Passes in flight at once, over different DxConnections.
    pub concurrency: u16,
}

/// `apply -f`: runs passes until every DxConnection converges, fails, or `timeout` passes.
/// Exit 0 only when all converged. With text output, what happens goes to stdout and a
/// table ends it; with JSON, stdout holds only the final reports (as `plan -o json`) and
/// what happens goes to stderr. Progress goes to stderr: one line redrawn on a terminal,
/// paced plain lines otherwise.
pub async fn apply(
    files: &[PathBuf],
    options: ApplyOptions,
    aws: Arc<dyn AwsProvider>,
    default_region: Option<&str>,
    cluster: &str,
) -> i32 {
    use futures_util::StreamExt;
    use std::io::IsTerminal;
    let ApplyOptions {
        output,
        timeout,
        interval,
        concurrency,
    } = options;
    let concurrency = usize::from(concurrency.max(1));
    let (engine, mut items, _) = match setup(files, aws, default_region, cluster).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let deadline = Instant::now() + timeout;
    let mut progress =
        progress::Progress::new(output == Output::Text && std::io::stderr().is_terminal());
    // Passes of different items run at once, up to `concurrency`; an item has at most one
    // pass in flight, so its passes stay in order. Results are taken in as they come.
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    loop {
        let started = Instant::now();
        for (i, item) in items.iter_mut().enumerate() {
            if in_flight.len() >= concurrency || started >= deadline {
                break;
            }
            if item.done || item.running || item.due > started {
                continue;
            }
            let (Ok(scope), Some(desired)) = (&item.scope, &item.desired) else {
                item.done = true;
                let (reason, message) = reason_and_message(item);
                item.reason = reason;
                progress.say(&format!("{}: {message}", item.name), true);
                continue;
            };
            item.running = true;
            let (scope, desired, prior) = (scope.clone(), desired.clone(), item.prior.clone());
            let engine = &engine;
            in_flight.push(async move {
                let now = jiff::Timestamp::now();
                let result = engine
                    .pass(&scope, &desired, &prior, now, Mode::Execute)
                    .await;
                (i, result, now)
            });
        }
        let next = items
            .iter()
            .filter(|i| !i.done && !i.running)
            .map(|i| i.due)
            .min();
        if in_flight.is_empty() && (next.is_none() || Instant::now() >= deadline) {
            break;
        }
        // Wake for the first pass to end, or when the next item is due if a slot is free
        // for it (after the deadline none starts: the passes in flight only end); a
        // terminal's progress line ticks at least every second meanwhile.
        let can_start = in_flight.len() < concurrency && Instant::now() < deadline;
        let mut wake = match next {
            Some(due) if can_start => due.min(deadline),
            _ => Instant::now() + Duration::from_secs(3600),
        };
        if output == Output::Text && std::io::stderr().is_terminal() {
            wake = wake.min(Instant::now() + Duration::from_secs(1));
        }
        let ended = tokio::select! {
            Some(ended) = in_flight.next(), if !in_flight.is_empty() => Some(ended),
            () = tokio::time::sleep_until(wake.into()) => None,
        };
        if let Some((i, result, at)) = ended {
            let item = &mut items[i];
            item.running = false;
            // A deferred pass did nothing: the last one's calls are not told again.
            if item.record(result, at, interval) {
                report_pass(item, &mut progress, output);
            }
        }
        if let Some(text) = progress.update(&tally(&items, Instant::now()), Instant::now()) {
            progress::show(&text);
        }
    }
    progress::show(&progress.finish(&tally(&items, Instant::now())));
    match output {
        Output::Text => print_table(&items),
        Output::Json => {
            let reports: Vec<Report<'_>> = items.iter().map(|i| report(i, true)).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&reports).expect("reports serialize")
            );
        }
    }
    if items.iter().all(|i| standing(i) == Standing::Converged) {
        EXIT_OK
    } else {
        if Instant::now() >= deadline {
            eprintln!("error: not converged within {}s", timeout.as_secs());
        }
        EXIT_ERROR
    }
}

/// What `apply` says after a pass of `item`: each call made, and its reason and message
/// when they changed.
fn report_pass(item: &mut Item, progress: &mut progress::Progress, output: Output) {
    let json = output == Output::Json;
    if let Some(r) = &item.last {
        for a in r.executed() {
            progress.say(&format!("{}: {a}", item.name), json);
        }
    }
    let (reason, message) = reason_and_message(item);
    if reason != item.reason {
        item.since = Instant::now();
        item.reason = reason.clone();
    }
    let line = format!("{}: {reason}: {message}", item.name);
    if line != item.last_line {
        progress.say(&line, json);
        item.last_line = line;
    }
    item.done = standing(item) != Standing::Pending;
}

/// The table that ends a text `apply`.
fn print_table(items: &[Item]) {
    println!();
    println!(
        "{:<32} {:<16} {:<15} {:<16} {:>4}  {:<6} REASON",
        "NAME", "CONNECTION", "MODE", "PORT", "KEYS", "READY"
    );
    for item in items {
        let s = item.status.clone().unwrap_or_default();
        let (reason, _) = reason_and_message(item);
        println!(
            "{:<32} {:<16} {:<15} {:<16} {:>4}  {:<6} {reason}",
            item.name,
            item.connection_id,
            s.encryption_mode.as_deref().unwrap_or("-"),
            s.port_encryption_status.as_deref().unwrap_or("-"),
            s.associated_keys.unwrap_or(0),
            if standing(item) == Standing::Converged {
                "True"
            } else {
                "False"
            },
        );
    }
    // A schedule is the controller's to run: say so once per scheduled DxConnection.
    for item in items {
        if let Some((_, apply)) = &item.rotation {
            println!("{}: {apply}", item.name);
        }
    }
}

/// `rotate`: starts the scheduled rotation of DxConnection `namespace/name` now, by setting
/// its `dxmacsec.io/rotate-now` annotation to the time (the controller does the rest, and
/// waits for the router as always). Exit 0 when the request is made.
pub async fn rotate(namespace: &str, name: &str) -> i32 {
    use kube::api::{Api, Patch, PatchParams};
    let fail = |message: String| {
        eprintln!("error: {message}");
        EXIT_ERROR
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "cannot connect to the Kubernetes API (KUBECONFIG or in-cluster config): {e}"
            ));
        }
    };
    let api: Api<crate::crd::DxConnection> = Api::namespaced(client, namespace);
    let dxc = match api.get_opt(name).await {
        Ok(Some(d)) => d,
        Ok(None) => return fail(format!("DxConnection {namespace}/{name} not found")),
        Err(e) => return fail(format!("cannot read DxConnection {namespace}/{name}: {e}")),
    };
    if dxc.spec.rotation.schedule.is_none() {
        return fail(format!(
            "DxConnection {namespace}/{name} has no spec.rotation.schedule: add one (docs/rotation.md), or rotate by hand through spec.keys"
        ));
    }
    let value = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {crate::rotation::ROTATE_NOW_ANNOTATION: value}}});
    if let Err(e) = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        return fail(format!(
            "cannot annotate DxConnection {namespace}/{name} (RBAC: patch on dxconnections): {e}"
        ));
    }
    println!(
        "rotation of DxConnection {namespace}/{name} requested ({}={value}); follow it with: kubectl get dxconnection -n {namespace} {name} -o jsonpath='{{.status.schedule}}'",
        crate::rotation::ROTATE_NOW_ANNOTATION
    );
    EXIT_OK
}

/// `keygen`: a Secret manifest with a fresh CKN/CAK from the OS CSPRNG.
pub fn keygen(name: &str, namespace: &str) -> String {
    let (ckn, cak) = crate::keys::generate_pair();
    format!(
        "# A fresh MACsec key from dx-macsec-operator keygen. Configure the same CKN/CAK on your\n\
         # router, apply this Secret, and reference it from a MacSecKey (spec.secretRef.name: {name}).\n\
         # The label lets the operator read it: it reads no Secret without it.\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    {}: \"true\"\ntype: Opaque\nstringData:\n  ckn: \"{ckn}\"\n  cak: \"{}\"\n",
        crate::material::KEY_MATERIAL_LABEL,
        cak.expose()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Cak, Ckn};

    /// keygen prints a Secret with a valid, fresh pair each time.
    #[test]
    fn keygen_prints_a_valid_fresh_secret() {
        let read = |text: &str| {
            let s: k8s_openapi::api::core::v1::Secret = serde_saphyr::from_str(text).unwrap();
            assert_eq!(s.metadata.name.as_deref(), Some("k"));
            assert_eq!(s.metadata.namespace.as_deref(), Some("net"));
            assert!(
                crate::material::marked(&s.metadata),
                "not labelled as key material"
            );
            let data = s.string_data.unwrap();
            assert!(Ckn::parse("ckn", &data["ckn"]).is_ok());
            assert!(Cak::parse("cak", &data["cak"]).is_ok());
            (data["ckn"].clone(), data["cak"].clone())
        };
        let (ckn1, cak1) = read(&keygen("k", "net"));
        let (ckn2, cak2) = read(&keygen("k", "net"));
        assert_ne!(ckn1, ckn2);
        assert_ne!(cak1, cak2);
        assert_ne!(ckn1, cak1);
    }
}
