//! The emulated account: connections, LAGs, MACsec keys, Direct Connect-managed secrets and
//! customer routers, with the rules of docs/domain.md. No HTTP here: each operation takes the
//! request's JSON and returns the response JSON or an AWS-shaped error.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use crate::seed::{AfterLeavingLag, Delays, Generate, Seed, SeedConnection, SeedKey, SeedLag};

/// An error as AWS returns it: `__type` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub code: &'static str,
    pub message: String,
}

pub const CLIENT_EXCEPTION: &str = "DirectConnectClientException";

fn client(message: impl Into<String>) -> AwsError {
    AwsError {
        code: CLIENT_EXCEPTION,
        message: message.into(),
    }
}

pub type OpResult = Result<Value, AwsError>;

pub const MAX_KEYS: usize = 3;
const VALID_MODES: [&str; 3] = ["no_encrypt", "should_encrypt", "must_encrypt"];

#[derive(Debug, Clone)]
pub struct Key {
    pub ckn: String,
    pub secret_arn: String,
    pub state: KeyPhase,
    pub start_on: String,
    /// When the pending transition completes.
    pub due: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPhase {
    Associating,
    Associated,
    Disassociating,
}

impl KeyPhase {
    fn as_str(self) -> &'static str {
        match self {
            KeyPhase::Associating => "associating",
            KeyPhase::Associated => "associated",
            KeyPhase::Disassociating => "disassociating",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Connection {
    pub id: String,
    pub name: String,
    pub location: String,
    pub bandwidth: String,
    pub state: String,
    pub mac_sec_capable: bool,
    pub encryption_mode: Option<String>,
    pub lag_id: Option<String>,
    /// Own keys; a LAG member reports its LAG's keys instead.
    pub keys: Vec<Key>,
    /// The AWS device (Direct Connect endpoint) the port is on.
    pub device: String,
    /// A Partner's interconnect: listed by DescribeInterconnects, not DescribeConnections.
    pub interconnect: bool,
    /// Owned by a Direct Connect Partner: leaving a LAG turns it into an interconnect.
    pub partner: bool,
    /// The end of an interruption (joining or leaving a LAG): `pending` until then.
    pub back_at: Option<Instant>,
}

impl Connection {
    /// A dedicated connection with no keys, on the default device of its location.
    fn new(id: &str, location: &str, bandwidth: &str, state: &str, macsec: bool) -> Connection {
        Connection {
            id: id.to_string(),
            name: id.to_string(),
            location: location.to_string(),
            bandwidth: bandwidth.to_string(),
            state: state.to_string(),
            mac_sec_capable: macsec,
            encryption_mode: macsec.then(|| "no_encrypt".to_string()),
            lag_id: None,
            keys: Vec::new(),
            device: device_at(location),
            interconnect: false,
            partner: false,
            back_at: None,
        }
    }

    /// At most this many members in a LAG of this bandwidth.
    fn lag_capacity(bandwidth: &str) -> usize {
        if matches!(bandwidth, "100Gbps" | "400Gbps") {
            2
        } else {
            4
        }
    }
}

/// The AWS device dx-sim puts ports at `location` on, unless the seed names one.
fn device_at(location: &str) -> String {
    format!("{location}-abcdefgh")
}

#[derive(Debug, Clone)]
pub struct Lag {
    pub id: String,
    pub name: String,
    pub location: String,
    pub bandwidth: String,
    pub state: String,
    pub mac_sec_capable: bool,
    pub encryption_mode: Option<String>,
    pub keys: Vec<Key>,
    /// The AWS device (Direct Connect endpoint): members must be on it.
    pub device: String,
    /// Operational members below which DisassociateConnectionFromLag refuses (but for the
    /// last member).
    pub minimum_links: u32,
}

#[derive(Debug, Clone)]
pub struct Secret {
    pub arn: String,
    pub name: String,
    pub secret_string: String,
    /// `directconnect` for Direct Connect-managed secrets.
    pub owning_service: Option<String>,
    pub created: jiff::Timestamp,
    /// Values put since creation (PutSecretValue): each is a new AWSCURRENT version.
    pub puts: u64,
    /// The ClientRequestToken of the last PutSecretValue: the same token again makes no new
    /// version.
    pub last_token: Option<String>,
    /// False for a secret made by CreateSecret without a value: it has no version (no
    /// `AWSCURRENT`) until PutSecretValue gives it one.
    pub valued: bool,
}

#[derive(Debug, Clone)]
pub struct Location {
    pub code: String,
    pub name: String,
    pub port_speeds: Vec<String>,
    pub mac_sec_port_speeds: Vec<String>,
}

/// The whole emulated account of one region.
#[derive(Debug, Clone)]
pub struct Account {
    pub account: String,
    pub region: String,
    pub delays: Delays,
    pub connections: BTreeMap<String, Connection>,
    pub lags: BTreeMap<String, Lag>,
    pub secrets: BTreeMap<String, Secret>,
    pub locations: Vec<Location>,
    /// Port (connection ID) → CKNs configured on the customer router.
    pub routers: BTreeMap<String, BTreeSet<String>>,
    /// Port (connection ID) → its down and clear-text time so far.
    pub outages: BTreeMap<String, Outage>,
    /// Connection or LAG ID → its tags.
    pub tags: BTreeMap<String, BTreeMap<String, String>>,
    /// What a connection has after leaving a LAG.
    pub after_leaving_lag: AfterLeavingLag,
}

/// What a port's traffic is doing, as far as MACsec decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Flowing as the mode allows (encrypted, or in clear text under no_encrypt).
    Flowing,
    /// Dropped: must_encrypt and no associated key that the router holds too.
    Dropped,
    /// In clear text under should_encrypt on a port that had been Encryption Up.
    ClearText,
}

/// Down time and clear-text time of one port, integrated over time.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    pub down: Duration,
    pub clear_text: Duration,
    /// The port has been Encryption Up at some point (clear text after that is a loss).
    pub ever_up: bool,
    /// The traffic as last settled, and since when.
    pub last: Option<(Instant, Traffic)>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn now_string() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .expect("the current second is a valid timestamp")
        .to_string()
}

fn random_suffix(n: usize) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

fn random_id(prefix: &str) -> String {
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..8)
        .map(|_| LOWER[rng.random_range(0..LOWER.len())] as char)
        .collect();
    format!("{prefix}-{tail}")
}

fn str_field<'a>(req: &'a Value, field: &str) -> Option<&'a str> {
    req.get(field).and_then(Value::as_str)
}

fn required<'a>(req: &'a Value, field: &str) -> Result<&'a str, AwsError> {
    str_field(req, field).ok_or_else(|| client(format!("{field} is required")))
}

