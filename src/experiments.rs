//! Experiments on MAPS-layout datasets: the paper's protocol (Wu, Marmoret &
//! Cohen 2022, §4).
//!
//! For every training piano and τ, templates are learned from the piano's
//! `ISOL/NO` recordings (intensity M, no sustain); for every test piano each
//! song's first `duration` seconds are transcribed once, and the onset rule's
//! δ is swept over a grid without recomputing the activations. Scores use
//! mir_eval's note matching ([`crate::evaluation`]); the F-measure of a set of
//! songs is the mean of the songs' F-measures.
//!
//! - **global δ**: the one δ of the grid with the best mean F over the songs
//!   of a (training piano, test piano, τ) condition (an oracle chosen on the
//!   test songs, as in the paper);
//! - **songwise δ**: each song's own best δ (the paper's second oracle).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;

use crate::audio::DecodeOptions;
use crate::evaluation::{evaluate, match_notes, MatchParams};
use crate::factorization::{Precision, RankOneCnmf};
use crate::notes::{read_notes, Note};
use crate::templates::{discover_maps_notes, is_audio_file, TemplateDictionary, TemplateLearner};
use crate::transcription::{ActivationScale, Activations, OnsetDetector, Transcriber};
use crate::{Error, Result};

/// A grid of thresholds `start:step:stop` (inclusive), or a comma list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdGrid(pub Vec<f64>);

impl FromStr for ThresholdGrid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid_input(format!("threshold grid `{s}`: expected start:step:stop or a,b,c"));
        let parse = |x: &str| x.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(bad);
        let parts: Vec<&str> = s.split(':').collect();
        let values = match parts.as_slice() {
            [start, step, stop] => {
                let (start, step, stop) = (parse(start)?, parse(step)?, parse(stop)?);
                if step <= 0.0 || stop < start {
                    return Err(bad());
                }
                let n = ((stop - start) / step + 1e-9).floor() as usize + 1;
                if n > 10_000 {
                    return Err(bad());
                }
                // Rounded to 1e-9 so that 0.01:0.01:0.4 gives 0.07, not 0.07000000000000001.
                (0..n).map(|i| ((start + i as f64 * step) * 1e9).round() / 1e9).collect()
            }
            [list] => list.split(',').map(parse).collect::<Result<Vec<_>>>()?,
            _ => return Err(bad()),
        };
        Ok(ThresholdGrid(values))
    }
}

/// One song of a dataset and its ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Song {
    /// The audio file's stem.
    pub id: String,
    /// The audio file.
    pub audio: PathBuf,
    /// The ground truth (MAPS .txt preferred, else .mid).
    pub reference: PathBuf,
}

/// One piano of a MAPS-layout dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Piano {
    /// Its folder name.
    pub name: String,
    /// `<piano>/ISOL/NO`.
    pub isolated_notes: PathBuf,
    /// The songs of `<piano>/MUS`.
    pub songs: Vec<Song>,
}

/// The pianos of a MAPS-layout folder: every sub-folder with `ISOL/NO` or
/// `MUS`, sorted by name.
pub fn discover_maps_dataset(dir: &Path) -> Result<Vec<Piano>> {
    let mut pianos = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for path in entries {
        let isol = path.join("ISOL").join("NO");
        let mus = path.join("MUS");
        if !isol.is_dir() && !mus.is_dir() {
            continue;
        }
        let mut songs = Vec::new();
        if mus.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&mus)
                .map_err(|e| Error::io(&mus, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_audio_file(p))
                .collect();
            files.sort();
            for audio in files {
                let txt = audio.with_extension("txt");
                let mid = audio.with_extension("mid");
                let reference = if txt.is_file() {
                    txt
                } else if mid.is_file() {
                    mid
                } else {
                    continue;
                };
                let id = audio.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                songs.push(Song { id, audio, reference });
            }
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        pianos.push(Piano { name, isolated_notes: isol, songs });
    }
    if pianos.is_empty() {
        return Err(Error::invalid_input("no piano folders with ISOL/NO or MUS inside").with_path(dir));
    }
    Ok(pianos)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ExperimentConfig {
    /// The dataset folder.
    pub dataset: PathBuf,
    /// Pianos whose songs are transcribed (empty: all).
    pub test_pianos: Vec<String>,
    /// Pianos whose templates are used (empty: the test pianos).
    pub train_pianos: Vec<String>,
    /// Only templates of a piano on its own songs.
    pub matched_only: bool,
    /// τ values.
    pub taus: Vec<usize>,
    /// δ grid.
    pub thresholds: ThresholdGrid,
    /// Seconds of each song.
    pub duration_seconds: f64,
    /// At most this many songs per piano.
    pub song_limit: Option<usize>,
    /// Activation scaling for the onset rule.
    pub scale: ActivationScale,
    /// f32 or f64.
    pub precision: Precision,
    /// Recorded in the report's header.
    pub command_line: String,
    /// Folder where learned templates are kept and reused (`None`: none).
    pub cache: Option<PathBuf>,
    /// Also run the reference path (f64, dense, the paper's iterations as
    /// they are) on every song and report how the fast path compares: F at
    /// the global and songwise δ, and the songs whose notes at the default δ
    /// are identical. Its activations are cached like the fast path's.
    pub compare_exact: bool,
}

/// Scores of one song at one δ.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Point {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F-measure.
    pub f_measure: f64,
    /// TP / (TP + FP + FN).
    pub accuracy: f64,
}

