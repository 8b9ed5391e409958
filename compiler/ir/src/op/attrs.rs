//! The text form's attributes: `Op::attrs` prints them, `Op::from_parts` reads them back through an
//! `AttrMap`; and the text of a fused function (its `fn` attribute), an s-expression of these same
//! mnemonics and attributes: `(clip{min=0.0,max=6.0} (relu x))`.

use super::{ConvAttrs, Op, PadMode, PoolAttrs, ReduceKind};
use crate::scalar::{Binary, Cmp, Fun, Unary};
use std::fmt;

/// An attribute value in the text form.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Bool(bool),
    Word(&'static str),
    /// A quoted string (the body of a fused function).
    Str(String),
}

impl Op {
    /// The attributes printed between braces, in a fixed order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
        match self {
            Op::Input { .. } | Op::Const(_) | Op::Binary(_) | Op::MatMul => vec![],
            Op::Unary(u) => match u {
                Unary::Fused(f) => vec![("fn", Attr::Str(f.to_string()))],
                Unary::LeakyRelu { alpha }
                | Unary::Elu { alpha }
                | Unary::ThresholdedRelu { alpha }
                | Unary::Celu { alpha } => {
                    vec![("alpha", Attr::Float(*alpha))]
                }
                Unary::Gelu { tanh } => vec![("tanh", Attr::Bool(*tanh))],
                Unary::HardSigmoid { alpha, beta } => {
                    vec![("alpha", Attr::Float(*alpha)), ("beta", Attr::Float(*beta))]
                }
                Unary::Selu { alpha, gamma } => {
                    vec![("alpha", Attr::Float(*alpha)), ("gamma", Attr::Float(*gamma))]
                }
                Unary::Clip { min, max } => vec![("min", Attr::Float(*min)), ("max", Attr::Float(*max))],
                Unary::Pow { exponent } => vec![("exponent", Attr::Float(*exponent))],
                Unary::Compare { cmp, than } => {
                    vec![("cmp", Attr::Str(cmp.name().to_string())), ("than", Attr::Float(*than))]
                }
                _ => vec![],
            },
            Op::Conv(c) => vec![
                ("strides", ints(&c.strides)),
                ("pads", ints(&c.pads)),
                ("dilations", ints(&c.dilations)),
                ("group", Attr::Int(c.group as i64)),
            ],
            Op::AvgPool(p) | Op::MaxPool(p) => {
                let mut v = vec![
                    ("kernel", ints(&p.kernel)),
                    ("strides", ints(&p.strides)),
                    ("pads", ints(&p.pads)),
                    ("dilations", ints(&p.dilations)),
                    ("ceil_mode", Attr::Bool(p.ceil_mode)),
                ];
                if matches!(self, Op::AvgPool(_)) {
                    v.push(("count_include_pad", Attr::Bool(p.count_include_pad)));
                }
                v
            }
            Op::Reduce { axes, keepdims, .. } => {
                vec![("axes", ints(axes)), ("keepdims", Attr::Bool(*keepdims))]
            }
            Op::Reshape { shape } => vec![("shape", ints(shape))],
            Op::Transpose { perm } => vec![("perm", ints(perm))],
            Op::Concat { axis } | Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                vec![("axis", Attr::Int(*axis as i64))]
            }
            Op::Slice { axes, starts, ends, steps } => vec![
                ("axes", ints(axes)),
                ("starts", Attr::Ints(starts.clone())),
                ("ends", Attr::Ints(ends.clone())),
                ("steps", Attr::Ints(steps.clone())),
            ],
            Op::Gather { axis, indices, indices_shape } => vec![
                ("axis", Attr::Int(*axis as i64)),
                ("indices", Attr::Ints(indices.clone())),
                ("indices_shape", ints(indices_shape)),
            ],
            Op::Pad { pads, mode, value } => vec![
                ("pads", ints(pads)),
                (
                    "mode",
                    Attr::Word(match mode {
                        PadMode::Constant => "constant",
                        PadMode::Reflect => "reflect",
                        PadMode::Edge => "edge",
                    }),
                ),
                ("value", Attr::Float(*value)),
            ],
            Op::ArgMax { axis, keepdims, select_last_index } => vec![
                ("axis", Attr::Int(*axis as i64)),
                ("keepdims", Attr::Bool(*keepdims)),
                ("select_last_index", Attr::Bool(*select_last_index)),
            ],
        }
    }

    /// Rebuilds an op from its mnemonic and attributes (the inverse of `mnemonic` + `attrs`).
    pub fn from_parts(mnemonic: &str, attrs: &mut AttrMap) -> Result<Op, String> {
        let op = match mnemonic {
            "relu" => Op::Unary(Unary::Relu),
            "leaky_relu" => Op::Unary(Unary::LeakyRelu { alpha: attrs.float("alpha")? }),
            "sigmoid" => Op::Unary(Unary::Sigmoid),
            "hard_sigmoid" => {
                Op::Unary(Unary::HardSigmoid { alpha: attrs.float("alpha")?, beta: attrs.float("beta")? })
            }
            "tanh" => Op::Unary(Unary::Tanh),
            "softplus" => Op::Unary(Unary::Softplus),
            "elu" => Op::Unary(Unary::Elu { alpha: attrs.float("alpha")? }),
            "selu" => Op::Unary(Unary::Selu { alpha: attrs.float("alpha")?, gamma: attrs.float("gamma")? }),
            "erf" => Op::Unary(Unary::Erf),
            "abs" => Op::Unary(Unary::Abs),
            "exp" => Op::Unary(Unary::Exp),
            "log" => Op::Unary(Unary::Log),
            "sqrt" => Op::Unary(Unary::Sqrt),
            "neg" => Op::Unary(Unary::Neg),
            "clip" => Op::Unary(Unary::Clip { min: attrs.float("min")?, max: attrs.float("max")? }),
            "pow" => Op::Unary(Unary::Pow { exponent: attrs.float("exponent")? }),
            "hard_swish" => Op::Unary(Unary::HardSwish),
            "mish" => Op::Unary(Unary::Mish),
            "gelu" => Op::Unary(Unary::Gelu { tanh: attrs.bool("tanh")? }),
            "softsign" => Op::Unary(Unary::Softsign),
            "thresholded_relu" => Op::Unary(Unary::ThresholdedRelu { alpha: attrs.float("alpha")? }),
            "celu" => Op::Unary(Unary::Celu { alpha: attrs.float("alpha")? }),
            "sin" => Op::Unary(Unary::Sin),
            "cos" => Op::Unary(Unary::Cos),
            "reciprocal" => Op::Unary(Unary::Reciprocal),
            "floor" => Op::Unary(Unary::Floor),
            "ceil" => Op::Unary(Unary::Ceil),
            "round" => Op::Unary(Unary::Round),
            "sign" => Op::Unary(Unary::Sign),
            "compare" => {
                let name = attrs.string("cmp")?;
                let cmp = Cmp::ALL
                    .into_iter()
                    .find(|c| c.name() == name)
                    .ok_or_else(|| format!("unknown comparison `{name}` (gt, ge, lt, le, eq)"))?;
                Op::Unary(Unary::Compare { cmp, than: attrs.float("than")? })
            }
            "fused" => Op::Unary(Unary::Fused(Box::new(Fun::parse(&attrs.string("fn")?)?))),
            "add" => Op::Binary(Binary::Add),
            "sub" => Op::Binary(Binary::Sub),
            "mul" => Op::Binary(Binary::Mul),
            "div" => Op::Binary(Binary::Div),
            "prelu" => Op::Binary(Binary::PRelu),
            "max" => Op::Binary(Binary::Max),
            "min" => Op::Binary(Binary::Min),
            "matmul" => Op::MatMul,
            "conv" => Op::Conv(ConvAttrs {
                strides: attrs.usizes("strides")?,
                pads: attrs.usizes("pads")?,
                dilations: attrs.usizes("dilations")?,
                group: attrs.usize("group")?,
            }),
            "avgpool" | "maxpool" => {
                let p = PoolAttrs {
                    kernel: attrs.usizes("kernel")?,
                    strides: attrs.usizes("strides")?,
                    pads: attrs.usizes("pads")?,
                    dilations: attrs.usizes("dilations")?,
                    ceil_mode: attrs.bool("ceil_mode")?,
                    count_include_pad: mnemonic == "avgpool" && attrs.bool("count_include_pad")?,
                };
                if mnemonic == "avgpool" { Op::AvgPool(p) } else { Op::MaxPool(p) }
            }
            "reduce_sum" | "reduce_mean" | "reduce_max" | "reduce_min" => Op::Reduce {
                kind: match mnemonic {
                    "reduce_sum" => ReduceKind::Sum,
                    "reduce_mean" => ReduceKind::Mean,
                    "reduce_max" => ReduceKind::Max,
                    _ => ReduceKind::Min,
                },
                axes: attrs.usizes("axes")?,
                keepdims: attrs.bool("keepdims")?,
            },
            "reshape" => Op::Reshape { shape: attrs.usizes("shape")? },
            "transpose" => Op::Transpose { perm: attrs.usizes("perm")? },
            "concat" => Op::Concat { axis: attrs.usize("axis")? },
            "slice" => Op::Slice {
                axes: attrs.usizes("axes")?,
                starts: attrs.ints("starts")?,
                ends: attrs.ints("ends")?,
                steps: attrs.ints("steps")?,
            },
            "gather" => Op::Gather {
                axis: attrs.usize("axis")?,
                indices: attrs.ints("indices")?,
                indices_shape: attrs.usizes("indices_shape")?,
            },
            "pad" => Op::Pad {
                pads: attrs.usizes("pads")?,
                mode: match attrs.word("mode")?.as_str() {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    other => return Err(format!("unknown pad mode `{other}` (constant, reflect, edge)")),
                },
                value: attrs.float("value")?,
            },
            "softmax" => Op::Softmax { axis: attrs.usize("axis")? },
            "log_softmax" => Op::LogSoftmax { axis: attrs.usize("axis")? },
            "argmax" => Op::ArgMax {
                axis: attrs.usize("axis")?,
                keepdims: attrs.bool("keepdims")?,
                select_last_index: attrs.bool("select_last_index")?,
            },
            other => {
                return Err(format!("unknown op `{other}`; known ops: input, const, {}", Op::MNEMONICS.join(", ")));
            }
        };
        attrs.finish(mnemonic)?;
        Ok(op)
    }
}

