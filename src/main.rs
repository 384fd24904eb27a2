//! The `dx-macsec-operator` binary: argument parsing and wiring only.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use dx_macsec_operator::aws::{AwsProvider, SdkOptions, SdkProvider};
use dx_macsec_operator::cli;
use dx_macsec_operator::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "dx-macsec-operator",
    version,
    about = "Keeps AWS Direct Connect MACsec state equal to DxConnection and MacSecKey resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "DXM_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log level when RUST_LOG is not set.
    #[arg(long, global = true, default_value = "warn", env = "DXM_LOG_LEVEL")]
    log_level: String,
}

/// AWS access shared by the commands that read AWS.
#[derive(Args)]
struct AwsArgs {
    /// Region for resources without spec.region (default: the standard chain, AWS_REGION).
    #[arg(long)]
    region: Option<String>,
    /// Send every AWS call to this endpoint (an emulator such as dx-sim).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    /// Timeout of one AWS call, retries included (for example 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "DXM_AWS_TIMEOUT")]
    aws_timeout: Duration,
    /// The cluster's name in the dxmacsec.io/owner tag written on every connection and LAG
    /// managed (`<cluster>/<namespace>/<name>`). Default: `run` uses the kube-system
    /// namespace's UID, `plan`/`apply` use `cli`.
    #[arg(long, env = "DXM_CLUSTER_NAME")]
    cluster_name: Option<String>,
}

/// Reconciles (or `apply` passes) in flight at once.
const DEFAULT_CONCURRENCY: u16 = 16;

/// When the controller looks again.
#[derive(Args)]
struct TimingArgs {
    /// Periodic resync once converged: drift made in AWS is found within this time.
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "DXM_RESYNC")]
    resync: Duration,
    /// How soon to look again while something is in flight.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "DXM_REQUEUE")]
    requeue: Duration,
    /// Maximum age of a region's Describe snapshot before it is read again. Keep it at the
    /// resync so one Describe round serves a resync; resources in flight are re-read anyway.
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "DXM_OBSERVATION_MAX_AGE")]
    observation_max_age: Duration,
    /// Reconciles in flight at once, per kind (DxConnection, MacSecKey).
    #[arg(
        long,
        default_value_t = DEFAULT_CONCURRENCY,
        value_parser = clap::value_parser!(u16).range(1..=256),
        env = "DXM_CONCURRENCY"
    )]
    concurrency: u16,
    /// Describe calls per second per (account, region) that re-read resources in flight
    /// between resyncs; a pass that would exceed it waits. Keep it under the account's
    /// Direct Connect rate limit, shared with every other tool.
    #[arg(long, default_value_t = 10.0, value_parser = parse_rate, env = "DXM_DESCRIBE_REREADS_PER_SECOND")]
    describe_rereads_per_second: f64,
}

/// Leader election, so only one replica acts.
#[derive(Args)]
struct LeaderArgs {
    /// Leader election on a Lease, so only one replica acts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "DXM_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease the replicas compete for.
    #[arg(
        long,
        default_value = "dx-macsec-operator-leader",
        env = "DXM_LEASE_NAME"
    )]
    lease_name: String,
    /// Namespace of the Lease (default: the namespace the operator runs in).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a Lease holds without renewal: how long a crashed leader's resources wait
    /// before a standby takes over.
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "DXM_LEASE_DURATION")]
    lease_duration: Duration,
    /// How often the leader renews the Lease; must be well under --lease-duration.
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "DXM_LEASE_RENEW")]
    lease_renew: Duration,
}

impl LeaderArgs {
    /// The Lease timings, checked: a renewal period that is not under half the duration
    /// lets one slow renewal lose the Lease.
    fn timings(&self) -> Result<(Duration, Duration), String> {
        if self.lease_renew.is_zero() || self.lease_renew * 2 > self.lease_duration {
            return Err(format!(
                "--lease-renew ({}s) must be more than 0 and at most half of --lease-duration ({}s); for example --lease-duration 15s --lease-renew 5s",
                self.lease_renew.as_secs_f64(),
                self.lease_duration.as_secs_f64()
            ));
        }
        if self.lease_duration > Duration::from_secs(i32::MAX as u64) {
            return Err("--lease-duration is too long".into());
        }
        Ok((self.lease_duration, self.lease_renew))
    }
}

