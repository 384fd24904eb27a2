//! The shared observation cache: one snapshot of every connection, LAG and interconnect per
//! scope.
//!
//! A full refresh (paginated DescribeConnections, DescribeLags and DescribeInterconnects)
//! serves every resource of a scope; readers arriving while one is in flight wait for it instead of starting their own.
//! Snapshots older than `max_age` are refreshed whole.
//!
//! A resource is marked for re-reading after a mutation (its data is out of date) or when a
//! pass waits for AWS on it (it needs data newer than what it planned on). A marked resource
//! is read again the next time it is observed: alone while few are marked, with one full
//! refresh once as many are marked as a refresh has pages. These re-reads draw on a budget
//! of [`REREAD_CALLS_PER_SECOND`] Describe calls per scope; when it is spent the observation
//! is deferred (the caller looks again later, without holding a worker), and the next
//! refresh serves every resource marked meanwhile. So while mutations stream in, re-reads
//! cost a few pages per second instead of one Describe per mutation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Answer, AwsError, DirectConnectApi, Scope};
use crate::crd::ResourceType;
use crate::keys::Ckn;
use crate::observed::ObservedResource;

/// Describe calls per second per scope that re-reads of marked resources may spend. Full
/// refreshes of stale snapshots are always made and count against it too.
pub const REREAD_CALLS_PER_SECOND: f64 = 10.0;

/// What [`ObservationCache::observe`] found.
#[derive(Debug, Clone)]
// The common variant is the large one; boxing it would allocate on every pass to save
// memory only on the rare Deferred one.
#[allow(clippy::large_enum_variant)]
pub enum Observation {
    /// The resource (`None`: AWS does not know it) and when its data was read.
    Current(Option<ObservedResource>, Instant),
    /// The resource needs a fresh read and the re-read budget is spent: observe again after
    /// this long.
    Deferred(Duration),
}

/// A token bucket of Describe calls. Written here rather than taken from a rate-limiting
/// crate because mandatory refreshes must be able to overdraw it and callers need the wait
/// without blocking; that is a dozen lines.
struct Budget {
    tokens: f64,
    updated: Instant,
}

impl Budget {
    fn refill(&mut self, rate: f64, capacity: f64) {
        let now = Instant::now();
        let earned = now.duration_since(self.updated).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(capacity);
        self.updated = now;
    }

    /// Takes `n` calls, or says how long until they are there.
    fn take(&mut self, n: f64, rate: f64) -> Result<(), Duration> {
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - self.tokens) / rate))
        }
    }
}

struct Entry {
    resources: HashMap<String, ObservedResource>,
    /// Start of the last full refresh.
    fetched: Option<Instant>,
    /// Resources read alone since then, with the start of that read.
    read_alone: HashMap<String, Instant>,
    /// The answers taken since the last full refresh started, by resource, with when: a
    /// read that started before an answer is brought up to date with it.
    answered: HashMap<String, Vec<(Instant, Answer)>>,
    /// Resources whose data must be read again before it is used, with when they were
    /// marked: a read that started before the mark does not clear it.
    marked: HashMap<String, Instant>,
    /// Describe calls a full refresh costs, as of the last one.
    pages: usize,
    budget: Budget,
    /// CKN → ARN of its Direct Connect-managed secret, for every key this scope has shown
    /// since start-up (disassociating does not delete the managed secret, so it stays usable).
    managed_arns: HashMap<String, String>,
    /// The last full refresh that failed, and when: readers that waited for it share the
    /// failure for [`FAILURE_SHARED_FOR`] instead of each calling again.
    failed: Option<(Instant, AwsError)>,
    /// Full refreshes ended so far, failed ones included: a reader that waited for the one
    /// in flight knows by this that it need not make its own.
    refreshes: u64,
    /// Why the last full refresh could not list interconnects: the answer for a `dxcon-…` ID
    /// it did not find.
    unlisted: Option<AwsError>,
}

/// How long a failed full refresh answers the readers that waited for it. Without this,
/// under throttling every waiting pass would make its own whole-scope Describe round, one
/// after another, each as likely to fail.
pub const FAILURE_SHARED_FOR: Duration = Duration::from_secs(1);

