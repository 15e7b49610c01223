//! Measures the decision rules of issue 7 on a MAPS-layout dataset: for each
//! piano's own templates (τ = 10, calibrated on its isolated notes) and its
//! songs (first 30 s), the onset F at the oracle global δ, at the calibrated
//! δ and at the old default 0.11; onset + offset F for each offset rule; and
//! velocity F and error for each velocity rule.
//!
//! ```sh
//! cargo run --release --example decision_rules -- ../shared/data/dev /tmp/decide-exp/cache
//! # the calibration mix's designs (each recalibrates on the isolated notes, then scores the songs):
//! cargo run --release --example decision_rules -- ../shared/data/dev /tmp/decide-exp/cache all mix
//! ```
//!
//! The cache is `sscnmf experiment`'s (`<out>/cache`): templates and song
//! activations are reused from it.

use std::path::{Path, PathBuf};

use sscnmf::audio::DecodeOptions;
use sscnmf::calibration::{
    calibrate_on_folder_with, threshold_grid, HeldTimes, MixRelease, MixSettings, OFFSET_FRACTIONS,
};
use sscnmf::evaluation::{
    precision_recall_f1_overlap, precision_recall_f1_velocity, velocity_mean_absolute_error, MatchParams,
    VELOCITY_TOLERANCE,
};
use sscnmf::experiments::{
    cached_activations, discover_maps_dataset, learn_or_load, reference_excerpt, velocity_reference, Piano,
};
use sscnmf::notes::{read_notes, Note};
use sscnmf::transcription::{Activations, OffsetRule, OnsetDetector, Transcriber, VelocityRule, DEFAULT_THRESHOLD};

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// One song: its reference (without and with velocities) and activations.
struct Song {
    reference: Vec<Note>,
    with_velocity: Vec<Note>,
    activations: Activations,
}

/// The piano's calibrated transcriber and its songs' activations (from the cache).
fn load(piano: &Piano, cache: &Path) -> sscnmf::Result<(Transcriber, Vec<Song>)> {
    let learned = learn_or_load(piano, 10, Some(cache))?;
    let mut transcriber = Transcriber::new(learned.model)?;
    transcriber.decode = DecodeOptions { duration_seconds: Some(30.0), ..Default::default() };
    let songs = piano
        .songs
        .iter()
        .map(|song| {
            Ok(Song {
                reference: reference_excerpt(&read_notes(&song.reference)?, 30.0),
                with_velocity: reference_excerpt(&velocity_reference(&song.reference)?.expect("a .mid"), 30.0),
                activations: cached_activations(&transcriber, &song.audio, Some(cache))?.activations,
            })
        })
        .collect::<sscnmf::Result<_>>()?;
    Ok((transcriber, songs))
}

/// Mean onset F and onset + offset F of `detector` over `songs`.
fn scores(songs: &[Song], detector: &OnsetDetector) -> (f64, f64) {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for s in songs {
        let notes = detector.detect(&s.activations);
        on.push(precision_recall_f1_overlap(&s.reference, &notes, &MatchParams::onset_only()).f_measure);
        off.push(precision_recall_f1_overlap(&s.reference, &notes, &MatchParams::onset_offset()).f_measure);
    }
    (mean(&on), mean(&off))
}

fn main() -> sscnmf::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data = PathBuf::from(args.get(1).map_or("../shared/data/dev", String::as_str));
    let cache = PathBuf::from(args.get(2).map_or("/tmp/decide-exp/cache", String::as_str));
    let only: Option<&str> = args.get(3).map(String::as_str);
    let mode = args.get(4).map_or("rules", String::as_str);
    if mode == "builtin" {
        return builtin_on_other_pianos(&data, &cache);
    }
    for piano in discover_maps_dataset(&data)? {
        if only.is_some_and(|o| o != piano.name && o != "all") || piano.isolated_notes.is_none() {
            continue;
        }
        let (transcriber, songs) = load(&piano, &cache)?;
        println!("## {}", piano.name);
        match mode {
            "mix" => mix_designs(&piano, &transcriber, &songs)?,
            "curves" => offset_curves(&piano, &transcriber, &songs, &cache)?,
            "stats" => song_statistics(&transcriber, &songs),
            "errors" => offset_errors(&piano, &transcriber, &songs)?,
            "scales" => scales(&piano, &transcriber, &songs, &cache)?,
            _ => rules(&transcriber, &songs),
        }
    }
    Ok(())
}

