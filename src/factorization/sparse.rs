//! The fast path's activation update: the KL H update of the
//! [module docs](super) computed only where the activations are nonzero.
//!
//! A multiplicative update keeps a zero activation at zero, and after a few
//! iterations most activations are tiny (a piano plays a few notes at a
//! time). [`SparseActivations`] stores only the nonzero `H[q, s]`, frame by
//! frame, and [`SparseCnmf::update`] costs `4·F·τ·nnz(H)` flops instead of the
//! dense `4·F·τ·K·N`:
//!
//! - the model `M̂[:, t] = Σ_i Σ_{q : H[q, t−i] ≠ 0} W[:, i, q] · H[q, t−i]`;
//! - the ratio `R = M / max(M̂, floor)`;
//! - the numerator `Σ_i Σ_f W[f, i, q] · R[f, s + i]` only for nonzero `H[q, s]`;
//!
//! all three fused, for one chunk of [`CHUNK`] frequency bins at a time and
//! frame after frame: the chunk of every template stays in the L2 cache,
//! `R` lives in a ring of τ frames, and neither `M̂` nor `R` is ever stored
//! whole. Chunks are grouped in fixed groups of [`CHUNKS_PER_GROUP`]
//! processed in parallel; each group sums its chunks' partial numerators in
//! order and the groups are summed in order, so the result is bit-identical
//! whatever the number of threads.
//!
//! The fused loops come in three variants, chosen once per [`SparseCnmf`]
//! from the CPU ([`Isa`]): AVX-512F (16 lanes, module `avx512`, built with
//! Rust ≥ 1.89, see `build.rs`), AVX2 with FMA (8 lanes, module `avx`) and
//! scalar. Each sums in its own fixed order, so each is deterministic, and
//! they agree to rounding (not bit for bit; the AVX-512 order is in its
//! module docs).
//!
//! After the update, activations below `prune ×` their local level (the
//! largest frame total within τ frames, [`local_levels`]) are set to zero
//! (and dropped), which is where the speed comes from; see
//! [`SparseSettings`](super::SparseSettings).

use rayon::prelude::*;

use super::kernels::ACTIVATION_FLOOR;
use super::rank_one_kl::Isa;
use super::{Beta, ConvTemplates, Matrix, MODEL_FLOOR};

/// Frequency bins per chunk (a multiple of 8, the f32 AVX width; the
/// AVX-512 variant is compiled for chunks of 8, 16, 24 and 32 bins).
pub const CHUNK: usize = 32;
const _: () = assert!(CHUNK == 32, "Chunk::run dispatches on widths up to 32");

/// Chunks per parallel task. Fixed, so the order of the sums does not
/// depend on the number of threads.
pub const CHUNKS_PER_GROUP: usize = 8;

/// Nonzero activations, frame by frame: the notes active in frame `s` are
/// `notes[start[s]..start[s + 1]]` (increasing), with values
/// `values[start[s]..start[s + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseActivations {
    /// K.
    pub n_notes: usize,
    /// N.
    pub n_frames: usize,
    /// N + 1 offsets into `notes` and `values`.
    pub start: Vec<usize>,
    /// Note of each stored activation.
    pub notes: Vec<u32>,
    /// Value of each stored activation (never zero).
    pub values: Vec<f32>,
    /// The last update ratio of each stored activation (1 before any),
    /// reused for dormant activations (see [`Step::numer_threshold`]).
    ratios: Vec<f32>,
}

impl SparseActivations {
    /// The nonzero entries of `h` (K × N).
    pub fn from_dense(h: &Matrix<f32>) -> Self {
        let mut start = Vec::with_capacity(h.cols + 1);
        let (mut notes, mut values) = (Vec::new(), Vec::new());
        start.push(0);
        for t in 0..h.cols {
            for (q, &v) in h.col(t).iter().enumerate() {
                if v != 0.0 {
                    notes.push(q as u32);
                    values.push(v);
                }
            }
            start.push(notes.len());
        }
        let ratios = vec![1.0; values.len()];
        SparseActivations { n_notes: h.rows, n_frames: h.cols, start, notes, values, ratios }
    }

    /// The nonzero entries of `h` with, for each, the ratio of its last
    /// update in `ratios` (K × N; empty: 1 everywhere).
    pub fn with_ratios(h: &Matrix<f32>, ratios: &Matrix<f32>) -> Self {
        let mut s = Self::from_dense(h);
        if ratios.data.len() == h.data.len() {
            for t in 0..s.n_frames {
                for e in s.start[t]..s.start[t + 1] {
                    s.ratios[e] = ratios.get(s.notes[e] as usize, t);
                }
            }
        }
        s
    }

    /// The dense K × N matrix.
    pub fn to_dense(&self) -> Matrix<f32> {
        let mut h = Matrix::zeros(self.n_notes, self.n_frames);
        for s in 0..self.n_frames {
            for e in self.start[s]..self.start[s + 1] {
                h.set(self.notes[e] as usize, s, self.values[e]);
            }
        }
        h
    }

    /// Number of stored (nonzero) activations.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// The largest activation (0 when empty).
    pub fn max(&self) -> f32 {
        self.values.iter().copied().fold(0.0, f32::max)
    }

    /// Drops the activations below `fraction` of the local level (the
    /// largest total activation of a frame within `tau` frames; see
    /// [`local_levels`]) and below the activation floor. Local, so that
    /// quiet passages keep their small activations and a piece of a
    /// recording is pruned as the whole would be.
    pub fn prune_local(&mut self, fraction: f32, tau: usize) {
        let local = local_levels(self, tau);
        let floor = ACTIVATION_FLOOR as f32;
        self.retain(|s, v| v >= (fraction * local[s]).max(floor));
    }

    /// Keeps the activations for which `keep(frame, value)` holds.
    fn retain(&mut self, keep: impl Fn(usize, f32) -> bool) {
        let mut kept = 0;
        let mut begin = 0;
        for s in 0..self.n_frames {
            let end = self.start[s + 1];
            for e in begin..end {
                if keep(s, self.values[e]) {
                    self.notes[kept] = self.notes[e];
                    self.values[kept] = self.values[e];
                    self.ratios[kept] = self.ratios[e];
                    kept += 1;
                }
            }
            begin = end;
            self.start[s + 1] = kept;
        }
        self.notes.truncate(kept);
        self.values.truncate(kept);
        self.ratios.truncate(kept);
    }
}

/// A spectrogram laid out chunk by chunk for [`SparseCnmf`]: chunk `c`
/// (bins `c·CHUNK ..`) holds, frame after frame, its `width(c)` bins (the
/// last chunk is padded with zeros to a multiple of 8).
#[derive(Debug, Clone)]
pub struct PackedSpectrogram {
    data: Vec<f32>,
    n_frames: usize,
}

