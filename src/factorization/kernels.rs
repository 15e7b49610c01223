//! The CNMF updates as blocked matrix products (faer), in f32 or f64.
//!
//! With `W_stack` the F × τK matrix whose column `q·τ + i` is slice `i` of
//! template `q` (exactly the memory of [`ConvTemplates`]), and `H̃` the τK × N
//! matrix with `H̃[q·τ + i, t] = H[q, t − i]`:
//!
//! ```text
//! M̂ = W_stack · H̃                         (F × N)
//! G = W_stackᵀ · (M ⊙ M̂^(β−2))            (τK × N)
//! numerator[q, t] = Σ_{i : t+i < N} G[q·τ + i, t + i]
//! ```
//!
//! The frames are cut into blocks of [`FRAME_BLOCK`] columns, processed in
//! parallel; each block computes its part of `M̂`, the ratio and `G` while they
//! are in cache, so the full F × N model is never stored. The blocks are fixed
//! by the data's size only, and each block's products are sequential, so the
//! result is bit-identical whatever the number of threads.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{Beta, ConvTemplates, Matrix, MODEL_FLOOR};

/// Frames per block of the blocked products.
pub const FRAME_BLOCK: usize = 64;

/// Activations below this are set to exactly zero after each update, and
/// template entries below [`TEMPLATE_FLOOR`] likewise. Together they keep every
/// product `W·H` at least 1e-30, a normal number in f32, so the arithmetic
/// never meets subnormal numbers (10-100 times slower on x86); a zero stays
/// zero under multiplicative updates. Both are far below anything audible:
/// activations of 16-bit audio are above 1e-6, and templates sum to 1 over
/// F·τ ≈ 40 000 entries. Applied identically in f32 and f64, so the two
/// paths compute the same thing.
pub const ACTIVATION_FLOOR: f64 = 1e-15;

/// See [`ACTIVATION_FLOOR`].
pub const TEMPLATE_FLOOR: f64 = 1e-15;

/// Spectrogram values below this are treated as exactly zero (see
/// [`ACTIVATION_FLOOR`]): 16-bit audio has no magnitude this small.
pub const SPECTROGRAM_FLOOR: f64 = 1e-30;

/// Sets template entries below [`TEMPLATE_FLOOR`] to zero.
pub fn floor_templates<T: Real>(templates: &mut ConvTemplates<T>) {
    let floor = T::from_f64(TEMPLATE_FLOOR);
    templates.data.iter_mut().filter(|x| **x < floor).for_each(|x| *x = T::ZERO);
}

/// The floating-point types the kernels run in: f32 (fast path) and f64
/// (exact path).
pub trait Real:
    Copy
    + Default
    + Send
    + Sync
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + Into<f64>
    + 'static
{
    /// Zero.
    const ZERO: Self;
    /// Converts from f64 (rounding for f32).
    fn from_f64(x: f64) -> Self;
    /// `x^e`.
    fn powf(self, e: Self) -> Self;
    /// `dst (m × n) = lhs · rhs` or `lhsᵀ · rhs`, all column-major and
    /// contiguous; sequential.
    fn gemm(dst: &mut [Self], m: usize, n: usize, lhs: &[Self], lhs_transposed: bool, k: usize, rhs: &[Self]);
}

macro_rules! impl_real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            fn gemm(dst: &mut [Self], m: usize, n: usize, lhs: &[Self], lhs_transposed: bool, k: usize, rhs: &[Self]) {
                let dst = MatMut::from_column_major_slice_mut(dst, m, n);
                let rhs = MatRef::from_column_major_slice(rhs, k, n);
                if lhs_transposed {
                    let lhs = MatRef::from_column_major_slice(lhs, k, m);
                    matmul(dst, Accum::Replace, lhs.transpose(), rhs, 1.0, Par::Seq);
                } else {
                    let lhs = MatRef::from_column_major_slice(lhs, m, k);
                    matmul(dst, Accum::Replace, lhs, rhs, 1.0, Par::Seq);
                }
            }
        }
    };
}
impl_real!(f32);
impl_real!(f64);

/// Writes `H̃[q·τ + i, t] = H[q, t − i]` (0 where `t < i`) for frames
/// `first..first + out_cols` into `out` (τK × out_cols, column-major).
fn stack_shifts<T: Real>(activations: &Matrix<T>, tau: usize, first: usize, out_cols: usize, out: &mut [T]) {
    let k = activations.rows;
    let rows = k * tau;
    for c in 0..out_cols {
        let t = first + c;
        let col = &mut out[c * rows..(c + 1) * rows];
        for q in 0..k {
            for i in 0..tau {
                col[q * tau + i] = if t >= i { activations.get(q, t - i) } else { T::ZERO };
            }
        }
    }
}