/// The default rule against the oracle and the other rules.
fn rules(transcriber: &Transcriber, songs: &[Song]) {
    let onset = MatchParams::onset_only();
    let offset = MatchParams::onset_offset();
    let grid = threshold_grid();
    let calibrated = transcriber.detector;
    println!("calibration: {:?}", transcriber.dictionary().calibration);
    let means: Vec<f64> =
        grid.iter().map(|&threshold| scores(songs, &OnsetDetector { threshold, ..calibrated }).0).collect();
    let best = (0..grid.len()).fold(0, |b, i| if means[i] > means[b] + 1e-12 { i } else { b });
    let (f_cal, f_cal_offset) = scores(songs, &calibrated);
    let (f_old, _) = scores(songs, &OnsetDetector { threshold: DEFAULT_THRESHOLD, ..calibrated });
    println!(
        "onset F: oracle global {:.1} (δ {:.2}) | calibrated {:.1} (δ {:.2}) | old default {:.1} (δ 0.11)",
        100.0 * means[best],
        grid[best],
        100.0 * f_cal,
        calibrated.threshold,
        100.0 * f_old
    );
    let offset_rules =
        std::iter::once(OffsetRule::RunEnd).chain(OFFSET_FRACTIONS.iter().map(|&fraction| OffsetRule::decay(fraction)));
    let row: Vec<String> = offset_rules
        .map(|rule| format!("{:.1}", 100.0 * scores(songs, &OnsetDetector { offsets: rule, ..calibrated }).1))
        .collect();
    println!("onset+offset F: run-end {} | decay {:?} -> {}", row[0], OFFSET_FRACTIONS, row[1..].join(" "));
    println!(
        "onset+offset F of the calibrated rule {:?}: {:.1} ({:.0} % of onset F)",
        calibrated.offsets,
        100.0 * f_cal_offset,
        100.0 * f_cal_offset / f_cal.max(1e-12)
    );
    for (name, rule) in [("sqrt", VelocityRule::Sqrt), ("calibrated", calibrated.velocity)] {
        let (mut on, mut off, mut err) = (Vec::new(), Vec::new(), Vec::new());
        for s in songs {
            let notes = OnsetDetector { velocity: rule, ..calibrated }.detect(&s.activations);
            on.push(precision_recall_f1_velocity(&s.with_velocity, &notes, &onset, VELOCITY_TOLERANCE).f_measure);
            off.push(precision_recall_f1_velocity(&s.with_velocity, &notes, &offset, VELOCITY_TOLERANCE).f_measure);
            err.push(velocity_mean_absolute_error(&s.with_velocity, &notes, &onset));
        }
        println!(
            "velocity {name}: onset+velocity F {:.1}, onset+offset+velocity F {:.1}, error {:.1}",
            100.0 * mean(&on),
            100.0 * mean(&off),
            mean(&err)
        );
    }
}

/// What each design of the calibration mix chooses on the isolated notes,
/// and how that scores on the songs.
fn mix_designs(piano: &Piano, transcriber: &Transcriber, songs: &[Song]) -> sscnmf::Result<()> {
    let dir = piano.isolated_notes.as_ref().expect("isolated notes");
    for release in [MixRelease::Fade, MixRelease::Recorded] {
        for held_times in [HeldTimes::Uniform, HeldTimes::LogUniform] {
            mix_design(transcriber, songs, dir, MixSettings { release, held_times, ..MixSettings::default() })?;
        }
    }
    Ok(())
}

fn mix_design(transcriber: &Transcriber, songs: &[Song], dir: &Path, settings: MixSettings) -> sscnmf::Result<()> {
    {
        let c = calibrate_on_folder_with(transcriber, dir, 0, &settings)?;
        let (f, f_off) = scores(songs, &OnsetDetector::calibrated(&c));
        println!(
            "{:?} {:?}: δ {:.2}, offsets {:?} (mix onset F {:.1}, onset+offset F {:.1}) -> songs onset F {:.1}, \
             onset+offset F {:.1} ({:.0} % of onset F)",
            settings.release,
            settings.held_times,
            c.threshold,
            OffsetRule::calibrated(&c),
            100.0 * c.mix_onset_f,
            100.0 * c.mix_onset_offset_f,
            100.0 * f,
            100.0 * f_off,
            100.0 * f_off / f.max(1e-12)
        );
    }
    Ok(())
}