/// How one [`SparseCnmf::step`] treats the activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The update ratio is raised to this power (2 ≈ two plain updates
    /// with the same ratio). 1 is the plain update.
    pub exponent: u32,
    /// Activations below `model_threshold ×` the local level are left out of the
    /// model `M̂`.
    pub model_threshold: f32,
    /// Activations below `numer_threshold ×` the local level are *dormant*: their
    /// numerator is not computed and they are multiplied by their last
    /// ratio instead.
    pub numer_threshold: f32,
    /// After the update, activations below `prune ×` the local level are dropped.
    pub prune: f32,
    /// Compute the loss before the update.
    pub want_loss: bool,
}

impl Default for Step {
    /// The plain update of every activation.
    fn default() -> Self {
        Step { exponent: 1, model_threshold: 0.0, numer_threshold: 0.0, prune: 0.0, want_loss: false }
    }
}

/// Fixed templates prepared for the sparse KL activation update.
#[derive(Debug, Clone)]
pub struct SparseCnmf {
    n_bins: usize,
    tau: usize,
    n_templates: usize,
    /// Chunk `c` of column `q·τ + i` at `offset(c) + (q·τ + i)·width(c)`.
    packed: Vec<f32>,
    /// `Σ_f W[f, i, q]` at `q·τ + i`.
    slice_sums: Vec<f32>,
    /// `Σ_i Σ_f W[f, i, q]` for frames at least τ − 1 from the end.
    denominators: Vec<f32>,
    /// The kernel variant that runs: the best this CPU has ([`Isa::detect`]:
    /// AVX-512F, module `avx512`; else AVX2 with FMA, module `avx`), or
    /// [`Isa::Portable`], the scalar loops.
    isa: Isa,
}

/// What one [`SparseCnmf::update`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct SparseStats {
    /// KL divergence `D(M | M̂)` before the update, when asked for.
    pub loss_before: Option<f64>,
    /// Floating-point operations of the update (multiply and add counted
    /// separately).
    pub flops: f64,
    /// Nonzero activations after the update.
    pub nnz: usize,
}

impl SparseCnmf {
    /// Prepares `templates` (floored like [`super::kernels::CnmfKernel`]).
    pub fn new(templates: &ConvTemplates<f32>) -> Self {
        let (f_len, tau, k) = (templates.n_bins, templates.tau, templates.n_templates);
        let floor = super::kernels::TEMPLATE_FLOOR as f32;
        let cols = tau * k;
        let n_chunks = f_len.div_ceil(CHUNK);
        let mut packed = Vec::with_capacity(n_chunks * CHUNK * cols);
        for c in 0..n_chunks {
            let (lo, real, width) = chunk_span(f_len, c);
            for j in 0..cols {
                let col = &templates.data[j * f_len..(j + 1) * f_len];
                packed.extend(col[lo..lo + real].iter().map(|&x| if x < floor { 0.0 } else { x }));
                packed.extend(std::iter::repeat_n(0.0, width - real));
            }
        }
        let slice_sums: Vec<f32> = (0..cols)
            .map(|j| {
                templates.data[j * f_len..(j + 1) * f_len]
                    .iter()
                    .map(|&x| if x < floor { 0.0 } else { x as f64 })
                    .sum::<f64>() as f32
            })
            .collect();
        let denominators =
            (0..k).map(|q| slice_sums[q * tau..(q + 1) * tau].iter().fold(0.0f32, |a, &b| a + b)).collect();
        SparseCnmf { n_bins: f_len, tau, n_templates: k, packed, slice_sums, denominators, isa: Isa::detect() }
    }

    /// The kernel variant that runs.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs the variant `isa` if this build and CPU have it, else the
    /// scalar loops (for tests and benchmarks; the default is the best one).
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = if isa.supported() { isa } else { Isa::Portable };
    }

    /// Lays out `m` (F × N) chunk by chunk.
    pub fn pack(&self, m: &Matrix<f32>) -> PackedSpectrogram {
        assert_eq!(m.rows, self.n_bins);
        let n = m.cols;
        let mut data = Vec::with_capacity(self.n_bins.div_ceil(CHUNK) * CHUNK * n);
        for c in 0..self.n_bins.div_ceil(CHUNK) {
            let (lo, real, width) = chunk_span(self.n_bins, c);
            for t in 0..n {
                data.extend_from_slice(&m.col(t)[lo..lo + real]);
                data.extend(std::iter::repeat_n(0.0, width - real));
            }
        }
        PackedSpectrogram { data, n_frames: n }
    }

    /// One multiplicative KL update of every nonzero activation, then the
    /// activations below `max(prune · local level, ACTIVATION_FLOOR)` are dropped.
    pub fn update(&self, m: &PackedSpectrogram, h: &mut SparseActivations, prune: f32, want_loss: bool) -> SparseStats {
        self.step(m, h, &Step { prune, want_loss, ..Step::default() })
    }

    /// One multiplicative KL update as described by `step`.
    pub fn step(&self, m: &PackedSpectrogram, h: &mut SparseActivations, step: &Step) -> SparseStats {
        let (f_len, tau, k, n) = (self.n_bins, self.tau, self.n_templates, h.n_frames);
        assert_eq!(m.n_frames, n);
        assert_eq!(h.n_notes, k);
        let n_chunks = f_len.div_ceil(CHUNK);
        let n_groups = n_chunks.div_ceil(CHUNKS_PER_GROUP);
        let nnz = h.nnz();
        let (in_model, listed) = classify(h, tau, step);
        let plan = Plan::new(h, tau, &in_model, &listed);
        let plan = &plan;
        let want_loss = step.want_loss;
        let parts: Vec<(Vec<f32>, f64)> = (0..n_groups)
            .into_par_iter()
            .map(|g| {
                let mut numer = vec![0.0f32; nnz];
                let mut ring = vec![0.0f32; ring_frames(tau) * CHUNK];
                let mut loss = 0.0;
                for c in g * CHUNKS_PER_GROUP..((g + 1) * CHUNKS_PER_GROUP).min(n_chunks) {
                    let (lo, real, width) = chunk_span(f_len, c);
                    let cols = tau * k;
                    let w = &self.packed[lo * cols..lo * cols + width * cols];
                    let mm = &m.data[lo * n..lo * n + width * n];
                    let chunk = Chunk { w, m: mm, width, real, plan };
                    loss += chunk.run(&mut numer, &mut ring[..ring_frames(tau) * width], want_loss, self.isa);
                }
                (numer, loss)
            })
            .collect();
        let mut numer = vec![0.0f32; nnz];
        let mut loss = 0.0;
        for (part, l) in &parts {
            for (a, &b) in numer.iter_mut().zip(part) {
                *a += b;
            }
            loss += l;
        }
        // The update itself (dormant activations reuse their last ratio),
        // then pruning relative to the new maximum.
        for s in 0..n {
            let border = n - s < tau;
            for e in h.start[s]..h.start[s + 1] {
                let ratio = if listed[e] {
                    let q = h.notes[e] as usize;
                    let den = if border {
                        self.slice_sums[q * tau..q * tau + (n - s)].iter().fold(0.0f32, |a, &b| a + b)
                    } else {
                        self.denominators[q]
                    };
                    if den > 0.0 {
                        numer[e] / den
                    } else {
                        1.0
                    }
                } else {
                    h.ratios[e]
                };
                h.ratios[e] = ratio;
                let mut factor = ratio;
                for _ in 1..step.exponent {
                    factor *= ratio;
                }
                h.values[e] *= factor;
            }
        }
        h.prune_local(step.prune, tau);
        let flops = 2.0 * f_len as f64 * tau as f64 * (plan.model_count + plan.numer_count) as f64;
        SparseStats { loss_before: want_loss.then_some(loss), flops, nnz: h.nnz() }
    }
}

