//! The `fhec` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fhec_ir::DataMode;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "fhec", version, about = "Compile ONNX models to programs that run on encrypted data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the model's IR (constant data elided unless --full).
    Inspect {
        model: PathBuf,
        /// Print every constant value (the output then parses back as IR).
        #[arg(long)]
        full: bool,
    },
    /// Run the float reference model on samples from a .npy file.
    Predict {
        model: PathBuf,
        /// Samples along axis 0, each shaped like the model input without its batch dimension.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the first output; further outputs go to <stem>.<output name>.npy beside it.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Labels (.npy, one per sample) to score the first output against: integer class labels give
        /// accuracy, float targets give RMSE and R².
        #[arg(long)]
        labels: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, full } => {
            let m = fhec::load_model(&model)?;
            print!("{}", m.to_text(if full { DataMode::Full } else { DataMode::Elided }));
        }
        Command::Predict { model, input, output, labels } => {
            let m = fhec::load_model(&model)?;
            let x = fhec::npy::read_samples(&input)?;
            let labels = labels.map(|p| fhec::metrics::read_labels(&p)).transpose()?;
            let start = Instant::now();
            let outs = fhec::predict(&m, &x).with_context(|| format!("predicting {}", input.display()))?;
            let per_sample = start.elapsed().as_secs_f64() * 1e3 / x.shape()[0].max(1) as f64;
            let score = labels.map(|l| fhec::metrics::score(&outs[0].1, &l)).transpose()?;
            println!(
                "{} samples, {}{per_sample:.3} ms/sample (float reference, not encrypted)",
                x.shape()[0],
                score.map(|s| format!("{s}, ")).unwrap_or_default()
            );
            let Some(output) = output else { return Ok(()) };
            for (k, (name, a)) in outs.iter().enumerate() {
                let path = fhec::npy::output_path(&output, k, name);
                fhec::npy::write_output(&path, a)?;
                let shape = match a {
                    fhec::Stacked::F32(a) => a.shape().to_vec(),
                    fhec::Stacked::I64(a) => a.shape().to_vec(),
                };
                eprintln!("wrote output \"{name}\" {shape:?} to {}", path.display());
            }
        }
    }
    Ok(())
}
