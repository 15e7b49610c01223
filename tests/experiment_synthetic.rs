//! The experiment on a synthetic dataset it writes itself, in the MAPS
//! layout: two pianos of three pitches each (decaying harmonic tones of two
//! timbres), three short songs per piano with their MAPS .txt, and one song
//! that cannot be decoded. Checks that the tables are what their definitions
//! say (global δ = argmax of the mean F, songwise = mean of each song's
//! max, the cross-piano matrix), that the scores do not depend on `jobs`,
//! that a second run is served by the cache, that the broken song is
//! reported while the others go on, and that a MAESTRO-layout folder of the
//! same songs gives the same scores with templates from the MAPS folder.
//! A second test runs the three methods (CNMF, NMF, attack/decay) side by
//! side: their conditions, their cache entries and their determinism.

use std::path::Path;

mod common;

use sscnmf::evaluation::evaluate;
use sscnmf::experiments::{
    learn_or_load, reference_excerpt, run_experiment, ExperimentConfig, Piano, Report, SongResult,
};
use sscnmf::notes::{read_notes, write_notes, Note, NoteFormat};
use sscnmf::transcription::{Method, OnsetDetector, Transcriber};

const RATE: u32 = 44100;
const PITCHES: [u8; 3] = [60, 64, 67];
const PIANOS: [&str; 2] = ["PianoA", "PianoB"];

/// A decaying harmonic tone; the two pianos differ in their harmonics and
/// decay.
fn tone(piano: usize, pitch: u8, seconds: f64) -> Vec<f32> {
    let f0 = 440.0 * 2f64.powf((f64::from(pitch) - 69.0) / 12.0);
    let (decay, rolloff) = [(0.6, 1.0), (0.3, 2.5)][piano];
    let n = (seconds * f64::from(RATE)) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let release = ((seconds - t) / 0.01).min(1.0);
            let env = (t / 0.005).min(1.0) * (-t / decay).exp() * release;
            let s: f64 = (1..=6)
                .map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / (h as f64).powf(rolloff))
                .sum();
            (0.1 * env * s) as f32
        })
        .collect()
}

/// The songs' scores: (onset, pitch, gain); every note lasts 0.5 s. Onsets
/// are whole 10 ms so that MIDI (0.1 ms ticks) stores them exactly. The
/// quiet notes (a fraction of the loudest) are lost at large δ, and each
/// song has its own balance, so that songs prefer different δ.
const SONGS: [&[(f64, u8, f32)]; 3] = [
    &[(0.3, 60, 1.0), (0.8, 64, 0.3), (1.3, 67, 0.5), (1.8, 60, 0.2), (1.8, 67, 1.0)],
    &[(0.2, 67, 1.0), (0.6, 64, 0.12), (1.0, 60, 0.8), (1.0, 64, 0.15), (1.6, 67, 0.6), (2.0, 60, 0.1)],
    &[(0.4, 64, 0.4), (0.4, 67, 0.4), (1.2, 60, 1.0), (1.7, 64, 0.25), (1.74, 67, 0.35), (2.1, 67, 0.07)],
];

fn song_notes(score: &[(f64, u8, f32)]) -> Vec<Note> {
    score.iter().map(|&(onset, pitch, _)| Note { onset, offset: onset + 0.5, pitch, velocity: 64 }).collect()
}

/// `<dir>/<piano>/ISOL/NO` and `<dir>/<piano>/MUS`, plus a broken song in
/// PianoB.
fn write_maps_dataset(dir: &Path) {
    for (p, name) in PIANOS.iter().enumerate() {
        let isol = dir.join(name).join("ISOL/NO");
        let mus = dir.join(name).join("MUS");
        std::fs::create_dir_all(&isol).unwrap();
        std::fs::create_dir_all(&mus).unwrap();
        for pitch in PITCHES {
            let mut audio = vec![0.0f32; RATE as usize / 5];
            audio.extend(tone(p, pitch, 1.5));
            common::write_wav(&isol.join(format!("MAPS_ISOL_NO_M_S0_M{pitch}_{name}.wav")), RATE, &audio);
        }
        for (s, score) in SONGS.iter().enumerate() {
            let mut audio = vec![0.0f32; (2.8 * f64::from(RATE)) as usize];
            for &(onset, pitch, gain) in *score {
                let start = (onset * f64::from(RATE)).round() as usize;
                for (i, x) in tone(p, pitch, 0.5).into_iter().enumerate() {
                    audio[start + i] += gain * x;
                }
            }
            let stem = mus.join(format!("MAPS_MUS-song{s}_{name}"));
            common::write_wav(&stem.with_extension("wav"), RATE, &audio);
            write_notes(&stem.with_extension("txt"), &song_notes(score), NoteFormat::MapsTxt).unwrap();
        }
    }
    let broken = dir.join("PianoB/MUS/MAPS_MUS-broken_PianoB");
    std::fs::write(broken.with_extension("wav"), b"RIFF\x10\x00\x00\x00WAVEjunk that is not audio").unwrap();
    write_notes(&broken.with_extension("txt"), &song_notes(SONGS[0]), NoteFormat::MapsTxt).unwrap();
}

