//! Calibrated table windows: where a table's positions go when it is spread over the range its
//! input took on the calibration samples rather than its whole interval bound. Scalarization uses
//! them to count held-out reads, integerization and the CKKS lowering to place tables and
//! polynomials.

/// A calibrated table window is the calibration samples' range widened this many times around its
/// centre.
pub const TABLE_HEADROOM: f64 = 2.0;
/// A table window covers at least this fraction of its interval bound: tables of one layer share
/// their inputs' scales, and the narrowest window sets them (a neuron that barely moves on the
/// calibration samples would otherwise coarsen the weights of every other).
pub const MAX_NARROWING: f64 = 8.0;

/// The window of a table whose input took `(clo, chi)` on the calibration samples and is bounded by
/// `(lo, hi)`: see [`TableRanges::Calibrated`].
pub(crate) fn window((clo, chi): (f64, f64), (lo, hi): (f64, f64)) -> (f64, f64) {
    let (m, h) = ((clo + chi) / 2.0, (chi - clo) / 2.0 * TABLE_HEADROOM);
    let h = h.max((hi - lo) / 2.0 / MAX_NARROWING);
    // Keep the width when the window meets an edge of the bound.
    if m - h < lo {
        (lo, (lo + 2.0 * h).min(hi))
    } else if m + h > hi {
        ((hi - 2.0 * h).max(lo), hi)
    } else {
        (m - h, m + h)
    }
}
