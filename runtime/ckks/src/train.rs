//! Training on encrypted data: full-batch Nesterov-accelerated gradient descent for logistic and
//! linear regression, as one slot program that runs in the clear (the simulation, on `Vec<f64>`) and
//! under encryption (`backend::train`, on ciphertexts) through the same [`Slots`] operations.
//!
//! Layout: one ciphertext holds the whole training set, sample `i` in the block of slots
//! `i·B .. (i+1)·B` (`B` the features plus the bias column, rounded up to a power of two), padding
//! zero. Logistic regression folds each label into its row (`z_i = ±x_i`, the rows divided by the
//! sigmoid's interval `R`), so that an iteration is, with `V` the weights `v` repeated in every block:
//!
//! ```text
//! u   = sum_rows(Z ⊙ V)                   z_i·v / R in slot i·B      (one product)
//! u   = rot(sum_rows(mask ⊙ u), 1)        ... in every slot of row i−1 (one product by constants)
//! S   = p(u)                              γR/n · σ(−R u), a Chebyshev polynomial on [−1, 1]
//! G   = sum_blocks(S ⊙ rot(Z, B))         γ · ∇ℓ(v), in every block  (one product)
//! G'  = sum_blocks(S ⊙ (1−η)rot(Z, B))    the same times 1−η, from a second product, not deeper
//! w⁺  = a ⊙ v + G                         a = 1 − γλ off the bias column (L2)
//! v⁺  = (1−η) a ⊙ v + G' + η w            Nesterov's momentum
//! ```
//!
//! Every sum is a sum of rotations by one shift in the same direction ([`sum_stages`]): copying a
//! row's sum back across the row with rotations the other way would need as many keys again, so
//! the copy lands one row early and the rows are rotated by a block to meet it. Each rotation key at
//! ring 2^15 is about 67 MB and 4 s of key generation: the sums use radix-8 stages (a key per
//! stage, the shift applied up to 7 times) rather than one key per power of two.
//!
//! Linear regression replaces `S` by the residual `y_i − a_i·v` (the targets encrypted in their
//! rows) and `Z` by `γ/n · A`. The bits an iteration consumes bound the iterations one encryption
//! carries ([`TrainPlan::per_round`]); between rounds the data owner refreshes the weights, the
//! only values it decrypts and encrypts again (`interactive` refresh, counted in the report): poulpy
//! bootstraps at ring 2^15 in about 11 s and 16 GB, over this machine's budget for training.
//!
//! [`reference()`] is the same algorithm in float64 on the unpacked data (dense products, the same
//! polynomial): the simulation must match it to rounding, and the encrypted run the simulation
//! within CKKS' error.

use crate::{CONST_BITS, CkksError, HEADROOM, LOG_DELTA, Ring, cheb};
use serde::{Deserialize, Serialize};

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Binary classification, labels 0 and 1: `P(y = 1 | x) = σ(w·x + b)`.
    Logistic,
    /// Least squares: `y ≈ w·x + b`.
    Linear,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Logistic => "logistic",
            Task::Linear => "linear",
        }
    }
}

/// The algorithm's public choices: none depends on the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub task: Task,
    pub iterations: usize,
    /// Gradient step `γ`.
    pub step: f64,
    /// L2 penalty `λ` (the bias is not penalized).
    pub l2: f64,
    /// Degree of the sigmoid's polynomial (logistic).
    pub degree: usize,
    /// The sigmoid is fitted on `[−R, R]` (logistic): `|w·z|` must stay inside.
    pub interval: f64,
}

impl Hyper {
    /// Defaults measured on the breast-cancer and diabetes sets (standardized, clipped at ±3σ):
    /// see `docs/training.md`.
    pub fn defaults(task: Task, features: usize) -> Hyper {
        match task {
            Task::Logistic => Hyper { task, iterations: 8, step: 2.0, l2: 0.0, degree: 7, interval: 32.0 },
            // Standardized features: the Hessian's largest eigenvalue is at most its trace, the
            // columns (bias included); a step of 2 / trace is within the stable range.
            Task::Linear => {
                Hyper { task, iterations: 8, step: 2.0 / (features + 1) as f64, l2: 0.0, degree: 1, interval: 1.0 }
            }
        }
    }

