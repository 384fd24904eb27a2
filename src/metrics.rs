//! Prometheus metrics, served on `/metrics`.
//!
//! Per-resource series carry namespace, name and connection ID so an alert can name the
//! connection: `dxmacsec_port_encryption_up{encryption_mode="must_encrypt"} == 0` fires when a
//! must_encrypt connection (or a LAG member) has encryption down. No series carries key
//! material; CKNs are not labels either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::{KeyStatus, RotationStage};
use crate::observed::{KeyState, ObservedResource, parse_start_on};
use strum::VariantArray;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub namespace: String,
    pub name: String,
    pub connection_id: String,
    pub encryption_mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub namespace: String,
    pub name: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub namespace: String,
    pub name: String,
    pub stage: String,
}

/// The series of scheduled rotations (`spec.rotation.schedule`).
struct RotationMetrics {
    next: Family<NameLabels, Gauge>,
    stage: Family<StageLabels, Gauge>,
}

impl RotationMetrics {
    fn register(registry: &mut Registry) -> Self {
        let next = Family::<NameLabels, Gauge>::default();
        let stage = Family::<StageLabels, Gauge>::default();
        registry.register(
            "rotation_next_timestamp_seconds",
            "When the next scheduled key rotation of a DxConnection is due (Unix seconds)",
            next.clone(),
        );
        registry.register(
            "rotation_stage",
            "1 for the stage a DxConnection's scheduled rotation is in, 0 for the others",
            stage.clone(),
        );
        RotationMetrics { next, stage }
    }

    fn stage_labels(
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = (RotationStage, StageLabels)> {
        RotationStage::VARIANTS.iter().map(move |s| {
            let stage: &'static str = s.into();
            (
                *s,
                StageLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    stage: stage.into(),
                },
            )
        })
    }
}