/// One song under one condition.
#[derive(Debug, Clone, Serialize)]
pub struct SongResult {
    /// Song id.
    pub song: String,
    /// Reference notes (onset before the duration).
    pub n_reference: usize,
    /// Onset-only scores at each δ of the grid.
    pub onset: Vec<Point>,
    /// Onset+offset F at each δ.
    pub onset_offset_f: Vec<f64>,
    /// Seconds to transcribe it (decode to activations).
    pub seconds: f64,
    /// With [`ExperimentConfig::compare_exact`]: the reference path's points
    /// on the same grid (empty otherwise).
    pub exact_onset: Vec<Point>,
    /// With [`ExperimentConfig::compare_exact`]: whether the fast and the
    /// reference path give the same notes at the default δ.
    pub identical_notes_at_default: Option<bool>,
    /// With [`ExperimentConfig::compare_exact`]: the notes at the default δ
    /// whose (pitch, onset) is found by only one of the two paths (a note
    /// moved by a frame counts twice).
    pub notes_on_one_path_at_default: Option<usize>,
    /// With [`ExperimentConfig::compare_exact`]: the reference path's notes
    /// at the default δ (0 otherwise).
    pub reference_notes_at_default: usize,
}

/// All songs of one (training piano, test piano, τ).
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    /// Templates' piano.
    pub train_piano: String,
    /// Songs' piano.
    pub test_piano: String,
    /// τ.
    pub tau: usize,
    /// Per song.
    pub songs: Vec<SongResult>,
    /// Index of the global δ in the grid.
    pub global_index: usize,
    /// Mean onset scores at the global δ.
    pub global: Point,
    /// Mean onset+offset F at the global δ.
    pub global_onset_offset_f: f64,
    /// Mean of each song's best onset scores (best by F).
    pub songwise: Point,
    /// Mean onset scores at the configured default δ (or the nearest grid value).
    pub at_default: Point,
    /// Seconds to learn the templates (0 when reused).
    pub learn_seconds: f64,
    /// With [`ExperimentConfig::compare_exact`]: the reference path at its
    /// own global δ and songwise.
    pub exact: Option<ExactComparison>,
}

/// The fast path against the reference path on one condition.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ExactComparison {
    /// Index of the reference path's global δ in the grid.
    pub global_index: usize,
    /// The reference path at its global δ.
    pub global: Point,
    /// The reference path at each song's best δ.
    pub songwise: Point,
    /// Songs whose notes at the default δ are the same on both paths.
    pub identical_songs: usize,
    /// Songs whose notes at the default δ have the same pitches and onsets
    /// on both paths (velocities or offsets may differ).
    pub same_onsets_songs: usize,
    /// Notes at the default δ found by one path only, over all songs.
    pub notes_on_one_path: usize,
    /// Notes of the reference path at the default δ, over all songs.
    pub reference_notes: usize,
}

/// The whole experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command that produced it.
    pub command_line: String,
    /// δ grid.
    pub thresholds: Vec<f64>,
    /// The default δ the tool uses.
    pub default_threshold: f64,
    /// Scaling of activations.
    pub activation_scale: String,
    /// Songs' duration.
    pub duration_seconds: f64,
    /// Cores on the machine.
    pub cores: usize,
    /// Per condition.
    pub conditions: Vec<Condition>,
}