/// The calibration mix of `settings` from the piano's M and F isolated
/// notes, and its activations (the mix is written as a float WAV into the
/// cache so that its activations are cached like a song's).
fn mix_activations(
    piano: &Piano,
    transcriber: &Transcriber,
    settings: &MixSettings,
    cache: &Path,
) -> sscnmf::Result<(Vec<Note>, Activations)> {
    use sscnmf::calibration::{discover_calibration_notes, synthetic_mix};
    let dir = piano.isolated_notes.as_ref().expect("isolated notes");
    let notes: Vec<_> = discover_calibration_notes(dir, 0)?.into_iter().filter(|n| n.note.velocity >= 70).collect();
    let mix = synthetic_mix(&notes, 44100, settings)?;
    let folder = cache.join("mixes");
    std::fs::create_dir_all(&folder).expect("cache folder");
    let path =
        folder.join(format!("{}-{:?}-{:?}-{}.wav", piano.name, settings.release, settings.held_times, settings.seed));
    if !path.is_file() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 44100,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec).expect("wav");
        for &x in &mix.samples {
            w.write_sample(x).expect("wav");
        }
        w.finalize().expect("wav");
    }
    let mut whole = transcriber.clone();
    whole.decode = DecodeOptions::default();
    Ok((mix.notes, cached_activations(&whole, &path, Some(cache))?.activations))
}

/// Onset + offset F against the offset fraction, on the mix (each release
/// design) and on the songs, at the calibrated δ, for the fixed and the
/// free-decay floor (rate fitted on that mix) and a few bridges.
fn offset_curves(piano: &Piano, transcriber: &Transcriber, songs: &[Song], cache: &Path) -> sscnmf::Result<()> {
    use sscnmf::calibration::fit_decay_rate;
    let base = transcriber.detector;
    let fractions = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3];
    let row = |f: &dyn Fn(f64) -> f64| fractions.iter().map(|&x| format!("{:.1}", 100.0 * f(x))).collect::<Vec<_>>();
    println!("fractions {fractions:?}");
    let designs = [(MixRelease::Recorded, HeldTimes::Uniform), (MixRelease::Recorded, HeldTimes::LogUniform)];
    for (release, held_times) in designs {
        let settings = MixSettings { release, held_times, ..MixSettings::default() };
        let (truth, a) = mix_activations(piano, transcriber, &settings, cache)?;
        let release = format!("{release:?} {held_times:?}");
        let mix_f = |rule: OffsetRule| {
            let d = OnsetDetector { offsets: rule, ..base };
            precision_recall_f1_overlap(&truth, &d.detect(&a), &MatchParams::onset_offset()).f_measure
        };
        let rate = fit_decay_rate(&a, &truth, &base.detect(&a));
        if let Some(r) = rate {
            println!(
                "mix {release:?}: λ(p) = exp({:.3} + {:.4}·(p − 60)) /s (λ at 36, 60, 84: {:.2}, {:.2}, {:.2})",
                r.intercept,
                r.slope,
                r.at(36),
                r.at(60),
                r.at(84)
            );
        }
        for bridge in [1, 5] {
            for rate in [None, rate] {
                let rule = |fraction| OffsetRule::Decay { fraction, rate, bridge };
                let name = format!("bridge {bridge}, {}", if rate.is_some() { "free decay" } else { "fixed" });
                println!("  mix {release:?} {name}: {}", row(&|f| mix_f(rule(f))).join(" "));
                if held_times == MixSettings::default().held_times {
                    let songs_row = row(&|f| scores(songs, &OnsetDetector { offsets: rule(f), ..base }).1);
                    println!("  songs {name}: {}", songs_row.join(" "));
                }
            }
        }
    }
    Ok(())
}

/// The value at quantile `q` of `v` (sorted in place).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0)
}

/// Per song: its best δ (max-scaled) and statistics of its activations,
/// each as a fraction of the maximum (a scale whose ratio to the maximum
/// follows the best δ would transfer δ better).
fn song_statistics(transcriber: &Transcriber, songs: &[Song]) {
    let grid = threshold_grid();
    let base = transcriber.detector;
    println!("best δ | q99 q99.9 of h>0 | median, q90 of run peaks at δ 0.05 | mean of pitch maxima");
    for s in songs {
        let f: Vec<f64> = grid
            .iter()
            .map(|&threshold| {
                let notes = OnsetDetector { threshold, ..base }.detect(&s.activations);
                precision_recall_f1_overlap(&s.reference, &notes, &MatchParams::onset_only()).f_measure
            })
            .collect();
        let best = (0..grid.len()).fold(0, |b, i| if f[i] > f[b] + 1e-12 { i } else { b });
        let v = &s.activations.values;
        let max = v.data.iter().copied().fold(0.0, f64::max);
        let mut positive: Vec<f64> = v.data.iter().copied().filter(|&x| x > 0.0).map(|x| x / max).collect();
        let (q99, q999) = (quantile(&mut positive, 0.99), quantile(&mut positive, 0.999));
        let mut peaks: Vec<f64> = OnsetDetector { threshold: 0.05, ..base }
            .detect_with_peaks(&s.activations)
            .into_iter()
            .map(|(_, p)| p / max)
            .collect();
        let (median, q90) = (quantile(&mut peaks, 0.5), quantile(&mut peaks, 0.9));
        let pitch_max: Vec<f64> = (0..v.rows)
            .map(|q| (0..v.cols).map(|t| v.get(q, t)).fold(0.0, f64::max) / max)
            .filter(|&m| m > 0.05)
            .collect();
        println!(
            "{:.2} | {q99:.3} {q999:.3} | {median:.3} {q90:.3} | {:.3} (f at best {:.1})",
            grid[best],
            mean(&pitch_max),
            100.0 * f[best]
        );
    }
}

