//! `dx-sim`: runs the Direct Connect emulator on a loopback port until interrupted.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "dx-sim",
    version,
    about = "Local emulator of the AWS Direct Connect MACsec API"
)]
struct Args {
    /// YAML seed describing the account (connections, LAGs, locations, routers, delays).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Address to listen on; loopback by default.
    #[arg(long, default_value = "127.0.0.1:4599")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let seed = match &args.seed {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read seed {}: {e}", path.display()))?;
            dx_sim::Seed::from_yaml(&text).map_err(|e| format!("seed {}: {e}", path.display()))?
        }
        None => dx_sim::Seed::empty(),
    };
    let sim = dx_sim::Sim::start_on(seed, args.listen).await?;
    // Printed on stdout so scripts can read the endpoint.
    println!("dx-sim listening on {}", sim.endpoint());
    tracing::info!(
        "set AWS_ENDPOINT_URL={} (any credentials are accepted); controls under /_sim/",
        sim.endpoint()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