/// Dormant activations whose last ratio is above this are updated anyway:
/// they are growing fast, and a stale ratio would overshoot.
pub const DORMANT_RATIO_CAP: f32 = 1.25;

/// Which stored activations are in the model, and which get a numerator
/// (the others are dormant), following `step`. The thresholds are relative
/// to the *local* level: the largest total activation of a frame within τ
/// frames, so that quiet passages keep their small activations.
fn classify(h: &SparseActivations, tau: usize, step: &Step) -> (Vec<bool>, Vec<bool>) {
    let n = h.n_frames;
    let local = local_levels(h, tau);
    let mut in_model = vec![true; h.nnz()];
    let mut listed = vec![true; h.nnz()];
    for s in 0..n {
        let (model_min, numer_min) = (step.model_threshold * local[s], step.numer_threshold * local[s]);
        for e in h.start[s]..h.start[s + 1] {
            let v = h.values[e];
            in_model[e] = v >= model_min;
            listed[e] = v >= numer_min || h.ratios[e] > DORMANT_RATIO_CAP;
        }
    }
    (in_model, listed)
}

/// The local level of each frame `s`: the largest total activation
/// `Σ_q H[q, s']` of the frames `s'` within `tau` frames of `s`.
pub fn local_levels(h: &SparseActivations, tau: usize) -> Vec<f32> {
    let n = h.n_frames;
    let sums: Vec<f32> = (0..n).map(|s| h.values[h.start[s]..h.start[s + 1]].iter().sum()).collect();
    (0..n).map(|s| sums[s.saturating_sub(tau)..(s + tau + 1).min(n)].iter().copied().fold(0.0, f32::max)).collect()
}

/// First bin, real bins and padded width of chunk `c`.
fn chunk_span(f_len: usize, c: usize) -> (usize, usize, usize) {
    let lo = c * CHUNK;
    let real = CHUNK.min(f_len - lo);
    (lo, real, real.div_ceil(8) * 8)
}

/// No entry (a note active in only one frame of a pair).
const NONE: u32 = u32::MAX;

/// One column of `W_stack` with its activations in the two frames of a pair.
#[derive(Debug, Clone, Copy)]
struct ModelEntry {
    /// Column `q·τ + i`.
    col: u32,
    /// `H[q, t − i]` for the pair's first frame `t` (0 if none).
    first: f32,
    /// `H[q, t + 1 − i]` (0 if none).
    second: f32,
}

/// A note active in one or both frames `s`, `s + 1` of a pair.
#[derive(Debug, Clone, Copy)]
struct NumerEntry {
    note: u32,
    /// Index of `H[q, s]` among the stored activations, or [`NONE`].
    first: u32,
    /// Index of `H[q, s + 1]`, or [`NONE`].
    second: u32,
}

/// The loops of one update, frame pair by frame pair, built once and used by
/// every chunk. Treating frames two by two loads each template column once
/// for both when a note is active in both (consecutive frames mostly share
/// their notes), halving the traffic from the L2 cache.
struct Plan {
    tau: usize,
    n_frames: usize,
    model_start: Vec<usize>,
    model: Vec<ModelEntry>,
    numer_start: Vec<usize>,
    numer: Vec<NumerEntry>,
    /// Activations in the model and activations whose numerator is computed.
    model_count: usize,
    numer_count: usize,
}

impl Plan {
    /// Only stored activations with `in_model` are in the model, only those
    /// `listed` get a numerator.
    fn new(h: &SparseActivations, tau: usize, in_model: &[bool], listed: &[bool]) -> Plan {
        let n = h.n_frames;
        let pairs = n.div_ceil(2);
        let frame = |s: isize| -> std::ops::Range<usize> {
            if s >= 0 && (s as usize) < n {
                h.start[s as usize]..h.start[s as usize + 1]
            } else {
                0..0
            }
        };
        let mut model_start = Vec::with_capacity(pairs + 1);
        let mut model = Vec::new();
        let mut numer_start = Vec::with_capacity(pairs + 1);
        let mut numer = Vec::new();
        model_start.push(0);
        numer_start.push(0);
        for p in 0..pairs {
            let t = 2 * p as isize;
            for i in 0..tau as isize {
                let second = if t + 1 < n as isize { frame(t + 1 - i) } else { 0..0 };
                merge(h, frame(t - i), second, in_model, |q, a, b| {
                    model.push(ModelEntry {
                        col: q * tau as u32 + i as u32,
                        first: if a == NONE { 0.0 } else { h.values[a as usize] },
                        second: if b == NONE { 0.0 } else { h.values[b as usize] },
                    })
                });
            }
            model_start.push(model.len());
            merge(h, frame(t), frame(t + 1), listed, |q, a, b| numer.push(NumerEntry { note: q, first: a, second: b }));
            numer_start.push(numer.len());
        }
        let model_count = in_model.iter().filter(|&&x| x).count();
        let numer_count = listed.iter().filter(|&&x| x).count();
        Plan { tau, n_frames: n, model_start, model, numer_start, numer, model_count, numer_count }
    }

    /// Frames `s, s + 1` need `R` up to frame `s + τ`: the exclusive bound of
    /// the frames pair `p`'s numerator reads.
    fn numer_needs(&self, p: usize) -> usize {
        (2 * p + 1 + self.tau).min(self.n_frames)
    }
}

/// Calls `f(q, index in a or NONE, index in b or NONE)` for the union of the
/// (increasing) notes of the stored-activation ranges `a` and `b`, skipping
/// activations without `keep`.
fn merge(
    h: &SparseActivations,
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
    keep: &[bool],
    mut f: impl FnMut(u32, u32, u32),
) {
    let (mut ea, mut eb) = (a.start, b.start);
    loop {
        while ea < a.end && !keep[ea] {
            ea += 1;
        }
        while eb < b.end && !keep[eb] {
            eb += 1;
        }
        let qa = if ea < a.end { h.notes[ea] } else { NONE };
        let qb = if eb < b.end { h.notes[eb] } else { NONE };
        if qa == NONE && qb == NONE {
            break;
        }
        if qa == qb {
            f(qa, ea as u32, eb as u32);
            ea += 1;
            eb += 1;
        } else if qa < qb {
            f(qa, ea as u32, NONE);
            ea += 1;
        } else {
            f(qb, NONE, eb as u32);
            eb += 1;
        }
    }
}