/// The process metrics every Prometheus client exports (CPU, memory, file descriptors,
/// threads, start time), read from /proc at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use procfs::process::{LimitValue, Process};
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        // Outside Linux, or with /proc unreadable, there is nothing to report.
        let Ok(me) = Process::myself() else {
            return Ok(());
        };
        let ticks = procfs::ticks_per_second() as f64;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        if let Ok(stat) = me.stat() {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                (stat.rss * procfs::page_size()) as f64,
            )?;
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.vsize as f64,
            )?;
            gauge(
                "process_threads",
                "Number of OS threads in the process.",
                stat.num_threads as f64,
            )?;
            if let Ok(boot) = procfs::boot_time_secs() {
                gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + stat.starttime as f64 / ticks,
                )?;
            }
            if let Ok(fds) = me.fd_count() {
                gauge(
                    "process_open_fds",
                    "Number of open file descriptors.",
                    fds as f64,
                )?;
            }
            if let Ok(limits) = me.limits()
                && let LimitValue::Value(max) = limits.max_open_files.soft_limit
            {
                gauge(
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                    max as f64,
                )?;
            }
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// What [`Metrics::summary`] reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub connections: usize,
    pub ready: usize,
    /// Not Ready DxConnections by reason.
    pub not_ready: std::collections::BTreeMap<String, usize>,
    pub aws_calls: u64,
    pub throttled: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} DxConnections, {} Ready",
            self.connections, self.ready
        )?;
        for (reason, n) in &self.not_ready {
            write!(f, ", {n} {reason}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyAgeLabels {
    pub namespace: String,
    pub name: String,
    /// The MacSecKey the key belongs to, or `-` for a key not in `spec.keys`.
    pub key: String,
}

/// The series one DxConnection last published.
#[derive(Default)]
struct Published {
    resources: Vec<ResourceLabels>,
    keys: Vec<KeyLabels>,
    ready: Vec<ReadyLabels>,
    key_starts: Vec<KeyAgeLabels>,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    aws_calls: Family<CallLabels, Counter>,
    aws_throttles: Family<OperationLabels, Counter>,
    port_up: Family<ResourceLabels, Gauge>,
    keys: Family<KeyLabels, Gauge>,
    ready: Family<ReadyLabels, Gauge>,
    key_start: Family<KeyAgeLabels, Gauge>,
    rotation: RotationMetrics,
    leader: Gauge,
    /// Every AWS call, and the throttled ones, for [`Metrics::summary`].
    calls_total: AtomicU64,
    throttled_total: AtomicU64,
    /// The label sets last written per DxConnection, to remove stale series.
    published: Mutex<HashMap<(String, String), Published>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        // The standard process_* series (client_golang's names), outside the prefix.
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("dxmacsec");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_errors = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let aws_calls = Family::<CallLabels, Counter>::default();
        let aws_throttles = Family::<OperationLabels, Counter>::default();
        let port_up = Family::<ResourceLabels, Gauge>::default();
        let keys = Family::<KeyLabels, Gauge>::default();
        let ready = Family::<ReadyLabels, Gauge>::default();
        let key_start = Family::<KeyAgeLabels, Gauge>::default();
        let leader = Gauge::default();
        let rotation = RotationMetrics::register(registry);
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1, labelled with the operator's version",
            build_info,
        );
        registry.register(
            "leader",
            "1 while this replica acts (holds the leader Lease, or runs without election)",
            leader.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles by kind and outcome reason",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by kind and reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "aws_calls",
            "AWS calls by operation and outcome (ok or error code)",
            aws_calls.clone(),
        );
        registry.register(
            "aws_throttles",
            "AWS calls refused for the request rate, by operation",
            aws_throttles.clone(),
        );
        registry.register(
            "port_encryption_up",
            "1 when the port (every member, for a LAG) reports Encryption Up",
            port_up.clone(),
        );
        registry.register(
            "keys",
            "MACsec keys on a DxConnection's resource, by state",
            keys.clone(),
        );
        registry.register(
            "key_start_time_seconds",
            "When each associated key started (its startOn), by DxConnection and MacSecKey; time() minus it is the key's age",
            key_start.clone(),
        );
        registry.register(
            "ready",
            "1 when a DxConnection is Ready, labelled with the Ready reason",
            ready.clone(),
        );
        Metrics {
            registry: root,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            aws_calls,
            aws_throttles,
            port_up,
            keys,
            ready,
            key_start,
            rotation,
            leader,
            calls_total: AtomicU64::new(0),
            throttled_total: AtomicU64::new(0),
            published: Mutex::new(HashMap::new()),
        }
    }

    pub fn reconciled(&self, kind: &str, reason: &str, took: Duration, error: bool) {
        let labels = ReconcileLabels {
            kind: kind.into(),
            reason: reason.into(),
        };
        self.reconciles.get_or_create(&labels).inc();
        if error {
            self.reconcile_errors.get_or_create(&labels).inc();
        }
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    /// One AWS call; `throttled` when AWS refused it for the request rate (whatever the
    /// service's code for that), counted again in `dxmacsec_aws_throttles_total`.
    pub fn aws_call(&self, operation: &str, outcome: &str, throttled: bool) {
        self.calls_total.fetch_add(1, Ordering::Relaxed);
        if throttled {
            self.throttled_total.fetch_add(1, Ordering::Relaxed);
            self.aws_throttles
                .get_or_create(&OperationLabels {
                    operation: operation.into(),
                })
                .inc();
        }
        self.aws_calls
            .get_or_create(&CallLabels {
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Exports zero for label values known in advance, so a dashboard shows 0 rather than
    /// "no data" and `rate()` sees the first error or throttle: throttles per metered
    /// operation, errors per kind and error reason.
    pub fn expect(&self, operations: &[&str], kinds: &[&str], error_reasons: &[&str]) {
        for operation in operations {
            self.aws_throttles
                .get_or_create(&OperationLabels {
                    operation: (*operation).into(),
                })
                .inc_by(0);
        }
        for kind in kinds {
            for reason in error_reasons {
                self.reconcile_errors
                    .get_or_create(&ReconcileLabels {
                        kind: (*kind).into(),
                        reason: (*reason).into(),
                    })
                    .inc_by(0);
            }
        }
    }

    /// Whether this replica acts now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// What the operator holds now, for the summary `run` logs once per resync: the
    /// DxConnections by Ready and reason, and AWS calls (and throttled ones) so far.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        for p in published.values() {
            let Some(labels) = p.ready.first() else {
                continue;
            };
            summary.connections += 1;
            if self.ready.get(labels).is_some_and(|g| g.get() == 1) {
                summary.ready += 1;
            } else {
                *summary.not_ready.entry(labels.reason.clone()).or_default() += 1;
            }
        }
        summary.aws_calls = self.calls_total.load(Ordering::Relaxed);
        summary.throttled = self.throttled_total.load(Ordering::Relaxed);
        summary
    }

    /// Publishes the Ready, port and key series of one DxConnection, replacing its previous
    /// ones. `ready` is (Ready, reason); `keys` the status's keys (for each associated key's
    /// start, by MacSecKey); `None` and no keys remove them all.
    pub fn observed(
        &self,
        namespace: &str,
        name: &str,
        ready: Option<(bool, crate::conditions::Reason)>,
        observed: Option<&ObservedResource>,
        keys: &[KeyStatus],
    ) {
        let mut now = Published::default();
        if let Some((is_ready, reason)) = ready {
            let labels = ReadyLabels {
                namespace: namespace.into(),
                name: name.into(),
                reason: reason.as_str().into(),
            };
            self.ready.get_or_create(&labels).set(i64::from(is_ready));
            now.ready.push(labels);
        }
        if let Some(o) = observed {
            let mode = o.encryption_mode.clone().unwrap_or_else(|| "none".into());
            let labels = ResourceLabels {
                namespace: namespace.into(),
                name: name.into(),
                connection_id: o.id.clone(),
                encryption_mode: mode,
            };
            self.port_up
                .get_or_create(&labels)
                .set(i64::from(o.port_up()));
            now.resources.push(labels);
            let mut counts: HashMap<&'static str, i64> = HashMap::new();
            for k in &o.keys {
                *counts.entry(k.state().as_str()).or_default() += 1;
            }
            for (state, n) in counts {
                let labels = KeyLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    state: state.into(),
                };
                self.keys.get_or_create(&labels).set(n);
                now.keys.push(labels);
            }
        }
        // Each associated key's start; two keys not in spec.keys share `-`: the older counts.
        let mut starts: HashMap<KeyAgeLabels, i64> = HashMap::new();
        for k in keys {
            if KeyState::parse(k.state.as_deref()) != KeyState::Associated {
                continue;
            }
            let Some(start) = k.start_on.as_deref().and_then(parse_start_on) else {
                continue;
            };
            let labels = KeyAgeLabels {
                namespace: namespace.into(),
                name: name.into(),
                key: k.mac_sec_key.clone().unwrap_or_else(|| "-".into()),
            };
            let earliest = starts.entry(labels).or_insert(start.as_second());
            *earliest = (*earliest).min(start.as_second());
        }
        for (labels, start) in starts {
            self.key_start.get_or_create(&labels).set(start);
            now.key_starts.push(labels);
        }
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = published.remove(&key) {
            for l in old.ready.iter().filter(|l| !now.ready.contains(l)) {
                self.ready.remove(l);
            }
            for l in old.resources.iter().filter(|l| !now.resources.contains(l)) {
                self.port_up.remove(l);
            }
            for l in old.keys.iter().filter(|l| !now.keys.contains(l)) {
                self.keys.remove(l);
            }
            for l in old
                .key_starts
                .iter()
                .filter(|l| !now.key_starts.contains(l))
            {
                self.key_start.remove(l);
            }
        }
        published.insert(key, now);
    }

    /// The scheduled rotation of one DxConnection: when the next is due and the stage it is
    /// in; `None` removes its series (no schedule).
    pub fn rotation(
        &self,
        namespace: &str,
        name: &str,
        now: Option<(Option<jiff::Timestamp>, RotationStage)>,
    ) {
        let labels = NameLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        match now {
            Some((next, current)) => {
                match next {
                    Some(t) => {
                        self.rotation.next.get_or_create(&labels).set(t.as_second());
                    }
                    None => {
                        self.rotation.next.remove(&labels);
                    }
                }
                for (stage, l) in RotationMetrics::stage_labels(namespace, name) {
                    self.rotation
                        .stage
                        .get_or_create(&l)
                        .set(i64::from(stage == current));
                }
            }
            None => {
                self.rotation.next.remove(&labels);
                for (_, l) in RotationMetrics::stage_labels(namespace, name) {
                    self.rotation.stage.remove(&l);
                }
            }
        }
    }

    /// Removes every series of a deleted DxConnection.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.rotation(namespace, name, None);
        self.observed(namespace, name, None, None, &[]);
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ResourceType;

    fn resource(mode: &str, port: &str) -> ObservedResource {
        ObservedResource {
            id: "dxcon-1".into(),
            kind: ResourceType::Connection,
            state: "available".into(),
            mac_sec_capable: true,
            encryption_mode: Some(mode.into()),
            port_encryption_status: Some(port.into()),
            lag_id: None,
            keys: vec![],
            members: vec![],
            arn: None,
            tags: Default::default(),
        }
    }

    /// The alert series exist with the right values, old label sets go when the mode or the
    /// reason changes, and a deleted DxConnection leaves nothing behind.
    #[test]
    fn per_resource_series_follow_changes() {
        let m = Metrics::new();
        m.observed(
            "ns",
            "c",
            Some((false, crate::conditions::Reason::WaitingForEncryptionUp)),
            Some(&resource("should_encrypt", "Encryption Down")),
            &[],
        );
        m.observed(
            "ns",
            "c",
            Some((true, crate::conditions::Reason::Converged)),
            Some(&resource("must_encrypt", "Encryption Down")),
            &[],
        );
        let text = m.encode();
        assert!(text.contains(r#"dxmacsec_port_encryption_up{namespace="ns",name="c",connection_id="dxcon-1",encryption_mode="must_encrypt"} 0"#), "{text}");
        assert!(!text.contains("should_encrypt"), "{text}");
        assert!(
            text.contains(r#"dxmacsec_ready{namespace="ns",name="c",reason="Converged"} 1"#),
            "{text}"
        );
        assert!(!text.contains("WaitingForEncryptionUp"), "{text}");
        m.forget("ns", "c");
        assert!(!m.encode().contains("dxcon-1"));
    }

    /// Each associated key's start is a series by MacSecKey (never by CKN); keys not
    /// associated or without a readable startOn have none, and a key that leaves takes its
    /// series with it.
    #[test]
    fn key_start_times_follow_the_associated_keys() {
        let m = Metrics::new();
        let key = |name: Option<&str>, state: &str, start_on: &str| KeyStatus {
            ckn: Some("aaaa".repeat(16)),
            state: Some(state.into()),
            start_on: Some(start_on.into()),
            mac_sec_key: name.map(str::to_string),
            secret_arn: None,
            associated_since: None,
        };
        let old = key(Some("k-2025"), "associated", "2025-01-01T00:00:00Z");
        let new = key(Some("k-2026"), "associated", "2026-06-01 12:00:00");
        m.observed(
            "ns",
            "c",
            Some((true, crate::conditions::Reason::Converged)),
            None,
            &[
                old.clone(),
                new.clone(),
                key(Some("k-x"), "disassociating", "2024-01-01T00:00:00Z"),
                key(None, "associated", "soon"),
            ],
        );
        let text = m.encode();
        let start = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_second();
        assert!(
            text.contains(&format!(
                r#"dxmacsec_key_start_time_seconds{{namespace="ns",name="c",key="k-2025"}} {}"#,
                start("2025-01-01T00:00:00Z")
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"dxmacsec_key_start_time_seconds{{namespace="ns",name="c",key="k-2026"}} {}"#,
                start("2026-06-01T12:00:00Z")
            )),
            "{text}"
        );
        assert!(
            !text.contains("k-x") && !text.contains(r#"key="-""#),
            "{text}"
        );
        assert!(!text.contains(&"aaaa".repeat(16)), "no CKN in a label");
        m.observed(
            "ns",
            "c",
            Some((true, crate::conditions::Reason::Converged)),
            None,
            &[new],
        );
        assert!(
            !m.encode().contains("k-2025"),
            "the rotated-out key's series is gone"
        );
        m.forget("ns", "c");
        assert!(!m.encode().contains("k-2026"));
    }

    /// The resync summary counts DxConnections by Ready and reason and AWS calls by outcome;
    /// build info and the leader gauge are exported.
    #[test]
    fn summary_leader_and_build_info() {
        let m = Metrics::new();
        let up = resource("must_encrypt", "Encryption Up");
        m.observed(
            "ns",
            "a",
            Some((true, crate::conditions::Reason::Converged)),
            Some(&up),
            &[],
        );
        m.observed(
            "ns",
            "b",
            Some((false, crate::conditions::Reason::EncryptionDown)),
            Some(&up),
            &[],
        );
        m.observed(
            "ns",
            "c",
            Some((false, crate::conditions::Reason::EncryptionDown)),
            None,
            &[],
        );
        m.observed(
            "ns",
            "d",
            Some((true, crate::conditions::Reason::Converged)),
            None,
            &[],
        );
        m.forget("ns", "d");
        m.aws_call("DescribeConnections", "ok", false);
        m.aws_call("DescribeConnections", "ThrottlingException", true);
        m.aws_call("UpdateConnection", "TooManyRequestsException", true);
        let s = m.summary();
        assert_eq!(
            (s.connections, s.ready, s.aws_calls, s.throttled),
            (3, 1, 3, 2),
            "{s:?}"
        );
        assert_eq!(s.to_string(), "3 DxConnections, 1 Ready, 2 EncryptionDown");
        m.set_leader(true);
        let text = m.encode();
        assert!(text.contains("dxmacsec_leader 1"), "{text}");
        assert!(
            text.contains(&format!(
                r#"dxmacsec_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains(r#"dxmacsec_aws_throttles_total{operation="UpdateConnection"} 1"#),
            "{text}"
        );
        m.set_leader(false);
        assert!(m.encode().contains("dxmacsec_leader 0"));
        let text = m.encode();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            let value: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .parse()
                .unwrap();
            assert!(
                value > 0.0 || name == "process_cpu_seconds_total",
                "{name} {value}"
            );
        }
        let started: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        let now = jiff::Timestamp::now().as_second() as f64;
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        m.expect(&["GetSecretValue"], &["MacSecKey"], &["InUse"]);
        let text = m.encode();
        assert!(text.contains(r#"dxmacsec_aws_throttles_total{operation="GetSecretValue"} 0"#));
        assert!(
            text.contains(r#"dxmacsec_reconcile_errors_total{kind="MacSecKey",reason="InUse"} 0"#)
        );
    }
}