impl Entry {
    fn new(rate: f64) -> Self {
        Entry {
            resources: HashMap::new(),
            fetched: None,
            read_alone: HashMap::new(),
            answered: HashMap::new(),
            marked: HashMap::new(),
            pages: refresh_pages(&HashMap::new()),
            managed_arns: HashMap::new(),
            failed: None,
            refreshes: 0,
            unlisted: None,
            // Starts full: the first re-reads after start-up need not wait.
            budget: Budget {
                tokens: rate,
                updated: Instant::now(),
            },
        }
    }

    /// Remembers the managed secret ARN of every key `resources` carry.
    fn learn_arns<'a>(&mut self, resources: impl Iterator<Item = &'a ObservedResource>) {
        for k in resources.flat_map(|r| &r.keys) {
            if let (Some(ckn), Some(arn)) = (k.ckn_normalized(), &k.secret_arn) {
                self.managed_arns.insert(ckn, arn.clone());
            }
        }
    }

    /// What the snapshot says of `id`: the resource, or that there is none, unless the
    /// interconnects could not be listed and `id` could be one.
    fn answer(&self, id: &str, read_at: Instant) -> Result<Observation, AwsError> {
        match (self.resources.get(id), &self.unlisted) {
            (None, Some(error)) if id.starts_with("dxcon-") => Err(error.clone()),
            (found, _) => Ok(Observation::Current(found.cloned(), read_at)),
        }
    }

    /// When the data held for `id` was read.
    fn read_at(&self, id: &str) -> Option<Instant> {
        self.read_alone.get(id).copied().max(self.fetched)
    }
}

/// Takes what `answer` carries into `held`; whether it carried all a re-read would have
/// given of what the call changed (a LAG answer without members does not).
fn merge_answer(held: &mut ObservedResource, answer: &Answer) -> bool {
    match answer {
        Answer::Keys(keys) if !keys.is_empty() => {
            for key in keys {
                match held.keys.iter_mut().find(|k| k.same_key(key)) {
                    Some(k) => *k = key.clone(),
                    None => held.keys.push(key.clone()),
                }
            }
            true
        }
        Answer::Tag { key, value } => {
            match value {
                Some(v) => held.tags.insert(key.clone(), v.clone()),
                None => held.tags.remove(key),
            };
            true
        }
        Answer::Resource(new) if new.id == held.id => {
            held.state.clone_from(&new.state);
            held.mac_sec_capable = new.mac_sec_capable;
            held.encryption_mode.clone_from(&new.encryption_mode);
            held.keys.clone_from(&new.keys);
            held.port_encryption_status
                .clone_from(&new.port_encryption_status);
            if held.kind != ResourceType::Lag {
                true
            } else if new.members.is_empty() {
                false
            } else {
                held.members.clone_from(&new.members);
                true
            }
        }
        _ => false,
    }
}

/// Describe calls one full refresh of `resources` costs: pages of connections, of LAGs and
/// of interconnects (at least one call each).
fn refresh_pages(resources: &HashMap<String, ObservedResource>) -> usize {
    let count = |kind: ResourceType| resources.values().filter(|r| r.kind == kind).count();
    [
        ResourceType::Connection,
        ResourceType::Lag,
        ResourceType::Interconnect,
    ]
    .into_iter()
    .map(|kind| count(kind).div_ceil(100).max(1))
    .sum()
}

/// One scope's snapshot and the lock its full refreshes take.
struct Scoped {
    /// Held only between awaits: never across an AWS call, so a reader whose data is
    /// current, a mark after a mutation and a managed-secret lookup never wait for AWS.
    data: Mutex<Entry>,
    /// Held across a full refresh: readers that need one wait here for the one in flight
    /// and share its result, a failure included.
    refreshing: tokio::sync::Mutex<()>,
}