/// Everything `run` takes, parsed once.
#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    timing: TimingArgs,
    #[command(flatten)]
    leader: LeaderArgs,
    /// Namespaces whose DxConnections may use the operator's own AWS credentials without a
    /// DxAccess: a comma-separated list, empty for none (every DxConnection then needs a
    /// DxAccess). Default: the operator's own namespace only. `*` lets anyone who may write a
    /// DxConnection in any namespace aim the operator's credentials at any connection they
    /// reach: choose it only in a cluster no other team uses.
    #[arg(long, env = "DXM_DEFAULT_ACCESS_NAMESPACES")]
    default_access_namespaces: Option<String>,
    /// Watch only these namespaces (comma-separated; empty: all). The operator then needs
    /// Roles in them only (the chart's `watchNamespaces`), no cluster-wide read of Secrets.
    #[arg(long, default_value = "", env = "DXM_WATCH_NAMESPACES")]
    watch_namespaces: String,
    /// Notice a change to a MacSecKey's Secret with a metadata-only watch of Secrets (needs
    /// list and watch on Secrets; names and versions only are kept, never data or
    /// annotations): a MacSecKey then re-reads its Secret only when it changed, at once, and a
    /// steady-state resync reads no Secret. Off by default: the operator then only gets
    /// Secrets by name and each MacSecKey re-reads its Secret at every resync.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, env = "DXM_WATCH_SECRETS")]
    watch_secrets: bool,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "DXM_HTTP_ADDR")]
    http_addr: std::net::SocketAddr,
}

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the controller (in a cluster, or against a kubeconfig).
    Run(RunArgs),
    /// Print both CustomResourceDefinitions as YAML (the source of crds/).
    Crd,
    /// Show what each DxConnection in the files would change. Exit 0: nothing; 2: changes
    /// pending; 1: any error, or a link that only a person can fix.
    Plan {
        /// Files or folders of DxConnection, MacSecKey and Secret manifests.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Output: a text block per DxConnection, or JSON (see the README).
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: cli::Output,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Converge every DxConnection in the files, showing progress. Exit 0 when all converged.
    Apply {
        /// Files or folders of DxConnection, MacSecKey and Secret manifests.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Give up after this long (for example 10m); a rotation waits its overlapSeconds.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        /// Time between passes while something is in flight.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Output: what happens and a closing table, or JSON reports at the end (as
        /// `plan -o json`) with what happens on stderr. Progress is always on stderr.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: cli::Output,
        /// Passes in flight at once, over different DxConnections (each one's passes stay in
        /// order): the default of `run`'s --concurrency.
        #[arg(
            long,
            default_value_t = DEFAULT_CONCURRENCY,
            value_parser = clap::value_parser!(u16).range(1..=256)
        )]
        concurrency: u16,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Start the scheduled key rotation of a DxConnection now (sets its dxmacsec.io/rotate-now
    /// annotation; the controller makes the key and waits for the router as always).
    Rotate {
        /// Name of the DxConnection.
        name: String,
        /// Its namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Print a Secret manifest with a fresh random CKN/CAK.
    Keygen {
        /// Name of the Secret (reference it from a MacSecKey's spec.secretRef.name).
        #[arg(long, default_value = "dx-macsec-key")]
        name: String,
        /// Namespace of the Secret (the MacSecKey's and DxConnection's).
        #[arg(long, default_value = "default")]
        namespace: String,
    },
}

/// A positive rate such as `10` or `2.5`.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of calls per second, such as 10"
        )),
    }
}

/// `90s`, `10m`, `1h30m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration such as 30s, 10m or 1h: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

async fn provider(args: &AwsArgs) -> (Arc<dyn AwsProvider>, Option<String>) {
    let options = SdkOptions {
        endpoint_url: args.aws_endpoint_url.clone(),
        operation_timeout: args.aws_timeout,
        ..SdkOptions::default()
    };
    let sdk = SdkProvider::new(&options).await;
    let region = args.region.clone().or_else(|| sdk.default_region());
    (Arc::new(sdk), region)
}