fn mean_point(points: &[Point]) -> Point {
    let n = points.len().max(1) as f64;
    Point {
        precision: points.iter().map(|p| p.precision).sum::<f64>() / n,
        recall: points.iter().map(|p| p.recall).sum::<f64>() / n,
        f_measure: points.iter().map(|p| p.f_measure).sum::<f64>() / n,
        accuracy: points.iter().map(|p| p.accuracy).sum::<f64>() / n,
    }
}

impl Condition {
    fn summarise(
        train: &str,
        test: &str,
        tau: usize,
        songs: Vec<SongResult>,
        grid: &[f64],
        default: f64,
        learn_seconds: f64,
    ) -> Self {
        let global_index = best_global_index(&songs, grid.len(), |s| &s.onset);
        let at = |i: usize| mean_point(&songs.iter().map(|s| s.onset[i]).collect::<Vec<_>>());
        let exact = (!songs.is_empty() && songs.iter().all(|s| s.exact_onset.len() == grid.len() && !grid.is_empty()))
            .then(|| {
                let exact_index = best_global_index(&songs, grid.len(), |s| &s.exact_onset);
                ExactComparison {
                    global_index: exact_index,
                    global: mean_point(&songs.iter().map(|s| s.exact_onset[exact_index]).collect::<Vec<_>>()),
                    songwise: songwise_point(&songs, |s| &s.exact_onset),
                    identical_songs: songs.iter().filter(|s| s.identical_notes_at_default == Some(true)).count(),
                    same_onsets_songs: songs.iter().filter(|s| s.notes_on_one_path_at_default == Some(0)).count(),
                    notes_on_one_path: songs.iter().filter_map(|s| s.notes_on_one_path_at_default).sum(),
                    reference_notes: songs.iter().map(|s| s.reference_notes_at_default).sum(),
                }
            });
        let n_grid = grid.len();
        let default_index =
            (0..n_grid).min_by(|&a, &b| (grid[a] - default).abs().total_cmp(&(grid[b] - default).abs())).unwrap_or(0);
        Condition {
            train_piano: train.to_string(),
            test_piano: test.to_string(),
            tau,
            global_index,
            global: at(global_index),
            global_onset_offset_f: songs.iter().map(|s| s.onset_offset_f[global_index]).sum::<f64>()
                / songs.len().max(1) as f64,
            songwise: songwise_point(&songs, |s| &s.onset),
            at_default: at(default_index),
            songs,
            learn_seconds,
            exact,
        }
    }
}

/// The notes of `a` with no note of `b` at the same pitch and onset.
fn only_in(a: &[Note], b: &[Note]) -> usize {
    a.iter().filter(|x| !b.iter().any(|y| y.pitch == x.pitch && (y.onset - x.onset).abs() < 1e-9)).count()
}

/// The grid index with the best mean F over `songs` (ties: the smaller δ).
fn best_global_index(songs: &[SongResult], n_grid: usize, points: impl Fn(&SongResult) -> &[Point]) -> usize {
    let mean_f = |i: usize| songs.iter().map(|s| points(s)[i].f_measure).sum::<f64>() / songs.len().max(1) as f64;
    (0..n_grid).fold(0, |best, i| if mean_f(i) > mean_f(best) + 1e-12 { i } else { best })
}

/// The mean over `songs` of each song's best point (ties: the smaller δ).
fn songwise_point(songs: &[SongResult], points: impl Fn(&SongResult) -> &[Point]) -> Point {
    let best: Vec<Point> = songs
        .iter()
        .map(|s| {
            let p = points(s);
            *p.iter().fold(&p[0], |b, x| if x.f_measure > b.f_measure + 1e-12 { x } else { b })
        })
        .collect();
    mean_point(&best)
}

/// The reference notes of the first `duration` seconds: onsets before it,
/// offsets clipped to it.
pub fn reference_excerpt(notes: &[Note], duration: f64) -> Vec<Note> {
    notes.iter().filter(|n| n.onset < duration).map(|n| Note { offset: n.offset.min(duration), ..*n }).collect()
}

