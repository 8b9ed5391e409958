//! The canonical text form.
//!
//! ```text
//! module "mlp"
//! %0 = input "x" : enc<f32>[1,13]
//! %1 = const #0 : clear<f32>[13,32]
//! %2 = matmul %0, %1 : enc<f32>[1,32] loc("/fc1/Gemm")
//! %3 = relu %2 : enc<f32>[1,32] loc("/relu/Relu")
//! output "y" = %3
//! data #0 = [0.25, -1.5, ...]
//! ```
//! Values are numbered in topological order, constants in order of appearance; floats print in their
//! shortest round-trip form, so `parse(print(m))` reproduces `m` exactly.

use crate::module::{Module, ValueId};
use crate::op::{Attr, Op};
use crate::scalar::Unary;
use crate::tensor::TensorData;
use std::collections::HashMap;
use std::fmt::{self, Write};

/// How much of the constant data to print.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DataMode {
    /// Every value: the text parses back to the same module.
    Full,
    /// One summary line per constant: readable, but it does not parse.
    Elided,
}

/// Values per line in `data` sections.
const DATA_PER_LINE: usize = 8;

/// `s` as a quoted string of the text form: `"`, `\\` and newlines escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write_attr(out: &mut String, a: &Attr) {
    match a {
        Attr::Int(i) => write!(out, "{i}").unwrap(),
        Attr::Float(f) => write!(out, "{f:?}").unwrap(),
        Attr::Bool(b) => write!(out, "{b}").unwrap(),
        Attr::Word(w) => out.push_str(w),
        Attr::Str(s) => out.push_str(&escape(s)),
        Attr::Ints(v) => {
            out.push('[');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write!(out, "{x}").unwrap();
            }
            out.push(']');
        }
    }
}

/// The op's mnemonic and its attributes between braces, as a value definition prints them.
fn write_op(out: &mut String, op: &Op) {
    out.push_str(op.mnemonic());
    let attrs = op.attrs();
    if !attrs.is_empty() {
        out.push('{');
        for (i, (k, a)) in attrs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write!(out, "{k}=").unwrap();
            write_attr(out, a);
        }
        out.push('}');
    }
}

/// A univariate function as the op that applies it prints, without operands: `relu`,
/// `clip{min=0.0, max=6.0}`, `fused{fn="(mul x (sigmoid x))"}`. `FromStr` parses it back.
impl fmt::Display for Unary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_op(&mut out, &Op::Unary(self.clone()));
        f.write_str(&out)
    }
}

impl Module {
    /// Prints the module; see the module docs for the format.
    pub fn to_text(&self, mode: DataMode) -> String {
        let mut out = String::new();
        let order = match self.topo_order() {
            Ok(o) => o,
            Err(e) => return format!("module {} // cannot print: {e}\n", escape(&self.name)),
        };
        let number: HashMap<ValueId, usize> = order.iter().enumerate().map(|(i, &v)| (v, i)).collect();
        let name = |v: ValueId| number.get(&v).map_or_else(|| "%?".to_string(), |i| format!("%{i}"));
        writeln!(out, "module {}", escape(&self.name)).unwrap();
        let mut consts = Vec::new();
        for &v in &order {
            let node = self.node(v);
            write!(out, "{} = ", name(v)).unwrap();
            match &node.op {
                Op::Input { name } => write!(out, "input {}", escape(name)).unwrap(),
                Op::Const(t) => {
                    write!(out, "const #{}", consts.len()).unwrap();
                    consts.push(t);
                }
                op => {
                    write_op(&mut out, op);
                    let operands: Vec<String> = self.operands(v).into_iter().map(name).collect();
                    write!(out, " {}", operands.join(", ")).unwrap();
                }
            }
            write!(out, " : {}", node.ty).unwrap();
            if let Some(loc) = &node.loc {
                write!(out, " loc({})", escape(loc)).unwrap();
            }
            out.push('\n');
        }
        for (oname, v) in self.outputs() {
            writeln!(out, "output {} = {}", escape(oname), name(*v)).unwrap();
        }
        for (i, t) in consts.iter().enumerate() {
            write!(out, "data #{i} = ").unwrap();
            if mode == DataMode::Elided {
                writeln!(out, "<{} x {} elided>", t.numel(), t.dtype()).unwrap();
                continue;
            }
            let items: Vec<String> = match t.data() {
                TensorData::F32(v) => v.iter().map(|x| format!("{x:?}")).collect(),
                TensorData::I64(v) => v.iter().map(|x| x.to_string()).collect(),
            };
            if items.len() <= DATA_PER_LINE {
                writeln!(out, "[{}]", items.join(", ")).unwrap();
            } else {
                out.push_str("[\n");
                for chunk in items.chunks(DATA_PER_LINE) {
                    writeln!(out, "  {},", chunk.join(", ")).unwrap();
                }
                out.push_str("]\n");
            }
        }
        out
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(DataMode::Full))
    }
}
