//! `fhec inspect --stage`: the text of any stage of the pipeline, from the IR the frontend produces
//! to the TFHE circuit or the CKKS plan the backends make of it.

use crate::DriverError;
use fhec_ir::DataMode;
use fhec_lower::{Calibration, Stage as LowerStage, ckks, tfhe};
use ndarray::ArrayD;
use std::path::Path;

/// A stage of the pipeline, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The IR after the frontend and clean-up.
    Ir,
    /// The server part after the client/server split, the e-graph optimizer and the refusals.
    Optimized,
    /// The scalarized neuron graph after the neuron passes: what the backends read.
    Neurons,
    /// The TFHE circuit the parameter search chooses (as `fhec build` writes it).
    Circuit,
    /// The CKKS plan the polynomial search chooses (as `fhec build --scheme ckks` writes it).
    Plan,
}

/// The text of `stage` for the model at `model_path`. Every stage after `Ir` needs calibration
/// samples, except for a pre-quantized model (its input quantizer sets the ranges; not for `Plan`).
/// `full` prints every constant of the IR (the text then parses back).
pub fn stage_text(
    model_path: &Path,
    calibration: Option<&ArrayD<f32>>,
    stage: Stage,
    full: bool,
    search: &tfhe::Search,
) -> Result<String, DriverError> {
    let module = crate::load_model(model_path)?;
    if stage == Stage::Ir {
        return Ok(module.to_text(if full { DataMode::Full } else { DataMode::Elided }));
    }
    let input_shape = module.node(module.inputs()[0]).ty.shape.clone();
    let cal = match calibration {
        Some(x) => Calibration::from_samples(crate::samples(x, &input_shape, "calibration")?)?,
        None if stage == Stage::Plan => {
            return Err(DriverError::Usage(
                "--stage plan needs --calibration: CKKS windows come from real samples".into(),
            ));
        }
        None => Calibration::from_input_quantizer(&module, fhec_lower::SYNTHETIC_SAMPLES, fhec_lower::SYNTHETIC_SEED)
            .map_err(|e| DriverError::Usage(format!("--stage needs --calibration for this model: {e}")))?,
    };
    Ok(match stage {
        Stage::Ir => unreachable!("returned above"),
        Stage::Optimized => fhec_lower::stage_text(&module, &cal, &search.optimize, LowerStage::Optimized)?,
        Stage::Neurons => fhec_lower::stage_text(&module, &cal, &search.optimize, LowerStage::Neurons)?,
        Stage::Circuit => tfhe::choose(&module, &cal, search, |_| ())?.compiled.circuit.to_string(),
        Stage::Plan => {
            let search = ckks::Search { optimize: search.optimize.clone(), ..ckks::Search::default() };
            ckks::choose(&module, &cal, &search)?.compiled.plan.to_string()
        }
    })
}
