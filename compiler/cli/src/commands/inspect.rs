//! `fhec inspect`: print a model's IR, or any later stage of the pipeline.

use super::spinner;
use crate::Global;
use anyhow::Result;
use clap::{Args, ValueEnum};
use fhec::inspect::Stage;
use std::path::PathBuf;

/// Print the model at a stage of the pipeline: its IR (constant data elided unless --full), the
/// optimized server part, the neuron graph, the TFHE circuit or the CKKS plan.
#[derive(Args)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// Print every constant value (with --stage ir; the output then parses back as IR).
    #[arg(long)]
    pub full: bool,
    /// Which stage to print.
    #[arg(long, value_enum, default_value_t = StageArg::Ir)]
    pub stage: StageArg,
    /// Calibration samples (.npy), for every stage after ir (optional for a pre-quantized model,
    /// except for plan).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum StageArg {
    /// The IR after the frontend and clean-up.
    Ir,
    /// The server part after the client/server split and the e-graph optimizer.
    Optimized,
    /// The scalarized neuron graph after the neuron passes (where bootstraps are counted).
    Neurons,
    /// The TFHE circuit the parameter search chooses (runs the search, as `fhec build`).
    Circuit,
    /// The CKKS plan the polynomial search chooses (runs the search, as `fhec build --scheme ckks`).
    Plan,
}

pub fn run(args: InspectArgs, g: &Global) -> Result<()> {
    let InspectArgs { model, full, stage, calibration } = args;
    if full && stage != StageArg::Ir {
        anyhow::bail!("--full is for --stage ir (the other stages elide their constants)");
    }
    let stage = match stage {
        StageArg::Ir => Stage::Ir,
        StageArg::Optimized => Stage::Optimized,
        StageArg::Neurons => Stage::Neurons,
        StageArg::Circuit => Stage::Circuit,
        StageArg::Plan => Stage::Plan,
    };
    let x = calibration.as_deref().map(fhec::npy::read_samples).transpose()?;
    let search = fhec_lower::tfhe::Search { engine: g.engine, ..fhec_lower::tfhe::Search::default() };
    let pb = spinner(g.quiet || matches!(stage, Stage::Ir), "lowering");
    let text = fhec::inspect::stage_text(&model, x.as_ref(), stage, full, &search)?;
    pb.finish_and_clear();
    print!("{text}");
    Ok(())
}
