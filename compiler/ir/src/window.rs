//! The geometry of a sliding window (convolution, pooling) over one to three spatial axes, lifted
//! to three: the float interpreter and the lowering walk the same taps, so they cannot disagree on
//! which input element a window reads.

/// A window over the spatial axes of `[N, C, *spatial]` (one to three of them), lifted to three
/// by leading axes of extent 1. Positions are flat, row-major over the spatial axes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    input: [usize; 3],
    output: [usize; 3],
    kernel: [usize; 3],
    strides: [usize; 3],
    dilations: [usize; 3],
    begin: [usize; 3],
    end: [usize; 3],
}

/// Where one tap of a window lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tap {
    /// An input element (its flat spatial position).
    In(usize),
    /// The declared padding.
    Pad,
    /// Beyond the declared padding (the last window of `ceil_mode`).
    Beyond,
}

impl Window {
    /// The window of `kernel` with ONNX `strides`, `pads` (begins, then ends) and `dilations` from
    /// the spatial extents `input` to `output`.
    pub fn new(
        input: &[usize],
        output: &[usize],
        kernel: &[usize],
        strides: &[usize],
        pads: &[usize],
        dilations: &[usize],
    ) -> Result<Window, String> {
        let s = kernel.len();
        if !(1..=3).contains(&s) {
            return Err(format!("only 1-D, 2-D and 3-D windows are supported, got {s}-D"));
        }
        if input.len() != s || output.len() != s || strides.len() != s || dilations.len() != s || pads.len() != 2 * s {
            return Err(format!(
                "window attributes do not match {s} spatial axes (input {input:?}, output {output:?}, strides \
                 {strides:?}, pads {pads:?}, dilations {dilations:?})"
            ));
        }
        let lift = |v: &[usize]| -> [usize; 3] {
            let mut a = [1; 3];
            a[3 - s..].copy_from_slice(v);
            a
        };
        let mut begin = [0; 3];
        begin[3 - s..].copy_from_slice(&pads[..s]);
        let mut end = [0; 3];
        end[3 - s..].copy_from_slice(&pads[s..]);
        Ok(Window {
            input: lift(input),
            output: lift(output),
            kernel: lift(kernel),
            strides: lift(strides),
            dilations: lift(dilations),
            begin,
            end,
        })
    }

    /// Elements of one channel of the input.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Elements of one channel of the output.
    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }

    /// Taps of one window.
    pub fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Calls `f(tap, where)` for every tap of the window at output position `o`, in kernel order.
    pub fn taps(&self, o: usize, mut f: impl FnMut(usize, Tap)) {
        let out = [o / (self.output[1] * self.output[2]), o / self.output[2] % self.output[1], o % self.output[2]];
        // Per axis, the input coordinate of each kernel offset (negative or past the end: padding).
        let at =
            |a: usize, k: usize| (out[a] * self.strides[a] + k * self.dilations[a]) as isize - self.begin[a] as isize;
        let mut t = 0;
        for kz in 0..self.kernel[0] {
            let z = at(0, kz);
            for ky in 0..self.kernel[1] {
                let y = at(1, ky);
                for kx in 0..self.kernel[2] {
                    let x = at(2, kx);
                    let c = [z, y, x];
                    let inside = (0..3).all(|a| c[a] >= 0 && c[a] < self.input[a] as isize);
                    let tap = if inside {
                        Tap::In(((z as usize) * self.input[1] + y as usize) * self.input[2] + x as usize)
                    } else if (0..3).all(|a| c[a] < (self.input[a] + self.end[a]) as isize) {
                        Tap::Pad
                    } else {
                        Tap::Beyond
                    };
                    f(t, tap);
                    t += 1;
                }
            }
        }
    }

    /// For every output position, its taps' input positions (`None` in padding): `output_len`
    /// rows of `kernel_len`.
    pub fn tap_table(&self) -> Vec<Option<usize>> {
        let k = self.kernel_len();
        let mut table = vec![None; self.output_len() * k];
        for o in 0..self.output_len() {
            self.taps(o, |t, tap| {
                if let Tap::In(i) = tap {
                    table[o * k + t] = Some(i);
                }
            });
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_d_lifts_and_pads() {
        // Input 4, kernel 3, stride 2, pads (1, 1): outputs 2; the first window starts in the padding.
        let w = Window::new(&[4], &[2], &[3], &[2], &[1, 1], &[1]).unwrap();
        let mut taps = Vec::new();
        w.taps(0, |_, t| taps.push(t));
        assert_eq!(taps, [Tap::Pad, Tap::In(0), Tap::In(1)]);
        taps.clear();
        w.taps(1, |_, t| taps.push(t));
        assert_eq!(taps, [Tap::In(1), Tap::In(2), Tap::In(3)]);
    }

    #[test]
    fn three_d_dilated_taps_and_the_ceil_window() {
        // [2,3,3] input, kernel [1,2,2] dilated [1,2,1]: output [2,1,2].
        let w = Window::new(&[2, 3, 3], &[2, 1, 2], &[1, 2, 2], &[1, 1, 1], &[0, 0, 0, 0, 0, 0], &[1, 2, 1]).unwrap();
        assert_eq!((w.input_len(), w.output_len(), w.kernel_len()), (18, 4, 4));
        let mut taps = Vec::new();
        w.taps(3, |_, t| taps.push(t));
        // Output (1, 0, 1): z 1, rows 0 and 2, columns 1 and 2.
        assert_eq!(taps, [Tap::In(10), Tap::In(11), Tap::In(16), Tap::In(17)]);
        // A window past the declared padding (ceil mode): input 3, kernel 2, stride 2, no pads.
        let w = Window::new(&[3], &[2], &[2], &[2], &[0, 0], &[1]).unwrap();
        assert_eq!(w.tap_table(), [Some(0), Some(1), Some(2), None]);
        let mut last = Vec::new();
        w.taps(1, |_, t| last.push(t));
        assert_eq!(last, [Tap::In(2), Tap::Beyond]);
        assert!(Window::new(&[1, 1, 1, 1], &[1, 1, 1, 1], &[1, 1, 1, 1], &[1; 4], &[0; 8], &[1; 4]).is_err());
    }
}