/// Scores `estimate` against `reference` at one δ (onset-only).
fn onset_point(reference: &[Note], estimate: &[Note]) -> Point {
    let tp = match_notes(reference, estimate, &MatchParams::onset_only()).len() as f64;
    let (nr, ne) = (reference.len() as f64, estimate.len() as f64);
    if nr == 0.0 || ne == 0.0 {
        return Point::default();
    }
    let (p, r) = (tp / ne, tp / nr);
    Point {
        precision: p,
        recall: r,
        f_measure: if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 },
        accuracy: tp / (nr + ne - tp),
    }
}

/// The templates of `piano` (its intensity-M, no-sustain isolated notes) at
/// `tau` with the default learning parameters: loaded from `cache` when a
/// file learned with the same parameters and tool version is there, else
/// learned (and saved there). Returns them with the seconds spent learning
/// (0 when loaded).
pub fn learn_or_load(piano: &Piano, tau: usize, cache: Option<&Path>) -> Result<(TemplateDictionary, f64)> {
    let started = Instant::now();
    let learner = TemplateLearner {
        cnmf: RankOneCnmf { tau, ..Default::default() },
        source: piano.isolated_notes.display().to_string(),
        ..Default::default()
    };
    let cached = cache.map(|dir| {
        dir.join(format!(
            "{}-M-tau{}-it{}-beta{}-v{}.templates",
            piano.name,
            tau,
            learner.cnmf.iterations,
            learner.cnmf.beta.value(),
            env!("CARGO_PKG_VERSION")
        ))
    });
    if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
        return Ok((TemplateDictionary::load(path)?, 0.0));
    }
    let notes = discover_maps_notes(&piano.isolated_notes, Some("M"), Some(0))?;
    let dictionary = learner.learn(&notes, |_| {})?;
    if let Some(path) = &cached {
        let dir = path.parent().expect("in a folder");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        dictionary.save(path)?;
    }
    Ok((dictionary, started.elapsed().as_secs_f64()))
}

/// FNV-1a, 64 bits: a stable digest for cache keys (std's hasher may change
/// between Rust releases; this is five lines and needs no crate).
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// Everything that shapes a song's activations, as text: the audio file
/// (path, size, modification time), the decoding, the regression settings,
/// a digest of the templates and the tool's version.
fn activation_key(transcriber: &Transcriber, audio: &Path) -> Result<String> {
    let meta = std::fs::metadata(audio).map_err(|e| Error::io(audio, e))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let d = transcriber.dictionary();
    let bytes: Vec<u8> = d.templates.data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let digest = fnv1a(&d.pitches, fnv1a(&bytes, FNV_OFFSET));
    Ok(format!(
        "audio={} size={} modified={:?} decode={:?} chunking={:?} regression={} stft={:?} templates={digest:016x} version={}",
        audio.display(),
        meta.len(),
        modified,
        transcriber.decode,
        transcriber.chunking,
        transcriber.regression.settings_key(),
        d.params.stft,
        env!("CARGO_PKG_VERSION")
    ))
}

/// The activations of `audio`, from `cache` (a folder) when an entry made
/// with exactly the same key is there, else computed and stored there. An
/// entry is written atomically, so an interrupted run never leaves one
/// half-written; an entry that does not parse or whose key differs is
/// recomputed.
pub fn cached_activations(transcriber: &Transcriber, audio: &Path, cache: Option<&Path>) -> Result<Activations> {
    let Some(dir) = cache else {
        return Ok(transcriber.transcribe_file(audio)?.activations);
    };
    let key = activation_key(transcriber, audio)?;
    let path = dir.join("activations").join(format!("{:016x}.safetensors", fnv1a(key.as_bytes(), FNV_OFFSET)));
    if let Some(hit) = std::fs::read(&path).ok().and_then(|bytes| read_activations(&bytes, &key)) {
        return Ok(hit);
    }
    let activations = transcriber.transcribe_file(audio)?.activations;
    let folder = path.parent().expect("in a folder");
    std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    crate::files::write_atomically(&path, &write_activations(&activations, &key)?)?;
    Ok(activations)
}