fn config(dataset: &Path, cache: &Path, jobs: usize) -> ExperimentConfig {
    ExperimentConfig {
        thresholds: "0.05:0.05:0.40".parse().unwrap(),
        cache: Some(cache.to_path_buf()),
        command_line: "synthetic".into(),
        jobs,
        ..ExperimentConfig::new(dataset)
    }
}

fn run(config: &ExperimentConfig) -> Report {
    run_experiment(config, |done, total, _| assert!(done <= total)).unwrap()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.filter_map(|e| e.ok()).map(|e| files_in(&e.path()).max(1)).sum())
}

/// The grid index of the best mean F over `songs`, computed directly.
fn argmax_of_mean(songs: &[SongResult], n: usize) -> usize {
    let mean = |i: usize| songs.iter().map(|s| s.onset[i].f_measure).sum::<f64>() / songs.len() as f64;
    let mut best = 0;
    for i in 1..n {
        if mean(i) > mean(best) + 1e-12 {
            best = i;
        }
    }
    best
}

#[test]
fn synthetic_maps_experiment_tables_cache_and_failures() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("maps");
    write_maps_dataset(&data);
    let cache = root.path().join("cache");
    let report = run(&config(&data, &cache, 2));
    let grid = &report.thresholds;
    assert_eq!(grid.len(), 8);

    // Every piano's templates on every piano's songs, in order.
    let names: Vec<(&str, &str)> =
        report.conditions.iter().map(|c| (c.train_piano.as_str(), c.test_piano.as_str())).collect();
    assert_eq!(names, [("PianoA", "PianoA"), ("PianoA", "PianoB"), ("PianoB", "PianoA"), ("PianoB", "PianoB")]);
    let tables = report.cross_piano();
    assert_eq!(tables.len(), 1);
    assert_eq!((tables[0].method.as_str(), tables[0].tau), ("cnmf", Some(10)));
    assert_eq!(tables[0].train, ["PianoA", "PianoB"]);
    assert_eq!(tables[0].test, ["PianoA", "PianoB"]);
    assert_eq!(tables[0].cells, [[Some(0), Some(1)], [Some(2), Some(3)]]);

    for c in &report.conditions {
        assert_eq!(c.method, "cnmf");
        assert_eq!(c.songs.len(), 3, "{} on {}", c.train_piano, c.test_piano);
        assert_eq!(c.templates.templates, 3);
        assert!(!c.templates.from_cache && c.songs.iter().all(|s| !s.from_cache));
        // The global δ is the argmax of the mean F; the global scores are the
        // means there; songwise is the mean of each song's best.
        let g = argmax_of_mean(&c.songs, grid.len());
        assert_eq!(c.global_index, g);
        let n = c.songs.len() as f64;
        let mean_at = |f: &dyn Fn(&SongResult) -> f64| c.songs.iter().map(f).sum::<f64>() / n;
        assert!((c.global.f_measure - mean_at(&|s| s.onset[g].f_measure)).abs() < 1e-12);
        assert!((c.global.precision - mean_at(&|s| s.onset[g].precision)).abs() < 1e-12);
        assert!((c.global_onset_offset_f - mean_at(&|s| s.onset_offset_f[g])).abs() < 1e-12);
        let max_f = |s: &SongResult| s.onset.iter().map(|p| p.f_measure).fold(0.0, f64::max);
        assert!((c.songwise.f_measure - mean_at(&max_f)).abs() < 1e-12);
        // The songs prefer different δ (the quiet notes), so no one δ is
        // best for all of them.
        assert!(c.songwise.f_measure > c.global.f_measure + 0.01, "{} on {}", c.train_piano, c.test_piano);
        // Failures are kept apart: only PianoB's broken song, with its file named.
        if c.test_piano == "PianoB" {
            assert_eq!(c.failed.len(), 1);
            assert_eq!(c.failed[0].song, "MAPS_MUS-broken_PianoB");
            assert!(c.failed[0].error.contains("MAPS_MUS-broken_PianoB.wav"), "{}", c.failed[0].error);
        } else {
            assert!(c.failed.is_empty());
        }
    }
    // The synthetic pianos are easy on their own templates.
    assert!(report.conditions[0].songwise.f_measure >= 0.8, "{:?}", report.conditions[0].songwise);
    assert!(report.conditions[3].songwise.f_measure >= 0.8, "{:?}", report.conditions[3].songwise);

    // A song's sweep is what the onset rule and the evaluation give at each δ.
    let pianos: Vec<Piano> = sscnmf::experiments::discover_maps_dataset(&data).unwrap();
    let transcriber = Transcriber::new(learn_or_load(&pianos[0], 10, Some(&cache)).unwrap().model).unwrap();
    let song = &pianos[0].songs[1];
    let activations = transcriber.transcribe_file(&song.audio).unwrap().activations;
    let reference = reference_excerpt(&read_notes(&song.reference).unwrap(), 30.0);
    let result = &report.conditions[0].songs[1];
    assert_eq!((result.song.as_str(), result.n_reference), ("MAPS_MUS-song1_PianoA", 6));
    for (i, &delta) in grid.iter().enumerate() {
        let notes = OnsetDetector { threshold: delta, ..Default::default() }.detect(&activations);
        let e = evaluate(&reference, &notes, 0.05, 0.2);
        assert_eq!(result.onset[i].f_measure, e.onset.f_measure, "δ = {delta}");
        assert_eq!(result.onset_offset_f[i], e.onset_offset.f_measure, "δ = {delta}");
    }

    // The outputs: tables, per-song CSV, failed songs.
    let out = root.path().join("out");
    report.write(&out).unwrap();
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in ["## Table 1", "Onset + offset F1 (global)", "## Table 2", "## Table 3", "## Failed songs"] {
        assert!(markdown.contains(needle), "`{needle}` not in the report:\n{markdown}");
    }
    let csv = std::fs::read_to_string(out.join("songs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 3);
    let row: Vec<&str> = csv.lines().nth(2).unwrap().split(',').collect();
    assert_eq!(&row[..5], ["cnmf", "PianoA", "PianoA", "10", "MAPS_MUS-song1_PianoA"]);
    assert_eq!(row[9].parse::<f64>().unwrap(), result.onset[report.conditions[0].global_index].f_measure);
    assert_eq!(row[15].parse::<f64>().unwrap(), result.onset[result.best_index()].f_measure);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["conditions"][1]["failed"][0]["song"], "MAPS_MUS-broken_PianoB");

    // One song at a time, on a cold cache of its own: the same report, to
    // the byte, once the timings are zeroed.
    let serial = run(&config(&data, &root.path().join("cache-serial"), 1));
    let zeroed = |r: &Report| {
        let r = r.with_timings_zeroed();
        (r.to_markdown(), serde_json::to_string(&r).unwrap(), r.songs_csv())
    };
    assert_eq!(zeroed(&serial), zeroed(&report));

    // A second run is served by the cache: nothing new is written and every
    // song and dictionary says it came from there, with the same scores.
    let cached_files = files_in(&cache);
    assert_eq!(cached_files, 2 * 2 + 4 * 3, "2 dictionaries with their records, 12 songs' activations");
    let again = run(&config(&data, &cache, 2));
    assert_eq!(files_in(&cache), cached_files);
    for (a, b) in again.conditions.iter().zip(&report.conditions) {
        assert!(a.templates.from_cache && a.songs.iter().all(|s| s.from_cache));
        // serde_json (without its float_roundtrip feature) may read the
        // record back one ulp off.
        assert!(
            (a.templates.seconds - b.templates.seconds).abs() <= 1e-12 * b.templates.seconds,
            "the recorded learning time"
        );
        for (x, y) in a.songs.iter().zip(&b.songs) {
            assert_eq!(x.onset, y.onset);
            assert_eq!(x.seconds, y.seconds, "the recorded transcription time");
        }
    }
    assert!(again.to_markdown().contains("cached (recorded"));

    // The same songs in the MAESTRO layout (MIDI references, a CSV index
    // with a quoted title, two splits), templates from the MAPS folder.
    let maestro = root.path().join("maestro");
    std::fs::create_dir_all(maestro.join("2004")).unwrap();
    let mut index =
        String::from("canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n");
    for (s, piano_song) in pianos[0].songs.iter().enumerate() {
        let stem = format!("2004/song{s}");
        std::fs::copy(&piano_song.audio, maestro.join(format!("{stem}.wav"))).unwrap();
        write_notes(
            &maestro.join(format!("{stem}.midi")),
            &read_notes(&piano_song.reference).unwrap(),
            NoteFormat::Midi,
        )
        .unwrap();
        let split = if s == 2 { "train" } else { "test" };
        index.push_str(&format!("Synth,\"Song {s}, in C\",{split},2004,{stem}.midi,{stem}.wav,2.8\n"));
    }
    std::fs::write(maestro.join("maestro-v3.0.0.csv"), index).unwrap();
    let mut maestro_config = config(&maestro, &cache, 2);
    let err = run_experiment(&maestro_config, |_, _, _| {}).unwrap_err().to_string();
    assert!(err.contains("--templates-from") && err.contains("maestro"), "{err}");
    maestro_config.templates_from = Some(data.clone());
    maestro_config.train_pianos = vec!["PianoA".into()];
    let on_maestro = run(&maestro_config);
    assert!(on_maestro.layout.contains("MAESTRO") && on_maestro.layout.contains("split test"), "{}", on_maestro.layout);
    assert_eq!(on_maestro.conditions.len(), 1);
    let c = &on_maestro.conditions[0];
    assert_eq!((c.train_piano.as_str(), c.test_piano.as_str()), ("PianoA", "maestro-test"));
    assert!(c.templates.from_cache, "PianoA's templates are reused");
    assert_eq!(c.songs.iter().map(|s| s.song.as_str()).collect::<Vec<_>>(), ["song0", "song1"]);
    for (x, y) in c.songs.iter().zip(&report.conditions[0].songs) {
        assert_eq!(x.onset, y.onset, "{} against {}", x.song, y.song);
    }
    maestro_config.split = Some("train".into());
    maestro_config.song_limit = Some(1);
    assert_eq!(run(&maestro_config).conditions[0].songs.len(), 1);
}

