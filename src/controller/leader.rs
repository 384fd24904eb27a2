//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never both act.
//!
//! A replica acquires the Lease when it is absent, released, expired or already its own,
//! writing with the Lease's resourceVersion so that of two racing replicas only one wins.
//!
//! Expiry is judged as client-go judges it, by *observed* time: a follower notes when it
//! last saw the Lease record change, on its own monotonic clock, and takes over only once
//! `leaseDurationSeconds` have passed since then without a change. The holder's
//! `renewTime` is compared with nothing, so replicas whose wall clocks disagree (by any
//! amount) never both act. The leader renews every `renew_every` and stops acting once it
//! has not renewed for `lease_duration - renew_every` (the renew deadline), before any
//! follower may take over; the process then exits, to be restarted as a follower.
//!
//! The renew deadline runs on a timer of its own: a renewal that hangs (a partitioned or
//! frozen API server keeps the connection open and answers nothing) cannot hold it back.
//! Every Lease request also has a timeout well under the renewal period, so a hung one is
//! given up and tried again while the deadline still allows.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the Pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// What a replica may do with the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's, released or unchanged for its whole duration: take it over.
    TakeOver,
    /// Someone else holds it and was seen renewing it recently: wait. Unless the record
    /// changes, it may be taken over after `expires_in`.
    Wait {
        holder: String,
        expires_in: Duration,
    },
}

/// The outcome of one attempt to hold the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds it.
    Held,
    /// Another replica does; unless it renews, it may be taken over after `expires_in`.
    NotHeld { expires_in: Duration },
}

/// What a follower last saw of the Lease: the record, and when (on its own monotonic
/// clock) it first saw that record.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    record: Option<String>,
    since: Option<Instant>,
}

/// The parts of a Lease whose change shows its holder is alive.
fn record_of(spec: &LeaseSpec) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        spec.holder_identity,
        spec.renew_time.as_ref().map(|t| t.0),
        spec.acquire_time.as_ref().map(|t| t.0),
        spec.lease_transitions,
        spec.lease_duration_seconds
    )
}

/// The pure decision, given the Lease spec (if the Lease exists), what this replica saw of
/// it before (updated here) and the monotonic time now.
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    observed: &mut Observed,
    now: Instant,
) -> Decision {
    let Some(spec) = spec else {
        *observed = Observed::default();
        return Decision::Create;
    };
    let record = record_of(spec);
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.since = Some(now);
    }
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    let seen = observed.since.unwrap_or(now);
    match duration.checked_sub(now.saturating_duration_since(seen)) {
        Some(expires_in) if !expires_in.is_zero() => Decision::Wait { holder, expires_in },
        _ => Decision::TakeOver,
    }
}

fn spec_for(cfg: &LeaseConfig, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs() as i32),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0)
                + i32::from(!ours && previous.is_some()),
        ),
        ..LeaseSpec::default()
    }
}

/// One attempt to hold the Lease. `observed` carries what this replica saw of the Lease
/// from one attempt to the next.
pub async fn try_hold(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> Result<Attempt, kube::Error> {
    // Another replica wrote the Lease between our read and our write: it holds it now.
    let raced = Attempt::NotHeld {
        expires_in: cfg.lease_duration,
    };
    // Written into the Lease for people and tools to read; never compared across replicas.
    let now = Timestamp::now();
    let current = api.get_opt(&cfg.name).await?;
    match decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &cfg.identity,
        observed,
        Instant::now(),
    ) {
        Decision::Wait { expires_in, .. } => Ok(Attempt::NotHeld { expires_in }),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec_for(cfg, None, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                // Another replica created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(raced),
                Err(e) => Err(e),
            }
        }
        Decision::Renew | Decision::TakeOver => {
            let mut lease = current.expect("decided on an existing Lease");
            lease.spec = Some(spec_for(cfg, lease.spec.as_ref(), now));
            // The resourceVersion from the read makes this a compare-and-swap.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(raced),
                Err(e) => Err(e),
            }
        }
    }
}

