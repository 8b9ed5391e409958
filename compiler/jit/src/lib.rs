//! A Cranelift JIT of the integer circuit: the cleartext simulation at native speed.
//!
//! [`Jit::compile`] turns a [`Circuit`] into one machine-code function that runs a batch of samples:
//! every bootstrap's affine input is straight-line wrapping 64-bit arithmetic with its weights as
//! immediates, every table a load from the flattened tables (the position is the accumulator's top
//! bits; outside the usable half the mirrored entry comes back negated, as in the negacyclic
//! rotation), and a loop runs the samples one after the other. Bootstrap outputs go to a per-call
//! scratch array; inputs are read in place.
//!
//! The semantics are exactly [`fhec_runtime::simulate`]'s, the oracle: same wrap-around, same table
//! reads, and the same noise, drawn from [`NoiseSampler`] in the same order (so one seed gives both
//! the same noisy run). `tests/differential.rs` holds the JIT to that on every corpus model and on
//! thousands of random circuits.
//!
//! Memory safety rests on [`Circuit::validate`] (every wire read is defined before it, every table
//! exists and has `N` entries) and on the index masking (a table index is always in `[0, N)`).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use fhec_runtime::{Affine, Circuit, Noise, NoiseSampler, ParamSet, RuntimeError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JitError {
    #[error(transparent)]
    Circuit(#[from] RuntimeError),
    /// The circuit is valid but outside what the code generator handles (the caller falls back to
    /// the interpreter).
    #[error("the JIT does not handle this circuit: {0}")]
    Unsupported(String),
    #[error("JIT code generation failed: {0}")]
    Codegen(String),
}

/// `run(inputs, noise, noise_stride_bytes, tables, wires, outputs, samples)`.
type RunFn = unsafe extern "C" fn(*const i64, *const i64, i64, *const i64, *mut i64, *mut i64, i64);

/// The module that owns the generated code. It is only touched again to free the code on drop.
struct CodeMemory(Option<JITModule>);

// SAFETY: after `finalize_definitions` the module is never used from any thread except to free its
// memory in `Drop`, which `&mut self` makes exclusive; the code it owns is immutable.
unsafe impl Send for CodeMemory {}
// SAFETY: as above; no `&self` method touches the module.
unsafe impl Sync for CodeMemory {}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        if let Some(module) = self.0.take() {
            // SAFETY: the only pointer into this memory is `Jit::run`, dropped with it.
            unsafe { module.free_memory() };
        }
    }
}

/// Samples per call into the generated code: the noise buffer for one chunk stays in cache.
const CHUNK: usize = 64;

/// A circuit compiled to machine code. Cheap to share between threads (`&Jit` is `Sync`).
pub struct Jit {
    run: RunFn,
    _code: CodeMemory,
    /// All tables, `N` entries each, back to back.
    tables: Vec<i64>,
    params: ParamSet,
    n_inputs: usize,
    n_pbs: usize,
    n_outputs: usize,
}

