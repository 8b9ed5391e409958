//! Integerization: from real-valued neurons to the torus circuit.
//!
//! Each bootstrap `k` reads `acc = T_k (z - mid_k)` where `z` is its real input and `T_k` (torus units
//! per unit of `z`) spreads the input's interval over the usable positions minus a noise margin. Each
//! wire `j` carries `S_j * y_j`; `S_j` is chosen so that the largest integer weight on it,
//! `round(c_kj T_k / S_j)`, is `weight_max` (bootstrap outputs) or `INPUT_WEIGHT_MAX` (fresh inputs,
//! whose noise is negligible). Tables hold `round(S_k f(z_p))` at the centre of each position `p`.
//!
//! Noise model (the parameter set's, from tfhe-rs's noise formulas, see `fhec_runtime::ParamSet`): the
//! noise at a bootstrap input has variance `switch + pbs |w|^2` positions², `|w|` the 2-norm of the
//! weights on bootstrap outputs. The margin keeps the failure probability's number of standard
//! deviations inside the table.

use crate::LowerError;
use crate::neurons::{Form, Lookup, Neurons};
use crate::window::window;
#[cfg(doc)]
use crate::window::{MAX_NARROWING, TABLE_HEADROOM};
use fhec_runtime::{Affine, Circuit, InputCode, NoiseModel, OutputCode, ParamSet, Pbs, Table};
use rayon::prelude::*;
use std::collections::HashMap;

const INPUT_WEIGHT_MAX: f64 = 4096.0;
/// Outputs use this much of the torus (a quarter): decryption has no table to fit, and the larger the
/// range, the smaller the bootstrap noise relative to it.
const OUTPUT_RANGE: f64 = (1u64 << 62) as f64 * 1.5;
/// An output's range is its calibrated range widened this many times around its centre (when tighter
/// than its interval bound): values up to `OUTPUT_HEADROOM * 4/3` half-widths from the centre still
/// decode exactly; beyond, the accumulator wraps.
const OUTPUT_HEADROOM: f64 = 2.0;

/// The range an output is encoded over: its interval bound, tightened by calibration.
fn output_range(n: &Neurons, index: usize, f: &Form) -> (f64, f64) {
    let (lo, hi) = f.range(&n.wires);
    match n.calibrated.as_ref().map(|c| c[index]) {
        Some((clo, chi)) if clo <= chi => {
            let (m, h) = ((clo + chi) / 2.0, (chi - clo) / 2.0 * OUTPUT_HEADROOM);
            let h = h.max(1e-3 * (hi - lo));
            let (l, u) = (lo.max(m - h), hi.min(m + h));
            if l < u { (l, u) } else { (lo, hi) }
        }
        _ => (lo, hi),
    }
}

/// What a table's positions cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TableRanges {
    /// The range its input took on the calibration samples, widened [`TABLE_HEADROOM`] times around
    /// its centre, within the interval bound (no narrower than [`MAX_NARROWING`] times less): far
    /// finer positions where the values are. An input beyond the window wraps around the table, and
    /// the table's centring makes that gentle: just past one edge it reads the value at that edge,
    /// moving as the function does just inside the other edge (for a ReLU, flat: a clipped ReLU), and
    /// it never reads a value the table does not hold. Tables without real calibration samples
    /// (a pre-quantized model compiled without them) keep the interval bound.
    #[default]
    Calibrated,
    /// The whole interval bound: no input the client can send leaves its table.
    Bound,
}