    pub fn validate(&self) -> Result<(), CkksError> {
        let bad = |what: String| Err(CkksError::Plan(what));
        if self.iterations == 0 || self.iterations > 1000 {
            return bad(format!("{} iterations: between 1 and 1000", self.iterations));
        }
        if !(self.step.is_finite() && self.step > 0.0) {
            return bad(format!("step {}: a positive number", self.step));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0 && self.step * self.l2 < 1.0) {
            return bad(format!("L2 penalty {}: at least 0, and step × penalty below 1", self.l2));
        }
        if self.task == Task::Logistic {
            if !(3..=31).contains(&self.degree) || self.degree.is_multiple_of(2) {
                return bad(format!("sigmoid degree {}: odd, from 3 to 31", self.degree));
            }
            if !(self.interval.is_finite() && self.interval >= 1.0) {
                return bad(format!("sigmoid interval {}: at least 1", self.interval));
            }
        }
        Ok(())
    }
}

/// Nesterov's momentum weights `η_k` (`v⁺ = (1−η) w⁺ + η w`), from `λ_0 = 1`,
/// `λ_{k+1} = (1 + √(1 + 4λ_k²)) / 2`, `η_k = (1 − λ_k) / λ_{k+1}`.
pub fn momentum(iterations: usize) -> Vec<f64> {
    let mut lambda = 1.0f64;
    (0..iterations)
        .map(|_| {
            let next = (1.0 + (1.0 + 4.0 * lambda * lambda).sqrt()) / 2.0;
            let eta = (1.0 - lambda) / next;
            lambda = next;
            eta
        })
        .collect()
}

/// The training program for one data shape: layout, ring, rounds, and the constants of each step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    pub hyper: Hyper,
    pub samples: usize,
    /// Columns of a row: the features and the bias column (first).
    pub columns: usize,
    /// log2 of the slots per sample.
    pub log_block: usize,
    /// log2 of the sample blocks one ciphertext holds (all of the ring's slots).
    pub log_rows: usize,
    pub ring: Ring,
    /// Iterations one encryption carries before the weights need a refresh.
    pub per_round: usize,
    /// Chebyshev coefficients of `σ(−R x)` on `[−1, 1]` (logistic; empty for linear).
    pub sigmoid: Vec<f64>,
}

/// Bits of budget one iteration consumes along its deepest path.
pub fn bits_per_iteration(hyper: &Hyper) -> usize {
    let link = match hyper.task {
        Task::Logistic => cheb::depth(hyper.degree) as usize * LOG_DELTA,
        Task::Linear => 0,
    };
    LOG_DELTA + CONST_BITS + link + LOG_DELTA
}

impl TrainPlan {
    /// Plans `hyper` for `samples` rows of `features` features. The ring is the smallest that holds
    /// the set and runs every iteration without a refresh, else the largest (fewest refreshes).
    pub fn new(hyper: Hyper, samples: usize, features: usize) -> Result<TrainPlan, CkksError> {
        TrainPlan::at(hyper, samples, features, None)
    }