/// One chunk of bins: its templates, its spectrogram and the plan.
struct Chunk<'a> {
    /// `(τK) × width`: column `q·τ + i` at `(q·τ + i)·width`.
    w: &'a [f32],
    /// `N × width`.
    m: &'a [f32],
    width: usize,
    real: usize,
    plan: &'a Plan,
}

/// Longest templates the AVX kernel handles (longer ones use the scalar loops).
const MAX_SIMD_TAU: usize = 64;

/// Frames of `R` kept: a pair's numerator reads τ + 1 frames, and the model
/// runs up to two frames ahead.
fn ring_frames(tau: usize) -> usize {
    tau + 2
}

/// Where the numerators of frame pair `p` (frames `s = 2p`, `s + 1`) read
/// `R` in the ring: rows of frames `s + i` (`a`) and `s + 1 + i` (`b`, the
/// `zero` row past the last frame) for the `shifts` shifts `i`.
#[cfg(target_arch = "x86_64")]
struct PairRows {
    a: [*const f32; MAX_SIMD_TAU],
    b: [*const f32; MAX_SIMD_TAU],
    shifts: usize,
}

#[cfg(target_arch = "x86_64")]
impl PairRows {
    fn new(c: &Chunk<'_>, ring: &[f32], p: usize, zero: *const f32) -> Self {
        let (tau, n, width) = (c.plan.tau, c.plan.n_frames, c.width);
        let rf = ring_frames(tau);
        let s = 2 * p;
        let shifts = tau.min(n - s);
        let mut rows = PairRows { a: [std::ptr::null(); MAX_SIMD_TAU], b: [std::ptr::null(); MAX_SIMD_TAU], shifts };
        let mut slot = s % rf;
        for i in 0..shifts {
            rows.a[i] = ring[slot * width..].as_ptr();
            slot = if slot + 1 == rf { 0 } else { slot + 1 };
            rows.b[i] = if s + 1 + i < n { ring[slot * width..].as_ptr() } else { zero };
        }
        rows
    }
}

impl Chunk<'_> {
    /// Adds this chunk's part of the numerator of every stored activation to
    /// `numer`; returns this chunk's part of the loss (when `want_loss`).
    fn run(&self, numer: &mut [f32], ring: &mut [f32], want_loss: bool, isa: Isa) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if self.plan.tau <= MAX_SIMD_TAU {
            match isa {
                // SAFETY: AVX-512F is available (checked at construction);
                // the width is a multiple of 8 up to CHUNK = 32.
                #[cfg(sscnmf_avx512)]
                Isa::Avx512 => unsafe {
                    return match self.width {
                        32 => avx512::run::<2, false>(self, numer, ring, want_loss),
                        24 => avx512::run::<2, true>(self, numer, ring, want_loss),
                        16 => avx512::run::<1, false>(self, numer, ring, want_loss),
                        _ => avx512::run::<1, true>(self, numer, ring, want_loss),
                    };
                },
                // SAFETY: AVX2 and FMA are available (checked at construction).
                Isa::Avx2 => unsafe {
                    return match self.width / 8 {
                        4 => avx::run::<4>(self, numer, ring, want_loss),
                        3 => avx::run::<3>(self, numer, ring, want_loss),
                        2 => avx::run::<2>(self, numer, ring, want_loss),
                        _ => avx::run::<1>(self, numer, ring, want_loss),
                    };
                },
                _ => {}
            }
        }
        let _ = isa;
        self.run_scalar(numer, ring, want_loss)
    }

    fn run_scalar(&self, numer: &mut [f32], ring: &mut [f32], want_loss: bool) -> f64 {
        let (plan, width) = (self.plan, self.width);
        let (tau, n) = (plan.tau, plan.n_frames);
        let rf = ring_frames(tau);
        let floor = MODEL_FLOOR as f32;
        let zero = vec![0.0f32; width];
        let mut loss = 0.0;
        let mut acc = [vec![0.0f32; width], vec![0.0f32; width]];
        let mut next = 0;
        for p in 0..n.div_ceil(2) {
            acc.iter_mut().for_each(|a| a.iter_mut().for_each(|x| *x = 0.0));
            for e in &plan.model[plan.model_start[p]..plan.model_start[p + 1]] {
                let col = &self.w[e.col as usize * width..(e.col as usize + 1) * width];
                for u in 0..width {
                    acc[0][u] += col[u] * e.first;
                    acc[1][u] += col[u] * e.second;
                }
            }
            for (d, a) in acc.iter().enumerate() {
                let t = 2 * p + d;
                if t >= n {
                    break;
                }
                let m = &self.m[t * width..(t + 1) * width];
                if want_loss {
                    loss += kl_loss(&m[..self.real], &a[..self.real]);
                }
                let slot = t % rf;
                for ((r, &y), &x) in ring[slot * width..(slot + 1) * width].iter_mut().zip(a).zip(m) {
                    *r = x / if y > floor { y } else { floor };
                }
            }
            let done = (2 * p + 2).min(n);
            while next < n.div_ceil(2) && plan.numer_needs(next) <= done {
                let s = 2 * next;
                for e in &plan.numer[plan.numer_start[next]..plan.numer_start[next + 1]] {
                    let q = e.note as usize;
                    let (mut sa, mut sb) = (0.0f32, 0.0f32);
                    for i in 0..tau.min(n - s) {
                        let col = &self.w[(q * tau + i) * width..(q * tau + i + 1) * width];
                        let ra = &ring[((s + i) % rf) * width..((s + i) % rf + 1) * width];
                        let rb = if s + 1 + i < n {
                            &ring[((s + 1 + i) % rf) * width..((s + 1 + i) % rf + 1) * width]
                        } else {
                            &zero[..]
                        };
                        for u in 0..width {
                            sa += col[u] * ra[u];
                            sb += col[u] * rb[u];
                        }
                    }
                    if e.first != NONE {
                        numer[e.first as usize] += sa;
                    }
                    if e.second != NONE {
                        numer[e.second as usize] += sb;
                    }
                }
                next += 1;
            }
        }
        loss
    }
}

