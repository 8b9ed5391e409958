//! The IR's text form: every op round-trips, invalid IR snapshots its diagnostics.

use fhec_ir::{Module, Op};
use fhec_testsuite::root;
use std::collections::BTreeSet;

fn strip_comments(text: &str) -> String {
    text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect()
}

#[test]
fn every_op_round_trips() {
    let text = std::fs::read_to_string(root().join("ir/all_ops.fhir")).unwrap();
    let m: Module = text.parse().unwrap();
    m.verify().unwrap();
    assert_eq!(m.to_string(), strip_comments(&text));
    let covered: BTreeSet<&str> = m.values().map(|v| m.node(v).op.mnemonic()).collect();
    let missing: Vec<&&str> = Op::MNEMONICS.iter().filter(|n| !covered.contains(**n)).collect();
    assert!(missing.is_empty(), "all_ops.fhir lacks {missing:?}");
    // And it runs: the interpreter gives every op a meaning.
    let x = fhec_ir::Tensor::from_f32(vec![1, 2, 4, 4], (0..32).map(|i| i as f32 / 8.0 - 2.0).collect()).unwrap();
    let outs = fhec_interp::run(&m, &[x]).unwrap();
    assert_eq!(outs.len(), 3);
    assert!(outs[0].to_f32_vec().iter().all(|v| v.is_finite()));
}

#[test]
fn invalid_ir_snapshots_its_diagnostics() {
    insta::glob!("../ir/invalid", "*.fhir", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let msg = match text.parse::<Module>() {
            Err(e) => format!("parse error: {e}"),
            Ok(m) => format!("verify error: {}", m.verify().expect_err("invalid IR must not verify")),
        };
        insta::assert_snapshot!(msg);
    });
}
