//! One sparse KL activation update (`factorization::sparse`) at the paper's
//! sizes: F = 4097 bins, τ = 10, 88 notes, 1500 frames (30 s at 20 ms), with
//! 15 % of the activations nonzero in runs along time, as after pruning on
//! the dev songs (BENCHMARKS.md). Values are random: the kernel's time
//! depends on the sparsity pattern, not on the values.
//!
//! `RAYON_NUM_THREADS=1 cargo bench --bench sparse_step` for the one-core figure.
//! "plain update" is the variant `SparseCnmf::new` selects; the other SIMD
//! variant this CPU runs (AVX2 or AVX-512) is timed after it.

use criterion::{criterion_group, criterion_main, Criterion};
use sscnmf::factorization::rank_one_kl::Isa;
use sscnmf::factorization::sparse::{SparseActivations, SparseCnmf, Step};
use sscnmf::factorization::{ConvTemplates, Matrix, SplitMix64};

fn problem() -> (Matrix<f32>, ConvTemplates<f32>, Matrix<f32>) {
    let (f, tau, k, n) = (4097, 10, 88, 1500);
    let mut g = SplitMix64::new(7);
    let spectrogram = Matrix { rows: f, cols: n, data: (0..f * n).map(|_| g.next_unit() as f32).collect() };
    let templates =
        ConvTemplates::new(f, tau, k, (0..f * tau * k).map(|_| g.next_unit() as f32 / f as f32).collect()).unwrap();
    // Each note alternates silent stretches (mean 340 frames) and active
    // ones (mean 60 frames): 15 % active.
    let mut h = Matrix::zeros(k, n);
    for q in 0..k {
        let mut t = (g.next_unit() * 400.0) as usize;
        while t < n {
            let run = 20 + (g.next_unit() * 80.0) as usize;
            for s in t..(t + run).min(n) {
                h.set(q, s, 0.01 + g.next_unit() as f32);
            }
            t += run + 100 + (g.next_unit() * 480.0) as usize;
        }
    }
    (spectrogram, templates, h)
}

fn sparse_step(c: &mut Criterion) {
    let (spectrogram, templates, h) = problem();
    let mut kernel = SparseCnmf::new(&templates);
    let packed = kernel.pack(&spectrogram);
    let start = SparseActivations::from_dense(&h);
    let mut group = c.benchmark_group("sparse KL update, 30 s, 88 notes, tau 10, 15 % nonzero");
    group.sample_size(20);
    // The best variant this CPU runs, then the other SIMD one if it runs.
    let best = kernel.isa();
    let others = [Isa::Avx512, Isa::Avx2].into_iter().filter(|&isa| isa != best);
    for isa in std::iter::once(best).chain(others) {
        kernel.set_isa(isa);
        if kernel.isa() != isa {
            continue;
        }
        let name = if isa == best { "plain update".to_string() } else { format!("plain update, {isa:?}") };
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || start.clone(),
                |h| kernel.step(&packed, h, &Step::default()),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, sparse_step);
criterion_main!(benches);
