//! `export_models`: a run's trained models as safetensors, readable by numpy and PyTorch.

use std::path::PathBuf;
use std::process::ExitCode;

use attention_lab::lab::checkpoint;
use attention_lab::util::cli::finish;
use attention_lab::util::device::BackendKind;
use clap::Parser;

/// Write every trained model of a run folder (results/<experiment>/<run-id>/models/<name>.bpk)
/// as models/<name>.safetensors beside it, with the model spec, seed and commit in its metadata.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The run folder (results/<experiment>/<run-id>), or its models/ folder.
    #[arg(long)]
    run: PathBuf,
    /// Check the command and exit: read the run folder's models, write nothing.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    finish(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let device = BackendKind::Flex.device()?;
    if args.check {
        let stems = checkpoint::run_stems(&args.run)?;
        for stem in &stems {
            checkpoint::load(stem, &device)?;
        }
        println!(
            "export_models: {} model(s) in {} checked; nothing was written",
            stems.len(),
            args.run.display()
        );
        return Ok(());
    }
    let written = checkpoint::export_run(&args.run, &device)?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    println!("{} model(s) exported as safetensors", written.len());
    Ok(())
}