/// How long one Lease request may take: half a renewal period, so a hung request is given up
/// in time for another try before the renew deadline.
pub fn request_timeout(cfg: &LeaseConfig) -> Duration {
    cfg.renew_every / 2
}

/// [`try_hold`] within [`request_timeout`]; a request that timed out is an error like any other.
async fn try_hold_bounded(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> Result<Attempt, String> {
    match tokio::time::timeout(request_timeout(cfg), try_hold(api, cfg, observed)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer from the API server within {:?}",
            request_timeout(cfg)
        )),
    }
}

/// How often a follower looks at the Lease: often enough to see a renewal soon after it
/// happens, since its expiry is timed from that sight. A follower also looks at the moment
/// the Lease expires as it observed it, so it takes over at most this long after the Lease
/// could be taken over: a crashed leader's resources wait at most the Lease duration plus
/// this. One GET a second per standby replica.
fn retry_period(cfg: &LeaseConfig) -> Duration {
    cfg.renew_every.min(Duration::from_secs(1))
}

/// Waits until this replica holds the Lease; returns when the write that took it was sent,
/// the moment its renew deadline counts from (see [`hold`]).
pub async fn acquire(client: Client, cfg: &LeaseConfig) -> tokio::time::Instant {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut waiting_logged = false;
    let mut observed = Observed::default();
    loop {
        let mut next = retry_period(cfg);
        let sent = tokio::time::Instant::now();
        match try_hold_bounded(&api, cfg, &mut observed).await {
            Ok(Attempt::Held) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
                return sent;
            }
            Ok(Attempt::NotHeld { expires_in }) => {
                if !waiting_logged {
                    tracing::info!(lease = %cfg.name, "another replica is leader; standing by");
                    waiting_logged = true;
                }
                next = next.min(expires_in);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read or write the leader Lease"),
        }
        tokio::time::sleep(next).await;
    }
}

/// How long the leader may go without a renewal before it stops acting: one renewal
/// period short of the Lease, so it stops before any follower may take over.
pub fn renew_deadline(cfg: &LeaseConfig) -> Duration {
    cfg.lease_duration.saturating_sub(cfg.renew_every)
}

/// Renews the Lease until it is lost or cannot be renewed within the renew deadline; then
/// returns, at the deadline at the latest, whatever a request is doing. `held_since` is when
/// the write that took (or last renewed) the Lease was sent.
///
/// The deadline counts from when a successful write was *sent*: followers time expiry from
/// when they see the record change, which is no earlier than that, so this replica stops
/// before any of them may take over even if the answer reached it late.
pub async fn hold(client: Client, cfg: &LeaseConfig, held_since: tokio::time::Instant) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    hold_on(&api, cfg, held_since).await;
}

async fn hold_on(api: &Api<Lease>, cfg: &LeaseConfig, held_since: tokio::time::Instant) {
    let mut deadline = held_since + renew_deadline(cfg);
    let mut next = held_since + cfg.renew_every;
    let mut observed = Observed::default();
    loop {
        let renewal = async {
            tokio::time::sleep_until(next).await;
            let sent = tokio::time::Instant::now();
            (sent, try_hold_bounded(api, cfg, &mut observed).await)
        };
        let Ok((sent, result)) = tokio::time::timeout_at(deadline, renewal).await else {
            tracing::error!(
                lease = %cfg.name,
                deadline = ?renew_deadline(cfg),
                "could not renew the leader Lease within its renew deadline; stopping before another replica may take over"
            );
            return;
        };
        match result {
            Ok(Attempt::Held) => {
                deadline = sent + renew_deadline(cfg);
                next = sent + cfg.renew_every;
            }
            Ok(Attempt::NotHeld { .. }) => {
                tracing::error!(lease = %cfg.name, "leadership lost to another replica");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the leader Lease; trying again");
                next = tokio::time::Instant::now() + retry_period(cfg);
            }
        }
    }
}