/// Per-iteration statistics returned by the kernels.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateStats {
    /// `D_β(M | M̂)` of the factors *before* the update, when asked for.
    pub loss_before: Option<f64>,
}

/// Multiplicative updates of convolutive activations (and templates) for a
/// fixed set of templates, with precomputed constants.
#[derive(Debug, Clone)]
pub struct CnmfKernel<T> {
    templates: ConvTemplates<T>,
    /// `Σ_f W[f, i, q]` at `q·τ + i`: the KL denominator's pieces.
    slice_sums: Vec<T>,
}

impl<T: Real> CnmfKernel<T> {
    /// Prepares the kernel for `templates`.
    pub fn new(mut templates: ConvTemplates<T>) -> Self {
        floor_templates(&mut templates);
        let slice_sums = compute_slice_sums(&templates);
        CnmfKernel { templates, slice_sums }
    }

    /// The templates.
    pub fn templates(&self) -> &ConvTemplates<T> {
        &self.templates
    }

    /// Consumes the kernel, returning the templates.
    pub fn into_templates(self) -> ConvTemplates<T> {
        self.templates
    }

    /// The model `M̂ = Σ_i W_i H(shifted by i)` (F × N), not floored.
    pub fn reconstruct(&self, activations: &Matrix<T>) -> Matrix<T> {
        let (f_len, tau, k) = (self.templates.n_bins, self.templates.tau, self.templates.n_templates);
        let n = activations.cols;
        let mut model = Matrix::zeros(f_len, n);
        model.data.par_chunks_mut(f_len * FRAME_BLOCK).enumerate().for_each(|(b, out)| {
            let first = b * FRAME_BLOCK;
            let cols = out.len() / f_len;
            let mut stacked = vec![T::ZERO; tau * k * cols];
            stack_shifts(activations, tau, first, cols, &mut stacked);
            T::gemm(out, f_len, cols, &self.templates.data, false, tau * k, &stacked);
        });
        model
    }

    /// One multiplicative update of every activation (templates fixed):
    /// the H update of the [module docs](super). `spectrogram` is F × N,
    /// `activations` K × N.
    pub fn update_activations(
        &self,
        spectrogram: &Matrix<T>,
        activations: &mut Matrix<T>,
        beta: Beta,
        want_loss: bool,
    ) -> UpdateStats {
        let (f_len, tau, k) = (self.templates.n_bins, self.templates.tau, self.templates.n_templates);
        let n = activations.cols;
        assert_eq!(spectrogram.rows, f_len);
        assert_eq!(spectrogram.cols, n);
        assert_eq!(activations.rows, k);
        let rows = tau * k;
        let kl = beta.is_kl();
        let b = T::from_f64(beta.value());
        let floor = T::from_f64(MODEL_FLOOR);
        let w = &self.templates.data;

        // G = W_stackᵀ R (and, unless KL, D = W_stackᵀ P), block by block.
        let mut numer_stack = vec![T::ZERO; rows * n];
        let mut denom_stack = if kl { Vec::new() } else { vec![T::ZERO; rows * n] };
        let block_losses: Vec<f64> = {
            let denom_chunks: Vec<&mut [T]> = if kl {
                (0..n.div_ceil(FRAME_BLOCK)).map(|_| &mut [][..]).collect()
            } else {
                denom_stack.chunks_mut(rows * FRAME_BLOCK).collect()
            };
            numer_stack
                .par_chunks_mut(rows * FRAME_BLOCK)
                .zip(denom_chunks.into_par_iter())
                .enumerate()
                .map(|(blk, (g_out, d_out))| {
                    let first = blk * FRAME_BLOCK;
                    let cols = g_out.len() / rows;
                    let mut stacked = vec![T::ZERO; rows * cols];
                    stack_shifts(activations, tau, first, cols, &mut stacked);
                    let mut model = vec![T::ZERO; f_len * cols];
                    T::gemm(&mut model, f_len, cols, w, false, rows, &stacked);
                    let m = &spectrogram.data[first * f_len..(first + cols) * f_len];
                    let mut loss = 0.0;
                    if want_loss {
                        loss = super::beta_divergence(m, &model, beta);
                    }
                    if kl {
                        for (y, &x) in model.iter_mut().zip(m) {
                            let yy = if *y > floor { *y } else { floor };
                            *y = x / yy;
                        }
                    } else {
                        let mut p = vec![T::ZERO; f_len * cols];
                        for ((y, pp), &x) in model.iter_mut().zip(p.iter_mut()).zip(m) {
                            let yy = if *y > floor { *y } else { floor };
                            *pp = yy.powf(b - T::from_f64(1.0));
                            *y = x * yy.powf(b - T::from_f64(2.0));
                        }
                        T::gemm(d_out, rows, cols, w, true, f_len, &p);
                    }
                    T::gemm(g_out, rows, cols, w, true, f_len, &model);
                    loss
                })
                .collect()
        };

        let gamma = beta.mm_exponent();
        let gamma_t = T::from_f64(gamma);
        let zero_floor = T::from_f64(ACTIVATION_FLOOR);
        for q in 0..k {
            for t in 0..n {
                let mut num = T::ZERO;
                let mut den = T::ZERO;
                for i in 0..tau.min(n - t) {
                    let row = q * tau + i;
                    num += numer_stack[(t + i) * rows + row];
                    den += if kl { self.slice_sums[row] } else { denom_stack[(t + i) * rows + row] };
                }
                let h = activations.get(q, t);
                if h == T::ZERO || den <= T::ZERO {
                    continue;
                }
                let ratio = num / den;
                let factor = if gamma == 1.0 { ratio } else { ratio.powf(gamma_t) };
                let mut updated = h * factor;
                if updated < zero_floor {
                    updated = T::ZERO;
                }
                activations.set(q, t, updated);
            }
        }
        UpdateStats { loss_before: want_loss.then(|| block_losses.iter().sum()) }
    }

