//! `segtop-train`: the binary that owns every tensor. It trains and runs the network on
//! the CPU with libtorch (through tch); the `segtop` dashboard hands `train`, `predict` and
//! the other network commands over to it, and never loads libtorch itself.

#![deny(clippy::unwrap_used)]

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "segtop-train",
    version,
    about = "segtop's trainer: runs the network on the CPU with libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the libtorch this trainer runs on: version, devices, threads, CPU back-ends.
    Info,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
    };
    if let Err(error) = result {
        eprintln!("segtop-train: error: {error:#}");
        std::process::exit(1);
    }
}

fn info() -> anyhow::Result<()> {
    // One small computation proves libtorch loads and runs, not only that it links.
    let sum = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0])
        .sum(tch::Kind::Float)
        .double_value(&[]);
    anyhow::ensure!(sum == 6.0, "libtorch computed 1 + 2 + 3 = {sum}");
    let version = option_env!("SEGTOP_LIBTORCH_VERSION").unwrap_or("unknown");
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("libtorch      {version}");
    println!("cuda          {}", yes_no(tch::Cuda::is_available()));
    println!("threads       {}", tch::get_num_threads());
    println!("mkl           {}", yes_no(tch::utils::has_mkl()));
    println!("onednn        {}", yes_no(tch::utils::has_mkldnn()));
    println!("openmp        {}", yes_no(tch::utils::has_openmp()));
    Ok(())
}
