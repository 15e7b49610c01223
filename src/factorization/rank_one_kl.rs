//! The fast path of template learning: a fused f32 kernel for the rank-one
//! CNMF with the Kullback–Leibler divergence (β = 1).
//!
//! # The updates
//!
//! For one note, `M` (F × N) is approximated by `Λ = W * h`,
//! `Λ[f, t] = Σ_{i<τ} W[f, i] h[t − i]` (Wu, Marmoret & Cohen 2022, eq. 7 with
//! one component). One iteration is the MM update of `h` then of `W` of Fagot,
//! Wendt, Févotte & Smaragdis (ICASSP 2019), for KL:
//!
//! ```text
//! h[t]    ← h[t] · Σ_i Σ_f W[f,i] R[f,t+i] / Σ_{i : t+i<N} s_i,    R = M / Λ,      s_i = Σ_f W[f,i]
//! W[f,i]  ← W[f,i] · Σ_t R'[f,t] h[t−i] / Σ_{t<N−i} h[t],            R' = M / (W * h_new)
//! ```
//!
//! followed by the renormalisation `λ = Σ_{f,i} W[f,i]`, `W /= λ`, `h *= λ`
//! (the floors of [`super::kernels`] and the model floor of
//! [`MODEL_FLOOR`] are applied as in the generic path).
//!
//! # Why a dedicated kernel
//!
//! With one component, everything except `h` is independent per frequency
//! bin: given `h`, the row `W[f, :]` is updated from `M[f, :]` alone. So one
//! pass over the bins, 16 bins at a time (one "block", held in registers
//! with its τ template values and τ numerator accumulators), computes for
//! every frame
//!
//! 1. `Λ' = W * h_new`, `R' = M / Λ'` and the W numerators `Σ_t R'[f,t] h[t−i]`,
//!    which give the new `W[f, :]` at the end of the frames;
//! 2. with the new `W[f, :]`: `Λ'' = W_new * h_new` (the model the next
//!    iteration's h update starts from), `R'' = M / Λ''`, the loss terms when
//!    asked, and the block's share of the next h numerator
//!    `Σ_i W_new[f,i] R''[f,t+i]`, the new slice sums `s_i`, and `λ`.
//!
//! The block's spectrogram (N × 16 values) stays in the L1 cache for both
//! passes, so `M` is read from memory once per iteration and neither model
//! nor ratio is ever stored whole. Each pass is one loop over the frames
//! that computes `R[t]` and, a few frames later ([`LAG`], to hide the
//! division's latency), adds the frames of `R` now complete to the
//! numerators. The next h numerator and `s_i` are those of the
//! *unnormalised* `W_new`; since `λ` scales both alike, their ratio is the
//! one of the normalised factors (mathematically identical; only rounding
//! differs). `W /= λ` is applied as the next pass loads each block.
//!
//! Per iteration this is the minimum for exact updates: two convolutions
//! (`W * h`) and two correlations, `4·τ` multiply-adds per bin and frame,
//! plus two divisions.
//!
//! # Precision and determinism
//!
//! f32 arithmetic. Sums over bins are accumulated per lane in f32 over the
//! blocks of a group, then in f64 over groups and lanes (`λ` likewise); the
//! loss per lane in f32 over the frames of a block, then in f64. The
//! convolutions and correlations accumulate with fused multiply-adds
//! (`a·b + c` rounded once: IEEE 754 `fusedMultiplyAdd`, which AVX-512F,
//! FMA3 and Rust's `f32::mul_add` all compute exactly), the rest is plain
//! multiplications, additions and divisions, in a fixed order; each bin's
//! arithmetic does not depend on the vector width, so the AVX-512, AVX2 and
//! portable variants give bit-identical results. (The fused form is 17-29 %
//! faster than a separate multiply and add on the Intel Xeon measured in
//! BENCHMARKS.md; the portable variant, used only on CPUs without AVX2 and
//! FMA, pays for a software `fmaf`.) Bins are cut into fixed groups of
//! [`GROUP_BLOCKS`] blocks (the unit of parallel work) whose partial sums
//! are added in group order: results do not depend on the number of
//! threads either.
//!
//! The loss `Σ M log(M/y) − M + y` (`y = max(Λ, floor)`, as
//! [`super::beta_divergence`] floors it) is evaluated in the second pass
//! when asked for, from the ratio already in registers, with a vectorisable
//! f32 logarithm ([`ln_f32`]); it costs about 65 % of a pass, so
//! [`super::rank_one::LOSS_EVERY`] keeps it rare.

use rayon::prelude::*;

use super::kernels::{ACTIVATION_FLOOR, TEMPLATE_FLOOR};
use super::MODEL_FLOOR;

/// Bins per block: lane `l` of block `b` holds bin `16 b + l`.
pub const LANES: usize = 16;