impl Account {
    pub fn from_seed(seed: &Seed) -> Result<Account, String> {
        let mut acc = Account {
            account: seed.account.clone(),
            region: seed.region.clone(),
            delays: seed.delays.clone(),
            connections: BTreeMap::new(),
            lags: BTreeMap::new(),
            secrets: BTreeMap::new(),
            locations: seed
                .locations
                .iter()
                .map(|l| Location {
                    code: l.code.clone(),
                    name: l.name.clone().unwrap_or_else(|| l.code.clone()),
                    port_speeds: l.port_speeds.clone(),
                    mac_sec_port_speeds: l.mac_sec_port_speeds.clone(),
                })
                .collect(),
            routers: BTreeMap::new(),
            outages: BTreeMap::new(),
            tags: BTreeMap::new(),
            after_leaving_lag: seed.after_leaving_lag,
        };
        for c in &seed.connections {
            acc.seed_port(c, false)?;
        }
        for c in &seed.interconnects {
            acc.seed_port(c, true)?;
        }
        for l in &seed.lags {
            acc.seed_lag(l)?;
        }
        if let Some(g) = &seed.generate {
            acc.generate(g);
        }
        Ok(acc)
    }

    /// A seeded LAG: its members (which drop their own keys and take the LAG's), keys and
    /// tags.
    fn seed_lag(&mut self, l: &SeedLag) -> Result<(), String> {
        if !l.id.starts_with("dxlag-") {
            return Err(format!("seed LAG {}: IDs start with dxlag-", l.id));
        }
        for m in &l.members {
            let conn = self.connections.get_mut(m).ok_or_else(|| {
                format!("seed LAG {}: member {m} is not a seeded connection", l.id)
            })?;
            if conn.mac_sec_capable != l.mac_sec_capable {
                return Err(format!(
                    "Connection {m} and lag should be requested MacSec at the same time"
                ));
            }
            conn.lag_id = Some(l.id.clone());
            // A connection joining a LAG drops its own keys and takes the LAG's.
            conn.keys.clear();
        }
        let keys = self.seed_keys(&l.keys, &l.id)?;
        if !l.tags.is_empty() {
            self.tags.insert(l.id.clone(), l.tags.clone());
        }
        self.lags.insert(
            l.id.clone(),
            Lag {
                id: l.id.clone(),
                name: l.name.clone().unwrap_or_else(|| l.id.clone()),
                location: l.location.clone(),
                bandwidth: l.bandwidth.clone(),
                state: l.state.clone(),
                mac_sec_capable: l.mac_sec_capable,
                encryption_mode: l
                    .encryption_mode
                    .clone()
                    .or_else(|| l.mac_sec_capable.then(|| "no_encrypt".to_string())),
                keys,
                device: l.device.clone().unwrap_or_else(|| device_at(&l.location)),
                minimum_links: l.minimum_links,
            },
        );
        Ok(())
    }

    /// The connections and LAGs `generate` asks for, all available and MACsec capable, each
    /// with a router holding `routerCkns`.
    fn generate(&mut self, g: &Generate) {
        let mode = Some(g.encryption_mode.clone());
        let router: BTreeSet<String> = g
            .router_ckns
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        for i in 0..g.connections {
            let id = format!("dxcon-gen{i:05}");
            let mut c = Connection::new(&id, "EqDC2", "10Gbps", "available", true);
            c.encryption_mode = mode.clone();
            self.connections.insert(id.clone(), c);
            self.routers.insert(id, router.clone());
        }
        for i in 0..g.lags {
            let lag_id = format!("dxlag-gen{i:05}");
            for m in 0..g.members_per_lag {
                let id = format!("dxcon-gen{i:05}m{m}");
                let mut c = Connection::new(&id, "EqDC2", "100Gbps", "available", true);
                c.encryption_mode = mode.clone();
                c.lag_id = Some(lag_id.clone());
                self.connections.insert(id.clone(), c);
                self.routers.insert(id, router.clone());
            }
            self.lags.insert(
                lag_id.clone(),
                Lag {
                    id: lag_id.clone(),
                    name: lag_id,
                    location: "EqDC2".into(),
                    bandwidth: "100Gbps".into(),
                    state: "available".into(),
                    mac_sec_capable: true,
                    encryption_mode: mode.clone(),
                    keys: Vec::new(),
                    device: device_at("EqDC2"),
                    minimum_links: 0,
                },
            );
        }
    }

    /// A seeded connection or interconnect, with its keys, tags and router.
    fn seed_port(&mut self, c: &SeedConnection, interconnect: bool) -> Result<(), String> {
        if !c.id.starts_with("dxcon-") {
            return Err(format!("seed connection {}: IDs start with dxcon-", c.id));
        }
        let keys = self.seed_keys(&c.keys, &c.id)?;
        if !c.tags.is_empty() {
            self.tags.insert(c.id.clone(), c.tags.clone());
        }
        let mut port = Connection::new(
            &c.id,
            &c.location,
            &c.bandwidth,
            &c.state,
            c.mac_sec_capable,
        );
        port.name = c.name.clone().unwrap_or_else(|| c.id.clone());
        if c.encryption_mode.is_some() {
            port.encryption_mode = c.encryption_mode.clone();
        }
        port.keys = keys;
        if let Some(device) = &c.device {
            port.device = device.clone();
        }
        port.interconnect = interconnect;
        port.partner = interconnect || c.partner;
        self.connections.insert(c.id.clone(), port);
        self.routers.insert(
            c.id.clone(),
            c.router.iter().map(|k| k.to_ascii_lowercase()).collect(),
        );
        Ok(())
    }

    fn seed_keys(&mut self, keys: &[SeedKey], owner: &str) -> Result<Vec<Key>, String> {
        keys.iter()
            .map(|k| {
                if !is_hex64(&k.ckn) || !is_hex64(&k.cak) {
                    return Err(format!(
                        "seed keys of {owner}: CKN and CAK are 64 hex characters"
                    ));
                }
                let arn = self.managed_secret_for(&k.ckn, &k.cak);
                Ok(Key {
                    ckn: k.ckn.to_ascii_lowercase(),
                    secret_arn: arn,
                    state: match k.state.as_deref() {
                        Some("associating") => KeyPhase::Associating,
                        _ => KeyPhase::Associated,
                    },
                    start_on: now_string(),
                    due: Instant::now(),
                })
            })
            .collect()
    }