impl Jit {
    /// Generates the machine code for `circuit` (validated first).
    pub fn compile(circuit: &Circuit) -> Result<Jit, JitError> {
        circuit.validate()?;
        let positions = circuit.params.positions();
        if !positions.is_power_of_two() {
            return Err(JitError::Unsupported(format!("{positions} table positions is not a power of two")));
        }
        // Offsets into inputs, wires, noise (two per bootstrap) and tables are 32-bit immediates.
        let largest = (circuit.tables.len() * positions)
            .max(circuit.n_inputs)
            .max(2 * circuit.pbs.len())
            .max(circuit.outputs.len());
        if largest.saturating_mul(8) > i32::MAX as usize {
            return Err(JitError::Unsupported(format!("{largest} values do not fit 32-bit offsets")));
        }
        let codegen = |e: &dyn std::fmt::Display| JitError::Codegen(e.to_string());
        let mut flags = settings::builder();
        flags.set("opt_level", "none").map_err(|e| codegen(&e))?;
        flags.set("is_pic", "false").map_err(|e| codegen(&e))?;
        flags.set("regalloc_algorithm", "backtracking").map_err(|e| codegen(&e))?;
        let isa = cranelift_native::builder()
            .map_err(|e| JitError::Unsupported(format!("no Cranelift backend for this host: {e}")))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| codegen(&e))?;
        if isa.pointer_type() != I64 {
            return Err(JitError::Unsupported("the host's pointers are not 64-bit".into()));
        }
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let mut ctx = module.make_context();
        ctx.func.signature.params.extend([AbiParam::new(I64); 7]);
        let mut fctx = FunctionBuilderContext::new();
        emit(circuit, FunctionBuilder::new(&mut ctx.func, &mut fctx), module.target_config());
        let id = module.declare_function("circuit", Linkage::Local, &ctx.func.signature).map_err(|e| codegen(&e))?;
        module.define_function(id, &mut ctx).map_err(|e| codegen(&format!("{e:?}")))?;
        module.clear_context(&mut ctx);
        module.finalize_definitions().map_err(|e| codegen(&e))?;
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the function just defined with `RunFn`'s signature (seven pointer-sized
        // integer parameters, no result, the host's default calling convention).
        let run = unsafe { std::mem::transmute::<*const u8, RunFn>(code) };
        Ok(Jit {
            run,
            _code: CodeMemory(Some(module)),
            tables: circuit.tables.iter().flat_map(|t| t.values.iter().copied()).collect(),
            params: circuit.params,
            n_inputs: circuit.n_inputs,
            n_pbs: circuit.pbs.len(),
            n_outputs: circuit.outputs.len(),
        })
    }

    /// Runs `samples` samples (`inputs` holds them one after the other, encoded) and returns their
    /// output accumulators, one sample after the other: what [`fhec_runtime::simulate`] returns for
    /// each, with the noise drawn in the same order.
    pub fn run(&self, inputs: &[i64], samples: usize, noise: Noise<'_>) -> Result<Vec<i64>, JitError> {
        if inputs.len() != self.n_inputs * samples {
            return Err(RuntimeError::InputCount { expected: self.n_inputs * samples, got: inputs.len() }.into());
        }
        let mut noise = NoiseSampler::new(self.params, noise);
        let per_sample = 2 * self.n_pbs;
        // Without noise every sample reads the same zeros (stride 0).
        let (mut draws, stride) = if noise.is_noisy() {
            (vec![0i64; per_sample * CHUNK.min(samples)], per_sample)
        } else {
            (vec![0i64; per_sample], 0)
        };
        let mut wires = vec![0i64; self.n_pbs];
        let mut outputs = vec![0i64; self.n_outputs * samples];
        let mut done = 0;
        while done < samples {
            let n = CHUNK.min(samples - done);
            if noise.is_noisy() {
                noise.fill(&mut draws[..per_sample * n]);
            }
            let input = &inputs[done * self.n_inputs..(done + n) * self.n_inputs];
            let output = &mut outputs[done * self.n_outputs..(done + n) * self.n_outputs];
            // SAFETY: the code reads `n` samples of `n_inputs` inputs and of `stride` noise values
            // (`draws` holds `n * stride` of them, or `per_sample` when the stride is 0), writes `n_pbs`
            // wires and `n` samples of `n_outputs` outputs, all of the sizes given here; its table
            // reads stay inside `tables` (validated circuit, masked indices).
            unsafe {
                (self.run)(
                    input.as_ptr(),
                    draws.as_ptr(),
                    (stride * 8) as i64,
                    self.tables.as_ptr(),
                    wires.as_mut_ptr(),
                    output.as_mut_ptr(),
                    n as i64,
                )
            };
            done += n;
        }
        Ok(outputs)
    }
}