/// The (method, τ, templates, songs) of each condition.
fn condition_keys(report: &Report) -> Vec<(String, Option<usize>, String, String)> {
    report.conditions.iter().map(|c| (c.method.clone(), c.tau, c.train_piano.clone(), c.test_piano.clone())).collect()
}

#[test]
fn synthetic_experiment_runs_the_three_methods_side_by_side() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("maps");
    write_maps_dataset(&data);
    let cache = root.path().join("cache");
    let three = |cache: &Path, jobs: usize| ExperimentConfig {
        methods: vec![Method::Cnmf, Method::Nmf, Method::AttackDecay, Method::Nmf],
        taus: vec![5, 10],
        ..config(&data, cache, jobs)
    };
    let report = run(&three(&cache, 2));

    // Rows grouped by method in the order asked for (the repeated nmf runs
    // once): CNMF and NMF at each τ, attack/decay once per pair, without τ.
    let keys = condition_keys(&report);
    let pairs = [("PianoA", "PianoA"), ("PianoA", "PianoB"), ("PianoB", "PianoA"), ("PianoB", "PianoB")];
    let mut expected = Vec::new();
    for method in ["cnmf", "nmf"] {
        for tau in [5, 10] {
            expected.extend(pairs.iter().map(|&(a, b)| (method.to_string(), Some(tau), a.to_string(), b.to_string())));
        }
    }
    expected.extend(pairs.iter().map(|&(a, b)| ("attack-decay".to_string(), None, a.to_string(), b.to_string())));
    assert_eq!(keys, expected);
    for c in &report.conditions {
        assert_eq!(c.songs.len(), 3, "{} {} on {}", c.method, c.train_piano, c.test_piano);
        assert_eq!(c.failed.len(), usize::from(c.test_piano == "PianoB"));
        assert_eq!(c.templates.templates, 3, "the model of {} for {}", c.train_piano, c.method);
        assert!(!c.templates.from_cache && c.songs.iter().all(|s| !s.from_cache));
    }
    // Each method is its own model: on its own piano the attack/decay
    // model finds the notes, and its activations are not CNMF's.
    let find = |method: &str, tau: Option<usize>| {
        report.conditions.iter().find(|c| c.method == method && c.tau == tau && c.train_piano == c.test_piano).unwrap()
    };
    assert!(find("attack-decay", None).songwise.f_measure >= 0.5, "{:?}", find("attack-decay", None).songwise);
    let onsets = |c: &sscnmf::experiments::Condition| c.songs.iter().map(|s| s.onset.clone()).collect::<Vec<_>>();
    assert_ne!(onsets(find("attack-decay", None)), onsets(find("cnmf", Some(10))));
    let tables: Vec<(String, Option<usize>)> = report.cross_piano().into_iter().map(|t| (t.method, t.tau)).collect();
    assert_eq!(
        tables,
        [("cnmf", Some(5)), ("cnmf", Some(10)), ("nmf", Some(5)), ("nmf", Some(10)), ("attack-decay", None)]
            .map(|(m, t)| (m.to_string(), t))
    );

    // Every (method, model, song) has its own activations in the cache, so
    // NMF never reads CNMF's: 20 conditions of 3 songs; 2 pianos × 2 τ
    // dictionaries and 2 attack/decay models, each with its record.
    assert_eq!(files_in(&cache.join("activations")), 20 * 3);
    assert_eq!(files_in(&cache), 20 * 3 + 2 * (2 * 2 + 2));

    let markdown = report.to_markdown();
    for needle in ["| attack-decay | PianoA | PianoB | – |", "| nmf | PianoB | PianoA | 5 |", "(attack-decay, no τ;"]
    {
        assert!(markdown.contains(needle), "`{needle}` not in the report:\n{markdown}");
    }
    let csv = report.songs_csv();
    assert_eq!(csv.lines().count(), 1 + 20 * 3);
    assert!(csv.contains("\nattack-decay,PianoA,PianoA,,MAPS_MUS-song0_PianoA,"), "{csv}");

    // One song at a time on a cold cache: the same report once the timings
    // are zeroed.
    let serial = run(&three(&root.path().join("cache-serial"), 1));
    let zeroed = |r: &Report| {
        let r = r.with_timings_zeroed();
        (r.to_markdown(), serde_json::to_string(&r).unwrap(), r.songs_csv())
    };
    assert_eq!(zeroed(&serial), zeroed(&report));

    // A second run is served by the cache for every method, with the same
    // scores, and writes nothing.
    let cached_files = files_in(&cache);
    let again = run(&three(&cache, 2));
    assert_eq!(files_in(&cache), cached_files);
    assert_eq!(condition_keys(&again), keys);
    for (a, b) in again.conditions.iter().zip(&report.conditions) {
        assert!(a.templates.from_cache && a.songs.iter().all(|s| s.from_cache), "{} {:?}", a.method, a.tau);
        // serde_json (without its float_roundtrip feature) may read the
        // record back one ulp off.
        assert!(
            (a.templates.seconds - b.templates.seconds).abs() <= 1e-12 * b.templates.seconds,
            "the recorded learning time"
        );
        for (x, y) in a.songs.iter().zip(&b.songs) {
            assert_eq!(x.onset, y.onset);
        }
    }
}