impl Scoped {
    fn data(&self) -> std::sync::MutexGuard<'_, Entry> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a reader must do, decided on the snapshot.
// An answer from the snapshot is the common case; boxing it would allocate on every pass.
#[allow(clippy::large_enum_variant)]
enum Step {
    Answer(Result<Observation, AwsError>),
    /// A full refresh, unless one ends first: the count of refreshes ended when decided.
    Whole(u64),
    ReadAlone,
}

pub struct ObservationCache {
    max_age: Duration,
    reread_rate: f64,
    entries: Mutex<HashMap<Scope, Arc<Scoped>>>,
    full_refreshes: AtomicU64,
    single_reads: AtomicU64,
    deferrals: AtomicU64,
}

impl ObservationCache {
    pub fn new(max_age: Duration) -> Self {
        Self::with_reread_rate(max_age, REREAD_CALLS_PER_SECOND)
    }

    /// With another re-read budget (Describe calls per second per scope).
    pub fn with_reread_rate(max_age: Duration, reread_rate: f64) -> Self {
        ObservationCache {
            max_age,
            reread_rate,
            entries: Mutex::new(HashMap::new()),
            full_refreshes: AtomicU64::new(0),
            single_reads: AtomicU64::new(0),
            deferrals: AtomicU64::new(0),
        }
    }

