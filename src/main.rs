//! The `dx-macsec-operator` binary: argument parsing and wiring only.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dx-macsec-operator",
    version,
    about = "Keeps AWS Direct Connect MACsec state equal to DxConnection and MacSecKey resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print both CustomResourceDefinitions as YAML (the source of crds/).
    Crd,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", dx_macsec_operator::crd::crds_yaml()),
    }
}
