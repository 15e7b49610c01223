//! Development probe: F-measure and activation sparsity for regression variants.
use sscnmf::audio::DecodeOptions;
use sscnmf::evaluation::{match_notes, MatchParams};
use sscnmf::experiments::reference_excerpt;
use sscnmf::notes::read_notes;
use sscnmf::templates::TemplateDictionary;
use sscnmf::transcription::{OnsetDetector, Transcriber};
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dict = TemplateDictionary::load(&PathBuf::from(&args[1])).unwrap();
    let max_bins: Option<usize> = args[2].parse().ok();
    let songs = &args[3..];
    let mut t = Transcriber::new(dict).unwrap();
    t.regression.max_bins = max_bins;
    t.decode = DecodeOptions { duration_seconds: Some(30.0), ..Default::default() };
    let grid: Vec<f64> = (1..=40).map(|i| i as f64 / 100.0).collect();
    let mut sum_f = vec![0.0; grid.len()];
    for s in songs {
        let audio = PathBuf::from(s);
        let reference = reference_excerpt(&read_notes(&audio.with_extension("txt")).unwrap(), 30.0);
        let start = std::time::Instant::now();
        let tr = t.transcribe_file(&audio).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let h = &tr.activations.values;
        let max = tr.activations.max();
        let frac = |r: f64| h.data.iter().filter(|&&x| x > r * max).count() as f64 / h.data.len() as f64;
        let (k, n) = (h.rows, h.cols);
        for blk in [8usize, 16, 32, 64] {
            let mut act = 0usize;
            let mut tot = 0usize;
            for b0 in (0..n).step_by(blk) {
                let lo = b0.saturating_sub(9);
                let hi = (b0 + blk).min(n);
                act += (0..k).filter(|&q| (lo..hi).any(|t| h.get(q, t) > 0.0)).count();
                tot += k;
            }
            print!("blk{blk}: {:.3} ", act as f64 / tot as f64);
        }
        println!("zero frac {:.3}", h.data.iter().filter(|&&x| x == 0.0).count() as f64 / h.data.len() as f64);
        let mut best = (0.0, 0.0);
        for (i, &d) in grid.iter().enumerate() {
            let est = OnsetDetector { threshold: d, ..Default::default() }.detect(&tr.activations);
            let tp = match_notes(&reference, &est, &MatchParams::onset_only()).len() as f64;
            let f = if est.is_empty() { 0.0 } else { 2.0 * tp / (reference.len() + est.len()) as f64 };
            sum_f[i] += f;
            if f > best.0 {
                best = (f, d);
            }
        }
        println!(
            "{} {:.1}s best F {:.3} at {:.2}; H>1e-2 {:.3} >1e-3 {:.3} >1e-4 {:.3} >1e-6 {:.3}",
            audio.file_name().unwrap().to_string_lossy(),
            secs,
            best.0,
            best.1,
            frac(1e-2),
            frac(1e-3),
            frac(1e-4),
            frac(1e-6)
        );
    }
    let (bi, bf) = sum_f.iter().enumerate().fold((0, 0.0), |b, (i, &f)| if f > b.1 { (i, f) } else { b });
    println!("global: F {:.4} at δ {:.2}", bf / songs.len() as f64, grid[bi]);
}