    fn entry(&self, scope: &Scope) -> Arc<Scoped> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(scope.clone())
            .or_insert_with(|| {
                Arc::new(Scoped {
                    data: Mutex::new(Entry::new(self.reread_rate)),
                    refreshing: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    fn is_stale(&self, e: &Entry) -> bool {
        e.fetched.is_none_or(|t| t.elapsed() >= self.max_age)
    }

    /// Takes `cost` Describe calls from the budget (a stale snapshot's refresh always
    /// overdraws it), or says how long to wait.
    fn spend(&self, e: &mut Entry, cost: f64, stale: bool) -> Result<(), Duration> {
        if stale {
            // Always made; later re-reads wait for the budget to recover.
            e.budget.tokens -= cost;
            Ok(())
        } else {
            e.budget.take(cost, self.reread_rate).inspect_err(|_| {
                self.deferrals.fetch_add(1, Ordering::Relaxed);
            })
        }
    }

    /// Decides on the snapshot what reading `id` takes.
    fn step(&self, e: &mut Entry, id: &str) -> Step {
        let pages = e.pages;
        // The bucket holds at least one full refresh.
        let capacity = self.reread_rate.max(pages as f64);
        e.budget.refill(self.reread_rate, capacity);
        let stale = self.is_stale(e);
        if !stale && !e.marked.contains_key(id) {
            let read_at = e.read_at(id).unwrap_or_else(Instant::now);
            return Step::Answer(e.answer(id, read_at));
        }
        // Many marked resources are cheaper to read with one paginated refresh than one
        // by one: refresh whole once they are as many as the pages a refresh costs.
        if stale || e.marked.len() >= pages {
            if let Some((at, error)) = &e.failed
                && at.elapsed() < FAILURE_SHARED_FOR
            {
                return Step::Answer(Err(error.clone()));
            }
            return Step::Whole(e.refreshes);
        }
        match self.spend(e, 1.0, false) {
            Ok(()) => Step::ReadAlone,
            Err(wait) => Step::Answer(Ok(Observation::Deferred(wait))),
        }
    }

    /// The connection or LAG `id`, refreshing as needed, or a deferral when it needs a
    /// fresh read that the re-read budget cannot pay for yet.
    pub async fn observe(
        &self,
        scope: &Scope,
        api: &dyn DirectConnectApi,
        id: &str,
    ) -> Result<Observation, AwsError> {
        let scoped = self.entry(scope);
        loop {
            let step = self.step(&mut scoped.data(), id);
            let ended = match step {
                Step::Answer(answer) => return answer,
                Step::ReadAlone => return self.read_alone(&scoped, api, id).await,
                Step::Whole(ended) => ended,
            };
            let _refreshing = scoped.refreshing.lock().await;
            let started = {
                let mut e = scoped.data();
                if e.refreshes != ended {
                    // A refresh ended while this reader waited: decide again on its result.
                    continue;
                }
                let (pages, stale) = (e.pages, self.is_stale(&e));
                if let Err(wait) = self.spend(&mut e, pages as f64, stale) {
                    return Ok(Observation::Deferred(wait));
                }
                Instant::now()
            };
            let result = api.describe_all().await;
            let mut e = scoped.data();
            e.refreshes += 1;
            let all = match result {
                Ok(all) => all,
                Err(error) => {
                    e.failed = Some((Instant::now(), error.clone()));
                    return Err(error);
                }
            };
            e.failed = None;
            e.unlisted = api.interconnects_unlisted();
            self.full_refreshes.fetch_add(1, Ordering::Relaxed);
            e.learn_arns(all.iter());
            let mut fresh: HashMap<String, ObservedResource> =
                all.into_iter().map(|r| (r.id.clone(), r)).collect();
            // Answers taken while the refresh ran are newer than what it read.
            for answers in e.answered.values_mut() {
                answers.retain(|(at, _)| *at > started);
            }
            e.answered.retain(|_, answers| !answers.is_empty());
            for (id, answers) in &e.answered {
                if let Some(r) = fresh.get_mut(id) {
                    answers.iter().for_each(|(_, a)| {
                        merge_answer(r, a);
                    });
                }
            }
            e.resources = fresh;
            e.pages = refresh_pages(&e.resources);
            e.fetched = Some(started);
            e.read_alone.clear();
            // Marks made while the refresh ran may postdate what it read: they stay.
            e.marked.retain(|_, at| *at > started);
            if e.marked.contains_key(id) {
                continue;
            }
            return e.answer(id, started);
        }
    }

    /// Re-reads one marked resource without holding up readers of the others.
    async fn read_alone(
        &self,
        scoped: &Scoped,
        api: &dyn DirectConnectApi,
        id: &str,
    ) -> Result<Observation, AwsError> {
        let started = Instant::now();
        let fresh = api.describe_one(id).await?;
        self.single_reads.fetch_add(1, Ordering::Relaxed);
        let mut e = scoped.data();
        if e.marked.get(id).is_some_and(|at| *at <= started) {
            e.marked.remove(id);
        }
        let mut fresh = fresh;
        // Answers taken while this read ran are newer than what it read.
        if let (Some(r), Some(answers)) = (&mut fresh, e.answered.get(id)) {
            for (_, a) in answers.iter().filter(|(at, _)| *at > started) {
                merge_answer(r, a);
            }
        }
        e.read_alone.insert(id.to_string(), started);
        match &fresh {
            Some(r) => {
                e.learn_arns(std::iter::once(r));
                e.resources.insert(id.to_string(), r.clone());
            }
            None => {
                e.resources.remove(id);
            }
        }
        Ok(Observation::Current(fresh, started))
    }

    /// Like [`observe`](Self::observe), but waits out a deferral: for callers that cannot
    /// come back later (deletion, the CLI's sequential passes).
    pub async fn observe_now(
        &self,
        scope: &Scope,
        api: &dyn DirectConnectApi,
        id: &str,
    ) -> Result<(Option<ObservedResource>, Instant), AwsError> {
        loop {
            match self.observe(scope, api, id).await? {
                Observation::Current(r, read_at) => return Ok((r, read_at)),
                Observation::Deferred(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// After a mutation (or a failed one, whose effect is unknown): read `id` again before
    /// its data is used.
    pub fn mark_changed(&self, scope: &Scope, id: &str) {
        self.entry(scope)
            .data()
            .marked
            .insert(id.to_string(), Instant::now());
    }

    /// After a mutation of `id` that AWS answered: what the answer carries replaces what is
    /// held (keys by identity; the mode, state, keys and port of a resource, and a LAG's
    /// members when the answer lists them; the tag a tag call set). An answer that does not
    /// carry all the call changed (a LAG answer without members) or carries nothing marks
    /// `id` for a re-read, as does a resource not held.
    pub fn take_answer(&self, scope: &Scope, id: &str, answer: Answer) {
        let scoped = self.entry(scope);
        let mut e = scoped.data();
        let carried = e
            .resources
            .get_mut(id)
            .is_some_and(|held| merge_answer(held, &answer));
        if carried {
            let held = e.resources.get(id).cloned();
            e.learn_arns(held.iter());
            e.answered
                .entry(id.to_string())
                .or_default()
                .push((Instant::now(), answer));
        } else {
            e.marked.insert(id.to_string(), Instant::now());
        }
    }

    /// A pass waits for AWS on `id` with data read at `read_at`: the next pass needs newer
    /// data. Nothing to do when newer data is already held.
    pub fn look_again(&self, scope: &Scope, id: &str, read_at: Instant) {
        let scoped = self.entry(scope);
        let mut e = scoped.data();
        if e.read_at(id).is_none_or(|t| t <= read_at) {
            // A refresh that starts after `read_at` is new enough.
            let at = e.marked.entry(id.to_string()).or_insert(read_at);
            *at = (*at).max(read_at);
        }
    }

    /// The ARN of the Direct Connect-managed secret of `ckn` in this scope (region and
    /// account), when any connection or LAG of the scope has carried that key since
    /// start-up: then the CAK need not be sent again. The one source of that ARN: a secret
    /// of another region or account would not associate.
    pub fn managed_secret_arn(&self, scope: &Scope, ckn: &Ckn) -> Option<String> {
        self.entry(scope)
            .data()
            .managed_arns
            .get(ckn.as_str())
            .cloned()
    }

    /// (full refreshes, single-resource reads) so far, for metrics and benchmarks.
    pub fn describe_counts(&self) -> (u64, u64) {
        (
            self.full_refreshes.load(Ordering::Relaxed),
            self.single_reads.load(Ordering::Relaxed),
        )
    }

    /// Observations deferred for the re-read budget so far.
    pub fn deferrals(&self) -> u64 {
        self.deferrals.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::aws::BoxFut;
    use crate::crd::{EncryptionMode, ResourceType};
    use crate::plan::{Association, Target};

    /// Counts Describe calls; a full refresh takes `delay` so concurrent readers overlap.
    #[derive(Default)]
    struct CountingApi {
        all: AtomicUsize,
        one: AtomicUsize,
        delay: Duration,
        throttled: bool,
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
            arn: None,
            tags: Default::default(),
        }
    }

    impl DirectConnectApi for CountingApi {
        fn describe_all(&self) -> BoxFut<'_, Result<Vec<ObservedResource>, AwsError>> {
            Box::pin(async move {
                self.all.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                if self.throttled {
                    return Err(AwsError::from_service(
                        "DescribeConnections",
                        Some("ThrottlingException"),
                        "Rate exceeded",
                    ));
                }
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
        ) -> BoxFut<'a, Result<super::super::Answer, AwsError>> {
            Box::pin(async { Ok(super::super::Answer::Nothing) })
        }
        fn disassociate<'a>(
            &'a self,
            _: &'a Target,
            _: &'a str,
        ) -> BoxFut<'a, Result<super::super::Answer, AwsError>> {
            Box::pin(async { Ok(super::super::Answer::Nothing) })
        }
        fn set_mode<'a>(
            &'a self,
            _: &'a Target,
            _: EncryptionMode,
        ) -> BoxFut<'a, Result<super::super::Answer, AwsError>> {
            Box::pin(async { Ok(super::super::Answer::Nothing) })
        }
        fn tag_resource<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a str,
        ) -> BoxFut<'a, Result<(), AwsError>> {
            Box::pin(async { Ok(()) })
        }
        fn untag_resource<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
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

    fn current(o: Observation) -> Option<ObservedResource> {
        match o {
            Observation::Current(r, _) => r,
            Observation::Deferred(wait) => panic!("deferred for {wait:?}"),
        }
    }

    fn counts(api: &CountingApi) -> (usize, usize) {
        (
            api.all.load(Ordering::SeqCst),
            api.one.load(Ordering::SeqCst),
        )
    }

    /// dxcon-0 … dxcon-99 observed concurrently.
    async fn observe_100_at_once(
        cache: &Arc<ObservationCache>,
        api: &Arc<CountingApi>,
    ) -> Vec<Result<Observation, AwsError>> {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let (cache, api) = (cache.clone(), api.clone());
            tasks.spawn(async move {
                cache
                    .observe(&scope(), api.as_ref(), &format!("dxcon-{i}"))
                    .await
            });
        }
        tasks.join_all().await
    }

    /// A full refresh that fails answers the 100 readers that waited for it: one Describe
    /// round, not 100 in a row, each as likely to be throttled; after a second, a reader
    /// tries again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_share_one_failed_refresh() {
        let cache = Arc::new(ObservationCache::new(Duration::from_secs(60)));
        let api = Arc::new(CountingApi {
            delay: Duration::from_millis(50),
            throttled: true,
            ..Default::default()
        });
        for result in observe_100_at_once(&cache, &api).await {
            let error = result.expect_err("the refresh failed");
            assert_eq!(error.code.as_deref(), Some("ThrottlingException"));
        }
        assert_eq!(api.all.load(Ordering::SeqCst), 1);
        tokio::time::sleep(FAILURE_SHARED_FOR).await;
        assert!(
            cache
                .observe(&scope(), api.as_ref(), "dxcon-1")
                .await
                .is_err()
        );
        assert_eq!(
            api.all.load(Ordering::SeqCst),
            2,
            "tried again after a second"
        );
    }

    /// 100 resources observed at once cost one full refresh, not 100 Describe calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_share_one_refresh() {
        let cache = Arc::new(ObservationCache::new(Duration::from_secs(60)));
        let api = Arc::new(CountingApi {
            delay: Duration::from_millis(50),
            ..Default::default()
        });
        for found in observe_100_at_once(&cache, &api).await {
            assert!(current(found.unwrap()).is_some());
        }
        assert_eq!(api.all.load(Ordering::SeqCst), 1);
        assert_eq!(api.one.load(Ordering::SeqCst), 0);
        assert_eq!(cache.describe_counts(), (1, 0));
    }