/// Blocks per group. Groups are processed in parallel and their partial
/// sums added in order, so the results do not depend on the thread count.
pub const GROUP_BLOCKS: usize = 16;

/// Longest τ the kernel handles (longer templates use the generic path).
pub const MAX_TAU: usize = 32;

type Lanes = [f32; LANES];

/// The template lengths the kernel is compiled for; τ is padded with zero
/// template frames up to the next one (adding exact zeros changes nothing).
fn tau_capacity(tau: usize) -> Option<usize> {
    [5, 10, 20, MAX_TAU].into_iter().find(|&c| tau <= c)
}

/// Which compiled variant runs (all give bit-identical results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// No target features: 4 lanes at a time (SSE2 on x86-64).
    Portable,
    /// AVX2 and FMA3: 8 lanes at a time.
    Avx2,
    /// AVX-512F: 16 lanes at a time. Built only by Rust ≥ 1.89, where it
    /// is stable (`build.rs`).
    Avx512,
}

impl Isa {
    /// The best variant this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            #[cfg(sscnmf_avx512)]
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Whether this build has the variant and this CPU can run it.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(all(target_arch = "x86_64", sscnmf_avx512))]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The state of one rank-one KL learning problem in the kernel's layout.
#[derive(Debug, Clone)]
pub struct FusedRankOneKl {
    f_len: usize,
    n: usize,
    tau: usize,
    /// Compiled template length (≥ τ; frames τ.. of `w` stay zero).
    cap: usize,
    isa: Isa,
    parallel: bool,
    /// `M`, block by block, frame by frame: `m[b·N + t][l] = M[16b + l, t]`.
    m: Vec<Lanes>,
    /// `W`, block by block: `w[b·cap + i][l] = W[16b + l, i]`.
    w: Vec<Lanes>,
    /// `cap − 1` zeros, then `h[0..N]`: `hp[cap − 1 + s] = h[s]`.
    hp: Vec<f32>,
    /// Per group: its share of the h numerator (N frames × 16 lanes).
    numh: Vec<Lanes>,
    /// Per group: the ratio of one sub-block, `N + cap − 1` frames (zeros
    /// past `N`) × 16 lanes.
    ratio: Vec<f32>,
    /// Per group: `Σ_f W[f, i]` per lane (cap × 16).
    slices: Vec<Lanes>,
    /// Per group: the loss per lane.
    losses: Vec<[f64; LANES]>,
    /// Scratch: `Σ_{t<N−i} h[t]` (cap).
    den_w: Vec<f32>,
    /// `1/λ` of the renormalisation not yet applied to `w` (it is applied
    /// as the next pass loads each block).
    pending_scale: Option<f32>,
    /// The current h numerator `Σ_i Σ_f W[f,i] R[f,t+i]` (N) and slice sums
    /// (cap), of the current (possibly unnormalised) `W` and `h`.
    num_total: Vec<f64>,
    slice_total: Vec<f64>,
}

impl FusedRankOneKl {
    /// `m` is F × N column-major (entries below the spectrogram floor already
    /// zero), `w0` F × τ column-major, `h0` N values. `None` if τ is above
    /// [`MAX_TAU`]. Floors `w0` at [`TEMPLATE_FLOOR`] (as the generic kernel
    /// does) but does not normalise.
    pub fn new(m: &[f32], f_len: usize, n: usize, w0: &[f32], tau: usize, h0: &[f32]) -> Option<Self> {
        let cap = tau_capacity(tau)?;
        assert!(tau >= 1 && m.len() == f_len * n && w0.len() == f_len * tau && h0.len() == n);
        let blocks = f_len.div_ceil(LANES);
        let groups = blocks.div_ceil(GROUP_BLOCKS);
        let mut mb = vec![[0.0f32; LANES]; blocks * n];
        for t in 0..n {
            for (f, &x) in m[t * f_len..(t + 1) * f_len].iter().enumerate() {
                mb[(f / LANES) * n + t][f % LANES] = x;
            }
        }
        let mut wb = vec![[0.0f32; LANES]; blocks * cap];
        let floor = TEMPLATE_FLOOR as f32;
        for i in 0..tau {
            for (f, &x) in w0[i * f_len..(i + 1) * f_len].iter().enumerate() {
                wb[(f / LANES) * cap + i][f % LANES] = zero_below(x, floor);
            }
        }
        let mut hp = vec![0.0f32; cap - 1 + n];
        hp[cap - 1..].copy_from_slice(h0);
        Some(FusedRankOneKl {
            f_len,
            n,
            tau,
            cap,
            isa: Isa::detect(),
            // Inside a rayon task (e.g. one of many notes learned in
            // parallel) the groups run in order on this thread; otherwise in
            // parallel. The results are the same.
            parallel: rayon::current_thread_index().is_none(),
            m: mb,
            w: wb,
            hp,
            numh: vec![[0.0; LANES]; groups * n],
            ratio: vec![0.0; groups * (n + cap - 1) * LANES],
            slices: vec![[0.0; LANES]; groups * cap],
            pending_scale: None,
            losses: vec![[0.0; LANES]; groups],
            den_w: vec![0.0; cap],
            num_total: vec![0.0; n],
            slice_total: vec![0.0; cap],
        })
    }