    /// [`TrainPlan::new`] at ring 2^`log_n` when given (14 or 15).
    pub fn at(hyper: Hyper, samples: usize, features: usize, log_n: Option<usize>) -> Result<TrainPlan, CkksError> {
        hyper.validate()?;
        if let Some(l) = log_n.filter(|l| !(14..=15).contains(l)) {
            return Err(CkksError::Plan(format!("ring 2^{l}: training runs at 2^14 or 2^15")));
        }
        if samples == 0 || features == 0 {
            return Err(CkksError::Shape(format!("{samples} samples of {features} features: nothing to train on")));
        }
        let columns = features + 1;
        let block = columns.next_power_of_two();
        let slots_needed = samples.next_power_of_two().max(1) * block;
        let per_iteration = bits_per_iteration(&hyper);
        let per_round = |r: &Ring| r.k.saturating_sub(LOG_DELTA + HEADROOM) / per_iteration;
        let fitting: Vec<Ring> = [14, 15]
            .into_iter()
            .filter(|l| log_n.is_none_or(|n| n == *l))
            .map(Ring::at)
            .filter(|r| r.slots() >= slots_needed)
            .collect();
        let ring =
            fitting.iter().find(|r| per_round(r) >= hyper.iterations).or(fitting.last()).copied().ok_or_else(|| {
                CkksError::Shape(format!(
                    "{samples} samples of {columns} columns (bias included) need {slots_needed} slots; one ciphertext \
                     at ring 2^{} holds {}: train on fewer samples or features (several ciphertexts per set are not \
                     supported yet)",
                    log_n.unwrap_or(15),
                    Ring::at(log_n.unwrap_or(15)).slots()
                ))
            })?;
        let rounds_fit = per_round(&ring);
        if rounds_fit == 0 {
            return Err(CkksError::Plan(format!(
                "one iteration needs {per_iteration} bits, more than a fresh ciphertext at ring 2^{} carries; lower \
                 the sigmoid's degree",
                ring.log_n
            )));
        }
        let sigmoid = match hyper.task {
            Task::Logistic => {
                let r = hyper.interval;
                cheb::interpolate(|x| 1.0 / (1.0 + (r * x).exp()), hyper.degree)
            }
            Task::Linear => Vec::new(),
        };
        let log_block = block.trailing_zeros() as usize;
        Ok(TrainPlan {
            per_round: rounds_fit.min(hyper.iterations),
            log_rows: (ring.slots() / block).trailing_zeros() as usize,
            hyper,
            samples,
            columns,
            log_block,
            ring,
            sigmoid,
        })
    }

    pub fn block(&self) -> usize {
        1 << self.log_block
    }

    /// Rounds of iterations; a refresh between consecutive ones.
    pub fn rounds(&self) -> usize {
        self.hyper.iterations.div_ceil(self.per_round)
    }

    pub fn refreshes(&self) -> usize {
        self.rounds() - 1
    }

    /// The rows as the server reads them, slot by slot: logistic `±a_i / R` (the label's sign
    /// folded in), linear `a_i`, with `a_i = (1, x_i)`.
    pub fn pack_rows(&self, x: &[Vec<f64>], y: &[f64]) -> Result<Vec<f64>, CkksError> {
        self.check_data(x, y)?;
        let (b, slots) = (self.block(), self.ring.slots());
        let mut out = vec![0.0; slots];
        for (i, (row, &label)) in x.iter().zip(y).enumerate() {
            let scale = match self.hyper.task {
                Task::Logistic => (2.0 * label - 1.0) / self.hyper.interval,
                Task::Linear => 1.0,
            };
            out[i * b] = scale;
            for (j, v) in row.iter().enumerate() {
                out[i * b + 1 + j] = scale * v;
            }
        }
        Ok(out)
    }

    /// Linear regression's targets, each repeated across a block: sample `i`'s in block `i − 1`
    /// (cyclically), where the program's copies of the sums land.
    pub fn pack_targets(&self, y: &[f64]) -> Vec<f64> {
        let (b, slots) = (self.block(), self.ring.slots());
        let mut out = vec![0.0; slots];
        for (i, &t) in y.iter().enumerate().take(self.samples) {
            let at = (i * b + slots - b) % slots;
            out[at..at + b].fill(t);
        }
        out
    }

    /// The rotations the program uses, as shifts (each needs an evaluation key).
    pub fn shifts(&self) -> Vec<i64> {
        let mut all: Vec<i64> = sum_stages(0, self.log_block)
            .into_iter()
            .chain(sum_stages(self.log_block, self.log_rows))
            .map(|(shift, _)| shift as i64)
            .chain([1, self.block() as i64])
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Weights (bias first) repeated in every block.
    pub fn pack_weights(&self, w: &[f64]) -> Vec<f64> {
        let b = self.block();
        let mut out = vec![0.0; self.ring.slots()];
        for chunk in out.chunks_mut(b) {
            chunk[..w.len()].copy_from_slice(w);
        }
        out
    }

    /// The weights (bias first) from a weight vector's first block.
    pub fn unpack_weights(&self, slots: &[f64]) -> Vec<f64> {
        slots[..self.columns].to_vec()
    }

    fn check_data(&self, x: &[Vec<f64>], y: &[f64]) -> Result<(), CkksError> {
        if x.len() != self.samples || y.len() != self.samples {
            return Err(CkksError::Shape(format!(
                "{} samples and {} labels for a training plan of {} samples",
                x.len(),
                y.len(),
                self.samples
            )));
        }
        for (i, (row, &label)) in x.iter().zip(y).enumerate() {
            if row.len() + 1 != self.columns {
                return Err(CkksError::Shape(format!(
                    "sample {i} has {} features; the plan has {}",
                    row.len(),
                    self.columns - 1
                )));
            }
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(CkksError::Shape(format!("sample {i}, feature {j}: {} is not a number", row[j])));
            }
            if self.hyper.task == Task::Logistic && label != 0.0 && label != 1.0 {
                return Err(CkksError::Shape(format!("label {i} is {label}; logistic regression takes 0 or 1")));
            }
            if !label.is_finite() {
                return Err(CkksError::Shape(format!("label {i} is {label}, not a number")));
            }
        }
        Ok(())
    }

