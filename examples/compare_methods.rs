//! Onset F-measure of each transcription method on the first seconds of some
//! songs, at the default δ, at the best single δ of the grid 0.01:0.01:0.40
//! ("global") and at each song's best ("songwise"), as in the paper's Table 1.
//!
//! ```sh
//! cargo run --release --example compare_methods -- fluid.templates fluid.ad 30 song1.flac song2.flac
//! ```
//! Each song's reference is the MAPS `.txt` beside it. With `none` for the
//! attack/decay model only CNMF runs (to score a dictionary alone).

use std::path::{Path, PathBuf};

use sscnmf::audio::DecodeOptions;
use sscnmf::evaluation::evaluate;
use sscnmf::experiments::reference_excerpt;
use sscnmf::notes::read_notes;
use sscnmf::transcription::{Method, Model, OnsetDetector, Transcriber};

fn main() -> sscnmf::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: compare_methods TEMPLATES ATTACK_DECAY_MODEL|none SECONDS SONG...");
        std::process::exit(2);
    }
    let templates = Model::load(Path::new(&args[0]))?;
    let (attack_decay, methods) = match args[1].as_str() {
        "none" => (None, vec![Method::Cnmf]),
        path => (Some(Model::load(Path::new(path))?), Method::ALL.to_vec()),
    };
    let seconds: f64 = args[2].parse().map_err(|_| sscnmf::Error::invalid_input("SECONDS must be a number"))?;
    let songs: Vec<PathBuf> = args[3..].iter().map(PathBuf::from).collect();
    let decode = DecodeOptions { duration_seconds: Some(seconds), ..Default::default() };
    let grid: Vec<f64> = (1..=40).map(|i| i as f64 / 100.0).collect();
    println!(
        "| method | songs | F at δ = {} | global F (δ) | songwise F | seconds per song |",
        OnsetDetector::default().threshold
    );
    println!("|---|---|---|---|---|---|");
    for method in methods {
        let model = match (&attack_decay, method) {
            (Some(ad), Method::AttackDecay) => ad,
            _ => &templates,
        };
        let mut transcriber = Transcriber::for_method(method, model.clone())?;
        transcriber.decode = decode.clone();
        // f[song][δ index]
        let mut f = Vec::new();
        let mut at_default = Vec::new();
        let started = std::time::Instant::now();
        for song in &songs {
            let activations = transcriber.transcribe_file(song)?.activations;
            let reference = reference_excerpt(&read_notes(&song.with_extension("txt"))?, seconds);
            let score = |threshold: f64| {
                let notes = OnsetDetector { threshold, ..Default::default() }.detect(&activations);
                evaluate(&reference, &notes, 0.05, 0.2).onset.f_measure
            };
            at_default.push(score(OnsetDetector::default().threshold));
            f.push(grid.iter().map(|&d| score(d)).collect::<Vec<f64>>());
            eprintln!("{method} {}: F = {:.3} at the default δ", song.display(), at_default.last().unwrap());
        }
        let per_song = started.elapsed().as_secs_f64() / songs.len() as f64;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (best, global) = (0..grid.len())
            .map(|i| (i, mean(&f.iter().map(|s| s[i]).collect::<Vec<_>>())))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a grid");
        let songwise = mean(&f.iter().map(|s| s.iter().copied().fold(0.0, f64::max)).collect::<Vec<_>>());
        println!(
            "| {method} | {} | {:.1} | {:.1} ({:.2}) | {:.1} | {per_song:.1} |",
            songs.len(),
            100.0 * mean(&at_default),
            100.0 * global,
            grid[best],
            100.0 * songwise
        );
    }
    Ok(())
}
