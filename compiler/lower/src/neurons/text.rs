//! The neuron graph's canonical text form: one line per wire, then the outputs. `Display` prints
//! it and `FromStr` parses it back, exactly (floats print in their shortest round-trip form):
//!
//! ```text
//! inputs 2
//! w0 = input bound [-2.2, 2.2] class 0
//! w1 = input bound [-2.2, 2.2] class 1
//! w2 = table relu (0.5*w0 - 1.25*w1 + 0.1 in [-3.0, 2.5]) range [-3.0, 2.5] domain [-3.0, 2.5] center 1.25 bound [-1.25, 1.25] class 5 layer "/fc1/Relu" held_out 0/10 calibrated [-2.0, 2.0] quantiles [-1.5, 0.25, 1.75]
//! output 0 size 1
//! o0.0 = (2.0*w2 + 2.5 in [0.0, 5.0])
//! calibrated outputs [0.0, 4.0]
//! ```
//!
//! A form is `(terms [+ bias] in [lo, hi])`, its structural bound last; the bias is left out when it
//! is `+0.0`. A table line gives its function as the IR prints the op (`fhec_ir::Unary`'s text), its
//! input form, input range, domain, center, the wire's bound and class, and its source layer; the
//! calibration fields (`held_out`, `calibrated`, `quantiles`) are left out when empty. Each frontier
//! value is an `output K size N` line and its elements; `calibrated outputs` lists the outputs'
//! calibrated ranges, if any. Blank lines and lines starting with `;` are comments. The parser
//! checks the syntax only: `Neurons::verify` checks the graph.

use super::{Form, Lookup, Neurons, Wire};
use crate::LowerError;
use fhec_ir::Unary;
use std::fmt::{self, Write};
use std::str::FromStr;

/// `-` before a negative number (the sign of `-0.0` included), else `+` or nothing.
fn sign(x: f64, first: bool) -> &'static str {
    match (x.is_sign_negative(), first) {
        (true, true) => "-",
        (true, false) => " - ",
        (false, true) => "",
        (false, false) => " + ",
    }
}

fn write_form(out: &mut String, f: &Form) {
    out.push('(');
    for (i, &(w, c)) in f.terms.iter().enumerate() {
        write!(out, "{}{:?}*w{w}", sign(c, i == 0), c.abs()).unwrap();
    }
    if f.terms.is_empty() || f.bias != 0.0 || f.bias.is_sign_negative() {
        write!(out, "{}{:?}", sign(f.bias, f.terms.is_empty()), f.bias.abs()).unwrap();
    }
    write!(out, " in [{:?}, {:?}])", f.lo, f.hi).unwrap();
}

fn write_list(out: &mut String, v: &[f64]) {
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        write!(out, "{}{x:?}", if i > 0 { ", " } else { "" }).unwrap();
    }
    out.push(']');
}

fn write_wire(out: &mut String, k: usize, w: &Wire) {
    write!(out, "w{k} = ").unwrap();
    let Some(l) = &w.lookup else {
        writeln!(out, "input bound [{:?}, {:?}] class {}", w.lo, w.hi, w.class).unwrap();
        return;
    };
    write!(out, "table {} ", l.f).unwrap();
    write_form(out, &l.input);
    write!(
        out,
        " range [{:?}, {:?}] domain [{:?}, {:?}] center {:?} bound [{:?}, {:?}] class {} layer {}",
        l.lo,
        l.hi,
        l.domain.0,
        l.domain.1,
        l.center,
        w.lo,
        w.hi,
        w.class,
        fhec_ir::print::escape(&l.layer)
    )
    .unwrap();
    if l.held_out != (0, 0) {
        write!(out, " held_out {}/{}", l.held_out.0, l.held_out.1).unwrap();
    }
    if let Some((lo, hi)) = l.calibrated {
        write!(out, " calibrated [{lo:?}, {hi:?}]").unwrap();
    }
    if !l.quantiles.is_empty() {
        out.push_str(" quantiles ");
        write_list(out, &l.quantiles);
    }
    out.push('\n');
}

impl fmt::Display for Neurons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        writeln!(out, "inputs {}", self.n_inputs).unwrap();
        for (k, w) in self.wires.iter().enumerate() {
            write_wire(&mut out, k, w);
        }
        for (i, group) in self.outputs.iter().enumerate() {
            writeln!(out, "output {i} size {}", group.len()).unwrap();
            for (e, form) in group.iter().enumerate() {
                write!(out, "o{i}.{e} = ").unwrap();
                write_form(&mut out, form);
                out.push('\n');
            }
        }
        if let Some(ranges) = &self.calibrated {
            out.push_str("calibrated outputs");
            for (lo, hi) in ranges {
                write!(out, " [{lo:?}, {hi:?}]").unwrap();
            }
            out.push('\n');
        }
        f.write_str(&out)
    }
}