    /// The link polynomial of logistic regression: `γR/n · σ(−R x)` in Chebyshev coefficients (the
    /// same every iteration).
    pub fn sigmoid_link(&self) -> Vec<f64> {
        let scale = self.hyper.step * self.hyper.interval / self.samples as f64;
        self.sigmoid.iter().map(|a| a * scale).collect()
    }

    /// Iteration `k`'s constants, as the slot program uses them.
    fn step_constants(&self, k: usize) -> Step {
        let h = &self.hyper;
        let eta = momentum(h.iterations)[k];
        let n = self.samples as f64;
        let (b, slots) = (self.block(), self.ring.slots());
        // Linear regression's step γ/n goes into the rows the gradient's products read (which have
        // budget to spare), not the mask on the deepest path.
        let c = match h.task {
            Task::Logistic => 1.0,
            Task::Linear => h.step / n,
        };
        // The mask keeps each sample's sum, in slot i·B.
        let mut mask = vec![0.0; slots];
        for i in 0..self.samples {
            mask[i * b] = 1.0;
        }
        let mut decay = vec![1.0 - h.step * h.l2; slots];
        for chunk in decay.chunks_mut(b) {
            chunk[0] = 1.0;
        }
        let link = match h.task {
            Task::Logistic => self.sigmoid_link(),
            Task::Linear => Vec::new(),
        };
        Step { eta, c, mask, decay: (h.l2 != 0.0).then_some(decay), link }
    }
}

struct Step {
    eta: f64,
    /// Linear regression's `γ/n` (1 for logistic, whose link polynomial carries its step).
    c: f64,
    mask: Vec<f64>,
    /// `1 − γλ` per slot, none without a penalty.
    decay: Option<Vec<f64>>,
    /// The link polynomial (logistic): `γR/n · σ(−R x)` in Chebyshev coefficients.
    link: Vec<f64>,
}

/// Bits of radix of each stage of a sum of rotations: a stage of radix 8 applies one key 7 times.
pub const RADIX_BITS: usize = 3;

/// A sum of `2^log_count` rotations by multiples of `2^log_batch`, as stages `(shift, radix)`: each
/// stage sums `radix` rotations by multiples of `shift`, from one rotation key.
pub fn sum_stages(log_batch: usize, log_count: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut done = 0;
    while done < log_count {
        let bits = RADIX_BITS.min(log_count - done);
        out.push((1 << (log_batch + done), 1 << bits));
        done += bits;
    }
    out
}

/// The operations the training program is made of, in the clear or under encryption.
pub trait Slots: Sync {
    type V: Send + Sync;
    fn mul(&self, a: &Self::V, b: &Self::V) -> Result<Self::V, CkksError>;
    fn mul_const(&self, a: &Self::V, c: f64) -> Result<Self::V, CkksError>;
    fn mul_vec(&self, a: &Self::V, v: &[f64]) -> Result<Self::V, CkksError>;
    fn add(&self, a: &Self::V, b: &Self::V) -> Result<Self::V, CkksError>;
    fn sub(&self, a: &Self::V, b: &Self::V) -> Result<Self::V, CkksError>;
    /// `rot(a, k)[p] = a[p + k]`.
    fn rotate(&self, a: &Self::V, k: usize) -> Result<Self::V, CkksError>;
    /// `Σ_{j < 2^count} rot(a, j·2^batch)`: the sum of a window that starts at each slot.
    fn inner_sum(&self, a: &Self::V, log_batch: usize, log_count: usize) -> Result<Self::V, CkksError>;
    /// `Σ c_k T_k(a)` (Chebyshev, on [−1, 1]).
    fn poly(&self, a: &Self::V, coeffs: &[f64]) -> Result<Self::V, CkksError>;
    /// Runs two independent parts (in parallel where the evaluator can).
    fn join<A: Send, B: Send>(&self, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
        (a(), b())
    }
}