/// Attributes being parsed: each accessor removes what it reads, `finish` rejects leftovers.
#[derive(Default, Debug)]
pub struct AttrMap {
    pub(crate) entries: Vec<(String, AttrText)>,
}

/// An attribute value as written in text, before the op says what type it expects.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AttrText {
    Num(String),
    List(Vec<String>),
    Word(String),
    Str(String),
}

impl AttrMap {
    fn take(&mut self, key: &str) -> Result<AttrText, String> {
        let i = self.entries.iter().position(|(k, _)| k == key).ok_or_else(|| format!("missing attribute `{key}`"))?;
        Ok(self.entries.remove(i).1)
    }

    fn float(&mut self, key: &str) -> Result<f32, String> {
        match self.take(key)? {
            AttrText::Num(s) | AttrText::Word(s) => {
                s.parse().map_err(|_| format!("attribute `{key}`: `{s}` is not a number"))
            }
            AttrText::List(_) | AttrText::Str(_) => Err(format!("attribute `{key}` must be a number")),
        }
    }

    fn int(&mut self, key: &str) -> Result<i64, String> {
        match self.take(key)? {
            AttrText::Num(s) => s.parse().map_err(|_| format!("attribute `{key}`: `{s}` is not an integer")),
            _ => Err(format!("attribute `{key}` must be an integer")),
        }
    }

