//! The shared observation cache: one snapshot of every connection and LAG per scope.
//!
//! A full refresh (paginated DescribeConnections + DescribeLags) serves every resource of a
//! scope; readers arriving while one is in flight wait for it instead of starting their own.
//! A resource marked changed after a mutation is re-read alone (DescribeConnections or
//! DescribeLags with its ID) the next time it is observed. Snapshots older than `max_age`
//! are refreshed whole.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{AwsError, DirectConnectApi, Scope};
use crate::keys::Ckn;
use crate::observed::{KeyState, ObservedResource};

#[derive(Default)]
struct Entry {
    resources: HashMap<String, ObservedResource>,
    fetched: Option<Instant>,
    changed: HashSet<String>,
}

pub struct ObservationCache {
    max_age: Duration,
    entries: Mutex<HashMap<Scope, Arc<tokio::sync::Mutex<Entry>>>>,
    full_refreshes: AtomicU64,
    single_reads: AtomicU64,
}

impl ObservationCache {
    pub fn new(max_age: Duration) -> Self {
        ObservationCache {
            max_age,
            entries: Mutex::new(HashMap::new()),
            full_refreshes: AtomicU64::new(0),
            single_reads: AtomicU64::new(0),
        }
    }

    fn entry(&self, scope: &Scope) -> Arc<tokio::sync::Mutex<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(scope.clone())
            .or_default()
            .clone()
    }

    /// The connection or LAG `id` as last seen, refreshing as needed; `None` when AWS does
    /// not know it.
    pub async fn observe(
        &self,
        scope: &Scope,
        api: &dyn DirectConnectApi,
        id: &str,
    ) -> Result<Option<ObservedResource>, AwsError> {
        let entry = self.entry(scope);
        {
            let mut e = entry.lock().await;
            let stale = e.fetched.is_none_or(|t| t.elapsed() >= self.max_age);
            if stale {
                // Held across the call: concurrent readers wait and then share the result.
                let all = api.describe_all().await?;
                self.full_refreshes.fetch_add(1, Ordering::Relaxed);
                e.resources = all.into_iter().map(|r| (r.id.clone(), r)).collect();
                e.fetched = Some(Instant::now());
                e.changed.clear();
                return Ok(e.resources.get(id).cloned());
            }
            if !e.changed.contains(id) {
                return Ok(e.resources.get(id).cloned());
            }
        }
        // Re-read one changed resource without holding up readers of the others.
        let fresh = api.describe_one(id).await?;
        self.single_reads.fetch_add(1, Ordering::Relaxed);
        let mut e = entry.lock().await;
        e.changed.remove(id);
        match &fresh {
            Some(r) => {
                e.resources.insert(id.to_string(), r.clone());
            }
            None => {
                e.resources.remove(id);
            }
        }
        Ok(fresh)
    }

    /// After a mutation (or a failed one, whose effect is unknown): re-read `id` next time.
    pub async fn mark_changed(&self, scope: &Scope, id: &str) {
        self.entry(scope)
            .lock()
            .await
            .changed
            .insert(id.to_string());
    }

    /// Forgets a scope's snapshot so the next read refreshes it whole.
    pub async fn invalidate(&self, scope: &Scope) {
        self.entry(scope).lock().await.fetched = None;
    }

    /// The ARN of the Direct Connect-managed secret of `ckn`, when any connection or LAG of
    /// the scope carries that key: then the CAK need not be sent again.
    pub async fn managed_secret_arn(&self, scope: &Scope, ckn: &Ckn) -> Option<String> {
        let entry = self.entry(scope);
        let e = entry.lock().await;
        e.resources
            .values()
            .flat_map(|r| &r.keys)
            .find(|k| {
                k.state() != KeyState::Disassociated
                    && k.ckn_normalized().as_deref() == Some(ckn.as_str())
            })
            .and_then(|k| k.secret_arn.clone())
    }

    /// (full refreshes, single-resource reads) so far, for metrics and benchmarks.
    pub fn describe_counts(&self) -> (u64, u64) {
        (
            self.full_refreshes.load(Ordering::Relaxed),
            self.single_reads.load(Ordering::Relaxed),
        )
    }
}
