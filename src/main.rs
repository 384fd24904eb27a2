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
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    aws_timeout: Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Print both CustomResourceDefinitions as YAML (the source of crds/).
    Crd,
    /// Show what each DxConnection in the files would change. Exit 0: nothing; 2: changes
    /// pending; 1: errors.
    Plan {
        /// Files or folders of DxConnection, MacSecKey and Secret manifests.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: cli::Output,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Converge every DxConnection in the files, showing progress. Exit 0 when all converged.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Give up after this long (for example 10m); a rotation waits its overlapSeconds.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        /// Time between passes while something is in flight.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Print a Secret manifest with a fresh random CKN/CAK.
    Keygen {
        #[arg(long, default_value = "dx-macsec-key")]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
    },
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

#[tokio::main]
async fn main() {
    // One TLS crypto provider for kube and the AWS SDK, before any TLS use.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log_level);
    let code = match cli.command {
        Command::Crd => {
            print!("{}", dx_macsec_operator::crd::crds_yaml());
            0
        }
        Command::Keygen { name, namespace } => {
            print!("{}", cli::keygen(&name, &namespace));
            0
        }
        Command::Plan { files, output, aws } => {
            let (provider, region) = provider(&aws).await;
            cli::plan(&files, output, provider, region.as_deref()).await
        }
        Command::Apply {
            files,
            timeout,
            interval,
            aws,
        } => {
            let (provider, region) = provider(&aws).await;
            cli::apply(&files, timeout, interval, provider, region.as_deref()).await
        }
    };
    std::process::exit(code);
}