fn write_activations(a: &Activations, key: &str) -> Result<Vec<u8>> {
    use safetensors::tensor::{serialize, Dtype, TensorView};
    let bytes: Vec<u8> = a.values.data.iter().flat_map(|x| x.to_le_bytes()).collect();
    // Column-major K × N is row-major N × K.
    let view = TensorView::new(Dtype::F64, vec![a.values.cols, a.values.rows], &bytes)
        .map_err(|e| Error::internal(format!("activations tensor: {e}")))?;
    let meta: std::collections::HashMap<String, String> = [
        ("key".to_string(), key.to_string()),
        ("pitches".to_string(), serde_json::to_string(&a.pitches).expect("integers")),
        ("hop_seconds".to_string(), format!("{:e}", a.hop_seconds)),
        ("start_seconds".to_string(), format!("{:e}", a.start_seconds)),
    ]
    .into_iter()
    .collect();
    let bytes =
        serialize([("activations", view)], &Some(meta)).map_err(|e| Error::internal(format!("activations: {e}")))?;
    crate::files::canonical_safetensors(bytes)
}

fn read_activations(bytes: &[u8], key: &str) -> Option<Activations> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let meta = meta.metadata().as_ref()?;
    if meta.get("key").map(String::as_str) != Some(key) {
        return None;
    }
    let pitches: Vec<u8> = serde_json::from_str(meta.get("pitches")?).ok()?;
    let hop_seconds: f64 = meta.get("hop_seconds")?.parse().ok()?;
    let start_seconds: f64 = meta.get("start_seconds")?.parse().ok()?;
    let tensors = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let view = tensors.tensor("activations").ok()?;
    let (&[cols, rows], safetensors::Dtype::F64) = (view.shape(), view.dtype()) else {
        return None;
    };
    if rows != pitches.len() {
        return None;
    }
    let data: Vec<f64> =
        view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    let values = crate::factorization::Matrix::from_column_major(rows, cols, data).ok()?;
    Some(Activations { values, pitches, hop_seconds, start_seconds })
}