    /// Uses `isa` instead of the detected variant (for tests; falls back to
    /// the portable one if the CPU lacks it).
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = if isa.supported() { isa } else { Isa::Portable };
    }

    /// Whether groups run in parallel (rayon) or in order on this thread;
    /// the results are the same.
    pub fn set_parallel(&mut self, parallel: bool) {
        self.parallel = parallel;
    }

    /// The activations `h` (N).
    pub fn activations(&self) -> &[f32] {
        &self.hp[self.cap - 1..]
    }

    /// The template, F × τ column-major (normalised).
    pub fn template(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.f_len * self.tau];
        let t_floor = TEMPLATE_FLOOR as f32;
        for i in 0..self.tau {
            for f in 0..self.f_len {
                let x = self.w[(f / LANES) * self.cap + i][f % LANES];
                out[i * self.f_len + f] = match self.pending_scale {
                    Some(inv) => zero_below(x * inv, t_floor),
                    None => x,
                };
            }
        }
        out
    }

    /// The renormalisation of [`super::kernels::CnmfKernel::normalize`]:
    /// with `λ = Σ_{f,i} W[f, i]` (skipped unless positive and finite),
    /// `W /= λ` and `h *= λ`, each followed by its floor. `h` is scaled now;
    /// `W` as the next pass (or [`Self::template`]) reads it.
    fn normalize(&mut self, lambda: f64) {
        if lambda <= 0.0 || !lambda.is_finite() {
            return;
        }
        self.pending_scale = Some((1.0 / lambda) as f32);
        let l = lambda as f32;
        let a_floor = ACTIVATION_FLOOR as f32;
        let cap = self.cap;
        for x in &mut self.hp[cap - 1..] {
            *x = zero_below(*x * l, a_floor);
        }
    }

    /// Normalises the initial factors and computes the h numerator, slice
    /// sums and loss of the model they make. Returns the loss
    /// `D_KL(M | W * h)`.
    pub fn start(&mut self) -> f64 {
        let lambda = self.w.iter().map(|lanes| lanes.iter().map(|&x| x as f64).sum::<f64>()).sum();
        self.normalize(lambda);
        let (loss, _) = self.pass(false, true);
        loss.expect("asked for the loss")
    }

    /// One iteration: the h update, the W update and the renormalisation.
    /// Returns the loss of the factors after it when `want_loss`.
    pub fn iterate(&mut self, want_loss: bool) -> Option<f64> {
        self.update_activations();
        let (loss, lambda) = self.pass(true, want_loss);
        self.normalize(lambda);
        loss
    }

    /// `h[t] ← h[t] · num[t] / Σ_{i<min(τ, N−t)} s_i` (skipped where `h` is
    /// zero or the denominator is not positive), floored at
    /// [`ACTIVATION_FLOOR`].
    fn update_activations(&mut self) {
        let (n, tau, cap) = (self.n, self.tau, self.cap);
        let floor = ACTIVATION_FLOOR as f32;
        for t in 0..n {
            let den: f64 = self.slice_total[..tau.min(n - t)].iter().sum();
            let h = &mut self.hp[cap - 1 + t];
            if *h == 0.0 || den <= 0.0 {
                continue;
            }
            *h = zero_below(*h * (self.num_total[t] / den) as f32, floor);
        }
    }

    /// One pass over all bins. With `update`, first updates W (h fixed);
    /// then computes the h numerator and slice sums of the (new) W, and the
    /// loss when `want_loss`. Returns the loss and `λ = Σ W`.
    fn pass(&mut self, update: bool, want_loss: bool) -> (Option<f64>, f64) {
        let (n, cap, tau) = (self.n, self.cap, self.tau);
        // W denominators Σ_{t<N−i} h[t]; 1 for the padding frames (their W is 0).
        let h = &self.hp[cap - 1..];
        for i in 0..cap {
            self.den_w[i] = if i < tau { h[..n - i.min(n)].iter().map(|&x| x as f64).sum::<f64>() as f32 } else { 1.0 };
        }
        let kind = match (update, want_loss) {
            (true, false) => Kind::Update,
            (true, true) => Kind::UpdateLoss,
            _ => Kind::Loss,
        };
        let f = select(self.isa, cap, kind);
        let rlen = (n + cap - 1) * LANES;
        let scale = self.pending_scale.take();
        let shared = Shared { n, hp: &self.hp, den_w: &self.den_w, scale };
        let mn = GROUP_BLOCKS * n;
        let wn = GROUP_BLOCKS * cap;
        let work = |((((m, w), numh), ratio), (slices, loss)): GroupSlices<'_>| {
            let g = Group { m, w, numh, ratio, slices, loss };
            // SAFETY: `select` only returns variants the CPU supports.
            unsafe { f(&shared, g) }
        };
        if self.parallel {
            self.m
                .par_chunks(mn)
                .zip(self.w.par_chunks_mut(wn))
                .zip(self.numh.par_chunks_mut(n))
                .zip(self.ratio.par_chunks_mut(rlen))
                .zip(self.slices.par_chunks_mut(cap).zip(self.losses.par_iter_mut()))
                .for_each(work);
        } else {
            self.m
                .chunks(mn)
                .zip(self.w.chunks_mut(wn))
                .zip(self.numh.chunks_mut(n))
                .zip(self.ratio.chunks_mut(rlen))
                .zip(self.slices.chunks_mut(cap).zip(self.losses.iter_mut()))
                .for_each(work);
        }
        // Sums over groups (in order) and lanes (in order), in f64.
        self.num_total.iter_mut().for_each(|x| *x = 0.0);
        for g in self.numh.chunks(n) {
            for (tot, lanes) in self.num_total.iter_mut().zip(g) {
                *tot += lanes.iter().map(|&x| x as f64).sum::<f64>();
            }
        }
        self.slice_total.iter_mut().for_each(|x| *x = 0.0);
        for g in self.slices.chunks(cap) {
            for (tot, lanes) in self.slice_total.iter_mut().zip(g) {
                *tot += lanes.iter().map(|&x| x as f64).sum::<f64>();
            }
        }
        let lambda = self.slice_total.iter().sum();
        let loss = want_loss.then(|| self.losses.iter().map(|l| l.iter().sum::<f64>()).sum());
        (loss, lambda)
    }
}

