//! How close the fast path's notes are to the reference path's (f64, dense)
//! on the matched songs of a MAPS folder, for fast-path settings given on the
//! command line; the reference activations and the templates come from an
//! experiment's cache (`sscnmf experiment DIR --matched-only --compare-exact
//! --out OUT` fills `OUT/cache`), the fast path is recomputed every time.
//!
//! ```sh
//! cargo run --release --example fidelity_probe -- ../shared/data/dev OUT/cache [key=value ...]
//! ```
//! Keys (the defaults are the library's): `prune`, `prune_after`, `dormant`,
//! `model_threshold`, `init_prune`, `refresh_every`, `after`, `extrapolate`
//! (0/1), `sparse` (0: dense f32 products), `limit` (songs per piano),
//! `pianos` (comma-separated: whose songs), `train` (whose templates: by
//! default each piano's own; the reference activations of another piano's
//! templates are computed, and cached, on the first run); `time=AUDIO` (with
//! `repeat`, default 3) only times the fast path on one file with the first
//! piano's templates.
//!
//! Prints, per piano and in total, the songs whose notes at the tool's
//! default rule are the same on both paths by three definitions: the same
//! (pitch, onset, offset, velocity) — what `sscnmf experiment` calls
//! identical —, the same (pitch, onset, offset), the same (pitch, onset); the
//! notes found by one path only (by pitch and onset, as the experiment counts
//! them); and, for the notes both paths find, how many differ in offset or
//! velocity, with the distance of the reference path's unrounded velocity to
//! the nearest rounding boundary and the relative difference of the peaks.

use std::collections::HashMap;
use std::path::Path;

use sscnmf::audio::DecodeOptions;
use sscnmf::evaluation::evaluate;
use sscnmf::experiments::{cached_activations, discover_maps_dataset, learn_or_load, reference_excerpt};
use sscnmf::factorization::Precision;
use sscnmf::notes::read_notes;
use sscnmf::transcription::{Method, Model, Transcriber, VelocityRule};

#[derive(Default)]
struct Tally {
    songs: usize,
    identical: usize,
    same_offsets: usize,
    same_onsets: usize,
    one_path: usize,
    reference_notes: usize,
    offset_differs: usize,
    velocity_differs: usize,
    /// Distance of the reference's unrounded velocity to the nearest .5 boundary, for differing velocities.
    boundary_distance: Vec<f64>,
    /// |fast peak / reference peak − 1| for differing velocities.
    peak_change: Vec<f64>,
    /// The same for all matched notes.
    all_peak_change: Vec<f64>,
    fast_f: f64,
    /// Floating-point operations of the fast path's products (a load-independent measure of its work).
    gflop: f64,
    exact_f: f64,
    seconds: f64,
    audio_seconds: f64,
    largest_difference: f64,
    /// The largest |velocity difference| of a matched note.
    largest_velocity_step: u8,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.songs += o.songs;
        self.identical += o.identical;
        self.same_offsets += o.same_offsets;
        self.same_onsets += o.same_onsets;
        self.one_path += o.one_path;
        self.reference_notes += o.reference_notes;
        self.offset_differs += o.offset_differs;
        self.velocity_differs += o.velocity_differs;
        self.boundary_distance.extend(&o.boundary_distance);
        self.peak_change.extend(&o.peak_change);
        self.all_peak_change.extend(&o.all_peak_change);
        self.fast_f += o.fast_f;
        self.gflop += o.gflop;
        self.exact_f += o.exact_f;
        self.seconds += o.seconds;
        self.audio_seconds += o.audio_seconds;
        self.largest_difference = self.largest_difference.max(o.largest_difference);
        self.largest_velocity_step = self.largest_velocity_step.max(o.largest_velocity_step);
    }

    fn line(&self, name: &str) -> String {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let n = self.songs.max(1) as f64;
        format!(
            "{name}: songs {} | identical {} | same p,on,off {} | same p,on {} | one path {} of {} | matched: offset differs {}, velocity differs {} by at most {} (median boundary distance {:.3}, median peak change {:.2e}; all matched median peak change {:.2e}) | F fast {:.2} ref {:.2} | {:.3} s per 30 s, {:.1} GFLOP per 30 s | largest diff {:.2e}",
            self.songs,
            self.identical,
            self.same_offsets,
            self.same_onsets,
            self.one_path,
            self.reference_notes,
            self.offset_differs,
            self.velocity_differs,
            self.largest_velocity_step,
            median(&self.boundary_distance),
            median(&self.peak_change),
            median(&self.all_peak_change),
            100.0 * self.fast_f / n,
            100.0 * self.exact_f / n,
            30.0 * self.seconds / self.audio_seconds.max(1e-9),
            30.0 * self.gflop / self.audio_seconds.max(1e-9),
            self.largest_difference,
        )
    }
}