    /// One multiplicative update of every template entry (activations fixed):
    /// the W update of the [module docs](super). Stores the full F × N model;
    /// meant for learning templates on short recordings.
    pub fn update_templates(&mut self, spectrogram: &Matrix<T>, activations: &Matrix<T>, beta: Beta) {
        let (f_len, tau, k) = (self.templates.n_bins, self.templates.tau, self.templates.n_templates);
        let n = activations.cols;
        let rows = tau * k;
        let kl = beta.is_kl();
        let b = T::from_f64(beta.value());
        let floor = T::from_f64(MODEL_FLOOR);
        let model = self.reconstruct(activations);
        // R and P as row-major-in-blocks is not needed: we form Rᵀ-free
        // products by transposing H̃ instead: num_W = R · H̃ᵀ (F × τK).
        let mut r = model.data;
        let mut p = if kl { Vec::new() } else { vec![T::ZERO; r.len()] };
        for idx in 0..r.len() {
            let y = if r[idx] > floor { r[idx] } else { floor };
            if kl {
                r[idx] = spectrogram.data[idx] / y;
            } else {
                p[idx] = y.powf(b - T::from_f64(1.0));
                r[idx] = spectrogram.data[idx] * y.powf(b - T::from_f64(2.0));
            }
        }
        // H̃ᵀ (N × τK), column-major: column q·τ+i is H[q, · − i].
        let mut stacked_t = vec![T::ZERO; n * rows];
        for q in 0..k {
            for i in 0..tau {
                let col = &mut stacked_t[(q * tau + i) * n..(q * tau + i + 1) * n];
                for t in i..n {
                    col[t] = activations.get(q, t - i);
                }
            }
        }
        let mut num = vec![T::ZERO; f_len * rows];
        gemm_rows_blocked(&mut num, f_len, rows, &r, n, &stacked_t);
        let den = if kl {
            // Σ_t H[q, t − i] for every bin.
            (0..rows).map(|c| stacked_t[c * n..(c + 1) * n].iter().fold(T::ZERO, |acc, &x| acc + x)).collect::<Vec<T>>()
        } else {
            Vec::new()
        };
        let mut den_full = Vec::new();
        if !kl {
            den_full = vec![T::ZERO; f_len * rows];
            gemm_rows_blocked(&mut den_full, f_len, rows, &p, n, &stacked_t);
        }
        let gamma = beta.mm_exponent();
        let gamma_t = T::from_f64(gamma);
        for c in 0..rows {
            for f in 0..f_len {
                let idx = c * f_len + f;
                let d = if kl { den[c] } else { den_full[idx] };
                if d <= T::ZERO {
                    continue;
                }
                let ratio = num[idx] / d;
                let factor = if gamma == 1.0 { ratio } else { ratio.powf(gamma_t) };
                self.templates.data[idx] *= factor;
            }
        }
        floor_templates(&mut self.templates);
        self.slice_sums = compute_slice_sums(&self.templates);
    }