    /// A mutation's answer is taken in place of a re-read where it carries the new state:
    /// keys by identity, an updated connection whole. A LAG answer without members, an
    /// answer with nothing, or a resource not held is read again.
    #[tokio::test]
    async fn mutation_answers_replace_rereads_where_they_carry_the_state() {
        use crate::observed::ObservedKey;
        let cache = ObservationCache::new(Duration::from_secs(60));
        let api = CountingApi::default();
        let read = |id: &'static str| {
            let (cache, api) = (&cache, &api);
            async move { current(cache.observe(&scope(), api, id).await.unwrap()).unwrap() }
        };
        read("dxcon-1").await;
        let key = |state: &str| ObservedKey {
            secret_arn: Some("arn:aws:secretsmanager:us-east-1:1:secret:k".into()),
            ckn: Some("AB".repeat(32)),
            state: Some(state.into()),
            start_on: None,
        };
        cache.take_answer(&scope(), "dxcon-1", Answer::Keys(vec![key("associating")]));
        cache.take_answer(&scope(), "dxcon-1", Answer::Keys(vec![key("associated")]));
        let held = read("dxcon-1").await;
        assert_eq!(
            held.keys,
            vec![key("associated")],
            "one key, its state updated"
        );
        assert_eq!(
            cache.managed_secret_arn(&scope(), &Ckn::parse("ckn", &"ab".repeat(32)).unwrap()),
            key("x").secret_arn,
            "the managed ARN is learned from the answer"
        );
        let mut updated = resource("dxcon-1");
        updated.encryption_mode = Some("should_encrypt".into());
        updated.port_encryption_status = Some("Encryption Up".into());
        cache.take_answer(&scope(), "dxcon-1", Answer::Resource(updated));
        let held = read("dxcon-1").await;
        assert_eq!(held.encryption_mode.as_deref(), Some("should_encrypt"));
        assert_eq!(
            held.port_encryption_status.as_deref(),
            Some("Encryption Up")
        );
        assert_eq!(counts(&api), (1, 0), "no Describe after the fill");

