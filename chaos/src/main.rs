//! `termshare-chaos run --seed N --steps K --shares M [--backend fake|tty-share]`

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use termshare_chaos::{run, Mode, RunConfig};

#[derive(Parser)]
#[command(
    name = "termshare-chaos",
    about = "Seeded fault injection for termshare"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Fake,
    TtyShare,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario; exits 1 on any invariant violation.
    Run {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1000)]
        steps: u64,
        /// Terminals (one share each at most).
        #[arg(long, default_value_t = 20)]
        shares: usize,
        #[arg(long, value_enum, default_value = "fake")]
        backend: Backend,
    },
    /// Measure everything side by side with its baseline; prints a table.
    Bench {
        /// Small sizes (the CI smoke run).
        #[arg(long)]
        quick: bool,
        /// Also write the rows as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Only these groups, comma-separated and run in the usual order: start,
        /// revoke, keystroke, scale, ttl, audit, failure, tmate, idle.
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(termshare_chaos::bench::GROUPS))]
        only: Option<Vec<String>>,
    },
}

fn main() -> ExitCode {
    let (seed, steps, shares, backend) = match Cli::parse().command {
        Command::Run {
            seed,
            steps,
            shares,
            backend,
        } => (seed, steps, shares, backend),
        Command::Bench { quick, json, only } => return bench(quick, json, only),
    };
    termshare_chaos::quiet_injected_panics();
    let mode = match backend {
        Backend::Fake => Mode::Fake,
        Backend::TtyShare => Mode::TtyShare,
    };
    // Fake runs use the paused clock on one thread (deterministic, minutes of TTL in
    // no time); tty-share runs need real time and threads.
    let runtime = match mode {
        Mode::Fake => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build(),
        Mode::TtyShare => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("termshare-chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let summary = runtime.block_on(run(RunConfig::new(seed, steps, shares, mode)));
    summary.print();
    println!("injected panics: {}", termshare_chaos::injected_panics());
    if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn bench(quick: bool, json: Option<std::path::PathBuf>, only: Option<Vec<String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("termshare-chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let t0 = std::time::Instant::now();
    let rows = runtime.block_on(termshare_chaos::bench::bench(quick, only.as_deref()));
    termshare_chaos::bench::print_table(&rows);
    println!(
        "({} run in {:.0?})",
        if quick { "quick" } else { "full" },
        t0.elapsed()
    );
    if let Some(path) = json {
        let list: Vec<_> = rows.iter().map(|r| r.json()).collect();
        let text = serde_json::to_string_pretty(&list).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("termshare-chaos: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