    /// Rescales each template to unit L1 norm (`λ_q = Σ_{f,i} W[f,i,q]`) and
    /// multiplies its activations by `λ_q`, leaving the model unchanged.
    pub fn normalize(&mut self, activations: &mut Matrix<T>) {
        let len = self.templates.n_bins * self.templates.tau;
        for q in 0..self.templates.n_templates {
            let w = &mut self.templates.data[q * len..(q + 1) * len];
            let lambda: f64 = w.iter().map(|&x| x.into()).sum();
            if lambda <= 0.0 || !lambda.is_finite() {
                continue;
            }
            let inv = T::from_f64(1.0 / lambda);
            w.iter_mut().for_each(|x| *x *= inv);
            let floor = T::from_f64(TEMPLATE_FLOOR);
            w.iter_mut().filter(|x| **x < floor).for_each(|x| *x = T::ZERO);
            let l = T::from_f64(lambda);
            let floor = T::from_f64(ACTIVATION_FLOOR);
            for t in 0..activations.cols {
                let v = activations.get(q, t) * l;
                activations.set(q, t, if v < floor { T::ZERO } else { v });
            }
        }
        self.slice_sums = compute_slice_sums(&self.templates);
    }
}

fn compute_slice_sums<T: Real>(templates: &ConvTemplates<T>) -> Vec<T> {
    templates.data.chunks(templates.n_bins).map(|s| T::from_f64(s.iter().map(|&x| x.into()).sum::<f64>())).collect()
}

/// For KL, with any stacked activations `S` (`rows` × N, column-major) and
/// a dictionary `w` (F × `rows`): `G = wᵀ · (M ⊘ max(w·S, MODEL_FLOOR))`
/// (`rows` × N), computed in fixed blocks of [`FRAME_BLOCK`] frames in
/// parallel so that the F × N model is never stored, and, when asked, the
/// loss `D_KL(M | w·S)` of the factors as they are. Deterministic whatever
/// the number of threads. The numerator of every KL multiplicative update of
/// a model that is linear in its activations.
pub fn kl_ratio_products<T: Real>(
    w: &[T],
    rows: usize,
    stacked: &[T],
    spectrogram: &Matrix<T>,
    want_loss: bool,
) -> (Vec<T>, Option<f64>) {
    let (f_len, n) = (spectrogram.rows, spectrogram.cols);
    assert_eq!(w.len(), f_len * rows);
    assert_eq!(stacked.len(), rows * n);
    let floor = T::from_f64(MODEL_FLOOR);
    let mut g = vec![T::ZERO; rows * n];
    let losses: Vec<f64> = g
        .par_chunks_mut(rows * FRAME_BLOCK)
        .enumerate()
        .map(|(blk, g_out)| {
            let first = blk * FRAME_BLOCK;
            let cols = g_out.len() / rows;
            let mut model = vec![T::ZERO; f_len * cols];
            T::gemm(&mut model, f_len, cols, w, false, rows, &stacked[first * rows..(first + cols) * rows]);
            let m = &spectrogram.data[first * f_len..(first + cols) * f_len];
            let loss = if want_loss { super::beta_divergence(m, &model, Beta::KL) } else { 0.0 };
            for (y, &x) in model.iter_mut().zip(m) {
                *y = x / if *y > floor { *y } else { floor };
            }
            T::gemm(g_out, rows, cols, w, true, f_len, &model);
            loss
        })
        .collect();
    (g, want_loss.then(|| losses.iter().sum()))
}