    fn usize(&mut self, key: &str) -> Result<usize, String> {
        let v = self.int(key)?;
        usize::try_from(v).map_err(|_| format!("attribute `{key}` must be non-negative, got {v}"))
    }

    fn ints(&mut self, key: &str) -> Result<Vec<i64>, String> {
        match self.take(key)? {
            AttrText::List(items) => items
                .iter()
                .map(|s| s.parse().map_err(|_| format!("attribute `{key}`: `{s}` is not an integer")))
                .collect(),
            _ => Err(format!("attribute `{key}` must be a list of integers")),
        }
    }

    fn usizes(&mut self, key: &str) -> Result<Vec<usize>, String> {
        self.ints(key)?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| format!("attribute `{key}` must be non-negative, got {v}")))
            .collect()
    }

    fn bool(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key)? {
            AttrText::Word(w) if w == "true" => Ok(true),
            AttrText::Word(w) if w == "false" => Ok(false),
            _ => Err(format!("attribute `{key}` must be true or false")),
        }
    }

    fn string(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            // A bare word too: how a fused function's text writes a comparison's name.
            AttrText::Str(s) | AttrText::Word(s) => Ok(s),
            _ => Err(format!("attribute `{key}` must be a quoted string")),
        }
    }

    fn word(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            AttrText::Word(w) => Ok(w),
            _ => Err(format!("attribute `{key}` must be a word")),
        }
    }

    fn finish(&self, mnemonic: &str) -> Result<(), String> {
        match self.entries.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown attribute `{k}` for `{mnemonic}`")),
        }
    }
}