    /// The Direct Connect-managed secret of a CKN, created on first use (one per CKN).
    fn managed_secret_for(&mut self, ckn: &str, cak: &str) -> String {
        let ckn = ckn.to_ascii_lowercase();
        let name = format!("directconnect!prod/{}/directconnect/{ckn}", self.region);
        if let Some(s) = self.secrets.values().find(|s| s.name == name) {
            return s.arn.clone();
        }
        let arn = format!(
            "arn:aws:secretsmanager:{}:{}:secret:{name}-{}",
            self.region,
            self.account,
            random_suffix(6)
        );
        self.secrets.insert(
            arn.clone(),
            Secret {
                arn: arn.clone(),
                name,
                secret_string: json!({"ckn": ckn, "cak": cak}).to_string(),
                owning_service: Some("directconnect".into()),
                created: jiff::Timestamp::now(),
                puts: 0,
                last_token: None,
                valued: true,
            },
        );
        arn
    }

    /// Applies every asynchronous transition that is due.
    pub fn tick(&mut self, now: Instant) {
        for c in self.connections.values_mut() {
            if c.back_at.is_some_and(|at| at <= now) {
                c.back_at = None;
                c.state = "available".into();
            }
        }
        let mut emptied_lags = Vec::new();
        let mut emptied_conns = Vec::new();
        for (id, keys) in self
            .lags
            .iter_mut()
            .map(|(id, l)| (id.clone(), &mut l.keys))
        {
            if advance(keys, now) {
                emptied_lags.push(id);
            }
        }
        for (id, keys) in self
            .connections
            .iter_mut()
            .map(|(id, c)| (id.clone(), &mut c.keys))
        {
            if advance(keys, now) {
                emptied_conns.push(id);
            }
        }
        // AWS's own rule: the last key removed under must_encrypt turns the mode to
        // should_encrypt.
        for id in emptied_lags {
            if let Some(l) = self.lags.get_mut(&id)
                && l.encryption_mode.as_deref() == Some("must_encrypt")
            {
                l.encryption_mode = Some("should_encrypt".into());
            }
        }
        for id in emptied_conns {
            if let Some(c) = self.connections.get_mut(&id)
                && c.encryption_mode.as_deref() == Some("must_encrypt")
            {
                c.encryption_mode = Some("should_encrypt".into());
            }
        }
        self.settle(now);
    }

    /// Integrates each port's down and clear-text time up to `now` under the traffic it had
    /// since the last settlement, then records its traffic now. Called after every
    /// transition and change, so time is counted to within the time between API calls (a
    /// key transition becomes visible at the next call, as it does on AWS).
    pub fn settle(&mut self, now: Instant) {
        let traffic: Vec<(String, Traffic, bool)> = self
            .connections
            .values()
            .filter(|c| c.mac_sec_capable)
            .map(|c| {
                let up = self.port_up(c) == Some(true);
                let (mode, _) = self.effective(c);
                (c.id.clone(), mode, up, c.state == "available")
            })
            .map(|(id, mode, up, available)| {
                let ever_up = up || self.outages.get(&id).is_some_and(|o| o.ever_up);
                let t = match mode.as_deref() {
                    Some("must_encrypt") if available && !up => Traffic::Dropped,
                    Some("should_encrypt") if available && !up && ever_up => Traffic::ClearText,
                    _ => Traffic::Flowing,
                };
                (id, t, up)
            })
            .collect();
        for (id, t, up) in traffic {
            let o = self.outages.entry(id).or_default();
            if let Some((since, before)) = o.last {
                let spent = now.saturating_duration_since(since);
                match before {
                    Traffic::Dropped => o.down += spent,
                    Traffic::ClearText => o.clear_text += spent,
                    Traffic::Flowing => {}
                }
            }
            o.ever_up |= up;
            o.last = Some((now, t));
        }
    }

    /// Every port's down and clear-text seconds, and the totals.
    pub fn outages_json(&self) -> Value {
        let ports: serde_json::Map<String, Value> = self
            .outages
            .iter()
            .map(|(id, o)| {
                (
                    id.clone(),
                    json!({"downSeconds": o.down.as_secs_f64(), "clearTextSeconds": o.clear_text.as_secs_f64()}),
                )
            })
            .collect();
        let total = |f: fn(&Outage) -> Duration| {
            self.outages.values().map(f).sum::<Duration>().as_secs_f64()
        };
        json!({
            "downSeconds": total(|o| o.down),
            "clearTextSeconds": total(|o| o.clear_text),
            "ports": ports,
        })
    }

    /// Keys and mode a connection reports: its own, or its LAG's for a member.
    fn effective(&self, c: &Connection) -> (Option<String>, Vec<Key>) {
        match c.lag_id.as_ref().and_then(|l| self.lags.get(l)) {
            Some(lag) => (lag.encryption_mode.clone(), lag.keys.clone()),
            None => (c.encryption_mode.clone(), c.keys.clone()),
        }
    }

    /// `Encryption Up` when MACsec is allowed by the mode and some associated key's CKN is
    /// on the customer router of this port.
    /// Whether the port is `Encryption Up`: available, encrypting, and a key associated that
    /// the router holds too. `None` for a port without MACsec.
    fn port_up(&self, c: &Connection) -> Option<bool> {
        if !c.mac_sec_capable {
            return None;
        }
        let (mode, keys) = self.effective(c);
        let router = self.routers.get(&c.id);
        Some(
            c.state == "available"
                && matches!(mode.as_deref(), Some("should_encrypt" | "must_encrypt"))
                && keys.iter().any(|k| {
                    k.state == KeyPhase::Associated && router.is_some_and(|r| r.contains(&k.ckn))
                }),
        )
    }