/// The server's state between iterations: the weights `w` and the look-ahead point `v`.
pub struct State<V> {
    pub w: V,
    pub v: V,
}

/// The training set as the server holds it (encrypted or not).
pub struct Data<V> {
    /// The packed rows ([`TrainPlan::pack_rows`]).
    pub rows: V,
    /// Linear regression's targets ([`TrainPlan::pack_targets`]).
    pub targets: Option<V>,
}

impl TrainPlan {
    /// Iterations `range` (one round) on `state`.
    pub fn run<S: Slots>(
        &self,
        s: &S,
        data: &Data<S::V>,
        mut state: State<S::V>,
        iterations: std::ops::Range<usize>,
        mut progress: impl FnMut(usize),
    ) -> Result<State<S::V>, CkksError> {
        // Row i+1 of the data in block i, where the copies of the sums land (one rotation a round).
        let rows = s.rotate(&data.rows, self.block())?;
        for k in iterations {
            state = self.iteration(s, data, &rows, state, k)?;
            progress(k);
        }
        Ok(state)
    }

    fn iteration<S: Slots>(
        &self,
        s: &S,
        data: &Data<S::V>,
        rows: &S::V,
        st: State<S::V>,
        k: usize,
    ) -> Result<State<S::V>, CkksError> {
        let c = self.step_constants(k);
        let (lb, lr) = (self.log_block, self.log_rows);
        let u = s.mul(&data.rows, &st.v)?;
        let u = s.inner_sum(&u, 0, lb)?;
        let u = s.mul_vec(&u, &c.mask)?;
        let u = s.inner_sum(&u, 0, lb)?;
        let u = s.rotate(&u, 1)?;
        let link = match self.hyper.task {
            Task::Logistic => s.poly(&u, &c.link)?,
            Task::Linear => {
                let targets = data.targets.as_ref().ok_or_else(|| {
                    CkksError::Shape("linear regression needs its targets, which the data has not".into())
                })?;
                s.sub(targets, &u)?
            }
        };
        // G, and (1−η)·G from a product with (1−η)·rows, which has budget to spare, so that the
        // momentum costs no depth; the two are independent.
        let one_minus = 1.0 - c.eta;
        let gradient = |scale: f64| -> Result<S::V, CkksError> {
            let g = if scale == 1.0 {
                s.mul(&link, rows)?
            } else {
                let scaled = s.mul_const(rows, scale)?;
                s.mul(&link, &scaled)?
            };
            s.inner_sum(&g, lb, lr)
        };
        let (g, g2) = s.join(|| gradient(c.c), || gradient(c.c * one_minus));
        let (g, g2) = (g?, g2?);
        let w_next = match &c.decay {
            Some(d) => {
                let av = s.mul_vec(&st.v, d)?;
                s.add(&av, &g)?
            }
            None => s.add(&st.v, &g)?,
        };
        // v⁺ = (1−η)(a ⊙ v) + (1−η) G + η w.
        let mut v_next = match &c.decay {
            Some(d) => {
                let scaled: Vec<f64> = d.iter().map(|x| x * one_minus).collect();
                s.mul_vec(&st.v, &scaled)?
            }
            None => s.mul_const(&st.v, one_minus)?,
        };
        v_next = s.add(&v_next, &g2)?;
        if c.eta != 0.0 {
            let ew = s.mul_const(&st.w, c.eta)?;
            v_next = s.add(&v_next, &ew)?;
        }
        Ok(State { w: w_next, v: v_next })
    }
}

/// The slot program in the clear: what encryption computes, without the noise.
pub struct Simulation {
    slots: usize,
}