/// PianoA's isolated notes at intensities M and F (gains 1 and 2, velocities
/// 70 and 100) with a one-note `.mid` beside each, and its songs with `.mid`
/// references (velocity 64): what the calibration needs.
fn write_calibratable_piano(dir: &Path) {
    let isol = dir.join("PianoA/ISOL/NO");
    let mus = dir.join("PianoA/MUS");
    std::fs::create_dir_all(&isol).unwrap();
    std::fs::create_dir_all(&mus).unwrap();
    for pitch in PITCHES {
        for (intensity, gain, velocity) in [("M", 1.0, 70), ("F", 2.0, 100)] {
            let mut audio = vec![0.0f32; RATE as usize / 5];
            audio.extend(tone(0, pitch, 1.5).into_iter().map(|x| gain * x));
            let stem = isol.join(format!("MAPS_ISOL_NO_{intensity}_S0_M{pitch}_PianoA"));
            common::write_wav(&stem.with_extension("wav"), RATE, &audio);
            let note = Note { onset: 0.2, offset: 1.69, pitch, velocity };
            write_notes(&stem.with_extension("mid"), &[note], NoteFormat::Midi).unwrap();
        }
    }
    for (s, score) in SONGS.iter().enumerate() {
        let mut audio = vec![0.0f32; (2.8 * f64::from(RATE)) as usize];
        for &(onset, pitch, gain) in *score {
            let start = (onset * f64::from(RATE)).round() as usize;
            for (i, x) in tone(0, pitch, 0.5).into_iter().enumerate() {
                audio[start + i] += gain * x;
            }
        }
        let stem = mus.join(format!("MAPS_MUS-song{s}_PianoA"));
        common::write_wav(&stem.with_extension("wav"), RATE, &audio);
        write_notes(&stem.with_extension("mid"), &song_notes(score), NoteFormat::Midi).unwrap();
    }
}

