//! The TFHE build's report: `report.txt` (for people) and `report.json` (for tools), from the
//! search's choice: parameters, precision, fidelity, bootstraps per layer, the optimizer's gains.

#[allow(unused_imports)]
use super::*;
use fhec_lower::tfhe::Trial;

pub(super) fn report(name: &str, choice: &Choice) -> (String, serde_json::Value) {
    let c = &choice.compiled;
    let circuit = &c.circuit;
    let params = circuit.params;
    let sigmas = choice.chosen.failure_sigmas();
    // Per layer, in order of first bootstrap: where the bits of its tables' inputs go.
    let mut by_layer: IndexMap<String, Layer> = IndexMap::new();
    for (p, &narrowing) in circuit.pbs.iter().zip(&c.narrowing) {
        let layer = circuit.layers.get(p.layer as usize).cloned().unwrap_or_default();
        let margin = (p.noise_std * sigmas).ceil() + 2.0;
        let usable = params.positions() as f64 - 2.0 * margin;
        let l = by_layer.entry(layer).or_insert(Layer { pbs: 0, noise: p.noise_std, usable, narrowing: Vec::new() });
        l.pbs += 1;
        l.noise = l.noise.max(p.noise_std);
        l.usable = l.usable.min(usable);
        l.narrowing.push(narrowing);
    }
    let layers: Vec<(String, Layer)> = by_layer.into_iter().collect();
    // Cheaper sets than the chosen one, and what they reached.
    let cheaper: Vec<(ParamSet, String)> = ParamSet::ALL
        .into_iter()
        .take_while(|&p| p != params)
        .filter_map(|p| {
            let tried: Vec<&Trial> = choice.trials.iter().filter(|t| t.options.params == p).collect();
            let best =
                tried.iter().filter_map(|t| t.fidelity).fold(None, |b: Option<f64>, f| Some(b.map_or(f, |b| b.max(f))));
            let outcome = match best {
                Some(f) => format!("best {f:.2}%"),
                None if tried.is_empty() => return None,
                None => "too noisy for every weight precision".to_string(),
            };
            Some((p, outcome))
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let latency = estimated_latency_ms(circuit, threads);
    let o = &choice.chosen;
    let (origin, scored) = &choice.calibration;
    let (calibration_line, fidelity_on) = match origin {
        Origin::Samples => (
            format!(
                "input ranges: the calibration samples', widened by {:.0}% on each side",
                fhec_lower::HEADROOM * 100.0
            ),
            format!("{scored} calibration samples"),
        ),
        Origin::InputQuantizer { at } => (
            format!("input ranges: the model's own input quantizer ({at}); no calibration samples"),
            format!(
                "{scored} samples drawn uniformly from those ranges{}",
                if choice.steps.is_some() {
                    ", as output values within one quantization step"
                } else {
                    ", as the RMS error of the outputs relative to their spread"
                }
            ),
        ),
    };
    let mut narrowed: Vec<f64> = c.narrowing.iter().copied().filter(|&g| g > 1.0).collect();
    narrowed.sort_by(f64::total_cmp);
    let median_narrowing = narrowed.get(narrowed.len() / 2).copied().unwrap_or(1.0);
    let ranges_line = match o.table_ranges {
        TableRanges::Bound => {
            "table input ranges: the interval bound (no input the client can send leaves its table)".to_string()
        }
        _ if c.narrowing.is_empty() => "table input ranges: no tables".to_string(),
        TableRanges::Calibrated if narrowed.is_empty() => {
            "table input ranges: the interval bound (no calibration samples narrowed a table)".to_string()
        }
        TableRanges::Calibrated => format!(
            "table input ranges: calibrated: {} of {} tables cover their calibration range widened {}x, median {:.1}x (at most {}x) narrower than the interval bound; an input beyond its window reads a clipped value (--table-ranges bound: none can leave its table)\n\
             held out: {} of {} table reads of the odd-numbered calibration samples leave the windows the even-numbered ones give ({})",
            narrowed.len(),
            c.narrowing.len(),
            fhec_lower::TABLE_HEADROOM,
            median_narrowing,
            fhec_lower::MAX_NARROWING,
            c.held_out.0,
            c.held_out.1,
            match c.held_out {
                (_, 0) => "no samples to hold out".to_string(),
                (0, n) => format!("fewer than {:.1e} per read at 95% confidence", 3.0 / n as f64),
                (k, n) => format!("{:.1e} per read", k as f64 / n as f64),
            }
        ),
    };
    let mut text = format!(
        "model: {name}\nparameter set: {params} (tfhe-rs, 128-bit security), tables of {} positions\n\
         precision: {}-bit weights on bootstrap outputs (outputs: up to {}){}, failure probability 2^{} per bootstrap ({sigmas:.2} sigma)\n\
         {}\n{ranges_line}\n\
         fidelity to the float model on {} (noisy simulation): {:.2}% (budget: {:.2}%){}\n{}{}\
         bootstraps (PBS) per sample: {}\ncritical path: {} levels\ninputs: {} encrypted values, outputs: {} decrypted values\n\
         estimated latency: {latency:.0} ms per sample on {threads} threads ({} ms per PBS, {} in batches)\n\nlayers:\n",
        params.positions(),
        o.weight_bits,
        o.output_weight_max,
        if o.bias_correction && matches!(origin, Origin::Samples) { ", biases corrected for the weights' rounding on the calibration samples" } else { "" },
        o.failure_log2,
        calibration_line,
        fidelity_on,
        choice.fidelity,
        choice.required,
        if choice.within_budget { "" } else { "  NOT WITHIN BUDGET: kept the cheapest set near the most faithful candidate" },
        if cheaper.is_empty() {
            String::new()
        } else {
            format!(
                "cheaper sets: {}\n",
                cheaper.iter().map(|(p, o)| format!("{} positions ({}): {o}", p.positions(), p.name())).collect::<Vec<_>>().join("; ")
            )
        },
        choice.steps.map_or(String::new(), |s| format!(
            "quantized output: {:.1}% of output values within one quantization step of the float model in noisy simulation (largest distance: {:.0} steps)\n",
            s.within_one, s.max
        )),
        circuit.pbs.len(),
        circuit.levels().len(),
        circuit.n_inputs,
        circuit.outputs.len(),
        params.pbs_ms(),
        params.batched_pbs_ms()
    );
    for (name, l) in &layers {
        text.push_str(&format!(
            "  {name:40} {:6} PBS  noise std {:5.1} positions  input resolution {:.1} bits (noise margin {:.2} bits, window {:+.1} bits)  output weights {} bits\n",
            l.pbs,
            l.noise,
            l.usable.log2(),
            l.margin_bits(params),
            l.window_bits(),
            o.weight_bits_of(name)
        ));
    }
    text.push_str(
        "  (input resolution: the positions a table's input spreads over, after the noise margin on each side; the window: \
         what spreading over the calibrated inputs instead of the interval bound gains, median)\n",
    );
    let opt = &choice.optimization;
    let r = &opt.report;
    let pbs_ms = params.pbs_ms();
    let (before, after) = (opt.pbs_before(), opt.pbs_after());
    if opt.config.level == 0 {
        text.push_str("\noptimizer: off (--opt-level 0)\n");
    } else {
        text.push_str(&format!(
            "\noptimizer (e-graph, --opt-level {}): {} iterations, {} e-nodes, {:.0} ms, stop: {}{}\n  PBS per sample: {} -> {}; estimated latency on 1 thread: {} ms -> {:.0} ms\n  rules applied:{}\n",
            opt.config.level,
            r.iterations,
            r.egraph_nodes,
            r.time.as_secs_f64() * 1e3,
            r.stop_reason,
            if r.kept_input { " (no cheaper program: the input is kept)" } else { "" },
            if r.before.unsupported > 0 { format!("not lowerable ({} quotients of encrypted values)", r.before.unsupported) } else { before.to_string() },
            after,
            if r.before.unsupported > 0 { "-".to_string() } else { format!("{:.0}", before as f64 * pbs_ms) },
            after as f64 * pbs_ms,
            r.applied.iter().map(|(n, c)| format!(" {n} {c}")).collect::<Vec<_>>().join(",")
        ));
        if opt.elided > 0 {
            text.push_str(&format!(
                "  tables made leveled (affine over every input they can get: a relu of a value that cannot be negative, a clip that cannot clip): {}\n",
                opt.elided
            ));
        }
        if opt.composed > 0 {
            text.push_str(&format!(
                "  tables composed after scalarization (a table read only by the next, through a per-element affine map): {}\n",
                opt.composed
            ));
        }
        text.push_str("  per layer (before -> after):\n");
        // Layers in order of first appearance, before then after.
        let mut counts: IndexMap<&str, (usize, usize)> = IndexMap::new();
        for (l, c) in &opt.layers_before {
            counts.entry(l).or_default().0 = *c;
        }
        for (l, c) in &opt.layers_after {
            counts.entry(l).or_default().1 = *c;
        }
        for (n, (before, after)) in counts {
            text.push_str(&format!("    {n:40} {before:6} -> {after:6} PBS\n"));
        }
    }
    text.push_str("\ncandidates tried (parameter set, weight bits, output weight cap: fidelity):\n");
    for t in &choice.trials {
        let f = match t.fidelity {
            Some(f) if t.runs < choice.runs => {
                format!("{f:.2}% (screened out on {} of {} noisy runs)", t.runs, choice.runs)
            }
            Some(f) => format!("{f:.2}%"),
            None => "too noisy".to_string(),
        };
        let layers: String = t.options.layer_weight_bits.iter().map(|(l, b)| format!(" {l}={b}")).collect();
        text.push_str(&format!(
            "  {:52} {} {:4}{layers}: {f}\n",
            t.options.params.name(),
            t.options.weight_bits,
            t.options.output_weight_max
        ));
    }
    if let Some(pre) = &c.preprocess {
        text.push_str(&format!(
            "\nclient pre-processing (before encryption):\n{}",
            pre.to_text(fhec_ir::DataMode::Elided)
        ));
    }
    text.push_str(&format!("\nsize estimated before lowering: {}\n", opt.size));
    text.push_str(&format!("\nclient post-processing:\n{}", c.postprocess.to_text(fhec_ir::DataMode::Elided)));
    let json = json!({
        "model": name,
        "scheme": "tfhe",
        "pbs_count": circuit.pbs.len(),
        "estimate": json!({
            "bootstraps": opt.size.bootstraps,
            "encrypted_values": opt.size.encrypted_values,
            "affine_terms": opt.size.terms,
            "compile_memory_mb": opt.size.memory_mb().ceil(),
        }),
        "parameter_set": params.name(),
        "positions": params.positions(),
        "pbs_ms": params.pbs_ms(),
        "batched_pbs_ms": params.batched_pbs_ms(),
        "weight_bits": o.weight_bits,
        "output_weight_max": o.output_weight_max,
        "failure_probability_log2": o.failure_log2,
        "table_ranges": json!({
            "mode": match o.table_ranges { TableRanges::Calibrated => "calibrated", TableRanges::Bound => "bound" },
            "tables_narrowed": narrowed.len(),
            "median_narrowing": median_narrowing,
            "held_out_reads_outside": c.held_out.0,
            "held_out_reads": c.held_out.1,
        }),
        "calibration": match origin {
            Origin::Samples => json!({ "source": "samples", "samples_scored": scored }),
            Origin::InputQuantizer { at } => json!({ "source": "input_quantizer", "quantizer": at, "samples_scored": scored }),
        },
        "fidelity_percent": choice.fidelity,
        "quantized_output_steps": choice.steps.map(|s| json!({ "within_one_percent": s.within_one, "max": s.max })),
        "fidelity_required_percent": choice.required,
        "within_budget": choice.within_budget,
        "estimated_latency_ms": latency,
        "threads": threads,
        "levels": circuit.levels().len(),
        "inputs": circuit.n_inputs,
        "outputs": circuit.outputs.len(),
        "optimizer": json!({
            "opt_level": opt.config.level,
            "pbs_before": before,
            "pbs_after": after,
            "unlowerable_ops_before": r.before.unsupported,
            "estimated_latency_1_thread_ms_before": before as f64 * pbs_ms,
            "estimated_latency_1_thread_ms_after": after as f64 * pbs_ms,
            "iterations": r.iterations,
            "egraph_nodes": r.egraph_nodes,
            "time_ms": r.time.as_secs_f64() * 1e3,
            "stop_reason": r.stop_reason,
            "kept_input": r.kept_input,
            "rules_applied": r.applied.iter().map(|(n, c)| json!({"rule": n, "count": c})).collect::<Vec<_>>(),
            "tables_composed": opt.composed,
            "tables_made_leveled": opt.elided,
            "layers_before": opt.layers_before.iter().map(|(n, c)| json!({"name": n, "pbs": c})).collect::<Vec<_>>(),
            "layers_after": opt.layers_after.iter().map(|(n, c)| json!({"name": n, "pbs": c})).collect::<Vec<_>>(),
        }),
        "bias_correction": o.bias_correction && matches!(origin, Origin::Samples),
        "cheaper_sets": cheaper.iter().map(|(p, o)| json!({ "parameter_set": p.name(), "positions": p.positions(), "outcome": o })).collect::<Vec<_>>(),
        "layers": layers.iter().map(|(name, l)| json!({
            "name": name, "pbs": l.pbs, "noise_std_positions": l.noise, "input_resolution_bits": l.usable.log2(),
            "noise_margin_bits": l.margin_bits(params), "window_bits": l.window_bits(),
            "output_weight_bits": o.weight_bits_of(name),
        })).collect::<Vec<_>>(),
    });
    (text, json)
}

/// One layer's tables in the report.
struct Layer {
    pbs: usize,
    /// The largest noise standard deviation at a table input, in positions.
    noise: f64,
    /// The fewest positions a table's input spreads over (the noise margin taken off both sides).
    usable: f64,
    /// Per table, how many times narrower than its interval bound its window is.
    narrowing: Vec<f64>,
}

impl Layer {
    /// Bits of input resolution the noise margin costs.
    fn margin_bits(&self, params: ParamSet) -> f64 {
        (params.positions() as f64 / self.usable).log2()
    }

    /// Bits the calibrated windows gain over the interval bound, median over the layer's tables.
    fn window_bits(&self) -> f64 {
        let mut n = self.narrowing.clone();
        n.sort_by(f64::total_cmp);
        n.get(n.len() / 2).map_or(0.0, |g| g.log2())
    }
}

/// The tree ensembles' section: per ensemble, what a node-by-node lowering would take (one bootstrap
/// per branch and one per leaf) beside the translation's shared decisions and block tables. With
/// `client_decisions`, the client computed the decisions before encrypting: only the block tables
/// are bootstraps.
pub(super) fn trees(
    ensembles: &[fhec_onnx::TreeSummary],
    client_decisions: bool,
    text: &mut String,
    json: &mut serde_json::Value,
) {
    use std::fmt::Write;
    let span = |v: &[usize]| {
        let (lo, hi) = (v.iter().min().copied().unwrap_or(0), v.iter().max().copied().unwrap_or(0));
        let mean = v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
        (lo, hi, mean)
    };
    text.push_str(
        "\ntree ensembles (bootstraps in the translation; a node-by-node lowering takes one per branch and one per leaf):\n",
    );
    let mut list = Vec::new();
    for e in ensembles {
        let naive = e.branches + e.leaves;
        let tables: Vec<usize> = e.per_tree.iter().map(|t| t.0).collect();
        let reads: Vec<usize> = e.per_tree.iter().map(|t| t.1).collect();
        let ((tlo, thi, tmean), (rlo, rhi, rmean)) = (span(&tables), span(&reads));
        let blocks = e.tables() - e.decisions;
        let (pbs, decisions) = if client_decisions {
            (
                blocks,
                format!(
                    "{} decisions computed by the client before encryption (--private-thresholds: on the server)",
                    e.decisions
                ),
            )
        } else {
            (e.tables(), format!("{} decisions shared by the trees", e.decisions))
        };
        let _ = writeln!(
            text,
            "  {:?}: {} trees, {} branches, {} leaves: {naive} node by node; here {decisions} + {blocks} block \
             tables = {pbs} ({:.1}x fewer); per tree {tlo}-{thi} tables (mean {tmean:.1}), reading {rlo}-{rhi} \
             decisions (mean {rmean:.1})",
            e.node,
            e.trees,
            e.branches,
            e.leaves,
            naive as f64 / pbs.max(1) as f64,
        );
        list.push(json!({
            "node": e.node, "trees": e.trees, "branches": e.branches, "leaves": e.leaves,
            "node_by_node_pbs": naive, "decisions": e.decisions, "tables": e.tables(),
            "client_decisions": client_decisions, "pbs": pbs,
            "per_tree": e.per_tree.iter().map(|t| json!({"tables": t.0, "decisions_read": t.1})).collect::<Vec<_>>(),
        }));
    }
    json["tree_ensembles"] = json!(list);
}