impl Fun {
    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Fun, String> {
        let toks = tokenize(text)?;
        let mut pos = 0;
        let f = parse_expr(&toks, &mut pos, 0)?;
        if pos != toks.len() {
            return Err(format!("function `{text}`: unexpected `{}` after the expression", toks[pos]));
        }
        Ok(f)
    }
}

impl fmt::Display for Fun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fun::X => write!(f, "x"),
            Fun::Const(c) => write!(f, "{c:?}"),
            Fun::Unary(u, a) => {
                let op = Op::Unary(u.clone());
                write!(f, "({}", op.mnemonic())?;
                let attrs = op.attrs();
                if !attrs.is_empty() {
                    write!(f, "{{")?;
                    for (i, (k, v)) in attrs.iter().enumerate() {
                        // Words (a comparison's name) print bare; the parser reads them back as strings.
                        let v = match v {
                            Attr::Float(x) => format!("{x:?}"),
                            Attr::Bool(b) => b.to_string(),
                            Attr::Str(s)
                                if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                            {
                                s.clone()
                            }
                            other => format!("{other:?}"),
                        };
                        write!(f, "{}{k}={v}", if i > 0 { "," } else { "" })?;
                    }
                    write!(f, "}}")?;
                }
                write!(f, " {a})")
            }
            Fun::Binary(b, l, r) => write!(f, "({} {l} {r})", Op::Binary(*b).mnemonic()),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut toks = Vec::new();
    let mut cur = String::new();
    let mut depth = 0; // inside `{...}`, parentheses and spaces do not split
    for c in text.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth -= 1;
                cur.push(c);
            }
            '(' | ')' if depth == 0 => {
                if !cur.is_empty() {
                    toks.push(std::mem::take(&mut cur));
                }
                toks.push(c.to_string());
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    toks.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err(format!("function `{text}`: unbalanced braces"));
    }
    if !cur.is_empty() {
        toks.push(cur);
    }
    Ok(toks)
}

/// Deepest nesting the parser takes (evaluation and printing recurse as deep).
const MAX_DEPTH: usize = 256;

