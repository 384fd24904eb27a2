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

/// Describe calls one full refresh of `resources` costs: pages of connections plus pages of
/// LAGs (at least one call each).
fn refresh_pages(resources: &HashMap<String, ObservedResource>) -> usize {
    let lags = resources
        .values()
        .filter(|r| r.id.starts_with("dxlag-"))
        .count();
    let connections = resources.len() - lags;
    connections.div_ceil(100).max(1) + lags.div_ceil(100).max(1)
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
            let changed = e.changed.contains(id);
            // Many changed resources are cheaper to read with one paginated refresh than one
            // by one: refresh whole once they are as many as the pages a refresh costs.
            if stale || (changed && e.changed.len() >= refresh_pages(&e.resources)) {
                // Held across the call: concurrent readers wait and then share the result.
                let all = api.describe_all().await?;
                self.full_refreshes.fetch_add(1, Ordering::Relaxed);
                e.resources = all.into_iter().map(|r| (r.id.clone(), r)).collect();
                e.fetched = Some(Instant::now());
                e.changed.clear();
                return Ok(e.resources.get(id).cloned());
            }
            if !changed {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::aws::BoxFut;
    use crate::crd::{EncryptionMode, ResourceType};
    use crate::plan::{Association, Target};

    /// Counts Describe calls; every call takes a while so concurrent readers overlap.
    #[derive(Default)]
    struct CountingApi {
        all: AtomicUsize,
        one: AtomicUsize,
    }

    fn resource(id: &str) -> ObservedResource {
        ObservedResource {
            id: id.into(),
            kind: ResourceType::Connection,
            state: "available".into(),
            mac_sec_capable: true,
            encryption_mode: Some("no_encrypt".into()),
            port_encryption_status: None,
            lag_id: None,
            keys: vec![],
            members: vec![],
        }
    }

    impl DirectConnectApi for CountingApi {
        fn describe_all(&self) -> BoxFut<'_, Result<Vec<ObservedResource>, AwsError>> {
            Box::pin(async move {
                self.all.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok((0..100).map(|i| resource(&format!("dxcon-{i}"))).collect())
            })
        }
        fn describe_one<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFut<'a, Result<Option<ObservedResource>, AwsError>> {
            Box::pin(async move {
                self.one.fetch_add(1, Ordering::SeqCst);
                Ok(Some(resource(id)))
            })
        }
        fn associate<'a>(
            &'a self,
            _: &'a Target,
            _: &'a Association,
        ) -> BoxFut<'a, Result<(), AwsError>> {
            Box::pin(async { Ok(()) })
        }
        fn disassociate<'a>(
            &'a self,
            _: &'a Target,
            _: &'a str,
        ) -> BoxFut<'a, Result<(), AwsError>> {
            Box::pin(async { Ok(()) })
        }
        fn set_mode<'a>(
            &'a self,
            _: &'a Target,
            _: EncryptionMode,
        ) -> BoxFut<'a, Result<(), AwsError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn scope() -> Scope {
        Scope {
            region: "us-east-1".into(),
            role_arn: None,
        }
    }

    /// 100 resources observed at once cost one full refresh, not 100 Describe calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_share_one_refresh() {
        let cache = Arc::new(ObservationCache::new(Duration::from_secs(60)));
        let api = Arc::new(CountingApi::default());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let (cache, api) = (cache.clone(), api.clone());
            tasks.spawn(async move {
                cache
                    .observe(&scope(), api.as_ref(), &format!("dxcon-{i}"))
                    .await
                    .unwrap()
            });
        }
        while let Some(found) = tasks.join_next().await {
            assert!(found.unwrap().is_some());
        }
        assert_eq!(api.all.load(Ordering::SeqCst), 1);
        assert_eq!(api.one.load(Ordering::SeqCst), 0);
        assert_eq!(cache.describe_counts(), (1, 0));
    }

    /// A changed resource is re-read alone, once; others keep being served from the snapshot.
    #[tokio::test]
    async fn changed_resource_is_reread_alone() {
        let cache = ObservationCache::new(Duration::from_secs(60));
        let api = CountingApi::default();
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        cache.mark_changed(&scope(), "dxcon-1").await;
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        cache.observe(&scope(), &api, "dxcon-2").await.unwrap();
        assert_eq!(
            (
                api.all.load(Ordering::SeqCst),
                api.one.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        // Unknown IDs are answered from the snapshot too.
        assert!(
            cache
                .observe(&scope(), &api, "dxcon-999")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(api.all.load(Ordering::SeqCst), 1);
    }

    /// When more resources changed than a full refresh has pages, one refresh serves them all.
    #[tokio::test]
    async fn many_changes_are_read_with_one_refresh() {
        let cache = ObservationCache::new(Duration::from_secs(60));
        let api = CountingApi::default();
        cache.observe(&scope(), &api, "dxcon-0").await.unwrap();
        // 100 connections: one page of connections and one (empty) of LAGs.
        for i in 0..50 {
            cache.mark_changed(&scope(), &format!("dxcon-{i}")).await;
        }
        for i in 0..50 {
            cache
                .observe(&scope(), &api, &format!("dxcon-{i}"))
                .await
                .unwrap();
        }
        assert_eq!(
            (
                api.all.load(Ordering::SeqCst),
                api.one.load(Ordering::SeqCst)
            ),
            (2, 0)
        );
        // One changed resource alone is read alone.
        cache.mark_changed(&scope(), "dxcon-7").await;
        cache.observe(&scope(), &api, "dxcon-7").await.unwrap();
        assert_eq!(
            (
                api.all.load(Ordering::SeqCst),
                api.one.load(Ordering::SeqCst)
            ),
            (2, 1)
        );
    }

    /// Past the maximum age the whole snapshot is refreshed; scopes are separate.
    #[tokio::test]
    async fn old_snapshots_are_refreshed_and_scopes_are_separate() {
        let cache = ObservationCache::new(Duration::from_millis(20));
        let api = CountingApi::default();
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        let other = Scope {
            region: "eu-west-1".into(),
            role_arn: Some("arn:aws:iam::111111111111:role/dx".into()),
        };
        cache.observe(&other, &api, "dxcon-1").await.unwrap();
        assert_eq!(api.all.load(Ordering::SeqCst), 3);
    }
}