/// Characters that end a word.
const PUNCT: &[char] = &['(', ')', '[', ']', ',', '=', '*', '/', '"'];

/// A cursor over one line of the text form.
struct Line<'a> {
    text: &'a str,
    pos: usize,
    number: usize,
}

impl<'a> Line<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, LowerError> {
        Err(LowerError::NeuronText { line: self.number, msg: msg.into() })
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos == self.text.len()
    }

    fn found(&self) -> String {
        let r = self.rest().trim_start();
        if r.is_empty() {
            return "the end of the line".into();
        }
        let n = r.char_indices().nth(16).map_or(r.len(), |(i, _)| i);
        format!("`{}`", &r[..n])
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), LowerError> {
        if self.eat(c) { Ok(()) } else { self.err(format!("expected `{c}`, found {}", self.found())) }
    }

    /// The next word: up to white space or punctuation; empty if punctuation is next.
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let r = self.rest();
        let n = r.find(|c: char| c.is_whitespace() || PUNCT.contains(&c)).unwrap_or(r.len());
        self.pos += n;
        &r[..n]
    }

    fn peek_word(&mut self) -> &'a str {
        let pos = self.pos;
        let w = self.word();
        self.pos = pos;
        w
    }

    fn keyword(&mut self, kw: &str) -> Result<(), LowerError> {
        let pos = self.pos;
        if self.word() == kw {
            return Ok(());
        }
        self.pos = pos;
        self.err(format!("expected `{kw}`, found {}", self.found()))
    }

    fn parse<T: FromStr>(&mut self, what: &str) -> Result<T, LowerError> {
        let pos = self.pos;
        let w = self.word();
        match w.parse() {
            Ok(v) if !w.is_empty() => Ok(v),
            _ => {
                self.pos = pos;
                self.err(format!("expected {what}, found {}", self.found()))
            }
        }
    }

    fn number(&mut self) -> Result<f64, LowerError> {
        self.parse("a number")
    }

    /// `w<N>` (or another `prefix`) and its number.
    fn name(&mut self, prefix: char) -> Result<&'a str, LowerError> {
        let pos = self.pos;
        let w = self.word();
        match w.strip_prefix(prefix) {
            Some(n) if !n.is_empty() => Ok(n),
            _ => {
                self.pos = pos;
                self.err(format!("expected `{prefix}<N>`, found {}", self.found()))
            }
        }
    }

    fn wire(&mut self) -> Result<u32, LowerError> {
        let n = self.name('w')?;
        n.parse().or_else(|_| self.err(format!("bad wire `w{n}`")))
    }

    fn interval(&mut self) -> Result<(f64, f64), LowerError> {
        self.expect('[')?;
        let lo = self.number()?;
        self.expect(',')?;
        let hi = self.number()?;
        self.expect(']')?;
        Ok((lo, hi))
    }

    fn list(&mut self) -> Result<Vec<f64>, LowerError> {
        self.expect('[')?;
        let mut v = Vec::new();
        if self.eat(']') {
            return Ok(v);
        }
        loop {
            v.push(self.number()?);
            if self.eat(']') {
                return Ok(v);
            }
            self.expect(',')?;
        }
    }

    fn string(&mut self) -> Result<String, LowerError> {
        self.expect('"')?;
        let mut s = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(s);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => s.push('\n'),
                    Some((_, c @ ('"' | '\\'))) => s.push(c),
                    other => return self.err(format!("bad escape `\\{}`", other.map_or(' ', |o| o.1))),
                },
                c => s.push(c),
            }
        }
        self.err("unterminated string")
    }

    /// A univariate function as the IR prints the op: a mnemonic, then attributes between braces
    /// (which may hold spaces and quoted strings).
    fn unary(&mut self) -> Result<Unary, LowerError> {
        self.skip_ws();
        let r = self.rest();
        let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
        let mut end = r.len();
        for (i, c) in r.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                _ if quoted => {}
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                c if c.is_whitespace() && depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let text = &r[..end];
        match text.parse::<Unary>() {
            Ok(u) => {
                self.pos += end;
                Ok(u)
            }
            Err(e) => self.err(format!("function `{text}`: {e}")),
        }
    }

    /// `(terms [+ bias] in [lo, hi])`.
    fn form(&mut self) -> Result<Form, LowerError> {
        self.expect('(')?;
        let mut f = Form::default();
        let mut first = true;
        loop {
            let negative = if first {
                false
            } else {
                match self.word() {
                    "+" => false,
                    "-" => true,
                    "in" => break,
                    w => return self.err(format!("expected `+`, `-` or `in`, found `{w}`")),
                }
            };
            let x = self.number()?;
            let x = if negative { -x } else { x };
            if self.eat('*') {
                f.terms.push((self.wire()?, x));
            } else {
                f.bias = x;
                self.keyword("in")?;
                break;
            }
            first = false;
        }
        (f.lo, f.hi) = self.interval()?;
        self.expect(')')?;
        Ok(f)
    }

    /// The rest of a wire line, after `w<k> =`.
    fn wire_def(&mut self) -> Result<Wire, LowerError> {
        match self.word() {
            "input" => {
                self.keyword("bound")?;
                let (lo, hi) = self.interval()?;
                self.keyword("class")?;
                let class = self.parse("a class")?;
                Ok(Wire { lookup: None, lo, hi, class })
            }
            "table" => {
                let f = self.unary()?;
                let input = self.form()?;
                self.keyword("range")?;
                let (lo, hi) = self.interval()?;
                self.keyword("domain")?;
                let domain = self.interval()?;
                self.keyword("center")?;
                let center = self.number()?;
                self.keyword("bound")?;
                let bound = self.interval()?;
                self.keyword("class")?;
                let class = self.parse("a class")?;
                self.keyword("layer")?;
                let layer = self.string()?;
                let mut l = Lookup {
                    f,
                    input,
                    lo,
                    hi,
                    domain,
                    center,
                    calibrated: None,
                    held_out: (0, 0),
                    quantiles: vec![],
                    layer,
                };
                let mut seen = Vec::new();
                while !self.at_end() {
                    let field = self.word();
                    if seen.contains(&field) {
                        return self.err(format!("`{field}` given twice"));
                    }
                    seen.push(field);
                    match field {
                        "held_out" => {
                            let outside = self.parse("a count")?;
                            self.expect('/')?;
                            l.held_out = (outside, self.parse("a count")?);
                        }
                        "calibrated" => l.calibrated = Some(self.interval()?),
                        "quantiles" => l.quantiles = self.list()?,
                        w => return self.err(format!("expected `held_out`, `calibrated` or `quantiles`, found `{w}`")),
                    }
                }
                Ok(Wire { lookup: Some(l), lo: bound.0, hi: bound.1, class })
            }
            w => self.err(format!("expected `input` or `table`, found `{w}`")),
        }
    }

    fn end(&mut self) -> Result<(), LowerError> {
        if self.at_end() { Ok(()) } else { self.err(format!("unexpected {}", self.found())) }
    }
}

