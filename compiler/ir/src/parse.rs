//! Parser for the canonical text form (see `print`). Errors carry the line number.

use crate::error::IrError;
use crate::module::{Module, Node, ValueId};
use crate::op::{AttrMap, AttrText, Op};
use crate::scalar::Unary;
use crate::tensor::{Tensor, TensorData};
use crate::types::{DType, Security, Type};
use std::collections::HashMap;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Value(usize),
    Data(usize),
    Word(String),
    Str(String),
    Punct(char),
}

const PUNCT: &[char] = &['=', ':', ',', '[', ']', '{', '}', '(', ')', '<', '>'];

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, IrError> {
    let mut toks = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let err = |line, msg: String| IrError::Parse { line, msg };
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            line += 1;
            chars.next();
        } else if c.is_whitespace() {
            chars.next();
        } else if c == '/' {
            // `//` comment to the end of the line.
            chars.next();
            if chars.next() != Some('/') {
                return Err(err(line, "stray `/`".into()));
            }
            while chars.peek().is_some_and(|&c| c != '\n') {
                chars.next();
            }
        } else if PUNCT.contains(&c) {
            toks.push((Tok::Punct(c), line));
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None | Some('\n') => return Err(err(line, "unterminated string".into())),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some(c @ ('"' | '\\')) => s.push(c),
                        other => return Err(err(line, format!("bad escape `\\{}`", other.unwrap_or(' ')))),
                    },
                    Some(c) => s.push(c),
                }
            }
            toks.push((Tok::Str(s), line));
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || PUNCT.contains(&c) || c == '"' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            let tok = if let Some(n) = w.strip_prefix('%') {
                Tok::Value(n.parse().map_err(|_| err(line, format!("bad value name `{w}`")))?)
            } else if let Some(n) = w.strip_prefix('#') {
                Tok::Data(n.parse().map_err(|_| err(line, format!("bad data name `{w}`")))?)
            } else {
                Tok::Word(w)
            };
            toks.push((tok, line));
        }
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(1, |t| t.1)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, IrError> {
        Err(IrError::Parse { line: self.line(), msg: msg.into() })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.0.clone());
        self.pos += 1;
        t
    }

    fn eat(&mut self, p: char) -> bool {
        if self.peek() == Some(&Tok::Punct(p)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: char) -> Result<(), IrError> {
        if self.eat(p) { Ok(()) } else { self.err(format!("expected `{p}`, found {}", self.found())) }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "end of input".into(),
            Some(Tok::Value(n)) => format!("`%{n}`"),
            Some(Tok::Data(n)) => format!("`#{n}`"),
            Some(Tok::Word(w)) => format!("`{w}`"),
            Some(Tok::Str(s)) => format!("\"{s}\""),
            Some(Tok::Punct(c)) => format!("`{c}`"),
        }
    }

    fn word(&mut self) -> Result<String, IrError> {
        match self.peek() {
            Some(Tok::Word(_)) => match self.next() {
                Some(Tok::Word(w)) => Ok(w),
                _ => unreachable!(),
            },
            _ => self.err(format!("expected a word, found {}", self.found())),
        }
    }

    fn string(&mut self) -> Result<String, IrError> {
        match self.peek() {
            Some(Tok::Str(_)) => match self.next() {
                Some(Tok::Str(s)) => Ok(s),
                _ => unreachable!(),
            },
            _ => self.err(format!("expected a string, found {}", self.found())),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), IrError> {
        match self.peek() {
            Some(Tok::Word(w)) if w == kw => {
                self.pos += 1;
                Ok(())
            }
            _ => self.err(format!("expected `{kw}`, found {}", self.found())),
        }
    }

    fn list_words(&mut self) -> Result<Vec<String>, IrError> {
        self.expect('[')?;
        let mut items = Vec::new();
        while !self.eat(']') {
            items.push(self.word()?);
            if !self.eat(',') {
                self.expect(']')?;
                break;
            }
        }
        Ok(items)
    }

    fn ty(&mut self) -> Result<Type, IrError> {
        let security = match self.word()?.as_str() {
            "enc" => Security::Enc,
            "clear" => Security::Clear,
            other => return self.err(format!("expected `enc` or `clear`, found `{other}`")),
        };
        self.expect('<')?;
        let d = self.word()?;
        let dtype = match DType::from_name(&d) {
            Some(t) => t,
            None => return self.err(format!("unknown element type `{d}` (f32, i64)")),
        };
        self.expect('>')?;
        let mut shape = Vec::new();
        for w in self.list_words()? {
            match w.parse() {
                Ok(d) => shape.push(d),
                Err(_) => return self.err(format!("bad dimension `{w}`")),
            }
        }
        if let Err(msg) = crate::limits::check_shape(&shape) {
            return self.err(msg);
        }
        Ok(Type::new(security, dtype, shape))
    }

    fn attrs(&mut self) -> Result<AttrMap, IrError> {
        let mut map = AttrMap::default();
        if !self.eat('{') {
            return Ok(map);
        }
        while !self.eat('}') {
            let key = self.word()?;
            self.expect('=')?;
            let value = match self.peek() {
                Some(Tok::Punct('[')) => AttrText::List(self.list_words()?),
                Some(Tok::Str(_)) => match self.next() {
                    Some(Tok::Str(s)) => AttrText::Str(s),
                    _ => unreachable!("peeked a string"),
                },
                _ => {
                    let w = self.word()?;
                    let numeric = w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
                    if numeric { AttrText::Num(w) } else { AttrText::Word(w) }
                }
            };
            if map.entries.iter().any(|(k, _)| *k == key) {
                return self.err(format!("attribute `{key}` given twice"));
            }
            map.entries.push((key, value));
            if !self.eat(',') {
                self.expect('}')?;
                break;
            }
        }
        Ok(map)
    }
}