#[test]
fn calibrated_templates_in_the_experiment_and_in_learn() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("maps");
    write_calibratable_piano(&data);
    let cache = root.path().join("cache");
    let cfg = ExperimentConfig { methods: vec![Method::Cnmf, Method::Nmf], ..config(&data, &cache, 2) };
    let report = run(&cfg);
    let (cnmf, nmf) = (&report.conditions[0], &report.conditions[1]);
    assert_eq!((cnmf.method.as_str(), nmf.method.as_str()), ("cnmf", "nmf"));
    // CNMF reads the calibration cached beside the templates; NMF runs the uncalibrated rule.
    let calibrations: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".calibration-"))
        .collect();
    assert_eq!(calibrations.len(), 1, "{calibrations:?}");
    let c = sscnmf::calibration::Calibration::from_json(&std::fs::read_to_string(&calibrations[0]).unwrap()).unwrap();
    assert!(cnmf.calibrated && !nmf.calibrated);
    assert_eq!((cnmf.default_threshold, nmf.default_threshold), (c.threshold, 0.11));
    assert!(cnmf.default_rule_description.starts_with("mean pitch peak; "), "{}", cnmf.default_rule_description);
    assert_eq!(nmf.default_rule_description, "max; 0.01 of the peak");
    // The songs' .mid give velocity scores; the calibrated rule finds the loud notes and nothing else
    // (the songs' quietest notes, 7-20 % of the loudest, are meant to be lost at some δ).
    assert!(cnmf.default_rule.onset_velocity_f.is_some() && cnmf.default_rule.velocity_mae.is_some());
    let found = cnmf.default_rule.onset;
    assert!(found.precision >= 0.95 && found.f_measure >= 0.75, "{:?}", cnmf.default_rule);
    assert_eq!(cnmf.at_default, cnmf.default_rule.onset);
    let markdown = report.to_markdown();
    for needle in [
        format!("| cnmf | PianoA | PianoA | 10 | {:.2} (calibrated) | mean pitch peak; ", c.threshold),
        "| nmf | PianoA | PianoA | 10 | 0.11 (uncalibrated) | max; 0.01 of the peak |".to_string(),
        "nmf and attack-decay do not use the calibration".to_string(),
    ] {
        assert!(markdown.contains(&needle), "`{needle}` not in the report:\n{markdown}");
    }
    // A second run reads templates, calibration and activations from the cache: the same scores.
    let again = run(&cfg);
    assert_eq!(again.conditions[0].default_rule, cnmf.default_rule);
    assert!(again.conditions[0].templates.from_cache);

    // `learn` calibrates on the same notes (the experiment learns from intensity M only, as `learn`
    // by default), unless told not to; `transcribe` says when a dictionary is uncalibrated.
    let isol = data.join("PianoA/ISOL/NO");
    let (with, without) = (root.path().join("with.templates"), root.path().join("without.templates"));
    let learn = |out: &Path, extra: &[&str]| {
        let mut args = vec!["learn", isol.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = common::sscnmf(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(learn(&with, &[]).contains("calibrated on a 60 s mix"));
    assert!(!learn(&without, &["--no-calibrate"]).contains("calibrated"));
    let learned = sscnmf::templates::TemplateDictionary::load(&with).unwrap();
    assert_eq!(learned.calibration, Some(c));
    assert_eq!(sscnmf::templates::TemplateDictionary::load(&without).unwrap().calibration, None);
    let song = data.join("PianoA/MUS/MAPS_MUS-song0_PianoA.wav");
    for (templates, noted) in [(&with, false), (&without, true)] {
        let out = root.path().join("song.mid");
        let o = common::sscnmf(&[
            "transcribe",
            song.to_str().unwrap(),
            "--templates",
            templates.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--overwrite",
        ]);
        assert!(o.status.success());
        assert_eq!(String::from_utf8_lossy(&o.stderr).contains("has no calibration"), noted);
    }
}

/// Issue 7 item 4: one template per pitch and intensity (M and F here), in
/// the experiment (reported, cached under its own name, its merge and
/// selection in the activations' key) and in `learn` / `transcribe`.
#[test]
fn several_intensities_in_the_experiment_and_in_learn() {
    use sscnmf::transcription::{IntensityMerge, IntensitySelection};
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("maps");
    write_calibratable_piano(&data);
    let cache = root.path().join("cache");
    let one = run(&config(&data, &cache, 2));
    let two_cfg = ExperimentConfig { intensities: vec!["M".into(), "F".into()], ..config(&data, &cache, 2) };
    let two = run(&two_cfg);
    assert_eq!(one.intensities, None);
    assert!(!one.to_markdown().contains("Templates: one template per pitch and intensity"));
    let (c1, c2) = (&one.conditions[0], &two.conditions[0]);
    assert_eq!((c1.templates.templates, c2.templates.templates), (3, 6));
    let description = two.intensities.clone().unwrap();
    assert!(description.contains("(M, F)") && description.contains("merged by sum"), "{description}");
    assert!(two.to_markdown().contains(&format!("Templates: {description}.")));
    let names: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n.contains("-MF-tau10-") && n.ends_with(".templates")), "{names:?}");
    // The same tones at two gains: the merged rows find the same notes as one template per pitch.
    assert!(c2.calibrated && c2.default_rule.onset.precision >= 0.95, "{:?}", c2.default_rule);
    assert!((c2.default_rule.onset.f_measure - c1.default_rule.onset.f_measure).abs() <= 0.1, "{c1:?} {c2:?}");
    // The merge and the selection are part of the activations' key: changing them recomputes.
    for (merge, selection) in [
        (IntensityMerge::Max, IntensitySelection::All),
        (IntensityMerge::Sum, IntensitySelection::Active { fraction: 1.0 }),
    ] {
        let cfg = ExperimentConfig { intensity_merge: merge, intensity_selection: selection, ..two_cfg.clone() };
        let r = run(&cfg);
        let c = &r.conditions[0];
        assert!(c.templates.from_cache && c.songs.iter().all(|s| !s.from_cache));
        assert!(c.global.f_measure >= c2.global.f_measure - 0.1, "{merge:?} {selection:?}: {:?}", c.global);
        assert!(r.intensities.unwrap().contains(&format!("merged by {}", merge.name())));
    }
    assert!(run(&two_cfg).conditions[0].songs.iter().all(|s| s.from_cache));

    // `learn --intensity M,F` writes 6 templates labelled by intensity; `transcribe` reads them.
    let isol = data.join("PianoA/ISOL/NO");
    let out = root.path().join("mf.templates");
    let o = common::sscnmf(&["learn", isol.to_str().unwrap(), "-o", out.to_str().unwrap(), "--intensity", "M,F"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && stderr.contains("wrote 6 templates for 3 pitches"), "{stderr}");
    let d = sscnmf::templates::TemplateDictionary::load(&out).unwrap();
    assert_eq!(d.pitches, vec![60, 60, 64, 64, 67, 67]);
    assert_eq!(d.intensities, ["M", "F", "M", "F", "M", "F"]);
    assert!(d.calibration.is_some());
    let song = data.join("PianoA/MUS/MAPS_MUS-song0_PianoA.wav");
    let midi = root.path().join("song.mid");
    let o = common::sscnmf(&[
        "transcribe",
        song.to_str().unwrap(),
        "--templates",
        out.to_str().unwrap(),
        "-o",
        midi.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let notes = read_notes(&midi).unwrap();
    let reference = song_notes(SONGS[0]);
    assert!(evaluate(&reference, &notes, 0.05, 0.2).onset.f_measure >= 0.75, "{notes:?}");
    // Several intensities need a MAPS folder.
    let manifest = root.path().join("m.csv");
    std::fs::write(&manifest, "path,midi\nmaps/PianoA/ISOL/NO/MAPS_ISOL_NO_M_S0_M60_PianoA.wav,60\n").unwrap();
    let o = common::sscnmf(&[
        "learn",
        "--manifest",
        manifest.to_str().unwrap(),
        "-o",
        root.path().join("x.templates").to_str().unwrap(),
        "--intensity",
        "M,F",
    ]);
    common::assert_input_error(&o, "several --intensity values need a MAPS folder");
}

/// Every file under `dir`, with its bytes.
fn file_contents(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(file_contents(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// Ctrl-C in the middle of `sscnmf experiment`: the process ends with code
/// 130, every cache entry it wrote is whole (it loads), no temporary file
/// and no report is left; the re-run reuses those entries untouched (they
/// are the songs.csv rows marked from_cache) and completes the report.
#[test]
fn an_interrupted_experiment_leaves_a_whole_cache_and_a_rerun_resumes_from_it() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("maps");
    write_maps_dataset(&data);
    let out = root.path().join("out");
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let args: Vec<String> = [
        "experiment",
        &arg(&data),
        "--tau",
        "5,10,20",
        "--methods",
        "cnmf,nmf",
        "--jobs",
        "1",
        "--quiet",
        "--out",
        &arg(&out),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sscnmf"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let activations = out.join("cache/activations");
    // A whole cached song: a file that is not a temporary one still being written
    // (an interrupt then removes the temporary file, and nothing would be cached).
    let whole = |dir: &std::path::Path| {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter_map(|e| e.ok()).filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp")).count()
        })
    };
    while whole(&activations) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "the experiment ended before any song was cached");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let kill = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");

    let before = file_contents(&out);
    for (path, bytes) in &before {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(!name.starts_with(".tmp"), "temporary file left: {path:?}");
        assert!(
            !matches!(name, "report.md" | "results.json" | "songs.csv"),
            "a report from an unfinished run: {path:?}"
        );
        if name.ends_with(".safetensors") || name.ends_with(".templates") {
            safetensors::SafeTensors::deserialize(bytes).unwrap_or_else(|e| panic!("{path:?} is not whole: {e}"));
        }
    }
    let cached_songs = before.iter().filter(|(p, _)| p.starts_with(&activations)).count();
    assert!(cached_songs > 0);

    let o = common::sscnmf(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        o.status.code(),
        Some(2),
        "the broken song fails, the rest completes: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let after = file_contents(&out);
    for (path, bytes) in &before {
        let now = after.iter().find(|(p, _)| p == path).unwrap_or_else(|| panic!("{path:?} was removed"));
        assert_eq!(&now.1, bytes, "{path:?} was rewritten");
    }
    let songs_csv = std::fs::read_to_string(out.join("songs.csv")).unwrap();
    let from_cache = songs_csv.lines().skip(1).filter(|l| l.ends_with(",true")).count();
    assert_eq!(from_cache, cached_songs, "{songs_csv}");
    assert!(songs_csv.lines().skip(1).any(|l| l.ends_with(",false")), "the re-run computed the rest");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("broken"));
}

/// `--adapt` in the experiment: the report says it is on, its activations
/// are cached apart from the fixed templates' (the keys of runs without it
/// are unchanged), and on the two synthetic pianos (different partials and
/// decays) the cross-piano conditions lose nothing to it while the model
/// stays deterministic.
#[test]
fn synthetic_experiment_with_adapted_templates() {
    use sscnmf::factorization::Adaptation;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("maps");
    write_maps_dataset(&data);
    let cache = root.path().join("cache");
    let fixed = run(&ExperimentConfig { taus: vec![5], ..config(&data, &cache, 2) });
    let entries = files_in(&cache.join("activations"));
    let adapted_config =
        ExperimentConfig { taus: vec![5], adaptation: Some(Adaptation::default()), ..config(&data, &cache, 2) };
    let adapted = run(&adapted_config);
    assert_eq!(fixed.adaptation, None);
    assert_eq!(adapted.adaptation, Some(Adaptation::default()));
    assert!(adapted.to_markdown().contains("Templates adapted to each song"));
    assert!(!fixed.to_markdown().contains("Templates adapted"));
    // New entries for the adapted activations, none reused from the fixed run.
    assert_eq!(files_in(&cache.join("activations")), 2 * entries);
    assert!(adapted.conditions.iter().flat_map(|c| &c.songs).all(|s| !s.from_cache));
    // A second adapted run is served by the cache and scores the same.
    let again = run(&adapted_config);
    assert!(again.conditions.iter().flat_map(|c| &c.songs).all(|s| s.from_cache));
    for (a, b) in adapted.conditions.iter().zip(&again.conditions) {
        assert_eq!((a.global, a.songwise), (b.global, b.songwise));
    }
    for (f, a) in fixed.conditions.iter().zip(&adapted.conditions) {
        assert_eq!((&f.train_piano, &f.test_piano), (&a.train_piano, &a.test_piano));
        assert_eq!(f.songs.len(), a.songs.len());
        if f.train_piano != f.test_piano {
            assert!(
                a.songwise.f_measure >= f.songwise.f_measure - 0.02,
                "{}→{}: adapted {} < fixed {}",
                f.train_piano,
                f.test_piano,
                a.songwise.f_measure,
                f.songwise.f_measure
            );
        }
    }
}