fn main() -> sscnmf::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: fidelity_probe DATASET CACHE [key=value ...]");
        std::process::exit(2);
    }
    let (dataset, cache) = (Path::new(&args[0]), Path::new(&args[1]));
    let options: HashMap<&str, &str> = args[2..].iter().filter_map(|a| a.split_once('=')).collect();
    let num = |key: &str| options.get(key).map(|v| v.parse::<f64>().expect("a number"));
    let limit = num("limit").map_or(usize::MAX, |v| v as usize);
    let pianos: Option<Vec<&str>> = options.get("pianos").map(|v| v.split(',').collect());
    let all_pianos = discover_maps_dataset(dataset)?;
    let mut total = Tally::default();
    for piano in &all_pianos {
        if pianos.as_ref().is_some_and(|p| !p.contains(&piano.name.as_str())) {
            continue;
        }
        let trained_on = match options.get("train") {
            Some(name) => all_pianos.iter().find(|p| p.name == *name).expect("`train` names a piano of the dataset"),
            None => piano,
        };
        let learned = learn_or_load(trained_on, 10, Some(cache))?;
        let mut fast = Transcriber::for_method(Method::Cnmf, Model::Templates(learned.model))?;
        fast.decode = DecodeOptions { duration_seconds: Some(30.0), ..Default::default() };
        let mut exact = fast.clone();
        exact.regression.precision = Precision::Exact;
        let settings = &mut fast.regression.fast;
        if let Some(v) = num("extrapolate") {
            settings.extrapolate = v != 0.0;
        }
        if num("sparse") == Some(0.0) {
            settings.sparse = None;
        }
        if let Some(s) = settings.sparse.as_mut() {
            s.prune = num("prune").unwrap_or(s.prune);
            s.prune_after = num("prune_after").map_or(s.prune_after, |v| v as usize);
            s.dormant = num("dormant").unwrap_or(s.dormant);
            s.model_threshold = num("model_threshold").unwrap_or(s.model_threshold);
            s.init_prune = num("init_prune").unwrap_or(s.init_prune);
            s.refresh_every = num("refresh_every").map_or(s.refresh_every, |v| v as usize);
            s.after = num("after").map_or(s.after, |v| v as usize);
        }
        if let Some(song) = options.get("time") {
            // Timing mode: the best of `repeat` fast transcriptions of one audio file, then stop.
            let repeat = num("repeat").map_or(3, |v| v as usize);
            let runs: Vec<_> =
                (0..repeat).map(|_| fast.transcribe_file(Path::new(song))).collect::<sscnmf::Result<_>>()?;
            let best = |f: &dyn Fn(&sscnmf::transcription::StageTimes) -> f64| {
                runs.iter().map(|r| f(&r.times)).fold(f64::INFINITY, f64::min)
            };
            let total = best(&|t| t.decode + t.stft + t.init + t.iterations + t.notes);
            println!(
                "time {song}: best of {repeat}: total {total:.3} s, init {:.3} s, iterations {:.3} s ({:.1} s of audio, {:.1} GFLOP)",
                best(&|t| t.init),
                best(&|t| t.iterations),
                runs[0].audio_seconds,
                runs[0].times.flops / 1e9
            );
            return Ok(());
        }
        let detector = fast.detector;
        let mut tally = Tally::default();
        for song in piano.songs.iter().take(limit) {
            let reference = reference_excerpt(&read_notes(&song.reference)?, 30.0);
            let x = cached_activations(&exact, &song.audio, Some(cache))?;
            if !x.from_cache {
                eprintln!("{}: reference activations computed ({:.1} s) and cached", song.id, x.seconds);
            }
            let started = std::time::Instant::now();
            let f = fast.transcribe_file(&song.audio)?;
            let seconds = started.elapsed().as_secs_f64();
            let (fast_notes, exact_notes) =
                (detector.detect_with_peaks(&f.activations), detector.detect_with_peaks(&x.activations));
            let mut t = Tally {
                songs: 1,
                seconds,
                audio_seconds: f.audio_seconds,
                gflop: f.times.flops / 1e9,
                ..Default::default()
            };
            let scale = x.activations.max();
            t.largest_difference = f
                .activations
                .values
                .data
                .iter()
                .zip(&x.activations.values.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
                / scale;
            let key = |n: &sscnmf::notes::Note| (n.pitch, (n.onset * 1e6).round() as i64);
            let fast_by: HashMap<_, _> = fast_notes.iter().map(|(n, p)| (key(n), (n, *p))).collect();
            let exact_by: HashMap<_, _> = exact_notes.iter().map(|(n, p)| (key(n), (n, *p))).collect();
            t.one_path = fast_by.keys().filter(|k| !exact_by.contains_key(k)).count()
                + exact_by.keys().filter(|k| !fast_by.contains_key(k)).count();
            t.reference_notes = exact_notes.len();
            let (mut offsets, mut velocities) = (0, 0);
            for (k, (xn, xp)) in &exact_by {
                let Some((fnote, fp)) = fast_by.get(k) else { continue };
                t.all_peak_change.push((fp / xp - 1.0).abs());
                if fnote.offset != xn.offset {
                    offsets += 1;
                }
                if fnote.velocity != xn.velocity {
                    velocities += 1;
                    t.largest_velocity_step = t.largest_velocity_step.max(fnote.velocity.abs_diff(xn.velocity));
                    t.peak_change.push((fp / xp - 1.0).abs());
                    if let VelocityRule::LogPeak { intercept, slope } = detector.velocity {
                        let v = intercept + slope * xp.ln();
                        t.boundary_distance.push((v - v.floor() - 0.5).abs());
                    }
                }
            }
            t.offset_differs = offsets;
            t.velocity_differs = velocities;
            let same_onsets = t.one_path == 0;
            t.same_onsets = same_onsets as usize;
            t.same_offsets = (same_onsets && offsets == 0) as usize;
            let plain = |v: &[(sscnmf::notes::Note, f64)]| v.iter().map(|(n, _)| *n).collect::<Vec<_>>();
            t.identical = (plain(&fast_notes) == plain(&exact_notes)) as usize;
            t.fast_f = evaluate(&reference, &plain(&fast_notes), 0.05, 0.2).onset.f_measure;
            t.exact_f = evaluate(&reference, &plain(&exact_notes), 0.05, 0.2).onset.f_measure;
            if options.contains_key("verbose") {
                eprintln!("{}", t.line(&song.id));
            }
            tally.add(&t);
        }
        println!("{}", tally.line(&format!("{} -> {}", trained_on.name, piano.name)));
        total.add(&tally);
    }
    println!("{}", total.line("all"));
    Ok(())
}