/// Emits the function: a loop over samples around the circuit's straight-line code.
fn emit(c: &Circuit, mut b: FunctionBuilder<'_>, target: TargetFrontendConfig) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    let header = b.create_block();
    for _ in 0..4 {
        b.append_block_param(header, I64); // inputs, noise, outputs, samples left
    }
    let body = b.create_block();
    let exit = b.create_block();

    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (inputs, noise, stride, tables, wires, outputs, samples) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    b.ins().jump(header, &[inputs.into(), noise.into(), outputs.into(), samples.into()]);

    b.switch_to_block(header);
    let h = b.block_params(header).to_vec();
    let (inputs, noise, outputs, left) = (h[0], h[1], h[2], h[3]);
    b.ins().brif(left, body, &[], exit, &[]);

    b.switch_to_block(body);
    // Aligned, and in bounds by construction.
    let mem = MemFlagsData::trusted();
    let n_in = c.n_inputs as u32;
    let positions = c.params.positions() as i64;
    let (shift, log2n) = (c.params.position_shift() as i64, positions.trailing_zeros() as i64);
    let load_wire = |b: &mut FunctionBuilder<'_>, w: u32| -> Value {
        if w < n_in {
            b.ins().load(I64, mem, inputs, 8 * w as i32)
        } else {
            b.ins().load(I64, mem, wires, 8 * (w - n_in) as i32)
        }
    };
    let affine = |b: &mut FunctionBuilder<'_>, a: &Affine| -> Value {
        let mut acc = b.ins().iconst(I64, a.bias);
        for &(w, coef) in &a.terms {
            let v = load_wire(b, w);
            acc = match coef {
                0 => acc,
                1 => b.ins().iadd(acc, v),
                -1 => b.ins().isub(acc, v),
                _ => {
                    let m = b.ins().imul_imm_s(v, coef);
                    b.ins().iadd(acc, m)
                }
            };
        }
        acc
    };
    for (k, pbs) in c.pbs.iter().enumerate() {
        let acc = affine(&mut b, &pbs.input);
        let at_input = b.ins().load(I64, mem, noise, 16 * k as i32);
        let acc = b.ins().iadd(acc, at_input);
        // Position, then its index in the table: in [0, N) inside the usable half.
        let pos = b.ins().sshr_imm_s(acc, shift);
        let shifted = b.ins().iadd_imm_s(pos, positions / 2);
        let index = b.ins().band_imm_s(shifted, positions - 1);
        let offset = b.ins().ishl_imm_s(index, 3);
        let addr = b.ins().iadd(tables, offset);
        let entry = b.ins().load(I64, mem, addr, 8 * (pbs.table as i64 * positions) as i32);
        // Outside the usable half (shifted index outside [0, N)) the mirrored entry, negated.
        let half_turns = b.ins().sshr_imm_s(shifted, log2n);
        let outside = b.ins().icmp_imm_s(IntCC::NotEqual, half_turns, 0);
        let negated = b.ins().ineg(entry);
        let value = b.ins().select(outside, negated, entry);
        let at_output = b.ins().load(I64, mem, noise, 16 * k as i32 + 8);
        let value = b.ins().iadd(value, at_output);
        b.ins().store(mem, value, wires, 8 * k as i32);
    }
    for (i, o) in c.outputs.iter().enumerate() {
        let v = affine(&mut b, o);
        b.ins().store(mem, v, outputs, 8 * i as i32);
    }
    let next_inputs = b.ins().iadd_imm_s(inputs, 8 * c.n_inputs as i64);
    let next_noise = b.ins().iadd(noise, stride);
    let next_outputs = b.ins().iadd_imm_s(outputs, 8 * c.outputs.len() as i64);
    let next_left = b.ins().iadd_imm_s(left, -1);
    b.ins().jump(header, &[next_inputs.into(), next_noise.into(), next_outputs.into(), next_left.into()]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(target);
}