/// `l` as the table under `ranges`: its interval and domain cut to the window, its centre recomputed
/// for the window's edges (the consumers' forms keep the old centre in their bias; the offset goes
/// through [`integerize`]'s rounded weights).
fn windowed(l: &Lookup, ranges: TableRanges) -> Lookup {
    let Some(calibrated) = l.calibrated.filter(|_| ranges == TableRanges::Calibrated) else { return l.clone() };
    let (lo, hi) = window(calibrated, (l.lo, l.hi));
    let domain = (l.domain.0.max(lo), l.domain.1.min(hi));
    if !(lo < hi && domain.0 <= domain.1) {
        return l.clone();
    }
    let mut w = Lookup { lo, hi, domain, center: 0.0, ..l.clone() };
    w.center = (w.eval(lo) + w.eval(hi)) / 2.0;
    w
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The tfhe-rs parameter set: table size and noise.
    pub params: ParamSet,
    /// Bits of the integer weights applied to bootstrap outputs (sign included).
    pub weight_bits: u32,
    /// Per-layer overrides of `weight_bits`: the weights applied to the outputs of the named layer's
    /// tables (`Pbs::layer` names, as in the report).
    pub layer_weight_bits: Vec<(String, u32)>,
    /// Largest weight on bootstrap outputs read only by decrypted outputs. Output layers are wide
    /// (hundreds of terms): their noise grows with the weights while rounding errors average out, so
    /// small weights win; how small depends on the set's bootstrap noise.
    pub output_weight_max: f64,
    /// log2 of the probability that noise pushes one bootstrap's input out of its table.
    pub failure_log2: f64,
    /// What each table's positions cover.
    pub table_ranges: TableRanges,
    /// Whether each affine form's bias takes back the mean shift its rounded weights cause on the
    /// calibration samples (bias correction).
    pub bias_correction: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            params: ParamSet::P2048B,
            weight_bits: 6,
            layer_weight_bits: Vec::new(),
            output_weight_max: 8.0,
            failure_log2: -40.0,
            table_ranges: TableRanges::default(),
            bias_correction: true,
        }
    }
}

impl Options {
    /// Weight bits on the outputs of `layer`'s tables.
    pub fn weight_bits_of(&self, layer: &str) -> u32 {
        self.layer_weight_bits.iter().find(|(l, _)| l == layer).map_or(self.weight_bits, |&(_, b)| b)
    }

