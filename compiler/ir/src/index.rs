//! Index arithmetic over static shapes, shared by everything that maps elements between tensors.

/// Calls `f` with every multi-index of `shape`, in row-major order.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let n = crate::types::numel(shape);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&idx);
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// For each element of `out` (row-major), the flat index of the element of `input` that numpy
/// broadcasting reads (`input` right-aligned, size-1 axes repeated).
pub fn broadcast_index(out: &[usize], input: &[usize]) -> Vec<usize> {
    let lead = out.len() - input.len();
    let mut res = Vec::with_capacity(crate::types::numel(out));
    for_each_index(out, |idx| {
        res.push(input.iter().enumerate().fold(0, |f, (k, &d)| f * d + if d == 1 { 0 } else { idx[lead + k] }));
    });
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_repeats_size_one_axes() {
        assert_eq!(broadcast_index(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_index(&[2, 2], &[]), vec![0, 0, 0, 0]);
    }
}
