//! The seed file: the account dx-sim starts from (connections, LAGs, locations, routers,
//! delays, rate limit). YAML, camelCase keys; see `examples/sim-account.yaml`.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    #[serde(default = "default_account")]
    pub account: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub delays: Delays,
    /// Requests per second over all operations; beyond it calls get ThrottlingException.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    #[serde(default)]
    pub locations: Vec<SeedLocation>,
    #[serde(default)]
    pub connections: Vec<SeedConnection>,
    #[serde(default)]
    pub lags: Vec<SeedLag>,
    /// A Direct Connect Partner's interconnects (`dxcon-…`), listed by DescribeInterconnects.
    #[serde(default)]
    pub interconnects: Vec<SeedConnection>,
    /// What a connection has after DisassociateConnectionFromLag (AWS does not document it).
    #[serde(default)]
    pub after_leaving_lag: AfterLeavingLag,
    /// Extra MACsec-capable connections and LAGs made up in bulk (benchmarks).
    #[serde(default)]
    pub generate: Option<Generate>,
    /// More accounts and regions, each described like the top level (its own connections,
    /// LAGs, interconnects, keys, secrets and delays). Long-term credentials act in the
    /// top-level account, in the region their requests are signed for; the accounts here
    /// are reached with credentials from STS AssumeRole for one of `roles`.
    #[serde(default)]
    pub accounts: Vec<Seed>,
    /// IAM role ARNs STS AssumeRole hands credentials for, in the account each ARN names;
    /// any other role is AccessDenied.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Lifetime of the credentials AssumeRole hands out, in seconds (AWS: 900 to 43200; any
    /// value here, so that tests see them expire).
    #[serde(default = "default_credential_seconds")]
    pub credential_seconds: u64,
}

/// How long asynchronous changes take, in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delays {
    /// `associating` → `associated`.
    #[serde(default = "default_associate_ms")]
    pub associate_ms: u64,
    /// `disassociating` → gone.
    #[serde(default = "default_disassociate_ms")]
    pub disassociate_ms: u64,
    /// How long joining or leaving a LAG interrupts a connection (`pending`, then
    /// `available`).
    #[serde(default = "default_membership_ms")]
    pub membership_ms: u64,
}

/// The MACsec keys and mode of a connection that has just left a LAG. AWS documents only
/// that the connection is interrupted and re-established as a standalone connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AfterLeavingLag {
    /// It keeps what it had as a member: the LAG's mode and a copy of the LAG's keys.
    #[default]
    Keep,
    /// It starts bare: no keys, `no_encrypt`.
    Reset,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            associate_ms: default_associate_ms(),
            disassociate_ms: default_disassociate_ms(),
            membership_ms: default_membership_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedLocation {
    pub code: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_port_speeds")]
    pub port_speeds: Vec<String>,
    /// Written as AWS does: `10G`, `100G`, `400G`.
    #[serde(default)]
    pub mac_sec_port_speeds: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedKey {
    pub ckn: String,
    pub cak: String,
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedConnection {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_location")]
    pub location: String,
    #[serde(default = "default_bandwidth")]
    pub bandwidth: String,
    #[serde(default = "default_state")]
    pub state: String,
    #[serde(default)]
    pub mac_sec_capable: bool,
    #[serde(default)]
    pub encryption_mode: Option<String>,
    /// Keys already associated (ignored for LAG members, which mirror their LAG).
    #[serde(default)]
    pub keys: Vec<SeedKey>,
    /// CKNs configured on the customer router at the other end of this port.
    #[serde(default)]
    pub router: Vec<String>,
    /// Tags on the connection.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// The AWS device (Direct Connect endpoint); default `<location>-abcdefgh`.
    #[serde(default)]
    pub device: Option<String>,
    /// Owned by a Direct Connect Partner: it becomes an interconnect when it leaves a LAG.
    #[serde(default)]
    pub partner: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedLag {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_location")]
    pub location: String,
    #[serde(default = "default_bandwidth")]
    pub bandwidth: String,
    #[serde(default = "default_state")]
    pub state: String,
    #[serde(default)]
    pub mac_sec_capable: bool,
    #[serde(default)]
    pub encryption_mode: Option<String>,
    /// IDs of member connections, declared under `connections`.
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub keys: Vec<SeedKey>,
    /// Tags on the LAG.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// The AWS device (Direct Connect endpoint); default `<location>-abcdefgh`.
    #[serde(default)]
    pub device: Option<String>,
    /// Operational members below which a member may not leave (the last one may).
    #[serde(default)]
    pub minimum_links: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Generate {
    #[serde(default)]
    pub connections: usize,
    #[serde(default)]
    pub lags: usize,
    #[serde(default = "default_members")]
    pub members_per_lag: usize,
    #[serde(default = "default_mode")]
    pub encryption_mode: String,
    /// CKNs configured on the routers of every generated port.
    #[serde(default)]
    pub router_ckns: Vec<String>,
}

fn default_account() -> String {
    "123456789012".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_associate_ms() -> u64 {
    1000
}
fn default_disassociate_ms() -> u64 {
    1000
}
fn default_credential_seconds() -> u64 {
    3600
}
fn default_membership_ms() -> u64 {
    1000
}
fn default_port_speeds() -> Vec<String> {
    vec!["1G".into(), "10G".into(), "100G".into()]
}
fn default_location() -> String {
    "EqDC2".into()
}
fn default_bandwidth() -> String {
    "10Gbps".into()
}
fn default_state() -> String {
    "available".into()
}
fn default_members() -> usize {
    2
}
fn default_mode() -> String {
    "no_encrypt".into()
}

impl Seed {
    pub fn from_yaml(text: &str) -> Result<Seed, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }

    /// An empty account in us-east-1.
    pub fn empty() -> Seed {
        Seed::from_yaml("{}").expect("the empty seed parses")
    }
}