/// The declared size of the last output group (and its line) against the elements it got.
fn check_size(n: &Neurons, declared: Option<(usize, usize)>) -> Result<(), LowerError> {
    match (declared, n.outputs.last()) {
        (Some((size, line)), Some(group)) if group.len() != size => Err(LowerError::NeuronText {
            line,
            msg: format!("output {} has size {size} but {} elements", n.outputs.len() - 1, group.len()),
        }),
        _ => Ok(()),
    }
}

impl FromStr for Neurons {
    type Err = LowerError;

    /// Parses the text form. The result is not verified: call [`Neurons::verify`] on it.
    fn from_str(text: &str) -> Result<Neurons, LowerError> {
        let mut n = Neurons { wires: vec![], n_inputs: 0, outputs: vec![], calibrated: None };
        let mut header = false;
        // The last `output K size N` line's size and line number.
        let mut declared = None;
        for (i, raw) in text.lines().enumerate() {
            let mut line = Line { text: raw, pos: 0, number: i + 1 };
            if line.at_end() || line.rest().starts_with(';') {
                continue;
            }
            if !header {
                line.keyword("inputs")?;
                n.n_inputs = line.parse("a count")?;
                line.end()?;
                header = true;
                continue;
            }
            if n.calibrated.is_some() {
                return line.err("nothing may follow `calibrated outputs`");
            }
            let head = line.peek_word();
            if head == "output" {
                check_size(&n, declared)?;
                line.word();
                let k: usize = line.parse("an output number")?;
                if k != n.outputs.len() {
                    return line.err(format!("output {k} where output {} comes next", n.outputs.len()));
                }
                line.keyword("size")?;
                declared = Some((line.parse("a size")?, line.number));
                line.end()?;
                n.outputs.push(Vec::new());
            } else if head == "calibrated" {
                check_size(&n, declared)?;
                line.word();
                line.keyword("outputs")?;
                let mut ranges = Vec::new();
                while !line.at_end() {
                    ranges.push(line.interval()?);
                }
                n.calibrated = Some(ranges);
            } else if head.starts_with('o') {
                let name = line.name('o')?;
                let parsed = name.split_once('.').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                let Some((k, e)): Option<(usize, usize)> = parsed else {
                    return line.err(format!("bad output element `o{name}` (o<output>.<element>)"));
                };
                let Some(group) = n.outputs.last() else {
                    return line.err("an output element before any `output` line");
                };
                if k != n.outputs.len() - 1 || e != group.len() {
                    return line.err(format!("`o{name}` where `o{}.{}` comes next", n.outputs.len() - 1, group.len()));
                }
                line.expect('=')?;
                let f = line.form()?;
                line.end()?;
                n.outputs.last_mut().expect("checked").push(f);
            } else if head.starts_with('w') {
                if !n.outputs.is_empty() {
                    return line.err("a wire after the outputs");
                }
                let k = line.wire()? as usize;
                if k != n.wires.len() {
                    return line.err(format!("w{k} where w{} comes next", n.wires.len()));
                }
                line.expect('=')?;
                let w = line.wire_def()?;
                line.end()?;
                n.wires.push(w);
            } else {
                let found = line.found();
                return line.err(format!(
                    "expected a wire `w<N> = ...`, `output K size N`, an output element `o<K>.<N> = ...` or `calibrated outputs`, found {found}"
                ));
            }
        }
        if !header {
            return Err(LowerError::NeuronText { line: text.lines().count().max(1), msg: "no `inputs N` line".into() });
        }
        check_size(&n, declared)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints, parses back to the same graph, and prints the same text again.
    fn check(n: &Neurons) {
        n.verify().unwrap();
        let text = n.to_string();
        let back: Neurons = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(&back, n, "{text}");
        assert_eq!(back.to_string(), text);
    }

    #[test]
    fn the_text_reads_as_documented() {
        let n: Neurons = "inputs 2\n\
             w0 = input bound [-2.2, 2.2] class 0\n\
             w1 = input bound [-2.2, 2.2] class 1\n\
             ; a comment\n\
             w2 = table relu (0.5*w0 - 1.25*w1 + 0.1 in [-3.0, 2.5]) range [-3.0, 2.5] domain [-3.0, 2.5] center 1.25 bound [-1.25, 1.25] class 5 layer \"/fc1/Relu\" held_out 0/10 calibrated [-2.0, 2.0] quantiles [-1.5, 0.25, 1.75]\n\
             output 0 size 2\n\
             o0.0 = (2.0*w2 + 2.5 in [0.0, 5.0])\n\
             o0.1 = (-0.0 in [-0.0, 0.0])\n\
             calibrated outputs [0.0, 4.0] [0.0, 0.0]\n"
            .parse()
            .unwrap();
        n.verify().unwrap();
        let l = n.wires[2].lookup.as_ref().unwrap();
        assert_eq!(l.input.terms, [(0, 0.5), (1, -1.25)]);
        assert_eq!((l.input.bias, l.input.lo, l.input.hi), (0.1, -3.0, 2.5));
        assert_eq!((l.center, l.held_out, l.calibrated), (1.25, (0, 10), Some((-2.0, 2.0))));
        assert_eq!((n.wires[2].lo, n.wires[2].class, l.layer.as_str()), (-1.25, 5, "/fc1/Relu"));
        assert!(n.outputs[0][1].bias.is_sign_negative());
        check(&n);
    }

    /// Syntax errors name the line and what was expected.
    #[test]
    fn malformed_text_is_refused_with_its_line() {
        let head = "inputs 1\nw0 = input bound [0.0, 1.0] class 0\n";
        for (body, want) in [
            ("w2 = input bound [0.0, 1.0] class 1\n", "line 3: w2 where w1 comes next"),
            (
                "w1 = table nope (1.0*w0 in [0.0, 1.0]) range [0.0, 1.0] domain [0.0, 1.0] center 0.0 bound [0.0, 1.0] class 1 layer \"\"\n",
                "unknown op `nope`",
            ),
            (
                "w1 = table relu (1.0*w0 in [0.0, 1.0]) range [0.0, 1.0] domain [0.0, 1.0] center 0.0 bound [0.0, 1.0] class 1\n",
                "line 3: expected `layer`",
            ),
            ("w1 = table relu (1.0*w0 + 2.0 + 1.0*w0 in [0.0, 1.0]) range [0.0, 1.0]\n", "expected `in`"),
            ("output 0 size 2\no0.0 = (1.0*w0 in [0.0, 1.0])\n", "line 3: output 0 has size 2 but 1 elements"),
            ("output 0 size 1\no0.1 = (1.0*w0 in [0.0, 1.0])\n", "`o0.1` where `o0.0` comes next"),
            ("calibrated outputs\nw1 = input bound [0.0, 1.0] class 1\n", "line 4: nothing may follow"),
        ] {
            let e = format!("{head}{body}").parse::<Neurons>().unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        assert!("".parse::<Neurons>().unwrap_err().to_string().contains("no `inputs N` line"));
    }
}