/// Offset errors of the onset-matched notes by reference duration, on the
/// songs and on the mix, for a few offset rules.
fn offset_errors(piano: &Piano, transcriber: &Transcriber, songs: &[Song]) -> sscnmf::Result<()> {
    use sscnmf::calibration::{discover_calibration_notes, synthetic_mix};
    use sscnmf::evaluation::match_notes;
    let dir = piano.isolated_notes.as_ref().expect("isolated notes");
    let base = transcriber.detector;
    let buckets = [0.0, 0.15, 0.3, 0.6, 1.0, 100.0];
    let report = |name: &str, pairs: &[(Vec<Note>, Vec<Note>)], rule: OffsetRule| {
        let mut rows: Vec<Vec<f64>> = vec![Vec::new(); buckets.len() - 1];
        let mut ok = vec![0usize; buckets.len() - 1];
        for (reference, estimate_all) in pairs {
            let _ = estimate_all;
            let estimate: Vec<Note> = estimate_all.clone();
            for (i, j) in match_notes(reference, &estimate, &MatchParams::onset_only()) {
                let (r, e) = (&reference[i], &estimate[j]);
                let d = r.offset - r.onset;
                let b = buckets.windows(2).position(|w| d >= w[0] && d < w[1]).unwrap_or(0);
                let err = e.offset - r.offset;
                rows[b].push(err);
                if err.abs() <= (0.2 * d).max(0.05) {
                    ok[b] += 1;
                }
            }
        }
        let cells: Vec<String> = rows
            .iter_mut()
            .zip(&ok)
            .map(|(v, &k)| {
                let n = v.len();
                format!("n {n} med {:+.3} ok {:.0}%", quantile(v, 0.5), 100.0 * k as f64 / n.max(1) as f64)
            })
            .collect();
        println!("{name} {rule:?}: {}", cells.join(" | "));
    };
    let notes: Vec<_> = discover_calibration_notes(dir, 0)?.into_iter().filter(|n| n.note.velocity >= 70).collect();
    let mix = synthetic_mix(&notes, 44100, &MixSettings::default())?;
    let a = transcriber.activations(&mix.samples, 0.0)?;
    println!("durations {buckets:?}");
    for rule in [OffsetRule::decay(0.002), OffsetRule::decay(0.02)] {
        let d = OnsetDetector { offsets: rule, ..base };
        let song_pairs: Vec<(Vec<Note>, Vec<Note>)> =
            songs.iter().map(|s| (s.reference.clone(), d.detect(&s.activations))).collect();
        report("songs", &song_pairs, rule);
        report("mix", &[(mix.notes.clone(), d.detect(&a))], rule);
    }
    Ok(())
}

/// A statistic of `a` to divide it by before thresholding.
fn statistic(a: &Activations, which: usize) -> f64 {
    let v = &a.values;
    let max = v.data.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return 1.0;
    }
    let peaks = || -> Vec<f64> {
        OnsetDetector { threshold: 0.05, ..OnsetDetector::default() }
            .detect_with_peaks(a)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    };
    match which {
        0 => max,
        1 => quantile(&mut v.data.iter().copied().filter(|&x| x > 0.0).collect::<Vec<_>>(), 0.99),
        2 => quantile(&mut peaks(), 0.5),
        3 => quantile(&mut peaks(), 0.9),
        _ => {
            let m: Vec<f64> = (0..v.rows)
                .map(|q| (0..v.cols).map(|t| v.get(q, t)).fold(0.0, f64::max))
                .filter(|&m| m > 0.05 * max)
                .collect();
            mean(&m)
        }
    }
}