impl FromStr for Module {
    type Err = IrError;

    /// Parses the canonical text form. The result is not verified: call `verify` on it.
    fn from_str(text: &str) -> Result<Module, IrError> {
        let mut p = Parser { toks: lex(text)?, pos: 0 };
        p.keyword("module")?;
        let mut module = Module::new(p.string()?);
        let mut values: HashMap<usize, ValueId> = HashMap::new();
        let mut pending_consts: Vec<(usize, ValueId, usize)> = Vec::new(); // (data id, value, line)
        let mut data: HashMap<usize, Vec<String>> = HashMap::new();
        while let Some(tok) = p.next() {
            let line = p.toks[p.pos - 1].1;
            match tok {
                Tok::Value(n) => {
                    p.expect('=')?;
                    let mnemonic = p.word()?;
                    let (op, operands, data_id) = match mnemonic.as_str() {
                        "input" => (Op::Input { name: p.string()? }, vec![], None),
                        "const" => match p.next() {
                            Some(Tok::Data(d)) => (Op::Const(Tensor::scalar_f32(0.0)), vec![], Some(d)),
                            _ => return p.err("expected `#N` after `const`"),
                        },
                        _ => {
                            let mut attrs = p.attrs()?;
                            let op = Op::from_parts(&mnemonic, &mut attrs).or_else(|m| p.err(m))?;
                            let mut operands = Vec::new();
                            while let Some(Tok::Value(o)) = p.peek() {
                                let o = *o;
                                match values.get(&o) {
                                    Some(&v) => operands.push(v),
                                    None => return p.err(format!("use of undefined value %{o}")),
                                }
                                p.pos += 1;
                                if !p.eat(',') {
                                    break;
                                }
                            }
                            (op, operands, None)
                        }
                    };
                    p.expect(':')?;
                    let ty = p.ty()?;
                    let loc = if p.peek() == Some(&Tok::Word("loc".into())) {
                        p.pos += 1;
                        p.expect('(')?;
                        let l = p.string()?;
                        p.expect(')')?;
                        Some(l)
                    } else {
                        None
                    };
                    let v = module.add_node(Node { op, ty, loc }, &operands);
                    if values.insert(n, v).is_some() {
                        return Err(IrError::Parse { line, msg: format!("value %{n} defined twice") });
                    }
                    if let Some(d) = data_id {
                        pending_consts.push((d, v, line));
                    }
                }
                Tok::Word(w) if w == "output" => {
                    let name = p.string()?;
                    p.expect('=')?;
                    match p.next() {
                        Some(Tok::Value(n)) => match values.get(&n) {
                            Some(&v) => module.add_output(name, v),
                            None => {
                                return Err(IrError::Parse { line, msg: format!("output of undefined value %{n}") });
                            }
                        },
                        _ => return Err(IrError::Parse { line, msg: "expected `%N` after `output NAME =`".into() }),
                    }
                }
                Tok::Word(w) if w == "data" => {
                    let id = match p.next() {
                        Some(Tok::Data(d)) => d,
                        _ => return Err(IrError::Parse { line, msg: "expected `#N` after `data`".into() }),
                    };
                    p.expect('=')?;
                    if p.eat('<') {
                        return Err(IrError::Parse {
                            line,
                            msg: format!("data #{id} was elided when printed; print with full data to parse it back"),
                        });
                    }
                    let items = p.list_words()?;
                    if data.insert(id, items).is_some() {
                        return Err(IrError::Parse { line, msg: format!("data #{id} defined twice") });
                    }
                }
                _ => {
                    p.pos -= 1;
                    return p.err(format!("expected a value definition, `output` or `data`, found {}", p.found()));
                }
            }
        }
        for (id, v, line) in pending_consts {
            let items = data.remove(&id).ok_or(IrError::Parse { line, msg: format!("no data #{id}") })?;
            let ty = module.node(v).ty.clone();
            let bad = |w: &String| IrError::Parse { line, msg: format!("data #{id}: `{w}` is not a {}", ty.dtype) };
            let values = match ty.dtype {
                DType::F32 => {
                    TensorData::F32(items.iter().map(|w| w.parse().map_err(|_| bad(w))).collect::<Result<_, _>>()?)
                }
                DType::I64 => {
                    TensorData::I64(items.iter().map(|w| w.parse().map_err(|_| bad(w))).collect::<Result<_, _>>()?)
                }
            };
            let tensor = Tensor::new(ty.shape.clone(), values).ok_or_else(|| IrError::Parse {
                line,
                msg: format!("data #{id} has {} values, its type {ty} needs {}", items.len(), ty.numel()),
            })?;
            module.node_mut(v).op = Op::Const(tensor);
        }
        if let Some(id) = data.keys().min() {
            return Err(IrError::Parse { line: p.line(), msg: format!("data #{id} is not used by any const") });
        }
        Ok(module)
    }
}