/// What a pass computes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// W update, then h numerator and slice sums.
    Update,
    /// The same and the loss.
    UpdateLoss,
    /// h numerator, slice sums and loss of the current factors.
    Loss,
}

/// Read-only inputs of a pass.
struct Shared<'a> {
    n: usize,
    hp: &'a [f32],
    den_w: &'a [f32],
    /// The pending `1/λ` to apply to `W` first.
    scale: Option<f32>,
}

/// One group's slices of the kernel's buffers, as the iterators zip them.
type GroupSlices<'a> =
    ((((&'a [Lanes], &'a mut [Lanes]), &'a mut [Lanes]), &'a mut [f32]), (&'a mut [Lanes], &'a mut [f64; LANES]));

/// One group's data and outputs.
struct Group<'a> {
    m: &'a [Lanes],
    w: &'a mut [Lanes],
    numh: &'a mut [Lanes],
    ratio: &'a mut [f32],
    slices: &'a mut [Lanes],
    loss: &'a mut [f64; LANES],
}

type GroupFn = unsafe fn(&Shared<'_>, Group<'_>);

macro_rules! variants {
    ($($cap:literal),*) => {
        fn select(isa: Isa, cap: usize, kind: Kind) -> GroupFn {
            match isa {
                #[cfg(all(target_arch = "x86_64", sscnmf_avx512))]
                Isa::Avx512 => match (cap, kind) {
                    $(
                        ($cap, Kind::Update) => x86::avx512::<$cap, true, false>,
                        ($cap, Kind::UpdateLoss) => x86::avx512::<$cap, true, true>,
                        ($cap, Kind::Loss) => x86::avx512::<$cap, false, true>,
                    )*
                    _ => unreachable!("tau capacity {cap}"),
                },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => match (cap, kind) {
                    $(
                        ($cap, Kind::Update) => x86::avx2::<$cap, true, false>,
                        ($cap, Kind::UpdateLoss) => x86::avx2::<$cap, true, true>,
                        ($cap, Kind::Loss) => x86::avx2::<$cap, false, true>,
                    )*
                    _ => unreachable!("tau capacity {cap}"),
                },
                _ => match (cap, kind) {
                    $(
                        ($cap, Kind::Update) => portable::<$cap, true, false>,
                        ($cap, Kind::UpdateLoss) => portable::<$cap, true, true>,
                        ($cap, Kind::Loss) => portable::<$cap, false, true>,
                    )*
                    _ => unreachable!("tau capacity {cap}"),
                },
            }
        }
    };
}
variants!(5, 10, 20, 32);