/// `Σ d_KL(m | max(model, floor))` in f64.
fn kl_loss(m: &[f32], model: &[f32]) -> f64 {
    m.iter().zip(model).map(|(&x, &y)| Beta::KL.divergence(x as f64, (y as f64).max(MODEL_FLOOR))).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::{kl_loss, ring_frames, Chunk, PairRows, MODEL_FLOOR, NONE};

    /// [`Chunk::run_scalar`] with `NV` AVX vectors per frame (`width = 8·NV`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run<const NV: usize>(
        c: &Chunk<'_>,
        numer: &mut [f32],
        ring: &mut [f32],
        want_loss: bool,
    ) -> f64 {
        let (plan, width) = (c.plan, c.width);
        let (tau, n) = (plan.tau, plan.n_frames);
        debug_assert_eq!(width, 8 * NV);
        let rf = ring_frames(tau);
        let floor = _mm256_set1_ps(MODEL_FLOOR as f32);
        let w = c.w.as_ptr();
        let zero = [0.0f32; 64];
        let mut loss = 0.0;
        let mut next = 0;
        let pairs = n.div_ceil(2);
        for p in 0..pairs {
            let mut acc = [[_mm256_setzero_ps(); NV]; 2];
            for e in &plan.model[plan.model_start[p]..plan.model_start[p + 1]] {
                let wp = w.add(e.col as usize * width);
                let (va, vb) = (_mm256_set1_ps(e.first), _mm256_set1_ps(e.second));
                for u in 0..NV {
                    let x = _mm256_loadu_ps(wp.add(8 * u));
                    acc[0][u] = _mm256_fmadd_ps(x, va, acc[0][u]);
                    acc[1][u] = _mm256_fmadd_ps(x, vb, acc[1][u]);
                }
            }
            for d in 0..2 {
                let t = 2 * p + d;
                if t >= n {
                    break;
                }
                let mp = c.m.as_ptr().add(t * width);
                if want_loss {
                    let mut model = [0.0f32; 64];
                    for u in 0..NV {
                        _mm256_storeu_ps(model.as_mut_ptr().add(8 * u), acc[d][u]);
                    }
                    loss += kl_loss(&c.m[t * width..t * width + c.real], &model[..c.real]);
                }
                let rp = ring.as_mut_ptr().add((t % rf) * width);
                for u in 0..NV {
                    let y = _mm256_max_ps(acc[d][u], floor);
                    _mm256_storeu_ps(rp.add(8 * u), _mm256_div_ps(_mm256_loadu_ps(mp.add(8 * u)), y));
                }
            }
            let done = (2 * p + 2).min(n);
            while next < pairs && plan.numer_needs(next) <= done {
                numer_pair::<NV>(c, next, numer, ring, zero.as_ptr());
                next += 1;
            }
        }
        loss
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn numer_pair<const NV: usize>(c: &Chunk<'_>, p: usize, numer: &mut [f32], ring: &[f32], zero: *const f32) {
        let (plan, width) = (c.plan, c.width);
        let tau = plan.tau;
        let rows = PairRows::new(c, ring, p, zero);
        let (ra, rb, shifts) = (&rows.a, &rows.b, rows.shifts);
        let w = c.w.as_ptr();
        let entries = &plan.numer[plan.numer_start[p]..plan.numer_start[p + 1]];
        // Two notes at a time share the loads of R: 16 loads per 16
        // multiply-adds instead of 12 per 8, which is what bounds this loop.
        // Each lane's sum runs over the shifts in the same order as for one
        // note, so the result is the same bit for bit.
        let mut two = entries.chunks_exact(2);
        for pair in &mut two {
            let (e0, e1) = (&pair[0], &pair[1]);
            let wq0 = w.add(e0.note as usize * tau * width);
            let wq1 = w.add(e1.note as usize * tau * width);
            let mut acc0 = [[_mm256_setzero_ps(); NV]; 2];
            let mut acc1 = [[_mm256_setzero_ps(); NV]; 2];
            // Half a chunk at a time keeps the 8 accumulators in registers.
            let mut base = 0;
            while base < NV {
                let end = if base + 2 < NV { base + 2 } else { NV };
                for i in 0..shifts {
                    let (w0, w1) = (wq0.add(i * width), wq1.add(i * width));
                    let (pa, pb) = (ra[i], rb[i]);
                    for u in base..end {
                        let (xa, xb) = (_mm256_loadu_ps(pa.add(8 * u)), _mm256_loadu_ps(pb.add(8 * u)));
                        let (y0, y1) = (_mm256_loadu_ps(w0.add(8 * u)), _mm256_loadu_ps(w1.add(8 * u)));
                        acc0[0][u] = _mm256_fmadd_ps(y0, xa, acc0[0][u]);
                        acc0[1][u] = _mm256_fmadd_ps(y0, xb, acc0[1][u]);
                        acc1[0][u] = _mm256_fmadd_ps(y1, xa, acc1[0][u]);
                        acc1[1][u] = _mm256_fmadd_ps(y1, xb, acc1[1][u]);
                    }
                }
                base = end;
            }
            for (e, acc) in [(e0, &acc0), (e1, &acc1)] {
                if e.first != NONE {
                    *numer.get_unchecked_mut(e.first as usize) += hsum::<NV>(&acc[0]);
                }
                if e.second != NONE {
                    *numer.get_unchecked_mut(e.second as usize) += hsum::<NV>(&acc[1]);
                }
            }
        }
        for e in two.remainder() {
            let wq = w.add(e.note as usize * tau * width);
            let mut acc = [[_mm256_setzero_ps(); NV]; 2];
            for i in 0..shifts {
                let wp = wq.add(i * width);
                let (pa, pb) = (ra[i], rb[i]);
                for u in 0..NV {
                    let x = _mm256_loadu_ps(wp.add(8 * u));
                    acc[0][u] = _mm256_fmadd_ps(x, _mm256_loadu_ps(pa.add(8 * u)), acc[0][u]);
                    acc[1][u] = _mm256_fmadd_ps(x, _mm256_loadu_ps(pb.add(8 * u)), acc[1][u]);
                }
            }
            if e.first != NONE {
                *numer.get_unchecked_mut(e.first as usize) += hsum::<NV>(&acc[0]);
            }
            if e.second != NONE {
                *numer.get_unchecked_mut(e.second as usize) += hsum::<NV>(&acc[1]);
            }
        }
    }

    /// Sum of all lanes of `NV` vectors, in a fixed order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum<const NV: usize>(acc: &[__m256; NV]) -> f32 {
        let mut v = acc[0];
        for u in 1..NV {
            v = _mm256_add_ps(v, acc[u]);
        }
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// [`avx`] with 16-lane AVX-512F vectors: `NV` vectors per frame, the last
/// one holding only its low 8 lanes when `HALF` (a chunk of 8 or 24 bins;
/// masked loads and stores, so nothing past the chunk is read or written).
///
/// The same sums as [`Chunk::run_scalar`], in a different but fixed order
/// per lane (so the result does not depend on the number of threads, but is
/// not bit-identical to the AVX2 variant):
///
/// - the model `M̂` accumulates the pair's model entries alternately into two
///   sets of accumulators, added at the end (`Σ_even + Σ_odd`): with two
///   vectors per frame, one set would be 4 dependent FMA chains, too few to
///   hide the FMA latency (4 cycles, 2 FMA units);
/// - the numerators are computed 4 notes at a time (the loads of `R` shared
///   by 4 notes: 6 loads per 8 FMAs), each lane summing over the shifts in
///   order as in [`avx`];
/// - the 8 horizontal sums of a group (4 notes × 2 frames) are one
///   transposing reduction tree ([`sum_lanes_of_eight`]) instead of 8
///   separate ones.
// Compiled only by Rust ≥ 1.89 (see build.rs), where these intrinsics are stable.
#[cfg(all(target_arch = "x86_64", sscnmf_avx512))]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{kl_loss, ring_frames, Chunk, NumerEntry, PairRows, MODEL_FLOOR, NONE};

    /// Notes whose numerators are computed together.
    const NOTES: usize = 4;

    /// The lanes of vector `u` of a frame: all 16, or the low 8 for the last
    /// one when `HALF`.
    #[inline]
    const fn lanes<const NV: usize, const HALF: bool>(u: usize) -> __mmask16 {
        if HALF && u + 1 == NV {
            0x00ff
        } else {
            0xffff
        }
    }

    /// Vector `u` of the frame at `p` (masked lanes zero).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load<const NV: usize, const HALF: bool>(p: *const f32, u: usize) -> __m512 {
        if HALF && u + 1 == NV {
            _mm512_maskz_loadu_ps(lanes::<NV, HALF>(u), p.add(16 * u))
        } else {
            _mm512_loadu_ps(p.add(16 * u))
        }
    }

    /// Stores vector `u` of the frame at `p` (only its lanes).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const NV: usize, const HALF: bool>(p: *mut f32, u: usize, v: __m512) {
        if HALF && u + 1 == NV {
            _mm512_mask_storeu_ps(p.add(16 * u), lanes::<NV, HALF>(u), v)
        } else {
            _mm512_storeu_ps(p.add(16 * u), v)
        }
    }

    /// [`Chunk::run_scalar`] with `NV` AVX-512 vectors per frame
    /// (`width = 16·NV`, or `16·NV − 8` when `HALF`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run<const NV: usize, const HALF: bool>(
        c: &Chunk<'_>,
        numer: &mut [f32],
        ring: &mut [f32],
        want_loss: bool,
    ) -> f64 {
        let (plan, width) = (c.plan, c.width);
        let (tau, n) = (plan.tau, plan.n_frames);
        debug_assert_eq!(width, 16 * NV - 8 * HALF as usize);
        let rf = ring_frames(tau);
        let floor = _mm512_set1_ps(MODEL_FLOOR as f32);
        let w = c.w.as_ptr();
        let zero = [0.0f32; 32];
        let mut loss = 0.0;
        let mut next = 0;
        let pairs = n.div_ceil(2);
        for p in 0..pairs {
            // acc[set][frame][vector]: even entries in set 0, odd in set 1.
            let mut acc = [[[_mm512_setzero_ps(); NV]; 2]; 2];
            let entries = &plan.model[plan.model_start[p]..plan.model_start[p + 1]];
            let mut two = entries.chunks_exact(2);
            for pair in &mut two {
                for (set, e) in pair.iter().enumerate() {
                    let wp = w.add(e.col as usize * width);
                    let (va, vb) = (_mm512_set1_ps(e.first), _mm512_set1_ps(e.second));
                    for u in 0..NV {
                        let x = load::<NV, HALF>(wp, u);
                        acc[set][0][u] = _mm512_fmadd_ps(x, va, acc[set][0][u]);
                        acc[set][1][u] = _mm512_fmadd_ps(x, vb, acc[set][1][u]);
                    }
                }
            }
            for e in two.remainder() {
                let wp = w.add(e.col as usize * width);
                let (va, vb) = (_mm512_set1_ps(e.first), _mm512_set1_ps(e.second));
                for u in 0..NV {
                    let x = load::<NV, HALF>(wp, u);
                    acc[0][0][u] = _mm512_fmadd_ps(x, va, acc[0][0][u]);
                    acc[0][1][u] = _mm512_fmadd_ps(x, vb, acc[0][1][u]);
                }
            }
            for d in 0..2 {
                let t = 2 * p + d;
                if t >= n {
                    break;
                }
                let mut model = [_mm512_setzero_ps(); NV];
                for u in 0..NV {
                    model[u] = _mm512_add_ps(acc[0][d][u], acc[1][d][u]);
                }
                let mp = c.m.as_ptr().add(t * width);
                if want_loss {
                    let mut stored = [0.0f32; 32];
                    for u in 0..NV {
                        store::<NV, HALF>(stored.as_mut_ptr(), u, model[u]);
                    }
                    loss += kl_loss(&c.m[t * width..t * width + c.real], &stored[..c.real]);
                }
                let rp = ring.as_mut_ptr().add((t % rf) * width);
                for u in 0..NV {
                    let y = _mm512_max_ps(model[u], floor);
                    store::<NV, HALF>(rp, u, _mm512_div_ps(load::<NV, HALF>(mp, u), y));
                }
            }
            let done = (2 * p + 2).min(n);
            while next < pairs && plan.numer_needs(next) <= done {
                numer_pair::<NV, HALF>(c, next, numer, ring, zero.as_ptr());
                next += 1;
            }
        }
        loss
    }

    /// The numerators of frame pair `p`'s notes, `NOTES` at a time.
    #[target_feature(enable = "avx512f")]
    unsafe fn numer_pair<const NV: usize, const HALF: bool>(
        c: &Chunk<'_>,
        p: usize,
        numer: &mut [f32],
        ring: &[f32],
        zero: *const f32,
    ) {
        let plan = c.plan;
        let rows = PairRows::new(c, ring, p, zero);
        let entries = &plan.numer[plan.numer_start[p]..plan.numer_start[p + 1]];
        let mut groups = entries.chunks_exact(NOTES);
        for group in &mut groups {
            numer_notes::<NV, HALF, NOTES>(c, group, &rows, numer);
        }
        match groups.remainder() {
            [] => {}
            rest @ [_] => numer_notes::<NV, HALF, 1>(c, rest, &rows, numer),
            rest @ [_, _] => numer_notes::<NV, HALF, 2>(c, rest, &rows, numer),
            rest => numer_notes::<NV, HALF, 3>(c, rest, &rows, numer),
        }
    }

    /// Adds this chunk's `Σ_i Σ_f W[f, i, q] · R[f, s + i]` (and the same at
    /// `s + 1`) to the numerators of the `G` notes of `entries`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn numer_notes<const NV: usize, const HALF: bool, const G: usize>(
        c: &Chunk<'_>,
        entries: &[NumerEntry],
        rows: &PairRows,
        numer: &mut [f32],
    ) {
        let (tau, width) = (c.plan.tau, c.width);
        let w = c.w.as_ptr();
        let mut wq = [w; G];
        for j in 0..G {
            wq[j] = w.add(entries[j].note as usize * tau * width);
        }
        // acc[note][frame][vector]
        let mut acc = [[[_mm512_setzero_ps(); NV]; 2]; G];
        for (i, (&pa, &pb)) in rows.a[..rows.shifts].iter().zip(&rows.b[..rows.shifts]).enumerate() {
            for u in 0..NV {
                let (xa, xb) = (load::<NV, HALF>(pa, u), load::<NV, HALF>(pb, u));
                for j in 0..G {
                    let y = load::<NV, HALF>(wq[j].add(i * width), u);
                    acc[j][0][u] = _mm512_fmadd_ps(y, xa, acc[j][0][u]);
                    acc[j][1][u] = _mm512_fmadd_ps(y, xb, acc[j][1][u]);
                }
            }
        }
        let mut rows = [_mm512_setzero_ps(); 8];
        for j in 0..G {
            for d in 0..2 {
                let mut v = acc[j][d][0];
                for u in 1..NV {
                    v = _mm512_add_ps(v, acc[j][d][u]);
                }
                rows[2 * j + d] = v;
            }
        }
        let sums = sum_lanes_of_eight(&rows);
        for (j, e) in entries.iter().enumerate() {
            if e.first != NONE {
                *numer.get_unchecked_mut(e.first as usize) += sums[2 * j];
            }
            if e.second != NONE {
                *numer.get_unchecked_mut(e.second as usize) += sums[2 * j + 1];
            }
        }
    }

    /// The sum of the 16 lanes of each of 8 vectors, as one reduction tree
    /// that transposes as it adds (15 shuffles and 8 additions instead of
    /// 8 × 8): halves of 256 bits, then of 128, then of 64, then lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum_lanes_of_eight(v: &[__m512; 8]) -> [f32; 8] {
        let (s01, s23, s45, s67) = (halves(v[0], v[1]), halves(v[2], v[3]), halves(v[4], v[5]), halves(v[6], v[7]));
        let (lo, hi) = (quarters(s01, s23), quarters(s45, s67));
        // Per 128-bit lane k: [lo0 lo1 hi0 hi1] + [lo2 lo3 hi2 hi3]: 2 lanes of v_k, 2 of v_{k+4}.
        let pairs =
            _mm512_add_ps(_mm512_shuffle_ps::<0b01_00_01_00>(lo, hi), _mm512_shuffle_ps::<0b11_10_11_10>(lo, hi));
        // Lane 4k: v_k's sum, lane 4k + 2: v_{k+4}'s.
        let total = _mm512_add_ps(pairs, _mm512_movehdup_ps(pairs));
        let mut lanes = [0.0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), total);
        [lanes[0], lanes[4], lanes[8], lanes[12], lanes[2], lanes[6], lanes[10], lanes[14]]
    }

    /// `[a.q0 a.q1 b.q0 b.q1] + [a.q2 a.q3 b.q2 b.q3]` (`q`: 128-bit
    /// quarters): 8 lanes summing to `a`'s total, then 8 to `b`'s.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn halves(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b))
    }

    /// `[x.q0 x.q2 y.q0 y.q2] + [x.q1 x.q3 y.q1 y.q3]` of two [`halves`]:
    /// 4 lanes summing to each of the four vectors' totals.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn quarters(x: __m512, y: __m512) -> __m512 {
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(x, y), _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{kernels::CnmfKernel, reference, SplitMix64};
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
        // About a third of the activations zero.
        let h = Matrix {
            rows: k,
            cols: n,
            data: (0..k * n).map(|_| g.next_unit()).map(|x| if x < 0.35 { 0.0 } else { x }).collect(),
        };
        (m, w, h)
    }

    fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-300)).fold(0.0, f64::max)
    }

    /// The kernel variants to test: all three, less those this build or CPU
    /// lacks (the skipped ones printed).
    fn isas_to_test() -> Vec<Isa> {
        let (run, skipped): (Vec<Isa>, Vec<Isa>) =
            [Isa::Portable, Isa::Avx2, Isa::Avx512].into_iter().partition(|&isa| isa.supported());
        if !skipped.is_empty() {
            eprintln!("sparse kernel variants skipped (not in this build or CPU): {skipped:?}");
        }
        run
    }

    /// `step` from `h0` by the kernel variant `isa`, `steps` times.
    fn run_steps(
        m: &Matrix<f64>,
        w: &ConvTemplates<f64>,
        h0: &SparseActivations,
        isa: Isa,
        step: &Step,
        steps: usize,
    ) -> (SparseActivations, Vec<f64>) {
        let mut kernel = SparseCnmf::new(&w.map(|x| x as f32));
        kernel.set_isa(isa);
        let packed = kernel.pack(&m.map(|x| x as f32));
        let mut h = h0.clone();
        let losses = (0..steps).map(|_| kernel.step(&packed, &mut h, step).loss_before.unwrap_or(0.0)).collect();
        (h, losses)
    }

    /// The AVX-512 variant against the scalar loops, on chunk widths of 8,
    /// 16, 24 and 32 bins, note groups of 4 with and without a remainder,
    /// over several steps with dormant activations and pruning, and its
    /// result the same bits whatever the thread count.
    #[test]
    fn avx512_variant_agrees_with_the_scalar_loops_and_ignores_the_thread_count() {
        if !Isa::Avx512.supported() {
            eprintln!("skipped: this build or CPU has no AVX-512F");
            return;
        }
        // Last chunk widths: 24 (F = 88), 8 (F = 33, 600), 32 (F = 57), 16 (F = 15).
        for &(f, tau, k, n) in &[(88, 10, 9, 41), (33, 4, 13, 20), (57, 1, 8, 33), (15, 3, 6, 7), (600, 10, 11, 30)] {
            let (m, w, h0) = random_problem(f, tau, k, n, (31 * f + n) as u64);
            let h0 = SparseActivations::from_dense(&h0.map(|x| x as f32));
            let step = Step { exponent: 2, model_threshold: 1e-7, numer_threshold: 1e-3, prune: 1e-6, want_loss: true };
            let (scalar, scalar_losses) = run_steps(&m, &w, &h0, Isa::Portable, &step, 8);
            let (fast, fast_losses) = run_steps(&m, &w, &h0, Isa::Avx512, &step, 8);
            let (a, b) = (fast.to_dense(), scalar.to_dense());
            let scale = b.data.iter().copied().fold(0.0, f32::max) as f64;
            let worst = a.data.iter().zip(&b.data).map(|(&x, &y)| (x as f64 - y as f64).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-4 * scale, "{f} {tau} {k} {n}: {worst} vs max {scale}");
            for (x, y) in fast_losses.iter().zip(&scalar_losses) {
                assert!((x - y).abs() <= 1e-5 * y, "{f} {tau} {k} {n}: loss {x} vs {y}");
            }
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let (again, _) = pool.install(|| run_steps(&m, &w, &h0, Isa::Avx512, &step, 8));
                let bits = |h: &SparseActivations| h.values.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(again.notes == fast.notes && bits(&again) == bits(&fast), "{f}: {threads} threads differ");
            }
        }
    }

    #[test]
    fn sparse_update_matches_the_reference_loops_on_awkward_sizes() {
        for &(f, tau, k, n) in &[
            (88, 10, 9, 41),
            (7, 3, 2, 1),
            (17, 1, 5, 63),
            (33, 4, 3, 64),
            (9, 5, 2, 65),
            (131, 10, 3, 29),
            (300, 2, 4, 9),
            (1, 2, 1, 130),
            (64, 10, 2, 5),
        ] {
            let (m, w, h0) = random_problem(f, tau, k, n, (f * 1000 + n) as u64);
            let mut h_ref = h0.clone();
            let loss_ref = reference::loss(&m, &w, &h_ref, Beta::KL);
            reference::update_activations(&m, &w, &mut h_ref, Beta::KL);
            for isa in isas_to_test() {
                let mut kernel = SparseCnmf::new(&w.map(|x| x as f32));
                kernel.set_isa(isa);
                let packed = kernel.pack(&m.map(|x| x as f32));
                let mut h = SparseActivations::from_dense(&h0.map(|x| x as f32));
                let stats = kernel.update(&packed, &mut h, 0.0, true);
                let h_fast: Vec<f64> = h.to_dense().data.iter().map(|&x| x as f64).collect();
                assert!(max_rel_diff(&h_fast, &h_ref.data) < 1e-4, "{f} {tau} {k} {n} {isa:?}");
                let loss = stats.loss_before.unwrap();
                assert!((loss - loss_ref).abs() <= 1e-5 * loss_ref, "{loss} vs {loss_ref}");
            }
        }
    }

    #[test]
    fn sparse_update_agrees_with_the_dense_f32_kernel_over_iterations() {
        let (m, w, h0) = random_problem(150, 4, 6, 90, 5);
        let (m32, w32) = (m.map(|x| x as f32), w.map(|x| x as f32));
        let dense = CnmfKernel::new(w32.clone());
        let mut h_dense = h0.map(|x| x as f32);
        let kernel = SparseCnmf::new(&w32);
        let packed = kernel.pack(&m32);
        let mut h = SparseActivations::from_dense(&h_dense);
        for _ in 0..20 {
            dense.update_activations(&m32, &mut h_dense, Beta::KL, false);
            kernel.update(&packed, &mut h, 0.0, false);
        }
        let a: Vec<f64> = h.to_dense().data.iter().map(|&x| x as f64).collect();
        let b: Vec<f64> = h_dense.data.iter().map(|&x| x as f64).collect();
        let scale = b.iter().copied().fold(0.0, f64::max);
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-4 * scale, "{worst} vs max {scale}");
    }

    /// Dormant activations are multiplied by their stored ratio (to the
    /// step's power); the others get the reference update computed with the
    /// model of the activations above the model threshold only.
    #[test]
    fn dormant_activations_reuse_their_ratio_and_the_rest_match_the_reference() {
        for &(f, tau, k, n) in &[(70, 3, 5, 41), (33, 10, 4, 23), (9, 1, 6, 17)] {
            let (m, w, mut h0) = random_problem(f, tau, k, n, (7 * f + n) as u64);
            // Spread the activations over ten decades so that all three classes occur.
            let mut g = SplitMix64::new(99);
            for x in h0.data.iter_mut() {
                *x *= 10f64.powf(-10.0 * g.next_unit());
            }
            let h32 = h0.map(|x| x as f32);
            let ratios =
                Matrix { rows: k, cols: n, data: (0..k * n).map(|_| 0.5 + 0.7 * g.next_unit() as f32).collect() };
            let mut sh = SparseActivations::with_ratios(&h32, &ratios);
            let step = Step { exponent: 2, model_threshold: 1e-7, numer_threshold: 1e-3, prune: 0.0, want_loss: false };
            let (in_model, listed) = classify(&sh, tau, &step);
            let before = sh.clone();
            let kernel = SparseCnmf::new(&w.map(|x| x as f32));
            kernel.step(&kernel.pack(&m.map(|x| x as f32)), &mut sh, &step);
            // Reference: the model of the kept activations, then one update, squared.
            let mut kept = Matrix::zeros(k, n);
            for t in 0..n {
                for e in before.start[t]..before.start[t + 1] {
                    if in_model[e] {
                        kept.set(before.notes[e] as usize, t, before.values[e] as f64);
                    }
                }
            }
            let mut once = kept.clone();
            reference::update_activations(&m, &w, &mut once, Beta::KL);
            let after = sh.to_dense();
            let (mut n_listed, mut n_dormant) = (0, 0);
            for t in 0..n {
                for e in before.start[t]..before.start[t + 1] {
                    let q = before.notes[e] as usize;
                    let v = before.values[e] as f64;
                    let got = after.get(q, t) as f64;
                    let expected = if listed[e] {
                        n_listed += 1;
                        // The reference ratio, from the kept model; v may be out of the model.
                        let ratio = if kept.get(q, t) > 0.0 { once.get(q, t) / kept.get(q, t) } else { f64::NAN };
                        if ratio.is_nan() {
                            continue;
                        }
                        v * ratio * ratio
                    } else {
                        n_dormant += 1;
                        let r = before.ratios[e] as f64;
                        v * r * r
                    };
                    let expected = if expected < ACTIVATION_FLOOR { 0.0 } else { expected };
                    assert!(
                        (got - expected).abs() <= 1e-4 * expected.abs() + 1e-30,
                        "{f} {tau} {k} {n}: {got} vs {expected}"
                    );
                }
            }
            assert!(n_listed > 0 && n_dormant > 0, "{n_listed} listed, {n_dormant} dormant");
            assert!(in_model.iter().any(|&x| !x), "some activations out of the model");
        }
    }

    #[test]
    fn local_level_keeps_quiet_passages() {
        // Frame 0 is loud, frame 20 quiet: a small activation there is not dormant.
        let mut h = Matrix::zeros(2, 30);
        h.set(0, 0, 1.0);
        h.set(1, 0, 1e-5);
        h.set(0, 20, 1e-4);
        h.set(1, 20, 1e-8);
        let s = SparseActivations::from_dense(&h);
        let step = Step { numer_threshold: 1e-3, model_threshold: 1e-6, ..Step::default() };
        let (in_model, listed) = classify(&s, 3, &step);
        assert_eq!(listed, vec![true, false, true, false]);
        assert_eq!(in_model, vec![true, true, true, true]);
    }

    #[test]
    fn pruning_drops_small_activations_and_sparse_round_trips() {
        let mut h = Matrix::zeros(3, 4);
        h.set(0, 0, 1.0);
        h.set(2, 0, 0.5);
        h.set(1, 3, 2.0);
        let s = SparseActivations::from_dense(&h);
        assert_eq!(s.nnz(), 3);
        assert_eq!(s.to_dense(), h);
        let mut s2 = s.clone();
        s2.retain(|_, v| v >= 0.75);
        assert_eq!(s2.nnz(), 2);
        assert_eq!(s2.start, vec![0, 1, 1, 1, 2]);
        assert_eq!(s2.notes, vec![0, 1]);
        // Local pruning: frame 0's level is 1.5 (its own sum), frame 3's is
        // 2.0 (τ = 1 reaches frames 2..=4 only), so a fraction of 0.4 drops
        // the 0.5 of frame 0 (0.4 × 1.5 = 0.6) but keeps frame 3's 2.0.
        let mut s3 = s.clone();
        s3.prune_local(0.4, 1);
        assert_eq!(s3.notes, vec![0, 1]);
        assert_eq!(s3.values, vec![1.0, 2.0]);
    }
}