fn parse_expr(toks: &[String], pos: &mut usize, depth: usize) -> Result<Fun, String> {
    if depth > MAX_DEPTH {
        return Err(format!("function: nested deeper than {MAX_DEPTH}"));
    }
    let tok = toks.get(*pos).ok_or("function: unexpected end")?;
    *pos += 1;
    match tok.as_str() {
        "x" => Ok(Fun::X),
        "(" => {
            let head = toks.get(*pos).ok_or("function: unexpected end after `(`")?.clone();
            *pos += 1;
            let (name, attrs) = match head.split_once('{') {
                Some((name, rest)) => {
                    (name, rest.strip_suffix('}').ok_or_else(|| format!("function: bad attributes in `{head}`"))?)
                }
                None => (head.as_str(), ""),
            };
            let mut map = AttrMap::default();
            for pair in attrs.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| format!("function: attribute `{pair}` has no `=`"))?;
                let v = v.trim().to_string();
                let numeric = v.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
                map.entries.push((k.trim().to_string(), if numeric { AttrText::Num(v) } else { AttrText::Word(v) }));
            }
            let f = match Op::from_parts(name, &mut map)? {
                Op::Unary(Unary::Fused(_)) => return Err("function: `fused` cannot nest".into()),
                Op::Unary(u) => Fun::Unary(u, Box::new(parse_expr(toks, pos, depth + 1)?)),
                Op::Binary(b) => {
                    let l = parse_expr(toks, pos, depth + 1)?;
                    Fun::binary(b, l, parse_expr(toks, pos, depth + 1)?)
                }
                other => return Err(format!("function: `{}` is not an elementwise op", other.mnemonic())),
            };
            match toks.get(*pos).map(String::as_str) {
                Some(")") => {
                    *pos += 1;
                    Ok(f)
                }
                Some(t) => Err(format!("function: expected `)`, found `{t}`")),
                None => Err("function: missing `)`".into()),
            }
        }
        t => t.parse::<f32>().map(Fun::Const).map_err(|_| format!("function: `{t}` is neither `x`, a number nor `(`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for text in [
            "x",
            "(relu x)",
            "(mul x (sigmoid x))",
            "(clip{min=0.0,max=6.0} (leaky_relu{alpha=0.1} (add x 1.5)))",
            "(gelu{tanh=true} (div x -2.0))",
            "(compare{cmp=eq,than=1.0} (add (compare{cmp=gt,than=0.0} x) (compare{cmp=lt,than=1.0} x)))",
        ] {
            let f = Fun::parse(text).unwrap();
            assert_eq!(f.to_string(), text);
            assert_eq!(Fun::parse(&f.to_string()).unwrap(), f);
        }
    }

    /// Distinct functions print distinctly (the optimizer interns functions by their text).
    #[test]
    fn comparisons_print_their_kind_threshold_and_operand() {
        let texts: Vec<String> = Cmp::ALL
            .into_iter()
            .flat_map(|cmp| {
                [0.0, 1.0].map(move |than| Fun::Unary(Unary::Compare { cmp, than }, Box::new(Fun::X)).to_string())
            })
            .chain([Fun::Unary(
                Unary::Compare { cmp: Cmp::Greater, than: 0.0 },
                Box::new(Fun::parse("(neg x)").unwrap()),
            )
            .to_string()])
            .collect();
        let distinct: std::collections::HashSet<&String> = texts.iter().collect();
        assert_eq!(distinct.len(), texts.len(), "{texts:?}");
    }

    #[test]
    fn bad_text_is_refused_with_a_reason() {
        for (text, why) in [
            ("(relu x", "missing `)`"),
            ("(matmul x x)", "not an elementwise op"),
            ("(nope x)", "unknown op"),
            ("(relu y)", "neither"),
            ("(clip{min=0.0} x)", "missing attribute `max`"),
            ("x x", "unexpected"),
        ] {
            let e = Fun::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        let deep = format!("{}x{}", "(neg ".repeat(100_000), ")".repeat(100_000));
        assert!(Fun::parse(&deep).unwrap_err().contains("nested deeper"));
    }
}