/// For each activation scaling: the δ the mix picks, the songs' F there and
/// the songs' oracle global F.
fn scales(piano: &Piano, transcriber: &Transcriber, songs: &[Song], cache: &Path) -> sscnmf::Result<()> {
    for held_times in [HeldTimes::Uniform, HeldTimes::LogUniform] {
        println!("mix held times {held_times:?}");
        let settings = MixSettings { held_times, ..MixSettings::default() };
        scales_on(transcriber, songs, &mix_activations(piano, transcriber, &settings, cache)?);
    }
    Ok(())
}

fn scales_on(transcriber: &Transcriber, songs: &[Song], (truth, mix): &(Vec<Note>, Activations)) {
    use sscnmf::calibration::{plateau_centre, PLATEAU};
    use sscnmf::transcription::ActivationScale;
    let grid: Vec<f64> = (1..=100).map(|i| f64::from(i) / 100.0).collect();
    let names = ["max", "q99 of h>0", "median run peak", "q90 run peak", "mean pitch max"];
    let scaled = |a: &Activations, which: usize| {
        let mut a = a.clone();
        let s = statistic(&a, which);
        a.values.data.iter_mut().for_each(|x| *x /= s);
        a
    };
    for (which, name) in names.iter().enumerate() {
        let base = OnsetDetector { scale: ActivationScale::Raw, ..transcriber.detector };
        let m = scaled(mix, which);
        let mix_f: Vec<f64> = grid
            .iter()
            .map(|&threshold| {
                let d = OnsetDetector { threshold, ..base };
                precision_recall_f1_overlap(truth, &d.detect(&m), &MatchParams::onset_only()).f_measure
            })
            .collect();
        let pick = plateau_centre(&mix_f, PLATEAU);
        let songs_scaled: Vec<Song> = songs
            .iter()
            .map(|s| Song {
                reference: s.reference.clone(),
                with_velocity: Vec::new(),
                activations: scaled(&s.activations, which),
            })
            .collect();
        let f: Vec<f64> =
            grid.iter().map(|&threshold| scores(&songs_scaled, &OnsetDetector { threshold, ..base }).0).collect();
        let best = (0..grid.len()).fold(0, |b, i| if f[i] > f[b] + 1e-12 { i } else { b });
        println!(
            "{name}: mix δ {:.2} (mix F {:.1}) -> songs F {:.1} | oracle δ {:.2} F {:.1} | gap {:+.1}",
            grid[pick],
            100.0 * mix_f[pick],
            100.0 * f[pick],
            grid[best],
            100.0 * f[best],
            100.0 * (f[pick] - f[best])
        );
    }
}

/// The built-in dictionary (Salamander's notes) on the songs of the other
/// dev pianos: its calibrated rule against the uncalibrated one (δ 0.11 of
/// the largest activation, offsets at 0.01 of the peak).
fn builtin_on_other_pianos(data: &Path, cache: &Path) -> sscnmf::Result<()> {
    let mut transcriber = Transcriber::new(sscnmf::templates::TemplateDictionary::builtin()?)?;
    transcriber.decode = DecodeOptions { duration_seconds: Some(30.0), ..Default::default() };
    let calibrated = transcriber.detector;
    println!("built-in calibration: {:?}", transcriber.dictionary().calibration);
    for piano in discover_maps_dataset(data)? {
        if piano.name == "Salamander" {
            continue;
        }
        let songs: Vec<Song> = piano
            .songs
            .iter()
            .map(|song| {
                Ok(Song {
                    reference: reference_excerpt(&read_notes(&song.reference)?, 30.0),
                    with_velocity: Vec::new(),
                    activations: cached_activations(&transcriber, &song.audio, Some(cache))?.activations,
                })
            })
            .collect::<sscnmf::Result<_>>()?;
        for (name, d) in [("uncalibrated", OnsetDetector::default()), ("calibrated", calibrated)] {
            let (on, off) = scores(&songs, &d);
            println!("{} songs, {name} rule: onset F {:.1}, onset+offset F {:.1}", piano.name, 100.0 * on, 100.0 * off);
        }
        let grid = threshold_grid();
        let f: Vec<f64> = grid
            .iter()
            .map(|&threshold| scores(&songs, &OnsetDetector { threshold, ..OnsetDetector::default() }).0)
            .collect();
        let best = (0..grid.len()).fold(0, |b, i| if f[i] > f[b] + 1e-12 { i } else { b });
        println!(
            "{} songs, oracle global δ (max-scaled) {:.2}: onset F {:.1}",
            piano.name,
            grid[best],
            100.0 * f[best]
        );
    }
    Ok(())
}
