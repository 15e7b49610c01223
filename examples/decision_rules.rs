//! Measures the decision rules of issue 7 on a MAPS-layout dataset: for each
//! piano's own templates (τ = 10, calibrated on its isolated notes) and its
//! songs (first 30 s), the onset F at the oracle global δ, at the calibrated
//! δ and at the old default 0.11; onset + offset F for each offset rule; and
//! velocity F and error for each velocity rule.
//!
//! ```sh
//! cargo run --release --example decision_rules -- ../shared/data/dev /tmp/decide-cache
//! ```

use std::path::PathBuf;

use sscnmf::audio::DecodeOptions;
use sscnmf::calibration::{threshold_grid, OFFSET_FRACTIONS};
use sscnmf::evaluation::{
    precision_recall_f1_overlap, precision_recall_f1_velocity, velocity_mean_absolute_error, MatchParams,
    VELOCITY_TOLERANCE,
};
use sscnmf::experiments::{
    cached_activations, discover_maps_dataset, learn_or_load, reference_excerpt, velocity_reference,
};
use sscnmf::notes::read_notes;
use sscnmf::transcription::{OffsetRule, OnsetDetector, Transcriber, VelocityRule, DEFAULT_THRESHOLD};

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() -> sscnmf::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data = PathBuf::from(args.get(1).map_or("../shared/data/dev", String::as_str));
    let cache = PathBuf::from(args.get(2).map_or("/tmp/decide-cache", String::as_str));
    let only: Option<&str> = args.get(3).map(String::as_str);
    let grid = threshold_grid();
    let onset = MatchParams::onset_only();
    let offset = MatchParams::onset_offset();
    if args.get(4).map(String::as_str) == Some("mix") {
        return mix_designs(&data, &cache, only);
    }
    for piano in discover_maps_dataset(&data)? {
        if only.is_some_and(|o| o != piano.name && o != "all") || piano.isolated_notes.is_none() {
            continue;
        }
        let learned = learn_or_load(&piano, 10, Some(&cache))?;
        let calibration = learned.model.calibration.clone().expect("calibrated by learn_or_load");
        println!("## {}\ncalibration: {:?}", piano.name, calibration);
        let mut transcriber = Transcriber::new(learned.model)?;
        transcriber.decode = DecodeOptions { duration_seconds: Some(30.0), ..Default::default() };
        let calibrated = transcriber.detector;
        let mut grid_f = vec![Vec::new(); grid.len()];
        let (mut f_cal, mut f_old) = (Vec::new(), Vec::new());
        let mut offset_f: Vec<Vec<f64>> = vec![Vec::new(); OFFSET_FRACTIONS.len() + 1];
        let mut velocity: Vec<[Vec<f64>; 3]> = vec![Default::default(), Default::default()];
        for song in &piano.songs {
            let reference = reference_excerpt(&read_notes(&song.reference)?, 30.0);
            let with_velocity = reference_excerpt(&velocity_reference(&song.reference)?.expect("a .mid"), 30.0);
            let a = cached_activations(&transcriber, &song.audio, Some(&cache))?.activations;
            for (i, &threshold) in grid.iter().enumerate() {
                let d = OnsetDetector { threshold, ..calibrated };
                grid_f[i].push(precision_recall_f1_overlap(&reference, &d.detect(&a), &onset).f_measure);
            }
            f_cal.push(precision_recall_f1_overlap(&reference, &calibrated.detect(&a), &onset).f_measure);
            let old = OnsetDetector { threshold: DEFAULT_THRESHOLD, ..calibrated };
            f_old.push(precision_recall_f1_overlap(&reference, &old.detect(&a), &onset).f_measure);
            let rules = std::iter::once(OffsetRule::RunEnd)
                .chain(OFFSET_FRACTIONS.iter().map(|&fraction| OffsetRule::Decay { fraction }));
            for (k, rule) in rules.enumerate() {
                let d = OnsetDetector { offsets: rule, ..calibrated };
                offset_f[k].push(precision_recall_f1_overlap(&reference, &d.detect(&a), &offset).f_measure);
            }
            for (k, rule) in [VelocityRule::Sqrt, calibrated.velocity].into_iter().enumerate() {
                let notes = OnsetDetector { velocity: rule, ..calibrated }.detect(&a);
                let v = &mut velocity[k];
                v[0].push(precision_recall_f1_velocity(&with_velocity, &notes, &onset, VELOCITY_TOLERANCE).f_measure);
                v[1].push(precision_recall_f1_velocity(&with_velocity, &notes, &offset, VELOCITY_TOLERANCE).f_measure);
                v[2].push(velocity_mean_absolute_error(&with_velocity, &notes, &onset));
            }
        }
        let means: Vec<f64> = grid_f.iter().map(|v| mean(v)).collect();
        let best = (0..grid.len()).fold(0, |b, i| if means[i] > means[b] + 1e-12 { i } else { b });
        println!(
            "onset F: oracle global {:.1} (δ {:.2}) | calibrated {:.1} (δ {:.2}) | old default {:.1} (δ 0.11)",
            100.0 * means[best],
            grid[best],
            100.0 * mean(&f_cal),
            calibrated.threshold,
            100.0 * mean(&f_old)
        );
        let row: Vec<String> = offset_f.iter().map(|v| format!("{:.1}", 100.0 * mean(v))).collect();
        println!("onset+offset F: run-end {} | decay {:?} -> {}", row[0], OFFSET_FRACTIONS, row[1..].join(" "));
        for (name, v) in ["sqrt", "calibrated"].iter().zip(&velocity) {
            println!(
                "velocity {name}: onset+velocity F {:.1}, onset+offset+velocity F {:.1}, error {:.1}",
                100.0 * mean(&v[0]),
                100.0 * mean(&v[1]),
                mean(&v[2])
            );
        }
    }
    Ok(())
}

/// The δ that the calibration picks for mixes of different intensities.
fn mix_designs(data: &std::path::Path, cache: &std::path::Path, only: Option<&str>) -> sscnmf::Result<()> {
    use sscnmf::calibration::{calibrate, discover_calibration_notes, synthetic_mix, MixSettings};
    for piano in discover_maps_dataset(data)? {
        if only.is_some_and(|o| o != piano.name && o != "all") {
            continue;
        }
        let Some(dir) = &piano.isolated_notes else { continue };
        let learned = learn_or_load(&piano, 10, Some(cache))?;
        let transcriber = Transcriber::new(learned.model)?;
        let all = discover_calibration_notes(dir, 0)?;
        for (name, lo, hi) in [("all intensities", 0, 127), ("M only", 70, 70), ("M and F", 70, 127)] {
            let notes: Vec<_> = all.iter().filter(|n| (lo..=hi).contains(&n.note.velocity)).cloned().collect();
            let settings = MixSettings::default();
            let mix = synthetic_mix(&notes, 44100, &settings)?;
            let c = calibrate(&transcriber, &mix, &settings)?;
            println!(
                "{} {name}: δ {:.2} (mix F {:.3}), fraction {}",
                piano.name, c.threshold, c.mix_onset_f, c.offset_fraction
            );
        }
    }
    Ok(())
}