    /// Standard deviations of Gaussian noise that stay within the failure probability (two-sided):
    /// the `z` with `erfc(z / sqrt 2) = 2^failure_log2` (7.15 at 2^-40, 9.2 at 2^-64).
    pub fn failure_sigmas(&self) -> f64 {
        let target = self.failure_log2.exp2();
        let (mut lo, mut hi) = (0.0f64, 40.0f64);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if libm::erfc(mid / std::f64::consts::SQRT_2) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

pub struct Integerized {
    pub circuit: Circuit,
    /// Per bootstrap, how many times narrower its table's input range is than the interval bound
    /// (1 where it covers the bound).
    pub narrowing: Vec<f64>,
    /// Under calibrated ranges, the held-out estimate of how often a table read leaves its window:
    /// reads outside, reads (see `Lookup::held_out`).
    pub held_out: (usize, usize),
    pub inputs: Vec<InputCode>,
    pub outputs: Vec<OutputCode>,
}

/// A real number as a torus element: reduced modulo 2^64 (a bias may exceed 2^63 on its own while the
/// whole accumulator, where other terms cancel it, stays in range).
fn wrap(x: f64) -> i64 {
    const TORUS: f64 = 18_446_744_073_709_551_616.0;
    x.round().rem_euclid(TORUS) as u64 as i64
}

fn centered(lo: f64, hi: f64) -> (f64, f64) {
    let mid = (lo + hi) / 2.0;
    (mid, ((hi - lo) / 2.0).max(1e-9 * mid.abs().max(1.0)))
}

/// A table read both by other tables and by outputs gets a twin that only the outputs read: one scale
/// cannot serve both (tables need small weights to bound noise, outputs need large ones for precision).
fn split_mixed_consumers(n: &Neurons) -> Neurons {
    let mut feeds_table = vec![false; n.wires.len()];
    for w in &n.wires {
        if let Some(l) = &w.lookup {
            for &(j, _) in &l.input.terms {
                feeds_table[j as usize] = true;
            }
        }
    }
    let mut wires = n.wires.clone();
    let mut twin = std::collections::HashMap::new();
    let mut outputs = n.outputs.clone();
    let classes = wires.iter().map(|w| w.class).max().map_or(0, |c| c + 1);
    for f in outputs.iter_mut().flatten() {
        for (j, _) in f.terms.iter_mut() {
            let k = *j as usize;
            if k >= n.n_inputs && feeds_table[k] {
                let t = *twin.entry(k).or_insert_with(|| {
                    let mut w = n.wires[k].clone();
                    w.class = classes + n.wires[k].class;
                    wires.push(w);
                    wires.len() - 1
                });
                *j = t as u32;
            }
        }
    }
    Neurons { wires, n_inputs: n.n_inputs, outputs, calibrated: n.calibrated.clone() }
}

pub fn integerize(n: &Neurons, opts: &Options) -> Result<Integerized, LowerError> {
    let n = &split_mixed_consumers(n);
    let noise: NoiseModel = opts.params.noise();
    let failure_sigmas = opts.failure_sigmas();
    let half_positions = (opts.params.positions() / 2) as f64;
    let position = (1u64 << opts.params.position_shift()) as f64;
    let ni = n.n_inputs;
    let nw = n.wires.len();
    let weight_max = |bits: u32| f64::from((1u32 << (bits.clamp(2, 16) - 1)) - 1);
    let pbs: Vec<usize> = (ni..nw).collect();
    let mut margin = vec![64.0f64; nw];
    let mut norm = vec![0.0f64; nw];
    let too_noisy = |k: usize, margin: f64, norm: f64| LowerError::Noise {
        layer: n.wires[k].lookup.as_ref().map(|l| l.layer.clone()).unwrap_or_default(),
        margin,
        norm,
        positions: 2.0 * half_positions,
        params: opts.params.name(),
    };
    // Each bootstrap's table under the chosen ranges (the wires' own lookups keep the interval
    // bound and the centre their consumers' forms were built with).
    let tables: Vec<Option<Lookup>> =
        n.wires.iter().map(|w| w.lookup.as_ref().map(|l| windowed(l, opts.table_ranges))).collect();
    let (mut t, mut mid, mut s) = (vec![0.0; nw], vec![0.0; nw], vec![1.0; nw]);
    let mut converged = false;
    for _round in 0..8 {
        for &k in &pbs {
            let l = tables[k].as_ref().expect("wires past the inputs are lookups");
            let (m, half) = centered(l.lo, l.hi);
            if margin[k] >= half_positions / 2.0 {
                return Err(too_noisy(k, margin[k], norm[k]));
            }
            mid[k] = m;
            t[k] = (half_positions - margin[k]) * position / half;
        }
        // Wire scales: from the bootstrap consumers (whose weights add noise before a table), else from
        // the outputs (decrypted directly, where large weights only add precision).
        let mut need = vec![0.0f64; nw];
        let mut need_out = vec![0.0f64; nw];
        for &k in &pbs {
            for &(j, c) in &n.wires[k].lookup.as_ref().expect("lookup").input.terms {
                need[j as usize] = need[j as usize].max(c.abs() * t[k]);
            }
        }
        for (i, f) in n.outputs.iter().flatten().enumerate() {
            let (lo, hi) = output_range(n, i, f);
            let scale = OUTPUT_RANGE / centered(lo, hi).1;
            for &(j, c) in &f.terms {
                need_out[j as usize] = need_out[j as usize].max(c.abs() * scale);
            }
        }
        // One scale per class: the largest need of its members.
        let classes = n.wires.iter().map(|w| w.class).max().map_or(0, |c| c + 1);
        let mut class_need = vec![0.0f64; classes];
        // A class's weight cap: the smallest of its tables' layers (one layer per class in practice).
        let mut class_cap = vec![f64::INFINITY; classes];
        for (w, &nd) in n.wires.iter().zip(&need) {
            class_need[w.class] = class_need[w.class].max(nd);
            if let Some(l) = &w.lookup {
                class_cap[w.class] = class_cap[w.class].min(weight_max(opts.weight_bits_of(&l.layer)));
            }
        }
        for j in 0..nw {
            let c = n.wires[j].class;
            let cap = if j < ni { INPUT_WEIGHT_MAX } else { class_cap[c] };
            // Only wires that feed tables share their class's scale; one read by outputs alone is
            // scaled for the outputs' precision.
            // Bootstrap outputs carry absolute noise (~0.14 position), so their weights are capped for
            // outputs too; fresh inputs are ~2^33 times quieter and take large weights.
            s[j] = if need[j] > 0.0 {
                class_need[c] / cap
            } else if need_out[j] > 0.0 {
                need_out[j] / if j < ni { cap } else { opts.output_weight_max }
            } else {
                1.0
            };
        }
        let mut grew = false;
        for &k in &pbs {
            let form = &n.wires[k].lookup.as_ref().expect("lookup").input;
            let norm2: f64 = form
                .terms
                .iter()
                .filter(|(j, _)| *j as usize >= ni)
                .map(|&(j, c)| (c * t[k] / s[j as usize]).round().powi(2))
                .sum();
            norm[k] = norm2.sqrt();
            let std = noise.input_std(norm[k], 0.0);
            let want = (failure_sigmas * std).ceil() + 2.0;
            if want > margin[k] {
                margin[k] = want;
                grew = true;
            }
        }
        if !grew {
            converged = true;
            break;
        }
    }
    if !converged {
        // The margins kept growing: the last tables would not cover their noise.
        let k = (ni..nw).max_by(|&a, &b| margin[a].total_cmp(&margin[b])).expect("bootstraps exist when margins grow");
        return Err(too_noisy(k, margin[k], norm[k]));
    }
    // Each table's mean output over the calibration samples (from its input's quantiles), where
    // there were real samples.
    let mean: Vec<Option<f64>> = n
        .wires
        .iter()
        .map(|w| {
            let l = w.lookup.as_ref()?;
            (!l.quantiles.is_empty())
                .then(|| l.quantiles.iter().map(|&q| l.eval(q) + l.center).sum::<f64>() / l.quantiles.len() as f64)
        })
        .collect();
    // The accumulator `T (z - m)` with integer weights. The coarsest weight (the smallest that is at
    // least 1, so the largest relative rounding) is made exact by lowering `T` slightly; terms of the
    // same class and coefficient (a max chain, a pooled sum) become exact with it. Returns the affine
    // form and the effective `T`, which the table or the decoder must use.
    let affine = |form: &Form, t: f64, m: f64, inputs: &[InputCode]| -> (Affine, f64) {
        let weight = |&(j, c): &(u32, f64)| (c * t / s[j as usize]).abs();
        let t = match form.terms.iter().filter(|x| weight(x) >= 1.0).min_by(|a, b| weight(a).total_cmp(&weight(b))) {
            Some(&(j, c)) => {
                let unit = s[j as usize] / c.abs();
                (t / unit).floor() * unit
            }
            None => t,
        };
        // An input wire carries `S (x - mid)`; a table wire `S (f - center)` (its table's centre)
        // while the form holds the wire's centre in its bias. The offset is added back through the
        // rounded weight, so weight rounding scales a value and never shifts it (a relu output of 0
        // stays exactly 0).
        let mut bias = form.bias - m;
        let mut exact: i64 = 0;
        let mut terms = Vec::with_capacity(form.terms.len());
        for &(j, c) in &form.terms {
            let j = j as usize;
            let (offset, in_bias) = match (&n.wires[j].lookup, &tables[j]) {
                (Some(l), Some(table)) => (table.center, Some(l.center)),
                _ => (inputs[j].mid, None),
            };
            let ideal = c * t / s[j];
            let w = ideal.round();
            if w == 0.0 {
                // The term vanishes; its calibrated mean (else its offset) stays as the best
                // estimate of it.
                match in_bias {
                    None => bias += c * offset,
                    Some(form_center) => {
                        bias += c * (mean[j].filter(|_| opts.bias_correction).unwrap_or(offset) - form_center)
                    }
                }
                continue;
            }
            terms.push((j as u32, w as i64));
            exact = exact.wrapping_add((w as i64).wrapping_mul(wrap(s[j] * offset)));
            bias -= c * in_bias.unwrap_or(0.0);
            // Bias correction: the rounded weight scales the wire's value by `w / ideal`; on the
            // calibration samples that shifts the sum by `(w - ideal) S mean` on average, which the
            // bias takes back (the error left is zero-mean).
            if let Some(mu) = mean[j].filter(|_| opts.bias_correction) {
                bias -= (w - ideal) * s[j] * mu / t;
            }
        }
        (Affine { terms, bias: wrap(bias * t).wrapping_add(exact) }, t)
    };
    let inputs: Vec<InputCode> = (0..ni)
        .map(|i| {
            let w = &n.wires[i];
            InputCode { lo: w.lo, hi: w.hi, mid: (w.lo + w.hi) / 2.0, scale: s[i] }
        })
        .collect();
    let mut circuit = Circuit {
        params: opts.params,
        n_inputs: ni,
        pbs: Vec::new(),
        tables: Vec::new(),
        outputs: Vec::new(),
        layers: Vec::new(),
    };
    // Each layer's index in `circuit.layers`, which lists them in order of first table.
    let mut layer_index: HashMap<String, u32> = HashMap::new();
    // Each bootstrap's input and table, on every core (a large circuit has hundreds of megabytes of
    // tables, built for every candidate of the search).
    let built: Vec<(Affine, f64, Vec<i64>)> = pbs
        .par_iter()
        .map(|&k| {
            let l = tables[k].as_ref().expect("lookup");
            let (input, t_eff) = affine(&l.input, t[k], mid[k], &inputs);
            let norm = input.pbs_weight_norm(ni as u32);
            let noise_std = noise.input_std(norm, 0.0);
            let values = (0..opts.params.positions())
                .map(|q| {
                    let p = q as f64 - half_positions + 0.5;
                    let z = mid[k] + p * position / t_eff;
                    (s[k] * l.eval(z)).round() as i64
                })
                .collect();
            (input, noise_std, values)
        })
        .collect();
    for (&k, (input, noise_std, values)) in pbs.iter().zip(built) {
        let l = tables[k].as_ref().expect("lookup");
        circuit.tables.push(Table { values });
        let layer = *layer_index.entry(l.layer.clone()).or_insert_with(|| {
            circuit.layers.push(l.layer.clone());
            circuit.layers.len() as u32 - 1
        });
        circuit.pbs.push(Pbs { input, table: circuit.tables.len() as u32 - 1, noise_std, layer });
    }
    let mut outputs = Vec::new();
    for (i, f) in n.outputs.iter().flatten().enumerate() {
        {
            let (lo, hi) = output_range(n, i, f);
            let (m, half) = centered(lo, hi);
            let (acc, scale) = affine(f, OUTPUT_RANGE / half, m, &inputs);
            circuit.outputs.push(acc);
            outputs.push(OutputCode { mid: m, scale });
        }
    }
    circuit.validate().map_err(|e| LowerError::Model(e.to_string()))?;
    let narrowing = pbs
        .iter()
        .map(|&k| match (&n.wires[k].lookup, &tables[k]) {
            (Some(l), Some(w)) if w.hi > w.lo => ((l.hi - l.lo) / (w.hi - w.lo)).max(1.0),
            _ => 1.0,
        })
        .collect();
    let held_out = match opts.table_ranges {
        TableRanges::Calibrated => pbs
            .iter()
            .filter_map(|&k| n.wires[k].lookup.as_ref())
            .fold((0, 0), |(o, t), l| (o + l.held_out.0, t + l.held_out.1)),
        TableRanges::Bound => (0, 0),
    };
    Ok(Integerized { circuit, narrowing, held_out, inputs, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_probability_sets_the_margin_in_standard_deviations() {
        let sigmas = |log2: f64| Options { failure_log2: log2, ..Options::default() }.failure_sigmas();
        assert!((sigmas(-40.0) - 7.15).abs() < 0.01, "{}", sigmas(-40.0));
        assert!((sigmas(-64.0) - 9.2).abs() < 0.05, "{}", sigmas(-64.0));
        assert!(sigmas(-128.0) > sigmas(-64.0));
    }
}