impl FromStr for Unary {
    type Err = IrError;

    /// Parses a univariate function as `Display` prints it: a mnemonic and its attributes.
    fn from_str(text: &str) -> Result<Unary, IrError> {
        let mut p = Parser { toks: lex(text)?, pos: 0 };
        let mnemonic = p.word()?;
        let mut attrs = p.attrs()?;
        let op = Op::from_parts(&mnemonic, &mut attrs).or_else(|m| p.err(m))?;
        if p.peek().is_some() {
            return p.err(format!("unexpected {} after the function", p.found()));
        }
        match op {
            Op::Unary(u) => Ok(u),
            other => p.err(format!("`{}` is not a univariate function", other.mnemonic())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::{Binary, Cmp, Fun};

    /// Every univariate op with its attributes, infinite bounds and a fused body print and parse back.
    #[test]
    fn every_unary_round_trips_through_its_text() {
        let fused = Fun::binary(Binary::Mul, Fun::X, Fun::Unary(Unary::Sigmoid, Box::new(Fun::X)));
        let all = [
            Unary::Relu,
            Unary::LeakyRelu { alpha: 0.1 },
            Unary::Sigmoid,
            Unary::HardSigmoid { alpha: 0.2, beta: 0.5 },
            Unary::Tanh,
            Unary::Softplus,
            Unary::Elu { alpha: 1.0 },
            Unary::Selu { alpha: 1.67, gamma: 1.05 },
            Unary::Erf,
            Unary::Abs,
            Unary::Exp,
            Unary::Log,
            Unary::Sqrt,
            Unary::Neg,
            Unary::Clip { min: 0.5, max: f32::INFINITY },
            Unary::Clip { min: f32::NEG_INFINITY, max: -1e-7 },
            Unary::Pow { exponent: 2.0 },
            Unary::HardSwish,
            Unary::Mish,
            Unary::Gelu { tanh: true },
            Unary::Softsign,
            Unary::ThresholdedRelu { alpha: 0.5 },
            Unary::Celu { alpha: 0.7 },
            Unary::Sin,
            Unary::Cos,
            Unary::Reciprocal,
            Unary::Floor,
            Unary::Ceil,
            Unary::Round,
            Unary::Sign,
            Unary::Compare { cmp: Cmp::GreaterOrEqual, than: 0.25 },
            Unary::Fused(Box::new(fused)),
        ];
        for u in all {
            let text = u.to_string();
            assert_eq!(text.parse::<Unary>().unwrap(), u, "{text}");
        }
        assert_eq!(Unary::Clip { min: 0.0, max: 6.0 }.to_string(), "clip{min=0.0, max=6.0}");
        assert_eq!(
            Unary::Fused(Box::new(Fun::Unary(Unary::Relu, Box::new(Fun::X)))).to_string(),
            "fused{fn=\"(relu x)\"}"
        );
        let e = "matmul".parse::<Unary>().unwrap_err().to_string();
        assert!(e.contains("not a univariate function"), "{e}");
        assert!("relu extra".parse::<Unary>().is_err());
    }
}