/// `run`: connect to Kubernetes, build the options and run the controller until it stops.
async fn run(args: RunArgs) -> Result<(), String> {
    use dx_macsec_operator::controller::{
        self, KubeClients, RunOptions, Settings, leader::LeaseConfig,
    };
    let clients = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)
        .and_then(KubeClients::new)
        .map_err(|e| {
            format!("cannot connect to the Kubernetes API (in-cluster config or KUBECONFIG): {e}")
        })?;
    let client = &clients.requests;
    let (lease_duration, renew_every) = args.leader.timings()?;
    let (provider, region) = provider(&args.aws).await;
    let leader = args.leader;
    let identity = leader.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let namespace = leader
        .lease_namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let cluster_name = match args.aws.cluster_name.clone() {
        Some(name) => name,
        None => controller::cluster_uid(client).await?,
    };
    let opts = RunOptions {
        settings: Settings {
            default_region: region,
            short_requeue: args.timing.requeue,
            resync: args.timing.resync,
            concurrency: args.timing.concurrency,
            default_access_namespaces: dx_macsec_operator::access::Namespaces::parse(
                args.default_access_namespaces
                    .as_deref()
                    .unwrap_or(&namespace),
            ),
            cluster_name,
            watch_namespaces: args
                .watch_namespaces
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            watch_secrets: args.watch_secrets,
        },
        http_addr: args.http_addr,
        lease: leader.leader_election.then(|| LeaseConfig {
            namespace,
            name: leader.lease_name,
            identity: identity.clone(),
            lease_duration,
            renew_every,
        }),
        identity,
        observation_max_age: args.timing.observation_max_age,
        describe_rereads_per_second: args.timing.describe_rereads_per_second,
    };
    controller::run(clients, provider, opts)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() {
    // One TLS crypto provider for kube and the AWS SDK, before any TLS use.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log_level);
    let code = match cli.command {
        Command::Run(args) => match run(args).await {
            Ok(()) => 0,
            Err(message) => {
                tracing::error!("{message}");
                eprintln!("error: {message}");
                1
            }
        },
        Command::Crd => {
            print!("{}", dx_macsec_operator::crd::crds_yaml());
            0
        }
        Command::Rotate { name, namespace } => cli::rotate(&namespace, &name).await,
        Command::Keygen { name, namespace } => {
            print!("{}", cli::keygen(&name, &namespace));
            0
        }
        Command::Plan { files, output, aws } => {
            let (provider, region) = provider(&aws).await;
            let cluster = aws.cluster_name.as_deref().unwrap_or(cli::CLUSTER);
            cli::plan(&files, output, provider, region.as_deref(), cluster).await
        }
        Command::Apply {
            files,
            timeout,
            interval,
            output,
            concurrency,
            aws,
        } => {
            let (provider, region) = provider(&aws).await;
            let cluster = aws.cluster_name.as_deref().unwrap_or(cli::CLUSTER);
            let options = cli::ApplyOptions {
                output,
                timeout,
                interval,
                concurrency,
            };
            cli::apply(&files, options, provider, region.as_deref(), cluster).await
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag of every subcommand says what it does in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        let cli = super::Cli::command();
        let mut missing = Vec::new();
        for cmd in std::iter::once(&cli).chain(cli.get_subcommands()) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !["help", "version"].contains(&id) {
                    missing.push(format!("{} --{id}", cmd.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }

    fn run_args(args: &[&str]) -> Result<super::RunArgs, clap::Error> {
        use clap::Parser;
        let cli =
            super::Cli::try_parse_from(["dx-macsec-operator", "run"].iter().chain(args).copied())?;
        match cli.command {
            super::Command::Run(a) => Ok(a),
            _ => unreachable!("parsed run"),
        }
    }

    /// Every tuning knob of `run` is a flag with an environment variable (the chart sets
    /// them from values), with the documented defaults.
    #[test]
    fn tuning_knobs_are_flags_with_environment_variables() {
        let cli = super::Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        let env_of = |id: &str| {
            run.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        for (id, var) in [
            ("concurrency", "DXM_CONCURRENCY"),
            (
                "describe_rereads_per_second",
                "DXM_DESCRIBE_REREADS_PER_SECOND",
            ),
            ("lease_duration", "DXM_LEASE_DURATION"),
            ("lease_renew", "DXM_LEASE_RENEW"),
            ("aws_timeout", "DXM_AWS_TIMEOUT"),
            ("resync", "DXM_RESYNC"),
            ("requeue", "DXM_REQUEUE"),
            ("observation_max_age", "DXM_OBSERVATION_MAX_AGE"),
        ] {
            assert_eq!(env_of(id).as_deref(), Some(var), "--{id}");
        }
        let a = run_args(&[]).unwrap();
        assert_eq!(a.timing.concurrency, 16);
        assert_eq!(a.timing.describe_rereads_per_second, 10.0);
        assert_eq!(a.aws.aws_timeout, std::time::Duration::from_secs(30));
        assert_eq!(
            a.leader.timings().unwrap(),
            (
                std::time::Duration::from_secs(15),
                std::time::Duration::from_secs(5)
            )
        );
        let a = run_args(&[
            "--concurrency",
            "64",
            "--describe-rereads-per-second",
            "2.5",
            "--lease-duration",
            "1m",
            "--lease-renew",
            "20s",
        ])
        .unwrap();
        assert_eq!(a.timing.concurrency, 64);
        assert_eq!(a.timing.describe_rereads_per_second, 2.5);
        assert_eq!(a.leader.timings().unwrap().0.as_secs(), 60);
    }

    /// Values that would break the controller are refused with what to use instead.
    #[test]
    fn bad_tuning_values_are_refused_with_the_fix() {
        for bad in [
            &["--concurrency", "0"][..],
            &["--concurrency", "1000"],
            &["--describe-rereads-per-second", "0"],
            &["--describe-rereads-per-second", "fast"],
        ] {
            let e = run_args(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(e.to_string().contains(bad[0]), "{e}");
        }
        let a = run_args(&["--lease-duration", "10s", "--lease-renew", "6s"]).unwrap();
        let e = a.leader.timings().unwrap_err();
        assert!(
            e.contains("--lease-renew (6s)") && e.contains("--lease-duration (10s)"),
            "{e}"
        );
    }
}