        cache.take_answer(&scope(), "dxcon-1", Answer::Nothing);
        read("dxcon-1").await;
        assert_eq!(counts(&api), (1, 1), "an answer with nothing: read again");
        let mut lag = resource("dxcon-2");
        lag.kind = ResourceType::Lag;
        cache
            .entry(&scope())
            .data()
            .resources
            .insert("dxcon-2".into(), lag.clone());
        cache.take_answer(&scope(), "dxcon-2", Answer::Resource(lag));
        read("dxcon-2").await;
        assert_eq!(
            counts(&api),
            (1, 2),
            "a LAG answer without members: read again"
        );
    }

    /// An answer taken while a whole refresh runs is newer than what the refresh read: the
    /// refresh does not put the older data back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_outlives_the_refresh_it_overtook() {
        let cache = Arc::new(ObservationCache::new(Duration::from_secs(60)));
        let api = Arc::new(CountingApi {
            delay: Duration::from_millis(200),
            ..Default::default()
        });
        cache
            .observe(&scope(), api.as_ref(), "dxcon-1")
            .await
            .unwrap();
        // As many marks as a refresh has pages: the next read of one is a whole refresh.
        for id in ["dxcon-2", "dxcon-3", "dxcon-4"] {
            cache.mark_changed(&scope(), id);
        }
        let refresh = {
            let (cache, api) = (cache.clone(), api.clone());
            tokio::spawn(async move { cache.observe(&scope(), api.as_ref(), "dxcon-2").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut updated = resource("dxcon-1");
        updated.encryption_mode = Some("must_encrypt".into());
        cache.take_answer(&scope(), "dxcon-1", Answer::Resource(updated));
        refresh.await.unwrap().unwrap();
        assert_eq!(api.all.load(Ordering::SeqCst), 2, "the refresh ran");
        let held = current(
            cache
                .observe(&scope(), api.as_ref(), "dxcon-1")
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(held.encryption_mode.as_deref(), Some("must_encrypt"));
    }

    /// A changed resource is re-read alone, once; others keep being served from the snapshot.
    #[tokio::test]
    async fn changed_resource_is_reread_alone() {
        let cache = ObservationCache::new(Duration::from_secs(60));
        let api = CountingApi::default();
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        cache.mark_changed(&scope(), "dxcon-1");
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
        assert!(current(cache.observe(&scope(), &api, "dxcon-999").await.unwrap()).is_none());
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
            cache.mark_changed(&scope(), &format!("dxcon-{i}"));
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
        cache.mark_changed(&scope(), "dxcon-7");
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

    /// Once the re-read budget is spent, marked resources are deferred rather than read, and
    /// the refresh made when it recovers serves every one of them.
    #[tokio::test]
    async fn rereads_beyond_the_budget_are_deferred_to_one_refresh() {
        // 15 calls per second; 100 connections: a refresh is 3 pages (connections, LAGs and
        // interconnects, one each).
        let cache = ObservationCache::with_reread_rate(Duration::from_secs(60), 15.0);
        let api = CountingApi::default();
        cache.observe(&scope(), &api, "dxcon-0").await.unwrap();
        let mut deferred = None;
        // The budget (15, less 3 for the first fill) pays for 4 rounds of refreshes.
        for round in 0..5 {
            for i in 0..50 {
                cache.mark_changed(&scope(), &format!("dxcon-{i}"));
            }
            match cache.observe(&scope(), &api, "dxcon-0").await.unwrap() {
                Observation::Current(..) => assert!(round < 4, "round {round} was not deferred"),
                Observation::Deferred(wait) => {
                    assert_eq!(round, 4, "deferred too early");
                    deferred = Some(wait);
                }
            }
            // Whatever the first reader got, the others of the round cost nothing more.
            for i in 1..50 {
                let o = cache.observe(&scope(), &api, &format!("dxcon-{i}")).await;
                if round < 4 {
                    assert!(current(o.unwrap()).is_some());
                }
            }
        }
        assert_eq!(counts(&api), (5, 0));
        assert_eq!(cache.deferrals(), 50);
        // 3 calls at 15 per second: about 0.2 s.
        let wait = deferred.expect("the fifth round is deferred");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        tokio::time::sleep(wait + Duration::from_millis(10)).await;
        for i in 0..50 {
            let o = cache.observe(&scope(), &api, &format!("dxcon-{i}")).await;
            assert!(current(o.unwrap()).is_some());
        }
        assert_eq!(counts(&api), (6, 0));
        // observe_now waits a deferral out instead of returning it.
        for round in 0..2 {
            for i in 1..=3 {
                cache.mark_changed(&scope(), &format!("dxcon-{i}"));
            }
            let (found, _) = cache.observe_now(&scope(), &api, "dxcon-1").await.unwrap();
            assert!(found.is_some(), "round {round}");
        }
        assert_eq!(counts(&api), (8, 0));
    }

    /// A waiting pass marks its resource only when no newer data has arrived since it read.
    #[tokio::test]
    async fn look_again_marks_only_data_that_is_not_newer() {
        let cache = ObservationCache::new(Duration::from_secs(60));
        let api = CountingApi::default();
        let Observation::Current(_, first) =
            cache.observe(&scope(), &api, "dxcon-1").await.unwrap()
        else {
            panic!("deferred")
        };
        // Unmarked: served from the snapshot.
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        assert_eq!(counts(&api), (1, 0));
        cache.look_again(&scope(), "dxcon-1", first);
        let Observation::Current(_, second) =
            cache.observe(&scope(), &api, "dxcon-1").await.unwrap()
        else {
            panic!("deferred")
        };
        assert_eq!(counts(&api), (1, 1));
        assert!(second > first);
        // A pass that planned on the older read must not force another.
        cache.look_again(&scope(), "dxcon-1", first);
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        assert_eq!(counts(&api), (1, 1));
        cache.look_again(&scope(), "dxcon-1", second);
        cache.observe(&scope(), &api, "dxcon-1").await.unwrap();
        assert_eq!(counts(&api), (1, 2));
    }

    /// A full refresh in flight (slow under latency and throttling) holds up only the
    /// readers that need it: a reader whose data is current is answered and a mutation is
    /// marked at once, and a mark made while the refresh runs outlives it, since the refresh
    /// may have read the resource before the mutation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_in_flight_holds_up_only_those_who_need_it() {
        let cache = Arc::new(ObservationCache::new(Duration::from_secs(60)));
        let api = Arc::new(CountingApi {
            delay: Duration::from_millis(600),
            ..Default::default()
        });
        cache
            .observe(&scope(), api.as_ref(), "dxcon-0")
            .await
            .unwrap();
        // Three marks: as many as a refresh has pages, so the next read of any is whole.
        cache.mark_changed(&scope(), "dxcon-1");
        cache.mark_changed(&scope(), "dxcon-2");
        cache.mark_changed(&scope(), "dxcon-4");
        let refresh = {
            let (cache, api) = (cache.clone(), api.clone());
            tokio::spawn(async move { cache.observe(&scope(), api.as_ref(), "dxcon-1").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let quick = Duration::from_millis(200);
        let answer = tokio::time::timeout(quick, cache.observe(&scope(), api.as_ref(), "dxcon-50"))
            .await
            .expect("a current reader does not wait for the refresh");
        assert!(current(answer.unwrap()).is_some());
        let marking = std::time::Instant::now();
        cache.mark_changed(&scope(), "dxcon-3");
        assert!(
            marking.elapsed() < quick,
            "marking does not wait for the refresh"
        );
        assert!(current(refresh.await.unwrap().unwrap()).is_some());
        assert_eq!(counts(&api), (2, 0));
        // dxcon-3 changed while the refresh ran: it is read again, alone.
        cache
            .observe(&scope(), api.as_ref(), "dxcon-3")
            .await
            .unwrap();
        assert_eq!(counts(&api), (2, 1));
        // dxcon-2 was marked before the refresh started: served from it.
        cache
            .observe(&scope(), api.as_ref(), "dxcon-2")
            .await
            .unwrap();
        assert_eq!(counts(&api), (2, 1));
    }
}