impl Simulation {
    pub fn new(plan: &TrainPlan) -> Simulation {
        Simulation { slots: plan.ring.slots() }
    }

    fn check(&self, a: &[f64]) -> Result<(), CkksError> {
        if a.len() != self.slots {
            return Err(CkksError::Shape(format!("{} slots in a ring of {}", a.len(), self.slots)));
        }
        Ok(())
    }
}

impl Slots for Simulation {
    type V = Vec<f64>;
    fn mul(&self, a: &Vec<f64>, b: &Vec<f64>) -> Result<Vec<f64>, CkksError> {
        self.check(a)?;
        self.check(b)?;
        Ok(a.iter().zip(b).map(|(x, y)| x * y).collect())
    }
    fn mul_const(&self, a: &Vec<f64>, c: f64) -> Result<Vec<f64>, CkksError> {
        Ok(a.iter().map(|x| x * c).collect())
    }
    fn mul_vec(&self, a: &Vec<f64>, v: &[f64]) -> Result<Vec<f64>, CkksError> {
        self.check(v)?;
        Ok(a.iter().zip(v).map(|(x, y)| x * y).collect())
    }
    fn add(&self, a: &Vec<f64>, b: &Vec<f64>) -> Result<Vec<f64>, CkksError> {
        Ok(a.iter().zip(b).map(|(x, y)| x + y).collect())
    }
    fn sub(&self, a: &Vec<f64>, b: &Vec<f64>) -> Result<Vec<f64>, CkksError> {
        Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
    }
    fn rotate(&self, a: &Vec<f64>, k: usize) -> Result<Vec<f64>, CkksError> {
        Ok((0..self.slots).map(|p| a[(p + k) % self.slots]).collect())
    }
    fn inner_sum(&self, a: &Vec<f64>, log_batch: usize, log_count: usize) -> Result<Vec<f64>, CkksError> {
        let mut acc = a.clone();
        for l in 0..log_count {
            let shift = 1usize << (log_batch + l);
            acc = (0..self.slots).map(|p| acc[p] + acc[(p + shift) % self.slots]).collect();
        }
        Ok(acc)
    }
    fn poly(&self, a: &Vec<f64>, coeffs: &[f64]) -> Result<Vec<f64>, CkksError> {
        Ok(a.iter().map(|&x| cheb::eval(coeffs, x)).collect())
    }
}

impl TrainPlan {
    /// The whole training in the simulation (refreshes change nothing in the clear). Returns the
    /// weights, bias first, and the largest `|w·z| / R` any iteration met (logistic: above 1 the
    /// sigmoid's polynomial left its interval).
    pub fn simulate(&self, x: &[Vec<f64>], y: &[f64]) -> Result<(Vec<f64>, f64), CkksError> {
        let sim = Simulation::new(self);
        let data = Data {
            rows: self.pack_rows(x, y)?,
            targets: (self.hyper.task == Task::Linear).then(|| self.pack_targets(y)),
        };
        let zero = self.pack_weights(&vec![0.0; self.columns]);
        let mut state = State { w: zero.clone(), v: zero };
        let mut reach = 0.0f64;
        for k in 0..self.hyper.iterations {
            if self.hyper.task == Task::Logistic {
                let u = sim.mul(&data.rows, &state.v)?;
                let u = sim.inner_sum(&u, 0, self.log_block)?;
                reach = (0..self.samples).fold(reach, |m, i| m.max(u[i * self.block()].abs()));
            }
            state = self.run(&sim, &data, state, k..k + 1, |_| {})?;
        }
        Ok((self.unpack_weights(&state.w), reach))
    }
}