/// Runs the experiment, calling `progress(done, total, what)` as it goes.
pub fn run_experiment(config: &ExperimentConfig, progress: impl Fn(usize, usize, &str)) -> Result<Report> {
    let all = discover_maps_dataset(&config.dataset)?;
    let pick = |names: &[String]| -> Result<Vec<Piano>> {
        if names.is_empty() {
            return Ok(all.clone());
        }
        names
            .iter()
            .map(|n| {
                all.iter().find(|p| &p.name == n).cloned().ok_or_else(|| {
                    Error::invalid_input(format!(
                        "no piano `{n}` (found: {})",
                        all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                    .with_path(&config.dataset)
                })
            })
            .collect()
    };
    let tests = pick(&config.test_pianos)?;
    let trains = if config.train_pianos.is_empty() { tests.clone() } else { pick(&config.train_pianos)? };
    let limit = |p: &Piano| p.songs.len().min(config.song_limit.unwrap_or(usize::MAX));
    let mut total = 0;
    for tau in &config.taus {
        let _ = tau;
        for train in &trains {
            total += 1;
            for test in &tests {
                if !config.matched_only || train.name == test.name {
                    total += limit(test);
                }
            }
        }
    }
    let grid = &config.thresholds.0;
    if grid.is_empty() {
        return Err(Error::invalid_input("empty threshold grid"));
    }
    let default_threshold = OnsetDetector::default().threshold;
    let mut done = 0;
    let mut conditions = Vec::new();
    for &tau in &config.taus {
        for train in &trains {
            progress(done, total, &format!("learn {} τ={tau}", train.name));
            let (dictionary, learn_seconds) = learn_or_load(train, tau, config.cache.as_deref())?;
            done += 1;
            let mut transcriber = Transcriber::new(dictionary)?;
            transcriber.regression.precision = config.precision;
            transcriber.decode =
                DecodeOptions { duration_seconds: Some(config.duration_seconds), ..Default::default() };
            let exact_transcriber = config.compare_exact.then(|| {
                let mut exact = transcriber.clone();
                exact.regression.precision = Precision::Exact;
                exact
            });
            for test in &tests {
                if config.matched_only && train.name != test.name {
                    continue;
                }
                let mut songs = Vec::new();
                for song in test.songs.iter().take(limit(test)) {
                    progress(done, total, &format!("{}→{} {}", train.name, test.name, song.id));
                    let reference = reference_excerpt(&read_notes(&song.reference)?, config.duration_seconds);
                    let cache = config.cache.as_deref();
                    let started = Instant::now();
                    let activations = cached_activations(&transcriber, &song.audio, cache)?;
                    let seconds = started.elapsed().as_secs_f64();
                    let sweep = |activations: &Activations| {
                        let mut onset = Vec::with_capacity(grid.len());
                        let mut onset_offset_f = Vec::with_capacity(grid.len());
                        for &delta in grid {
                            let detector =
                                OnsetDetector { threshold: delta, scale: config.scale, ..Default::default() };
                            let estimate = detector.detect(activations);
                            onset.push(onset_point(&reference, &estimate));
                            onset_offset_f.push(evaluate(&reference, &estimate, 0.05, 0.2).onset_offset.f_measure);
                        }
                        (onset, onset_offset_f)
                    };
                    let (onset, onset_offset_f) = sweep(&activations);
                    let (mut exact_onset, mut identical_notes_at_default) = (Vec::new(), None);
                    let (mut notes_on_one_path_at_default, mut reference_notes_at_default) = (None, 0);
                    if let Some(exact) = &exact_transcriber {
                        let exact_activations = cached_activations(exact, &song.audio, cache)?;
                        exact_onset = sweep(&exact_activations).0;
                        let detector = OnsetDetector { scale: config.scale, ..Default::default() };
                        let (fast_notes, exact_notes) =
                            (detector.detect(&activations), detector.detect(&exact_activations));
                        identical_notes_at_default = Some(fast_notes == exact_notes);
                        notes_on_one_path_at_default =
                            Some(only_in(&fast_notes, &exact_notes) + only_in(&exact_notes, &fast_notes));
                        reference_notes_at_default = exact_notes.len();
                    }
                    songs.push(SongResult {
                        song: song.id.clone(),
                        n_reference: reference.len(),
                        onset,
                        onset_offset_f,
                        seconds,
                        exact_onset,
                        identical_notes_at_default,
                        notes_on_one_path_at_default,
                        reference_notes_at_default,
                    });
                    done += 1;
                }
                conditions.push(Condition::summarise(
                    &train.name,
                    &test.name,
                    tau,
                    songs,
                    grid,
                    default_threshold,
                    learn_seconds,
                ));
            }
        }
    }
    progress(total, total, "done");
    Ok(Report {
        command_line: config.command_line.clone(),
        thresholds: grid.clone(),
        default_threshold,
        activation_scale: format!("{:?}", config.scale),
        duration_seconds: config.duration_seconds,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        conditions,
    })
}

impl Report {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("# sscnmf experiment\n\nCommand: `{}`\n\n", self.command_line));
        s.push_str(&format!(
            "First {} s of each song; onset tolerance 50 ms; δ grid {}..{} ({} values), activations scaled: {}; \
             F is the mean of the songs' F-measures; {} cores.\n\n",
            self.duration_seconds,
            self.thresholds.first().unwrap_or(&0.0),
            self.thresholds.last().unwrap_or(&0.0),
            self.thresholds.len(),
            self.activation_scale,
            self.cores
        ));
        s.push_str(&format!(
            "| templates | songs | τ | global δ | P | R | Onset F1 (global) | Acc | Onset + offset F1 (global) | Onset F1 (songwise) | Onset F1 (default δ = {}) | learn s | transcribe s/song |\n",
            self.default_threshold
        ));
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for c in &self.conditions {
            let per_song = c.songs.iter().map(|x| x.seconds).sum::<f64>() / c.songs.len().max(1) as f64;
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.1} | {:.1} | **{:.1}** | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
                c.train_piano,
                c.test_piano,
                c.tau,
                self.thresholds[c.global_index],
                100.0 * c.global.precision,
                100.0 * c.global.recall,
                100.0 * c.global.f_measure,
                100.0 * c.global.accuracy,
                100.0 * c.global_onset_offset_f,
                100.0 * c.songwise.f_measure,
                100.0 * c.at_default.f_measure,
                c.learn_seconds,
                per_song
            ));
        }
        if self.conditions.iter().any(|c| c.exact.is_some()) {
            s.push_str(
                "\nFast path (f32, sparse, extrapolated) against the reference path (f64, dense, the paper's \
                 iterations as they are), onset F1 (%):\n\n",
            );
            s.push_str("| templates | songs | τ | fast global (δ) | reference global (δ) | fast songwise | reference songwise | songs with identical notes at the default δ | same pitches and onsets | notes on one path only |\n|---|---|---|---|---|---|---|---|---|---|\n");
            for c in &self.conditions {
                let Some(x) = &c.exact else { continue };
                s.push_str(&format!(
                    "| {} | {} | {} | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.2} | {:.2} | {} of {} | {} of {} | {} of {} |\n",
                    c.train_piano,
                    c.test_piano,
                    c.tau,
                    100.0 * c.global.f_measure,
                    self.thresholds[c.global_index],
                    100.0 * x.global.f_measure,
                    self.thresholds[x.global_index],
                    100.0 * c.songwise.f_measure,
                    100.0 * x.songwise.f_measure,
                    x.identical_songs,
                    c.songs.len(),
                    x.same_onsets_songs,
                    c.songs.len(),
                    x.notes_on_one_path,
                    x.reference_notes
                ));
            }
        }
        s.push_str("\nPer song (onset F1 at the condition's global δ / at the song's best δ):\n\n");
        s.push_str("| templates | songs | τ | song | notes | F1 global | F1 best | best δ |\n|---|---|---|---|---|---|---|---|\n");
        for c in &self.conditions {
            for song in &c.songs {
                let (bi, best) = song.onset.iter().enumerate().fold((0, &song.onset[0]), |b, (i, p)| {
                    if p.f_measure > b.1.f_measure + 1e-12 {
                        (i, p)
                    } else {
                        b
                    }
                });
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} |\n",
                    c.train_piano,
                    c.test_piano,
                    c.tau,
                    song.song,
                    song.n_reference,
                    100.0 * song.onset[c.global_index].f_measure,
                    100.0 * best.f_measure,
                    self.thresholds[bi]
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_grids_parse() {
        let g: ThresholdGrid = "0.01:0.01:0.40".parse().unwrap();
        assert_eq!(g.0.len(), 40);
        assert_eq!(g.0[6], 0.07);
        assert_eq!(*g.0.last().unwrap(), 0.4);
        let g: ThresholdGrid = "0.1,0.2".parse().unwrap();
        assert_eq!(g.0, vec![0.1, 0.2]);
        assert!("0.1:0:1".parse::<ThresholdGrid>().is_err());
        assert!("a:b:c".parse::<ThresholdGrid>().is_err());
    }

    #[test]
    fn global_and_songwise_selection() {
        let p = |f: f64| Point { precision: f, recall: f, f_measure: f, accuracy: f };
        let song = |fs: &[f64]| SongResult {
            song: "s".into(),
            n_reference: 1,
            onset: fs.iter().map(|&f| p(f)).collect(),
            onset_offset_f: vec![0.0; fs.len()],
            seconds: 0.0,
            exact_onset: Vec::new(),
            identical_notes_at_default: None,
            notes_on_one_path_at_default: None,
            reference_notes_at_default: 0,
        };
        // Song A peaks at δ index 0, song B at index 2; the mean peaks at index 1.
        let songs = vec![song(&[0.9, 0.8, 0.1]), song(&[0.1, 0.7, 0.8])];
        let c = Condition::summarise("a", "b", 10, songs, &[0.1, 0.2, 0.3], 0.2, 0.0);
        assert_eq!(c.global_index, 1);
        assert!((c.global.f_measure - 0.75).abs() < 1e-12);
        assert!((c.songwise.f_measure - 0.85).abs() < 1e-12);
        assert!((c.at_default.f_measure - 0.75).abs() < 1e-12);
    }

    #[test]
    fn cached_activations_round_trip_and_check_their_key() {
        let mut values = crate::factorization::Matrix::zeros(3, 5);
        values.set(1, 4, 0.25);
        values.set(2, 0, 1.0 / 3.0);
        let a = Activations { values, pitches: vec![60, 62, 64], hop_seconds: 0.02, start_seconds: 1.5 };
        let bytes = write_activations(&a, "key one").unwrap();
        let back = read_activations(&bytes, "key one").unwrap();
        assert_eq!(back.values, a.values);
        assert_eq!((back.pitches, back.hop_seconds, back.start_seconds), (a.pitches.clone(), 0.02, 1.5));
        assert!(read_activations(&bytes, "key two").is_none());
        assert!(read_activations(&bytes[..bytes.len() - 1], "key one").is_none());
        assert!(read_activations(b"", "key one").is_none());
    }
}