/// Gives the Lease up on shutdown so another replica takes over at once.
/// Bounded by [`request_timeout`] per request: an API server that does not answer leaves the
/// Lease to expire.
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    if let Ok(Ok(Some(mut lease))) =
        tokio::time::timeout(request_timeout(cfg), api.get_opt(&cfg.name)).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
    {
        spec.holder_identity = None;
        let _ = tokio::time::timeout(
            request_timeout(cfg),
            api.replace(&cfg.name, &PostParams::default(), &lease),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    fn lease(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A follower waits while it sees the holder renew, and takes over once the record has
    /// not changed for the Lease's duration on its own clock; a released Lease at once.
    /// While it waits it knows how long is left, so it can look again at that moment.
    #[test]
    fn follower_times_the_lease_from_what_it_observed() {
        let t0 = Instant::now();
        let wall = Timestamp::now();
        let mut seen = Observed::default();
        assert_eq!(decide(None, "b", &mut seen, t0), Decision::Create);
        let renewed = lease("a", wall);
        let wait = |left| Decision::Wait {
            holder: "a".into(),
            expires_in: secs(left),
        };
        assert_eq!(decide(Some(&renewed), "b", &mut seen, t0), wait(15));
        assert_eq!(
            decide(Some(&renewed), "b", &mut seen, t0 + secs(14)),
            wait(1)
        );
        // Renewed again at 10 s: the follower times from its sight of that at 14 s.
        let again = lease("a", wall + SignedDuration::from_secs(10));
        assert_eq!(
            decide(Some(&again), "b", &mut seen, t0 + secs(14)),
            wait(15)
        );
        assert_eq!(decide(Some(&again), "b", &mut seen, t0 + secs(28)), wait(1));
        assert_eq!(
            decide(Some(&again), "b", &mut seen, t0 + secs(29)),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease("b", wall)), "b", &mut seen, t0),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease("", wall)), "b", &mut Observed::default(), t0),
            Decision::TakeOver
        );
    }

    /// Wall clocks that disagree do not matter: a holder whose clock runs an hour behind is
    /// not taken over while it renews (the old rule would have at once: two leaders), and
    /// one whose clock runs an hour ahead is taken over once it stops renewing (the old
    /// rule would have waited an hour).
    #[test]
    fn skewed_clocks_neither_split_nor_stall_the_lease() {
        let t0 = Instant::now();
        let wall = Timestamp::now();
        let hour = SignedDuration::from_hours(1);
        let mut seen = Observed::default();
        for i in 0..10u64 {
            let behind = lease("a", wall - hour + SignedDuration::from_secs(5 * i as i64));
            assert_eq!(
                decide(Some(&behind), "b", &mut seen, t0 + secs(5 * i)),
                Decision::Wait {
                    holder: "a".into(),
                    expires_in: secs(15)
                },
                "renewal {i}"
            );
        }
        let ahead = lease("a", wall + hour);
        let mut seen = Observed::default();
        assert!(matches!(
            decide(Some(&ahead), "b", &mut seen, t0),
            Decision::Wait { .. }
        ));
        assert_eq!(
            decide(Some(&ahead), "b", &mut seen, t0 + secs(15)),
            Decision::TakeOver
        );
    }

    /// The leader stops acting a renewal period before a follower may take over.
    #[test]
    fn the_renew_deadline_comes_before_expiry() {
        let cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "b".into(),
            lease_duration: secs(15),
            renew_every: secs(5),
        };
        assert_eq!(renew_deadline(&cfg), secs(10));
        assert!(retry_period(&cfg) <= secs(1));
    }

    /// Taking over counts a transition and resets the acquire time; renewing keeps both.
    #[test]
    fn transitions_are_counted() {
        let now = Timestamp::now();
        let cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "b".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let mut old = lease("a", now - SignedDuration::from_secs(20));
        old.lease_transitions = Some(2);
        let taken = spec_for(&cfg, Some(&old), now);
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let renewed = spec_for(&cfg, Some(&taken), now + SignedDuration::from_secs(5));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
    }
}