/// The same algorithm in float64 on the unpacked rows (dense products, the same polynomial): the
/// reference the simulation and the encrypted run are measured against. With `exact_sigmoid`, the
/// logistic function itself instead of its polynomial (what the polynomial costs in accuracy).
pub fn reference(plan: &TrainPlan, x: &[Vec<f64>], y: &[f64], exact_sigmoid: bool) -> Vec<f64> {
    let h = &plan.hyper;
    let n = x.len() as f64;
    let rows: Vec<Vec<f64>> = x.iter().map(|r| std::iter::once(1.0).chain(r.iter().copied()).collect()).collect();
    let d = plan.columns;
    let (mut w, mut v) = (vec![0.0; d], vec![0.0; d]);
    for eta in momentum(h.iterations) {
        let mut grad = vec![0.0; d];
        for (a, &label) in rows.iter().zip(y) {
            let t: f64 = a.iter().zip(&v).map(|(p, q)| p * q).sum();
            // The gradient's factor for this sample, times the sample's row.
            let f = match h.task {
                Task::Logistic => {
                    let sign = 2.0 * label - 1.0;
                    let z = sign * t;
                    let s =
                        if exact_sigmoid { 1.0 / (1.0 + z.exp()) } else { cheb::eval(&plan.sigmoid, z / h.interval) };
                    s * sign
                }
                Task::Linear => label - t,
            };
            for (g, p) in grad.iter_mut().zip(a) {
                *g += f * p;
            }
        }
        let w_next: Vec<f64> = (0..d)
            .map(|j| {
                let decay = if j == 0 { 1.0 } else { 1.0 - h.step * h.l2 };
                decay * v[j] + h.step / n * grad[j]
            })
            .collect();
        v = (0..d).map(|j| (1.0 - eta) * w_next[j] + eta * w[j]).collect();
        w = w_next;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small separable-ish set: two Gaussian-like clouds from a fixed recurrence.
    fn data(n: usize, d: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut state = 12345u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let y: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
        let x = y.iter().map(|&l| (0..d).map(|j| next() + if j < 2 { l - 0.5 } else { 0.0 }).collect()).collect();
        (x, y)
    }

    #[test]
    fn the_simulation_is_the_float64_algorithm() {
        for task in [Task::Logistic, Task::Linear] {
            let (x, y) = data(100, 6);
            let mut hyper = Hyper::defaults(task, 6);
            hyper.l2 = 0.01;
            let plan = TrainPlan::new(hyper, 100, 6).unwrap();
            let (w, _) = plan.simulate(&x, &y).unwrap();
            let r = reference(&plan, &x, &y, false);
            let gap = w.iter().zip(&r).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(gap < 1e-9, "{task:?}: simulation {w:?} vs float64 {r:?}");
            // And training did something: the weights on the informative features dominate.
            assert!(r[1].abs() > 2.0 * r[3].abs(), "{task:?}: {r:?}");
        }
    }

    #[test]
    fn rings_and_rounds_follow_the_budget() {
        let logistic = TrainPlan::new(Hyper::defaults(Task::Logistic, 30), 398, 30).unwrap();
        assert_eq!((logistic.ring.log_n, logistic.block(), logistic.per_round, logistic.rounds()), (15, 32, 4, 2));
        let linear = TrainPlan::new(Hyper::defaults(Task::Linear, 10), 309, 10).unwrap();
        assert_eq!((linear.ring.log_n, linear.refreshes()), (15, 0));
        let small = TrainPlan::new(Hyper { iterations: 2, ..Hyper::defaults(Task::Linear, 4) }, 50, 4).unwrap();
        assert_eq!((small.ring.log_n, small.refreshes()), (14, 0));
        let err = TrainPlan::new(Hyper::defaults(Task::Logistic, 30), 1000, 30).unwrap_err().to_string();
        assert!(err.contains("32768 slots"), "{err}");
    }

    #[test]
    fn bad_data_is_refused_by_name() {
        let plan = TrainPlan::new(Hyper::defaults(Task::Logistic, 2), 3, 2).unwrap();
        let x = vec![vec![0.0, 1.0], vec![1.0, f64::NAN], vec![0.0, 0.0]];
        let e = plan.pack_rows(&x, &[0.0, 1.0, 0.0]).unwrap_err().to_string();
        assert!(e.contains("sample 1, feature 1"), "{e}");
        let x = vec![vec![0.0, 1.0]; 3];
        let e = plan.pack_rows(&x, &[0.0, 2.0, 0.0]).unwrap_err().to_string();
        assert!(e.contains("label 1 is 2"), "{e}");
        let e = plan.pack_rows(&x[..2], &[0.0, 1.0]).unwrap_err().to_string();
        assert!(e.contains("2 samples"), "{e}");
        assert!(Hyper { degree: 4, ..Hyper::defaults(Task::Logistic, 2) }.validate().is_err());
    }
}