/// `dst (m × n) = a (m × k) · b (k × n)` with the rows of `a` and `dst` cut
/// into fixed blocks computed in parallel (deterministic).
fn gemm_rows_blocked<T: Real>(dst: &mut [T], m: usize, n: usize, a: &[T], k: usize, b: &[T]) {
    const ROW_BLOCK: usize = 512;
    let blocks: Vec<(usize, Vec<T>)> = (0..m.div_ceil(ROW_BLOCK))
        .into_par_iter()
        .map(|blk| {
            let r0 = blk * ROW_BLOCK;
            let rows = ROW_BLOCK.min(m - r0);
            // Copy the row block of `a` (column-major) into its own buffer.
            let mut a_blk = vec![T::ZERO; rows * k];
            for c in 0..k {
                a_blk[c * rows..(c + 1) * rows].copy_from_slice(&a[c * m + r0..c * m + r0 + rows]);
            }
            let mut out = vec![T::ZERO; rows * n];
            T::gemm(&mut out, rows, n, &a_blk, false, k, b);
            (r0, out)
        })
        .collect();
    for (r0, out) in blocks {
        let rows = out.len() / n.max(1);
        for c in 0..n {
            dst[c * m + r0..c * m + r0 + rows].copy_from_slice(&out[c * rows..(c + 1) * rows]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{reference, SplitMix64};
    use super::*;

    fn random_problem(
        f: usize,
        tau: usize,
        k: usize,
        n: usize,
        seed: u64,
    ) -> (Matrix<f64>, ConvTemplates<f64>, Matrix<f64>) {
        let mut g = SplitMix64::new(seed);
        let m = Matrix { rows: f, cols: n, data: (0..f * n).map(|_| g.next_unit()).collect() };
        let w = ConvTemplates::new(f, tau, k, (0..f * tau * k).map(|_| g.next_unit()).collect()).unwrap();
        let h = Matrix { rows: k, cols: n, data: (0..k * n).map(|_| g.next_unit()).collect() };
        (m, w, h)
    }

    fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-300)).fold(0.0, f64::max)
    }

    #[test]
    fn blocked_products_match_the_reference_loops_on_awkward_sizes() {
        for &(f, tau, k, n) in
            &[(7, 3, 2, 1), (17, 1, 5, 63), (33, 4, 3, 64), (9, 5, 2, 65), (31, 10, 3, 129), (1, 2, 1, 130)]
        {
            for &beta in &[Beta::KL, Beta::new(0.0).unwrap(), Beta::new(0.5).unwrap(), Beta::new(2.0).unwrap()] {
                let (m, w, h0) = random_problem(f, tau, k, n, (f * 1000 + n) as u64);
                let kernel = CnmfKernel::new(w.clone());
                assert!(max_rel_diff(&kernel.reconstruct(&h0).data, &reference::reconstruct(&w, &h0).data) < 1e-12);

                let mut h_fast = h0.clone();
                let stats = kernel.update_activations(&m, &mut h_fast, beta, true);
                let mut h_ref = h0.clone();
                let loss_ref = reference::loss(&m, &w, &h_ref, beta);
                reference::update_activations(&m, &w, &mut h_ref, beta);
                assert!(max_rel_diff(&h_fast.data, &h_ref.data) < 1e-10, "H, {f} {tau} {k} {n} β={beta:?}");
                assert!((stats.loss_before.unwrap() - loss_ref).abs() <= 1e-9 * loss_ref.abs());

                let mut kernel = CnmfKernel::new(w.clone());
                kernel.update_templates(&m, &h0, beta);
                let mut w_ref = w.clone();
                reference::update_templates(&m, &mut w_ref, &h0, beta);
                assert!(max_rel_diff(&kernel.templates().data, &w_ref.data) < 1e-10, "W, {f} {tau} {k} {n} β={beta:?}");
            }
        }
    }

    #[test]
    fn f32_kernels_agree_with_f64_to_single_precision() {
        let (m, w, h0) = random_problem(40, 4, 3, 100, 3);
        let k64 = CnmfKernel::new(w.clone());
        let k32 = CnmfKernel::new(w.map(|x| x as f32));
        let mut h64 = h0.clone();
        let mut h32 = h0.map(|x| x as f32);
        for _ in 0..5 {
            k64.update_activations(&m, &mut h64, Beta::KL, false);
            k32.update_activations(&m.map(|x| x as f32), &mut h32, Beta::KL, false);
        }
        let h32_64: Vec<f64> = h32.data.iter().map(|&x| x as f64).collect();
        assert!(max_rel_diff(&h64.data, &h32_64) < 1e-4);
    }

    #[test]
    fn updates_never_increase_the_loss() {
        for &beta in &[Beta::KL, Beta::new(0.0).unwrap(), Beta::new(2.0).unwrap()] {
            let (m, w, h0) = random_problem(30, 3, 4, 50, 11);
            let mut kernel = CnmfKernel::new(w);
            let mut h = h0;
            let mut last = f64::INFINITY;
            for _ in 0..20 {
                let loss = kernel.update_activations(&m, &mut h, beta, true).loss_before.unwrap();
                assert!(loss <= last * (1.0 + 1e-12), "β={beta:?}: {loss} > {last}");
                last = loss;
                kernel.update_templates(&m, &h, beta);
                kernel.normalize(&mut h);
            }
        }
    }
}