    /// The `portEncryptionStatus` AWS would report.
    pub fn port_status(&self, c: &Connection) -> Option<&'static str> {
        self.port_up(c).map(|up| {
            if up {
                "Encryption Up"
            } else {
                "Encryption Down"
            }
        })
    }

    fn keys_json(keys: &[Key]) -> Value {
        Value::Array(
            keys.iter()
                .map(|k| {
                    json!({
                        "secretARN": k.secret_arn,
                        "ckn": k.ckn,
                        "state": k.state.as_str(),
                        "startOn": k.start_on,
                    })
                })
                .collect(),
        )
    }

    pub fn connection_json(&self, c: &Connection) -> Value {
        let mut v = json!({
            "ownerAccount": self.account,
            "connectionId": c.id,
            "connectionName": c.name,
            "connectionState": c.state,
            "region": self.region,
            "location": c.location,
            "bandwidth": c.bandwidth,
            "awsDevice": c.device,
            "awsDeviceV2": c.device,
            "awsLogicalDeviceId": format!("{}-1a2b3c4d", c.location),
            "jumboFrameCapable": true,
            "hasLogicalRedundancy": "unknown",
            "tags": self.tags_json(&c.id),
            "macSecCapable": c.mac_sec_capable,
        });
        if c.partner {
            v["partnerName"] = json!("dx-sim partner");
        }
        self.port_fields(c, &mut v);
        v
    }

    /// What a connection and an interconnect answer alike: the LAG, and the MACsec fields
    /// (its LAG's keys and mode for a member).
    fn port_fields(&self, c: &Connection, v: &mut Value) {
        let (mode, keys) = self.effective(c);
        let obj = v.as_object_mut().expect("a JSON object");
        if let Some(lag) = &c.lag_id {
            obj.insert("lagId".into(), json!(lag));
        }
        if c.mac_sec_capable {
            obj.insert("encryptionMode".into(), json!(mode));
            obj.insert("portEncryptionStatus".into(), json!(self.port_status(c)));
            obj.insert("macSecKeys".into(), Self::keys_json(&keys));
        }
    }

    /// An interconnect as DescribeInterconnects shows it: the `Interconnect` shape, which
    /// has no `ownerAccount`.
    pub fn interconnect_json(&self, c: &Connection) -> Value {
        let mut v = json!({
            "interconnectId": c.id,
            "interconnectName": c.name,
            "interconnectState": c.state,
            "region": self.region,
            "location": c.location,
            "bandwidth": c.bandwidth,
            "awsDevice": c.device,
            "awsDeviceV2": c.device,
            "awsLogicalDeviceId": format!("{}-1a2b3c4d", c.location),
            "jumboFrameCapable": true,
            "hasLogicalRedundancy": "unknown",
            "tags": self.tags_json(&c.id),
            "macSecCapable": c.mac_sec_capable,
        });
        self.port_fields(c, &mut v);
        v
    }

    pub fn lag_json(&self, l: &Lag) -> Value {
        let members: Vec<Value> = self
            .connections
            .values()
            .filter(|c| c.lag_id.as_deref() == Some(l.id.as_str()))
            .map(|c| self.connection_json(c))
            .collect();
        let mut v = json!({
            "connectionsBandwidth": l.bandwidth,
            "numberOfConnections": members.len(),
            "lagId": l.id,
            "ownerAccount": self.account,
            "lagName": l.name,
            "lagState": l.state,
            "location": l.location,
            "region": self.region,
            "minimumLinks": l.minimum_links,
            "awsDevice": l.device,
            "awsDeviceV2": l.device,
            "awsLogicalDeviceId": format!("{}-1a2b3c4d", l.location),
            "connections": members,
            "allowsHostedConnections": false,
            "jumboFrameCapable": true,
            "hasLogicalRedundancy": "unknown",
            "tags": self.tags_json(&l.id),
            "macSecCapable": l.mac_sec_capable,
        });
        if l.mac_sec_capable {
            let obj = v.as_object_mut().expect("a JSON object");
            obj.insert("encryptionMode".into(), json!(l.encryption_mode));
            obj.insert("macSecKeys".into(), Self::keys_json(&l.keys));
        }
        v
    }

    fn page(req: &Value, total: usize) -> Result<(usize, usize), AwsError> {
        let max = match req.get("maxResults") {
            None | Some(Value::Null) => total.max(1),
            Some(v) => {
                let n = v.as_i64().unwrap_or(0);
                if !(1..=100).contains(&n) {
                    return Err(client(format!(
                        "Invalid maxResults {n}: it must be between 1 and 100"
                    )));
                }
                n as usize
            }
        };
        let start = match str_field(req, "nextToken") {
            None => 0,
            Some(tok) => tok
                .strip_prefix("dxsim-page-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n <= total)
                .ok_or_else(|| client("The nextToken is invalid"))?,
        };
        Ok((start, (start + max).min(total)))
    }

    /// The page of `all` that `maxResults`/`nextToken` ask for, under `field`, with the
    /// token of the next page when there is one.
    fn paged<T>(req: &Value, field: &str, all: &[T], to_json: impl Fn(&T) -> Value) -> OpResult {
        let (start, end) = Self::page(req, all.len())?;
        let items: Vec<Value> = all[start..end].iter().map(to_json).collect();
        let mut out = json!({ field: items });
        if let t @ Value::String(_) = Self::next_token(end, all.len()) {
            out["nextToken"] = t;
        }
        Ok(out)
    }

    fn next_token(end: usize, total: usize) -> Value {
        if end < total {
            json!(format!("dxsim-page-{end}"))
        } else {
            Value::Null
        }
    }

    fn tags_json(&self, id: &str) -> Value {
        Value::Array(
            self.tags
                .get(id)
                .into_iter()
                .flatten()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect(),
        )
    }

    /// The connection or LAG ID an ARN names, if it is one of this account and region.
    fn resource_of_arn(&self, arn: &str) -> Result<String, AwsError> {
        let prefix = format!("arn:aws:directconnect:{}:{}:", self.region, self.account);
        let id = arn
            .strip_prefix(&prefix)
            .and_then(|rest| {
                rest.strip_prefix("dxcon/")
                    .or_else(|| rest.strip_prefix("dxlag/"))
            })
            .ok_or_else(|| client(format!("Invalid resource ARN {arn}")))?;
        if self.connections.contains_key(id) || self.lags.contains_key(id) {
            Ok(id.to_string())
        } else {
            Err(client(format!("Resource {arn} does not exist")))
        }
    }

    /// TagResource: adds or replaces tags (at most 50 per resource; keys not `aws:`).
    pub fn tag_resource(&mut self, req: &Value) -> OpResult {
        let id = self.resource_of_arn(required(req, "resourceArn")?)?;
        let new: Vec<(String, String)> = req
            .get("tags")
            .and_then(Value::as_array)
            .ok_or_else(|| client("tags is required"))?
            .iter()
            .map(|t| {
                let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
                let value = t.get("value").and_then(Value::as_str).unwrap_or_default();
                if key.is_empty() || key.len() > 128 || key.starts_with("aws:") || value.len() > 256
                {
                    return Err(client(format!("Invalid tag key or value: {key}")));
                }
                Ok((key.to_string(), value.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let tags = self.tags.entry(id).or_default();
        tags.extend(new);
        if tags.len() > 50 {
            return Err(client("A resource can have at most 50 tags"));
        }
        Ok(json!({}))
    }

    /// UntagResource: removes the tags with these keys (absent keys are no error).
    pub fn untag_resource(&mut self, req: &Value) -> OpResult {
        let id = self.resource_of_arn(required(req, "resourceArn")?)?;
        let keys: Vec<&str> = req
            .get("tagKeys")
            .and_then(Value::as_array)
            .ok_or_else(|| client("tagKeys is required"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if let Some(tags) = self.tags.get_mut(&id) {
            tags.retain(|k, _| !keys.contains(&k.as_str()));
        }
        Ok(json!({}))
    }

    /// DescribeTags: the tags of up to 20 resources.
    pub fn describe_tags(&self, req: &Value) -> OpResult {
        let arns: Vec<&str> = req
            .get("resourceArns")
            .and_then(Value::as_array)
            .ok_or_else(|| client("resourceArns is required"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if arns.len() > 20 {
            return Err(client("At most 20 resourceArns per call"));
        }
        let out: Vec<Value> = arns
            .iter()
            .map(|arn| {
                let id = self.resource_of_arn(arn)?;
                Ok(json!({"resourceArn": arn, "tags": self.tags_json(&id)}))
            })
            .collect::<Result<_, AwsError>>()?;
        Ok(json!({"resourceTags": out}))
    }

    pub fn describe_connections(&self, req: &Value) -> OpResult {
        if let Some(id) = str_field(req, "connectionId") {
            let c = self.connection(id)?;
            if c.interconnect {
                return Err(client(format!("Could not find Connection with ID {id}")));
            }
            return Ok(json!({"connections": [self.connection_json(c)]}));
        }
        let all: Vec<&Connection> = self
            .connections
            .values()
            .filter(|c| !c.interconnect)
            .collect();
        Self::paged(req, "connections", &all, |c| self.connection_json(c))
    }

    /// DescribeInterconnects: one by `interconnectId`, or all, paginated like the others.
    pub fn describe_interconnects(&self, req: &Value) -> OpResult {
        if let Some(id) = str_field(req, "interconnectId") {
            let c = self
                .connections
                .get(id)
                .filter(|c| c.interconnect)
                .ok_or_else(|| client(format!("Could not find Interconnect with ID {id}")))?;
            return Ok(json!({"interconnects": [self.interconnect_json(c)]}));
        }
        let all: Vec<&Connection> = self
            .connections
            .values()
            .filter(|c| c.interconnect)
            .collect();
        Self::paged(req, "interconnects", &all, |c| self.interconnect_json(c))
    }

    pub fn describe_lags(&self, req: &Value) -> OpResult {
        if let Some(id) = str_field(req, "lagId") {
            let l = self.lag(id)?;
            return Ok(json!({"lags": [self.lag_json(l)]}));
        }
        let all: Vec<&Lag> = self.lags.values().collect();
        Self::paged(req, "lags", &all, |l| self.lag_json(l))
    }

    pub fn describe_locations(&self) -> OpResult {
        let items: Vec<Value> = self
            .locations
            .iter()
            .map(|l| {
                json!({
                    "locationCode": l.code,
                    "locationName": l.name,
                    "region": self.region,
                    "availablePortSpeeds": l.port_speeds,
                    "availableProviders": [],
                    "availableMacSecPortSpeeds": l.mac_sec_port_speeds,
                })
            })
            .collect();
        Ok(json!({"locations": items}))
    }

    fn connection(&self, id: &str) -> Result<&Connection, AwsError> {
        self.connections
            .get(id)
            .ok_or_else(|| client(format!("Could not find Connection with ID {id}")))
    }

    fn lag(&self, id: &str) -> Result<&Lag, AwsError> {
        self.lags
            .get(id)
            .ok_or_else(|| client(format!("Could not find Lag with ID {id}")))
    }

    /// The key list, capability and state of a connection or LAG by ID, for key operations.
    fn key_owner(&mut self, id: &str) -> Result<(bool, String, &mut Vec<Key>), AwsError> {
        if id.starts_with("dxlag-") {
            let l = self
                .lags
                .get_mut(id)
                .ok_or_else(|| client(format!("Could not find Lag with ID {id}")))?;
            return Ok((l.mac_sec_capable, l.state.clone(), &mut l.keys));
        }
        let c = self
            .connections
            .get_mut(id)
            .ok_or_else(|| client(format!("Could not find Connection with ID {id}")))?;
        if let Some(lag) = &c.lag_id {
            return Err(client(format!(
                "Connection {id} is a member of LAG {lag}. MACsec keys of a LAG member are managed on the LAG"
            )));
        }
        Ok((c.mac_sec_capable, c.state.clone(), &mut c.keys))
    }

    fn keys_response(&mut self, id: &str) -> Value {
        let keys = if id.starts_with("dxlag-") {
            self.lags.get(id).map(|l| l.keys.clone())
        } else {
            self.connections.get(id).map(|c| c.keys.clone())
        }
        .unwrap_or_default();
        json!({"connectionId": id, "macSecKeys": Self::keys_json(&keys)})
    }

    pub fn associate_mac_sec_key(&mut self, req: &Value) -> OpResult {
        let id = required(req, "connectionId")?.to_string();
        let arn = str_field(req, "secretARN");
        let ckn = str_field(req, "ckn");
        let cak = str_field(req, "cak");
        // Validate the parameters before looking anything up, as AWS does.
        let (ckn, cak) = match (arn, ckn, cak) {
            (Some(_), None, None) => (None, None),
            (None, Some(ckn), Some(cak)) => {
                if !is_hex64(ckn) {
                    return Err(client(
                        "The CKN must be 64 hexadecimal characters (0-9, A-F)",
                    ));
                }
                if !is_hex64(cak) {
                    return Err(client(
                        "The CAK must be 64 hexadecimal characters (0-9, A-F)",
                    ));
                }
                (Some(ckn.to_ascii_lowercase()), Some(cak.to_string()))
            }
            (Some(_), _, _) => {
                return Err(client(
                    "Specify either secretARN, or ckn and cak, but not both",
                ));
            }
            (None, _, _) => {
                return Err(client("Specify either secretARN, or both ckn and cak"));
            }
        };
        let (capable, state, _) = self.key_owner(&id)?;
        if !capable {
            return Err(client(format!("{id} is not MACsec capable")));
        }
        if state != "available" {
            return Err(client(
                "The port is not in available state to associate the key",
            ));
        }
        let (ckn, arn) = match (ckn, cak, arn) {
            (Some(ckn), Some(cak), _) => {
                let arn = self.managed_secret_for(&ckn, &cak);
                (ckn, arn)
            }
            (_, _, Some(arn)) => {
                let secret = self
                    .secrets
                    .get(arn)
                    .filter(|s| s.owning_service.as_deref() == Some("directconnect"));
                let Some(secret) = secret else {
                    return Err(client(format!(
                        "Secret {arn} is not a Direct Connect managed secret. Associate the key with ckn and cak first"
                    )));
                };
                let ckn = serde_json::from_str::<Value>(&secret.secret_string)
                    .ok()
                    .and_then(|v| v.get("ckn").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default();
                (ckn, arn.to_string())
            }
            _ => unreachable!("validated above"),
        };
        let delay = Duration::from_millis(self.delays.associate_ms);
        let (_, _, keys) = self.key_owner(&id)?;
        if keys.iter().any(|k| k.ckn == ckn) {
            return Err(client(format!(
                "The CKN {ckn} is already associated with {id}"
            )));
        }
        if keys.len() >= MAX_KEYS {
            return Err(client(format!(
                "{id} already has the maximum of {MAX_KEYS} MACsec keys. Disassociate a key first"
            )));
        }
        keys.push(Key {
            ckn,
            secret_arn: arn,
            state: if delay.is_zero() {
                KeyPhase::Associated
            } else {
                KeyPhase::Associating
            },
            start_on: now_string(),
            due: Instant::now() + delay,
        });
        Ok(self.keys_response(&id))
    }

    pub fn disassociate_mac_sec_key(&mut self, req: &Value) -> OpResult {
        let id = required(req, "connectionId")?.to_string();
        let arn = required(req, "secretARN")?.to_string();
        let delay = Duration::from_millis(self.delays.disassociate_ms);
        let (_, state, keys) = self.key_owner(&id)?;
        if state != "available" {
            return Err(client(
                "The port is not in available state to disassociate the key",
            ));
        }
        let key = keys
            .iter_mut()
            .find(|k| k.secret_arn == arn)
            .ok_or_else(|| client(format!("The secret {arn} is not associated with {id}")))?;
        if key.state != KeyPhase::Disassociating {
            key.state = KeyPhase::Disassociating;
            key.due = Instant::now() + delay;
        }
        let removed = Self::keys_json(std::slice::from_ref(key));
        if delay.is_zero() {
            self.tick(Instant::now());
        }
        Ok(json!({"connectionId": id, "macSecKeys": removed}))
    }

    fn check_mode(req: &Value, capable: bool, id: &str) -> Result<Option<String>, AwsError> {
        let Some(mode) = str_field(req, "encryptionMode") else {
            return Ok(None);
        };
        if !VALID_MODES.contains(&mode) {
            return Err(client(format!(
                "Invalid encryptionMode {mode}. Valid values: no_encrypt, should_encrypt, must_encrypt"
            )));
        }
        if !capable {
            return Err(client(format!(
                "{id} is not MACsec capable; encryptionMode cannot be set"
            )));
        }
        Ok(Some(mode.to_string()))
    }

    pub fn update_connection(&mut self, req: &Value) -> OpResult {
        let id = required(req, "connectionId")?.to_string();
        let c = self.connection(&id)?;
        let mode = Self::check_mode(req, c.mac_sec_capable, &id)?;
        if let (Some(_), Some(lag)) = (&mode, &c.lag_id) {
            return Err(client(format!(
                "Connection {id} is a member of LAG {lag}; set the encryption mode on the LAG"
            )));
        }
        if c.state != "available" {
            return Err(client(format!(
                "Connection {id} is in state {}; it must be available to be updated",
                c.state
            )));
        }
        let c = self.connections.get_mut(&id).expect("looked up above");
        if let Some(name) = str_field(req, "connectionName") {
            c.name = name.to_string();
        }
        if mode.is_some() {
            c.encryption_mode = mode;
        }
        let c = self.connections[&id].clone();
        Ok(self.connection_json(&c))
    }

    pub fn update_lag(&mut self, req: &Value) -> OpResult {
        let id = required(req, "lagId")?.to_string();
        let l = self.lag(&id)?;
        let mode = Self::check_mode(req, l.mac_sec_capable, &id)?;
        if mode.is_some() && l.state != "available" {
            return Err(client(format!(
                "Lag {id} is in state {}; it must be available to be updated",
                l.state
            )));
        }
        let minimum_links =
            match req.get("minimumLinks") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(
                    || {
                        client(format!(
                            "minimumLinks must be a whole number of connections, 0 or more; got {v}"
                        ))
                    },
                )?),
            };
        let operational = self.operational_members(&id);
        let l = self.lags.get_mut(&id).expect("looked up above");
        if let Some(name) = str_field(req, "lagName") {
            l.name = name.to_string();
        }
        if mode.is_some() {
            l.encryption_mode = mode;
        }
        if let Some(minimum) = minimum_links {
            // AWS's rule: below its minimum of operational connections the LAG goes down
            // (and comes back once enough are operational).
            l.minimum_links = minimum;
            l.state = if (operational as u64) < u64::from(minimum) {
                "down".into()
            } else {
                "available".into()
            };
        }
        let l = self.lags[&id].clone();
        Ok(self.lag_json(&l))
    }

    fn check_location(
        &self,
        location: &str,
        bandwidth: &str,
        macsec: bool,
    ) -> Result<(), AwsError> {
        if self.locations.is_empty() {
            return Ok(());
        }
        let loc = self
            .locations
            .iter()
            .find(|l| l.code == location)
            .ok_or_else(|| client(format!("Location {location} is not valid")))?;
        // Locations write 10G where connections write 10Gbps.
        let speed = bandwidth.trim_end_matches("bps");
        if macsec && !loc.mac_sec_port_speeds.iter().any(|s| s == speed) {
            return Err(client(format!(
                "MACsec is not available for {bandwidth} ports at {location}"
            )));
        }
        Ok(())
    }

    pub fn create_connection(&mut self, req: &Value) -> OpResult {
        let c = self.create_port(req, "connectionName", "Connection")?;
        Ok(self.connection_json(&c))
    }

    /// CreateInterconnect: a Partner's port, `requestMACSec` as for a connection.
    pub fn create_interconnect(&mut self, req: &Value) -> OpResult {
        let c = self.create_port(req, "interconnectName", "Interconnect")?;
        Ok(self.interconnect_json(&c))
    }

    /// A new dedicated port (`what`: Connection or Interconnect), `requested` until the
    /// cross-connect is made; MACsec only at 10, 100 and 400 Gbps where the location offers
    /// it, and only into a LAG that has MACsec too.
    fn create_port(
        &mut self,
        req: &Value,
        name_field: &str,
        what: &str,
    ) -> Result<Connection, AwsError> {
        let location = required(req, "location")?.to_string();
        let bandwidth = required(req, "bandwidth")?.to_string();
        let name = required(req, name_field)?.to_string();
        let macsec = req
            .get("requestMACSec")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if macsec && !matches!(bandwidth.as_str(), "10Gbps" | "100Gbps" | "400Gbps") {
            return Err(client(format!(
                "MACsec is only available on dedicated 10, 100 and 400 Gbps connections, not {bandwidth}"
            )));
        }
        self.check_location(&location, &bandwidth, macsec)?;
        let lag_id = str_field(req, "lagId").map(str::to_string);
        if let Some(lag) = &lag_id {
            let l = self.lag(lag)?;
            if l.mac_sec_capable != macsec {
                return Err(client(format!(
                    "{what} {name} and lag should be requested MacSec at the same time"
                )));
            }
        }
        let id = random_id("dxcon");
        let mut c = Connection::new(&id, &location, &bandwidth, "requested", macsec);
        c.name = name;
        c.lag_id = lag_id;
        c.interconnect = what == "Interconnect";
        c.partner = c.interconnect;
        self.routers.insert(id.clone(), BTreeSet::new());
        self.connections.insert(id, c.clone());
        Ok(c)
    }

    pub fn create_lag(&mut self, req: &Value) -> OpResult {
        let location = required(req, "location")?.to_string();
        let bandwidth = required(req, "connectionsBandwidth")?.to_string();
        let name = required(req, "lagName")?.to_string();
        let count = req
            .get("numberOfConnections")
            .and_then(Value::as_u64)
            .ok_or_else(|| client("numberOfConnections is required"))? as usize;
        let macsec = req
            .get("requestMACSec")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.check_location(&location, &bandwidth, macsec)?;
        let lag_id = random_id("dxlag");
        if let Some(existing) = str_field(req, "connectionId") {
            let c = self.connection(existing)?;
            if c.mac_sec_capable != macsec {
                return Err(client(format!(
                    "Connection {existing} and lag should be requested MacSec at the same time"
                )));
            }
            let c = self.connections.get_mut(existing).expect("looked up above");
            c.lag_id = Some(lag_id.clone());
            c.keys.clear();
        }
        for i in 0..count {
            let id = random_id("dxcon");
            self.routers.insert(id.clone(), BTreeSet::new());
            let mut c = Connection::new(&id, &location, &bandwidth, "requested", macsec);
            c.name = format!("{name}-{i}");
            c.lag_id = Some(lag_id.clone());
            self.connections.insert(id, c);
        }
        let l = Lag {
            id: lag_id.clone(),
            name,
            device: device_at(&location),
            location,
            bandwidth,
            state: "requested".into(),
            mac_sec_capable: macsec,
            encryption_mode: macsec.then(|| "no_encrypt".to_string()),
            keys: Vec::new(),
            minimum_links: req.get("minimumLinks").and_then(Value::as_u64).unwrap_or(0) as u32,
        };
        self.lags.insert(lag_id, l.clone());
        Ok(self.lag_json(&l))
    }

    /// Members of `lag` in state `available`.
    fn operational_members(&self, lag: &str) -> usize {
        self.connections
            .values()
            .filter(|c| c.lag_id.as_deref() == Some(lag) && c.state == "available")
            .count()
    }

    /// AWS's rule for a member leaving `lag` (to stand alone or for another LAG): not below
    /// the LAG's minimum of operational links, unless it is the last member.
    fn check_may_leave(&self, c: &Connection, lag: &Lag) -> Result<(), AwsError> {
        let members = self
            .connections
            .values()
            .filter(|m| m.lag_id.as_deref() == Some(lag.id.as_str()))
            .count();
        let after = self.operational_members(&lag.id) - usize::from(c.state == "available");
        if members > 1 && (after as u32) < lag.minimum_links {
            return Err(client(format!(
                "Removing connection {} from LAG {} would leave {after} operational connections, below its minimum links of {}",
                c.id, lag.id, lag.minimum_links
            )));
        }
        Ok(())
    }

    /// The interruption a membership change causes: `pending`, then `available` again.
    fn interrupt(&mut self, id: &str) {
        let delay = Duration::from_millis(self.delays.membership_ms);
        let c = self
            .connections
            .get_mut(id)
            .expect("looked up by the caller");
        if !delay.is_zero() && c.state == "available" {
            c.state = "pending".into();
            c.back_at = Some(Instant::now() + delay);
        }
    }

    /// The answer of the membership calls: an interconnect or a connection.
    fn port_json(&self, id: &str) -> Value {
        let c = &self.connections[id];
        if c.interconnect {
            self.interconnect_json(c)
        } else {
            self.connection_json(c)
        }
    }

    /// AssociateConnectionWithLag: the connection (or interconnect) joins the LAG, from
    /// standing alone or from another LAG. Same device, same bandwidth, MACsec on both or
    /// neither, at most 2 members at 100G and 400G and 4 below. The port is interrupted; it
    /// drops its own keys and carries the LAG's.
    pub fn associate_connection_with_lag(&mut self, req: &Value) -> OpResult {
        let id = required(req, "connectionId")?.to_string();
        let lag_id = required(req, "lagId")?.to_string();
        let c = self.connection(&id)?.clone();
        let l = self.lag(&lag_id)?.clone();
        if c.lag_id.as_deref() == Some(lag_id.as_str()) {
            return Err(client(format!(
                "Connection {id} is already associated with LAG {lag_id}"
            )));
        }
        if c.device != l.device {
            return Err(client(format!(
                "Connection {id} is on AWS device {} and LAG {lag_id} on {}: a connection joins only a LAG on the same AWS Direct Connect endpoint",
                c.device, l.device
            )));
        }
        if c.bandwidth != l.bandwidth {
            return Err(client(format!(
                "The bandwidth of connection {id} ({}) does not match the bandwidth of LAG {lag_id} ({})",
                c.bandwidth, l.bandwidth
            )));
        }
        if c.mac_sec_capable != l.mac_sec_capable {
            return Err(client(format!(
                "Connection {id} and lag should be requested MacSec at the same time"
            )));
        }
        let members = self
            .connections
            .values()
            .filter(|m| m.lag_id.as_deref() == Some(lag_id.as_str()))
            .count();
        let capacity = Connection::lag_capacity(&l.bandwidth);
        if members >= capacity {
            return Err(client(format!(
                "LAG {lag_id} already has the maximum of {capacity} connections of {}",
                l.bandwidth
            )));
        }
        if let Some(old) = c.lag_id.as_deref() {
            let old = self.lag(old)?.clone();
            self.check_may_leave(&c, &old)?;
        }
        if !matches!(c.state.as_str(), "available" | "pending" | "down") {
            return Err(client(format!(
                "Connection {id} is in state {}; it cannot join a LAG",
                c.state
            )));
        }
        let port = self.connections.get_mut(&id).expect("looked up above");
        port.lag_id = Some(lag_id);
        port.keys.clear();
        self.interrupt(&id);
        Ok(self.port_json(&id))
    }

    /// DisassociateConnectionFromLag: the member leaves and stands alone (a Partner's
    /// becomes an interconnect). Refused below the LAG's minimum links, except for the last
    /// member; the LAG may be left empty. The port is interrupted; what keys and mode it
    /// keeps is the seed's `afterLeavingLag`.
    pub fn disassociate_connection_from_lag(&mut self, req: &Value) -> OpResult {
        let id = required(req, "connectionId")?.to_string();
        let lag_id = required(req, "lagId")?.to_string();
        let c = self.connection(&id)?.clone();
        let l = self.lag(&lag_id)?.clone();
        if c.lag_id.as_deref() != Some(lag_id.as_str()) {
            return Err(client(format!(
                "Connection {id} is not associated with LAG {lag_id}"
            )));
        }
        self.check_may_leave(&c, &l)?;
        let keep = self.after_leaving_lag == AfterLeavingLag::Keep;
        let port = self.connections.get_mut(&id).expect("looked up above");
        port.lag_id = None;
        port.interconnect |= port.partner;
        if keep {
            port.encryption_mode = l.encryption_mode.clone();
            port.keys = l.keys.clone();
        } else {
            port.encryption_mode = port.mac_sec_capable.then(|| "no_encrypt".to_string());
            port.keys.clear();
        }
        self.interrupt(&id);
        Ok(self.port_json(&id))
    }

    pub fn delete_connection(&mut self, req: &Value) -> OpResult {
        let id = required(req, "connectionId")?.to_string();
        self.connection(&id)?;
        let c = self.connections.get_mut(&id).expect("looked up above");
        c.state = "deleted".into();
        c.keys.clear();
        let c = c.clone();
        Ok(self.connection_json(&c))
    }

    /// Sets the CKNs configured on a port's customer router; for a LAG, on every member.
    pub fn set_router(&mut self, id: &str, ckns: &[String]) -> Result<(), AwsError> {
        let ports: Vec<String> = if id.starts_with("dxlag-") {
            self.lag(id)?;
            self.connections
                .values()
                .filter(|c| c.lag_id.as_deref() == Some(id))
                .map(|c| c.id.clone())
                .collect()
        } else {
            self.connection(id)?;
            vec![id.to_string()]
        };
        let set: BTreeSet<String> = ckns.iter().map(|c| c.to_ascii_lowercase()).collect();
        for p in ports {
            self.routers.insert(p, set.clone());
        }
        Ok(())
    }

    /// Sets the state of a connection or LAG, as the provisioning process would (for
    /// example `requested` → `available` once the cross-connect is done).
    pub fn set_state(&mut self, id: &str, state: &str) -> Result<(), AwsError> {
        if id.starts_with("dxlag-") {
            self.lags
                .get_mut(id)
                .ok_or_else(|| client(format!("Could not find Lag with ID {id}")))?
                .state = state.to_string();
        } else {
            self.connections
                .get_mut(id)
                .ok_or_else(|| client(format!("Could not find Connection with ID {id}")))?
                .state = state.to_string();
        }
        Ok(())
    }

    /// A JSON dump of the whole account, for tests. CAKs are not included.
    pub fn dump(&self) -> Value {
        let routers: BTreeMap<&String, Vec<&String>> = self
            .routers
            .iter()
            .map(|(k, v)| (k, v.iter().collect()))
            .collect();
        let secrets: Vec<Value> = self
            .secrets
            .values()
            .map(|s| json!({"arn": s.arn, "name": s.name, "owningService": s.owning_service}))
            .collect();
        json!({
            "account": self.account,
            "region": self.region,
            "connections": self.connections.values().filter(|c| !c.interconnect).map(|c| self.connection_json(c)).collect::<Vec<_>>(),
            "interconnects": self.connections.values().filter(|c| c.interconnect).map(|c| self.interconnect_json(c)).collect::<Vec<_>>(),
            "lags": self.lags.values().map(|l| self.lag_json(l)).collect::<Vec<_>>(),
            "secrets": secrets,
            "routers": routers,
            "outages": self.outages_json(),
        })
    }
}

/// Advances key transitions; true when the list went from some keys to none.
fn advance(keys: &mut Vec<Key>, now: Instant) -> bool {
    let had = !keys.is_empty();
    for k in keys.iter_mut() {
        if k.state == KeyPhase::Associating && k.due <= now {
            k.state = KeyPhase::Associated;
        }
    }
    keys.retain(|k| !(k.state == KeyPhase::Disassociating && k.due <= now));
    had && keys.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
    const CAK: &str = "c0c0000000000000000000000000000000000000000000000000000000000001";

    fn account(mode: &str) -> Account {
        let seed = Seed::from_yaml(&format!(
            "connections:\n  - {{ id: dxcon-1, macSecCapable: true, encryptionMode: {mode}, router: [\"{A}\"], keys: [{{ckn: \"{A}\", cak: \"{CAK}\"}}] }}\n"
        ))
        .unwrap();
        Account::from_seed(&seed).unwrap()
    }

    fn seconds(acc: &Account, what: &str) -> f64 {
        acc.outages_json()["ports"]["dxcon-1"][what]
            .as_f64()
            .unwrap()
    }

    /// must_encrypt with no key the router holds drops traffic: that time is down time, and
    /// it stops when the router has the key again.
    #[test]
    fn down_time_is_integrated_while_must_encrypt_has_no_working_key() {
        let t0 = Instant::now();
        let mut acc = account("must_encrypt");
        acc.settle(t0);
        acc.settle(t0 + Duration::from_secs(5));
        assert_eq!(seconds(&acc, "downSeconds"), 0.0, "up: nothing lost");
        acc.set_router("dxcon-1", &[]).unwrap();
        acc.settle(t0 + Duration::from_secs(5));
        acc.settle(t0 + Duration::from_secs(17));
        acc.set_router("dxcon-1", &[A.to_string()]).unwrap();
        acc.settle(t0 + Duration::from_secs(17));
        acc.settle(t0 + Duration::from_secs(60));
        assert_eq!(seconds(&acc, "downSeconds"), 12.0);
        assert_eq!(seconds(&acc, "clearTextSeconds"), 0.0);
        assert_eq!(acc.outages_json()["downSeconds"], 12.0);
    }

    /// should_encrypt falls back to clear text when the keys stop matching: after the port
    /// had been up, that time is clear-text time; a port never up is not counted, nor is
    /// no_encrypt (asked for).
    #[test]
    fn clear_text_time_counts_only_after_the_port_was_up() {
        let t0 = Instant::now();
        let mut acc = account("should_encrypt");
        acc.set_router("dxcon-1", &[]).unwrap();
        acc.settle(t0);
        acc.settle(t0 + Duration::from_secs(10));
        assert_eq!(seconds(&acc, "clearTextSeconds"), 0.0, "never up yet");
        acc.set_router("dxcon-1", &[A.to_string()]).unwrap();
        acc.settle(t0 + Duration::from_secs(10));
        acc.set_router("dxcon-1", &[]).unwrap();
        acc.settle(t0 + Duration::from_secs(11));
        acc.settle(t0 + Duration::from_secs(18));
        assert_eq!(seconds(&acc, "clearTextSeconds"), 7.0);
        acc.connections.get_mut("dxcon-1").unwrap().encryption_mode = Some("no_encrypt".into());
        acc.settle(t0 + Duration::from_secs(18));
        acc.settle(t0 + Duration::from_secs(50));
        assert_eq!(
            seconds(&acc, "clearTextSeconds"),
            7.0,
            "no_encrypt was asked for"
        );
        assert_eq!(seconds(&acc, "downSeconds"), 0.0);
    }
}
