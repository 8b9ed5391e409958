//! Training under encryption (feature `poulpy`, nightly): the encrypted weights equal the slot
//! program's simulation within CKKS' error, across an interactive refresh, for both tasks; and the
//! server's side refuses a key made for another plan.
#![cfg(feature = "poulpy")]

use fhec_ckks::backend::Context;
use fhec_ckks::backend::train::{Trainer, train_galois_elements};
use fhec_ckks::train::{Hyper, Task, TrainPlan};

/// `n` samples of `d` features, the first two informative, labels 0/1 (or their linear target).
fn data(n: usize, d: usize, task: Task) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut s = 99u64;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    };
    let x: Vec<Vec<f64>> = (0..n).map(|_| (0..d).map(|_| next()).collect()).collect();
    let y = x
        .iter()
        .map(|r| {
            let t = 1.5 * r[0] - r[1] + 0.3 * next();
            match task {
                Task::Logistic => f64::from(t > 0.0),
                Task::Linear => t,
            }
        })
        .collect();
    (x, y)
}

/// Trains on one ring-2^14 ciphertext, one iteration per round (a refresh between rounds).
fn train(task: Task, iterations: usize) -> (Vec<f64>, Vec<f64>, TrainPlan) {
    let (x, y) = data(60, 5, task);
    let hyper = Hyper { iterations, ..Hyper::defaults(task, 5) };
    let plan = TrainPlan::at(hyper, 60, 5, Some(14)).unwrap();
    let ctx = Context::new(plan.ring).unwrap();
    let (client, eval) = ctx.keygen(&train_galois_elements(&ctx, &plan)).unwrap();
    let (data, mut state) = ctx.encrypt_training(&client, &plan, &x, &y).unwrap();
    let trainer = Trainer::new(&ctx, &eval, &plan).unwrap();
    let mut done = 0;
    while done < iterations {
        let end = (done + plan.per_round).min(iterations);
        state = trainer.round(&data, state, done..end, |_| {}).unwrap();
        if end < iterations {
            state = ctx.refresh(&client, &plan, &state).unwrap();
        }
        done = end;
    }
    let encrypted = ctx.decrypt_weights(&client, &plan, &state).unwrap();
    let (simulated, _) = plan.simulate(&x, &y).unwrap();
    (encrypted, simulated, plan)
}

#[test]
fn encrypted_training_equals_the_simulation_across_refreshes() {
    for (task, iterations) in [(Task::Logistic, 3), (Task::Linear, 4)] {
        let (enc, sim, plan) = train(task, iterations);
        assert!(plan.refreshes() >= 1, "{task:?}: the test should cross a refresh: {plan:?}");
        let gap = enc.iter().zip(&sim).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        let scale = sim.iter().fold(0.0f64, |m, b| m.max(b.abs()));
        assert!(scale > 0.1, "{task:?}: training moved nothing: {sim:?}");
        assert!(gap < 1e-3 * scale.max(1.0), "{task:?}: encrypted {enc:?} vs simulated {sim:?}");
    }
}

#[test]
fn a_key_for_another_plan_is_refused() {
    let hyper = Hyper::defaults(Task::Linear, 5);
    let plan = TrainPlan::at(hyper.clone(), 60, 5, Some(14)).unwrap();
    let other = TrainPlan::at(hyper, 60, 20, Some(14)).unwrap();
    let ctx = Context::new(plan.ring).unwrap();
    let (_, eval) = ctx.keygen(&train_galois_elements(&ctx, &plan)).unwrap();
    let err = Trainer::new(&ctx, &eval, &other).err().expect("refused").to_string();
    assert!(err.contains("rotation key"), "{err}");
    let wide = TrainPlan::at(Hyper::defaults(Task::Linear, 5), 60, 5, Some(15)).unwrap();
    let err = Trainer::new(&ctx, &eval, &wide).err().expect("refused").to_string();
    assert!(err.contains("ring 2^15"), "{err}");
}