/// # Safety
/// None needed (no target features); `unsafe` only to share the type of the
/// other variants.
unsafe fn portable<const T: usize, const UPDATE: bool, const LOSS: bool>(s: &Shared<'_>, g: Group<'_>) {
    group::<Portable, T, UPDATE, LOSS>(s, g)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{group, ln_f32, Group, Shared, Simd};

    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(sscnmf_avx512)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<const T: usize, const UPDATE: bool, const LOSS: bool>(s: &Shared<'_>, g: Group<'_>) {
        group::<V16, T, UPDATE, LOSS>(s, g)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const T: usize, const UPDATE: bool, const LOSS: bool>(s: &Shared<'_>, g: Group<'_>) {
        group::<V8, T, UPDATE, LOSS>(s, g)
    }

    #[cfg(sscnmf_avx512)]
    #[derive(Clone, Copy)]
    pub(super) struct V16(__m512);

    // Compiled only by Rust ≥ 1.89 (see build.rs), where these are stable.
    #[cfg(sscnmf_avx512)]
    #[allow(clippy::incompatible_msrv)]
    impl Simd for V16 {
        const S: usize = 16;
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn splat(x: f32) -> Self {
            V16(_mm512_set1_ps(x))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(p: *const f32) -> Self {
            V16(_mm512_loadu_ps(p))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn add(self, o: Self) -> Self {
            V16(_mm512_add_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn sub(self, o: Self) -> Self {
            V16(_mm512_sub_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn mul(self, o: Self) -> Self {
            V16(_mm512_mul_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn mul_add(self, a: Self, b: Self) -> Self {
            V16(_mm512_fmadd_ps(self.0, a.0, b.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn div(self, o: Self) -> Self {
            V16(_mm512_div_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn max(self, o: Self) -> Self {
            // MAXPS returns the second operand unless the first is greater.
            V16(_mm512_max_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn zero_below(self, t: Self) -> Self {
            // "Not less than" is true for NaN, as `!(x < t)` is.
            V16(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_NLT_UQ>(self.0, t.0), self.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn ln(self) -> Self {
            let mut a = [0.0f32; 16];
            _mm512_storeu_ps(a.as_mut_ptr(), self.0);
            V16(_mm512_loadu_ps(ln_f32(a).as_ptr()))
        }
    }

    #[derive(Clone, Copy)]
    pub(super) struct V8(__m256);

    impl Simd for V8 {
        const S: usize = 8;
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn splat(x: f32) -> Self {
            V8(_mm256_set1_ps(x))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn load(p: *const f32) -> Self {
            V8(_mm256_loadu_ps(p))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn add(self, o: Self) -> Self {
            V8(_mm256_add_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn sub(self, o: Self) -> Self {
            V8(_mm256_sub_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn mul(self, o: Self) -> Self {
            V8(_mm256_mul_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn mul_add(self, a: Self, b: Self) -> Self {
            V8(_mm256_fmadd_ps(self.0, a.0, b.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn div(self, o: Self) -> Self {
            V8(_mm256_div_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn max(self, o: Self) -> Self {
            V8(_mm256_max_ps(self.0, o.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn zero_below(self, t: Self) -> Self {
            // "Not less than" is true for NaN, as `!(x < t)` is.
            V8(_mm256_and_ps(self.0, _mm256_cmp_ps::<_CMP_NLT_UQ>(self.0, t.0)))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn ln(self) -> Self {
            let mut a = [0.0f32; 8];
            _mm256_storeu_ps(a.as_mut_ptr(), self.0);
            V8(_mm256_loadu_ps(ln_f32(a).as_ptr()))
        }
    }
}

/// A vector of `S` f32 lanes. Every method is lane-wise IEEE arithmetic
/// (`mul_add` rounded once, as IEEE 754's fusedMultiplyAdd), so all
/// implementations agree bit for bit.
///
/// # Safety
/// The methods need the CPU features of their implementation; pointers must
/// be valid for `S` values.
trait Simd: Copy {
    const S: usize;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    /// `self · a + b`, lane-wise, rounded once (fused multiply-add).
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// `if self > o { self } else { o }`, lane-wise.
    unsafe fn max(self, o: Self) -> Self;
    /// `if self < t { 0 } else { self }`, lane-wise ([`zero_below`]).
    unsafe fn zero_below(self, t: Self) -> Self;
    /// [`ln_f32`], lane-wise.
    unsafe fn ln(self) -> Self;
}

/// `if x < t { 0 } else { x }`: the floors of [`super::kernels`].
#[inline(always)]
fn zero_below(x: f32, t: f32) -> f32 {
    if x < t {
        0.0
    } else {
        x
    }
}

/// Processes one group's blocks, `V::S` lanes at a time.
///
/// # Safety
/// The CPU must support `V`'s features.
#[inline(always)]
unsafe fn group<V: Simd, const T: usize, const UPDATE: bool, const LOSS: bool>(s: &Shared<'_>, g: Group<'_>) {
    let n = s.n;
    let hp = &s.hp[..n + T - 1];
    let den_w: &[f32; T] = s.den_w.try_into().expect("cap");
    let t_floor = V::splat(TEMPLATE_FLOOR as f32);
    g.numh.iter_mut().for_each(|x| *x = [0.0; LANES]);
    *g.loss = [0.0; LANES];
    let ratio = &mut g.ratio[..(n + T - 1) * V::S];
    ratio[n * V::S..].iter_mut().for_each(|x| *x = 0.0);
    let slices: &mut [Lanes; T] = g.slices.try_into().expect("cap");
    for o in (0..LANES).step_by(V::S) {
        let mut sums = [V::splat(0.0); T];
        for (mb, wb) in g.m.chunks_exact(n).zip(g.w.chunks_exact_mut(T)) {
            let mut w = [V::splat(0.0); T];
            for (wi, src) in w.iter_mut().zip(wb.iter()) {
                *wi = V::load(src.as_ptr().add(o));
                if let Some(inv) = s.scale {
                    *wi = wi.mul(V::splat(inv)).zero_below(t_floor);
                }
            }
            if UPDATE {
                let num = template_numerator::<V, T>(mb, &w, hp, o, ratio);
                for i in 0..T {
                    if den_w[i] > 0.0 {
                        w[i] = w[i].mul(num[i].div(V::splat(den_w[i]))).zero_below(t_floor);
                    }
                }
            }
            if UPDATE || s.scale.is_some() {
                for (dst, wi) in wb.iter_mut().zip(w.iter()) {
                    wi.store(dst.as_mut_ptr().add(o));
                }
            }
            for (acc, wi) in sums.iter_mut().zip(w.iter()) {
                *acc = acc.add(*wi);
            }
            let loss = model_numerator::<V, T, LOSS>(mb, &w, hp, o, ratio, g.numh);
            if LOSS {
                let mut lanes = [0.0f32; LANES];
                loss.store(lanes.as_mut_ptr());
                for l in 0..V::S {
                    g.loss[o + l] += lanes[l] as f64;
                }
            }
        }
        for (dst, acc) in slices.iter_mut().zip(sums.iter()) {
            acc.store(dst.as_mut_ptr().add(o));
        }
    }
}

/// `Λ[t] = Σ_i W[i] h[t − i]`; `hs` points at `hp[t]`, so that
/// `hs[T − 1 − i] = h[t − i]`.
#[inline(always)]
unsafe fn model<V: Simd, const T: usize>(w: &[V; T], hs: *const f32) -> V {
    // Two partial sums (even and odd i) halve the chain of dependent
    // multiply-adds.
    let h = |i: usize| V::splat(*hs.add(T - 1 - i));
    let mut even = w[0].mul(h(0));
    let mut odd = if T > 1 { w[1].mul(h(1)) } else { V::splat(0.0) };
    for i in (2..T).step_by(2) {
        even = w[i].mul_add(h(i), even);
        if i + 1 < T {
            odd = w[i + 1].mul_add(h(i + 1), odd);
        }
    }
    even.add(odd)
}

/// `R[t] = M[t] / y` with `y = max(W * h, floor)` for one frame of `V::S`
/// bins; `mt` points at `M[t]`, `hs` at `hp[t]`. Returns `(R, y)`.
#[inline(always)]
unsafe fn ratio_frame<V: Simd, const T: usize>(mt: *const f32, w: &[V; T], hs: *const f32, floor: V) -> (V, V) {
    let y = model::<V, T>(w, hs).max(floor);
    (V::load(mt).div(y), y)
}

/// `acc[i] += R[s] h[s − i]`.
#[inline(always)]
unsafe fn accumulate_template<V: Simd, const T: usize>(acc: &mut [V; T], ratio: *const f32, hp: *const f32, s: usize) {
    let r = V::load(ratio.add(s * V::S));
    let hs = hp.add(s);
    for i in 0..T {
        acc[i] = r.mul_add(V::splat(*hs.add(T - 1 - i)), acc[i]);
    }
}

/// `numh[s][o..o + V::S] += Σ_i W[i] R[s + i]`.
#[inline(always)]
unsafe fn accumulate_activation<V: Simd, const T: usize>(w: &[V; T], ratio: *const f32, numh: *mut f32, s: usize) {
    let rs = ratio.add(s * V::S);
    let r = |i: usize| V::load(rs.add(i * V::S));
    let mut even = w[0].mul(r(0));
    let mut odd = if T > 1 { w[1].mul(r(1)) } else { V::splat(0.0) };
    for i in (2..T).step_by(2) {
        even = w[i].mul_add(r(i), even);
        if i + 1 < T {
            odd = w[i + 1].mul_add(r(i + 1), odd);
        }
    }
    let a = numh.add(s * LANES);
    V::load(a).add(even.add(odd)).store(a);
}

/// Frames between computing `R[t]` and using it for a numerator, so that
/// the division's latency overlaps other work.
pub const LAG: usize = 6;

/// The W numerators `Σ_t R[t] h[t−i]` of `V::S` bins, with
/// `R = M / max(W * h, floor)` (left in `ratio`). One loop computes `R[t]`
/// and adds `R[t − LAG]` to the numerators.
#[inline(always)]
unsafe fn template_numerator<V: Simd, const T: usize>(
    m: &[Lanes],
    w: &[V; T],
    hp: &[f32],
    o: usize,
    ratio: &mut [f32],
) -> [V; T] {
    let n = m.len();
    let floor = V::splat(MODEL_FLOOR as f32);
    let (hp, rp) = (hp.as_ptr(), ratio.as_mut_ptr());
    let mut acc = [V::splat(0.0); T];
    for (t, mt) in m.iter().enumerate() {
        let (r, _) = ratio_frame::<V, T>(mt.as_ptr().add(o), w, hp.add(t), floor);
        r.store(rp.add(t * V::S));
        if t >= LAG {
            accumulate_template::<V, T>(&mut acc, rp, hp, t - LAG);
        }
    }
    for s in n.saturating_sub(LAG)..n {
        accumulate_template::<V, T>(&mut acc, rp, hp, s);
    }
    acc
}

/// `R[t] = M[t] / max(W * h, floor)` for `V::S` bins into `ratio`
/// (frame-major, `V::S` values per frame, zero past `N`), and the h
/// numerators `Σ_i W[i] R[s + i]` added to lanes `o..o + V::S` of `numh[s]`
/// [`LAG`] frames after their `τ` frames of `R` are known. With `LOSS`,
/// returns the KL loss terms `M log R − M + y` (`y` the floored model;
/// `M = 0` gives `y`) summed over the frames, per lane.
#[inline(always)]
unsafe fn model_numerator<V: Simd, const T: usize, const LOSS: bool>(
    m: &[Lanes],
    w: &[V; T],
    hp: &[f32],
    o: usize,
    ratio: &mut [f32],
    numh: &mut [Lanes],
) -> V {
    let n = m.len();
    let floor = V::splat(MODEL_FLOOR as f32);
    let tiny = V::splat(f32::MIN_POSITIVE);
    let hp = hp.as_ptr();
    let rp = ratio.as_mut_ptr();
    let np = (numh.as_mut_ptr() as *mut f32).add(o);
    let mut loss = V::splat(0.0);
    for (t, mt) in m.iter().enumerate() {
        let x = V::load(mt.as_ptr().add(o));
        let y = model::<V, T>(w, hp.add(t)).max(floor);
        let r = x.div(y);
        r.store(rp.add(t * V::S));
        if LOSS {
            // The log is finite (R ≥ the smallest normal), so M = 0 gives y.
            let lr = r.max(tiny).ln();
            loss = loss.add(x.mul(lr).sub(x).add(y));
        }
        if t + 1 >= T + LAG {
            accumulate_activation::<V, T>(w, rp, np, t + 1 - T - LAG);
        }
    }
    for s in (n + 1).saturating_sub(T + LAG)..n {
        accumulate_activation::<V, T>(w, rp, np, s);
    }
    loss
}

/// Four lanes, no target features (SSE2 on x86-64, NEON elsewhere, as the
/// compiler sees fit).
#[derive(Clone, Copy)]
struct Portable([f32; 4]);

impl Simd for Portable {
    const S: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p as *const [f32; 4]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; 4], self.0)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] + o.0[l]))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] - o.0[l]))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] * o.0[l]))
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l].mul_add(a.0[l], b.0[l])))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] / o.0[l]))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        Portable(std::array::from_fn(|l| if self.0[l] > o.0[l] { self.0[l] } else { o.0[l] }))
    }
    #[inline(always)]
    unsafe fn zero_below(self, t: Self) -> Self {
        Portable(std::array::from_fn(|l| zero_below(self.0[l], t.0[l])))
    }
    #[inline(always)]
    unsafe fn ln(self) -> Self {
        Portable(ln_f32(self.0))
    }
}

/// Natural logarithm of positive normal f32 values, lane by lane, without
/// branches (so that it vectorises): the `logf` of Cephes (S. Moshier),
/// `x = m·2^e` with `m ∈ [√½, √2)` and a degree-8 polynomial in `u = m − 1`,
/// here evaluated by Estrin's scheme (a shorter chain of dependent
/// operations than Horner's); error about 1e-7 (relative, or absolute near
/// `x = 1`).
#[inline(always)]
pub fn ln_f32<const S: usize>(x: [f32; S]) -> [f32; S] {
    const C: [f32; 9] = [
        7.037_683_6e-2,
        -1.151_461_e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ];
    let mut out = [0.0f32; S];
    for l in 0..S {
        let bits = x[l].to_bits();
        let e = ((bits >> 23) & 0xff) as i32 - 126;
        let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
        let small = m < std::f32::consts::FRAC_1_SQRT_2;
        let e = (if small { e - 1 } else { e }) as f32;
        let u = if small { m + m - 1.0 } else { m - 1.0 };
        let z = u * u;
        let z2 = z * z;
        // P(u) = Σ_k C[k] u^(8−k)
        let q0 = C[7] * u + C[8];
        let q1 = C[5] * u + C[6];
        let q2 = C[3] * u + C[4];
        let q3 = C[1] * u + C[2];
        let p = (q1 * z + q0) + z2 * (q3 * z + q2) + (z2 * z2) * C[0];
        let mut y = p * u * z;
        y += -2.121_944_4e-4 * e;
        y += -0.5 * z;
        out[l] = u + y + 0.693_359_4 * e;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::SplitMix64;
    use super::*;

    /// A kernel for a random F × N problem with a random τ-frame template
    /// and random activations.
    fn random_kernel(f: usize, tau: usize, n: usize, seed: u64) -> FusedRankOneKl {
        let mut g = SplitMix64::new(seed);
        let m: Vec<f32> = (0..f * n).map(|_| g.next_unit() as f32).collect();
        let w: Vec<f32> = (0..f * tau).map(|_| g.next_unit() as f32).collect();
        let h: Vec<f32> = (0..n).map(|_| g.next_unit() as f32).collect();
        FusedRankOneKl::new(&m, f, n, &w, tau, &h).unwrap()
    }

    /// Runs `iterations` iterations, returning the template, activations and
    /// losses (one per iteration) as bits.
    fn run(mut k: FusedRankOneKl, iterations: usize) -> (Vec<u32>, Vec<u32>, Vec<u64>) {
        let mut losses = vec![k.start().to_bits()];
        for _ in 0..iterations {
            losses.push(k.iterate(true).unwrap().to_bits());
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (bits(&k.template()), bits(k.activations()), losses)
    }

    #[test]
    fn results_do_not_depend_on_threads_or_instruction_set() {
        // 600 bins: 38 blocks, 3 groups (the last one short).
        for &(f, tau, n) in &[(600, 10, 37), (21, 3, 9)] {
            let serial = {
                let mut k = random_kernel(f, tau, n, 5);
                k.set_parallel(false);
                k.set_isa(Isa::Portable);
                run(k, 20)
            };
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
                    let got = pool.install(|| {
                        let mut k = random_kernel(f, tau, n, 5);
                        k.set_parallel(true);
                        k.set_isa(isa);
                        run(k, 20)
                    });
                    assert!(got == serial, "F {f}: {threads} threads, {isa:?} differ from the serial portable run");
                }
            }
        }
    }

    #[test]
    fn the_loss_never_increases() {
        for &(f, tau, n, seed) in &[(50, 10, 30, 1), (17, 5, 12, 2), (260, 20, 25, 3)] {
            let mut k = random_kernel(f, tau, n, seed);
            let mut last = k.start();
            for it in 0..150 {
                let loss = k.iterate(true).unwrap();
                // f32 rounding of the loss terms allows a relative 10⁻⁶.
                assert!(loss <= last * (1.0 + 1e-6), "F {f} τ {tau}, iteration {it}: {loss} > {last}");
                last = loss;
            }
        }
    }

    #[test]
    fn normalisation_keeps_the_template_summing_to_one() {
        let mut k = random_kernel(40, 7, 15, 9);
        k.start();
        for _ in 0..5 {
            k.iterate(false);
            let sum: f64 = k.template().iter().map(|&x| x as f64).sum();
            assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        }
    }

    #[test]
    fn ln_f32_matches_f64_ln() {
        let mut worst = 0.0f64;
        let mut x = 1.2e-38f32;
        while x < 3e38 {
            for k in 0..16 {
                let v = x * (1.0 + k as f32 / 16.0);
                let got = ln_f32::<1>([v])[0] as f64;
                let want = (v as f64).ln();
                worst = worst.max((got - want).abs() / want.abs().max(1.0));
            }
            x *= 1.37;
        }
        assert!(worst < 2e-7, "{worst}");
        // Near 1, where the loss terms cancel: absolute error.
        for k in -20_000..20_000 {
            let v = 1.0 + k as f32 * 2.5e-5;
            let err = (ln_f32::<1>([v])[0] as f64 - (v as f64).ln()).abs();
            assert!(err < 1e-7, "ln({v}) off by {err}");
        }
        assert_eq!(ln_f32::<1>([1.0])[0], 0.0);
    }
}
