//! Experiments on MAPS and MAESTRO datasets: the paper's protocol (Wu,
//! Marmoret & Cohen 2022, §4).
//!
//! For every training piano and τ, templates are learned from the piano's
//! `ISOL/NO` recordings (intensity M, no sustain); for every test piano each
//! song's first `duration` seconds are transcribed once, and the onset rule's
//! δ is swept over a grid without recomputing the activations. Besides the
//! paper's CNMF, the `methods` of [`ExperimentConfig`] can add its baselines with the
//! same pre- and post-processing: supervised NMF on the first slices of the
//! same templates (at each τ), and the attack/decay model of Cheng et al.
//! (2016), learned from the same isolated notes (it has no τ, so it runs
//! once per pair of pianos). Scores use
//! mir_eval's note matching ([`crate::evaluation`]); the F-measure of a set of
//! songs is the mean of the songs' F-measures.
//!
//! - **global δ**: the one δ of the grid with the best mean F over the songs
//!   of a (method, training piano, test piano, τ) condition (an oracle chosen
//!   on the test songs, as in the paper);
//! - **songwise δ**: each song's own best δ (the paper's second oracle).
//!
//! Songs run `jobs` at a time on their own threads; the products inside each
//! transcription share rayon's global pool, whose kernels cut their work in
//! fixed blocks, so the scores do not depend on `jobs`. Only each song's
//! scores on the δ grid are kept, never its activations, so memory is
//! bounded by the songs in flight. A song that cannot be read or transcribed
//! is recorded with its error ([`FailedSong`]) and the run goes on. The
//! datasets' layouts are described in [`dataset`], the cache in [`cache`],
//! the report's tables in [`report`].

pub mod cache;
pub mod dataset;
pub mod report;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

pub use cache::{
    cached_activations, cores, learn_or_load, learn_or_load_attack_decay, learn_or_load_intensities, LearnRecord,
    Learned, LearnedAttackDecay, LearnedTemplates, SongActivations,
};
pub use dataset::{dataset_layout, discover_maestro_dataset, discover_maps_dataset, DatasetLayout, Piano, Song};
pub use report::CrossPianoTable;

use crate::audio::DecodeOptions;
use crate::evaluation::{
    evaluate, precision_recall_f1_velocity, velocity_mean_absolute_error, MatchParams, Scores, VELOCITY_TOLERANCE,
};
use crate::factorization::{Adaptation, Precision};
use crate::notes::{read_notes, Note};
use crate::transcription::{
    ActivationScale, Activations, IntensityMerge, IntensitySelection, Method, Model, OnsetDetector, Transcriber,
    DEFAULT_INTENSITY_SELECTION,
};
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

/// What to run. [`ExperimentConfig::new`] gives the paper's settings.
#[derive(Debug, Clone)]
pub struct ExperimentConfig {
    /// The dataset folder: MAPS layout, or MAESTRO's (a `maestro-v*.csv`
    /// index inside); see [`dataset`].
    pub dataset: PathBuf,
    /// MAPS pianos whose songs are transcribed (empty: all). Must be empty
    /// for MAESTRO (its songs are one test set).
    pub test_pianos: Vec<String>,
    /// Pianos whose templates are used (empty: the test pianos, or every
    /// piano of [`templates_from`](Self::templates_from) when it is set).
    pub train_pianos: Vec<String>,
    /// A MAPS folder whose pianos' isolated notes give the templates
    /// (`None`: the dataset itself; required for MAESTRO).
    pub templates_from: Option<PathBuf>,
    /// MAESTRO's split (`train`, `validation` or `test`; `None`: `test`).
    /// Must be `None` for MAPS.
    pub split: Option<String>,
    /// Only templates of a piano on its own songs.
    pub matched_only: bool,
    /// τ values.
    pub taus: Vec<usize>,
    /// δ grid.
    pub thresholds: ThresholdGrid,
    /// Seconds of each song.
    pub duration_seconds: f64,
    /// At most this many songs per test piano (MAESTRO: the first rows of
    /// the split in the index's order).
    pub song_limit: Option<usize>,
    /// Activation scaling for the onset rule.
    pub scale: ActivationScale,
    /// f32 or f64.
    pub precision: Precision,
    /// Fit only the bins below this frequency in Hz (CNMF and NMF, both
    /// paths; [`Transcriber::set_max_frequency`]); `None`: the transcriber's
    /// default ([`crate::transcription::DEFAULT_MAX_FREQUENCY`] for CNMF and
    /// NMF). The templates are learned and calibrated as without it.
    pub max_frequency: Option<f64>,
    /// Fit every bin (CNMF and NMF), whatever the default; overrides
    /// [`max_frequency`](Self::max_frequency).
    pub full_band: bool,
    /// Recorded in the report's header.
    pub command_line: String,
    /// Folder where learned templates and activations are kept and reused
    /// (`None`: none).
    pub cache: Option<PathBuf>,
    /// Also run the reference path (f64, dense, the paper's iterations as
    /// they are) on every song and report how the fast path compares: F at
    /// the global and songwise δ, and the songs whose notes at the default δ
    /// are identical. Its activations are cached like the fast path's.
    pub compare_exact: bool,
    /// Songs transcribed at a time (0: one per core).
    pub jobs: usize,
    /// The methods to run (default: CNMF alone). CNMF and NMF run at every
    /// τ of [`taus`](Self::taus) on that τ's templates (NMF on their first
    /// slices); the attack/decay model has no τ and runs once per pair of
    /// pianos, on its own model learned from the same isolated notes.
    pub methods: Vec<Method>,
    /// Adapt the templates to each song ([`crate::factorization::adapt`];
    /// CNMF and NMF, not the attack/decay model). Default `None`.
    pub adaptation: Option<Adaptation>,
    /// The MAPS intensities the templates are learned from (default `M`:
    /// one template per pitch, the paper's); several (`P`, `M`, `F`) give
    /// one template per pitch and intensity, their rows merged per pitch
    /// (CNMF and NMF; the attack/decay model keeps intensity M).
    pub intensities: Vec<String>,
    /// How several templates' rows are merged (default sum).
    pub intensity_merge: IntensityMerge,
    /// Which of several templates CNMF's convolutive iterations use
    /// (default [`DEFAULT_INTENSITY_SELECTION`]).
    pub intensity_selection: IntensitySelection,
}

impl ExperimentConfig {
    /// The paper's protocol on `dataset`: every piano's templates on every
    /// piano's songs, τ = 10, δ in 0.01:0.01:0.40, the first 30 s, max-scaled
    /// activations, fast path, no cache, one song per core.
    pub fn new(dataset: impl Into<PathBuf>) -> Self {
        ExperimentConfig {
            dataset: dataset.into(),
            test_pianos: Vec::new(),
            train_pianos: Vec::new(),
            templates_from: None,
            split: None,
            matched_only: false,
            taus: vec![10],
            thresholds: "0.01:0.01:0.40".parse().expect("valid grid"),
            duration_seconds: 30.0,
            song_limit: None,
            scale: ActivationScale::Max,
            precision: Precision::Fast,
            max_frequency: None,
            full_band: false,
            command_line: String::new(),
            cache: None,
            compare_exact: false,
            jobs: 0,
            methods: vec![Method::Cnmf],
            adaptation: None,
            intensities: vec!["M".to_string()],
            intensity_merge: IntensityMerge::Sum,
            intensity_selection: DEFAULT_INTENSITY_SELECTION,
        }
    }

    /// Whether the templates have several intensities (the report says so).
    pub fn several_intensities(&self) -> bool {
        self.intensities.len() > 1
    }

    /// [`intensities`](Self::intensities) and their merge and selection, in
    /// words, when there are several (`None` for one intensity).
    pub fn intensities_description(&self) -> Option<String> {
        self.several_intensities().then(|| {
            let selection = match self.intensity_selection {
                IntensitySelection::All => "all templates in the convolutive iterations".to_string(),
                IntensitySelection::Active { fraction } => format!(
                    "per chunk, after {} NMF iterations on all templates, the paper's regression on the templates \
                     of each pitch whose summed activation is at least {fraction} of the pitch's most active one",
                    crate::transcription::SELECTION_ITERATIONS
                ),
            };
            format!(
                "one template per pitch and intensity ({}), the activation rows of a pitch merged by {}; {selection}",
                self.intensities.join(", "),
                self.intensity_merge.name()
            )
        })
    }

    /// [`methods`](Self::methods) without repeats, in the order given;
    /// an error when there is none.
    fn methods(&self) -> Result<Vec<Method>> {
        let mut methods: Vec<Method> = Vec::new();
        for &m in &self.methods {
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        if methods.is_empty() {
            return Err(Error::invalid_input("no method to run (expected cnmf, nmf or attack-decay)"));
        }
        Ok(methods)
    }
}

/// Scores of one song at one δ.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
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

impl From<Scores> for Point {
    fn from(s: Scores) -> Point {
        Point { precision: s.precision, recall: s.recall, f_measure: s.f_measure, accuracy: s.accuracy }
    }
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
    /// Seconds of audio transcribed.
    pub audio_seconds: f64,
    /// Wall seconds to transcribe it (decode to activations): measured in
    /// this run, or recorded by the run that filled the cache when
    /// [`from_cache`](Self::from_cache).
    pub seconds: f64,
    /// Whether its activations came from the cache.
    pub from_cache: bool,
    /// With [`ExperimentConfig::compare_exact`]: the reference path's points
    /// on the same grid (empty otherwise).
    pub exact_onset: Vec<Point>,
    /// With [`ExperimentConfig::compare_exact`]: whether the main path
    /// (fast or faithful) and the reference path give the same notes at the
    /// default δ.
    pub identical_notes_at_default: Option<bool>,
    /// With [`ExperimentConfig::compare_exact`]: the notes at the default δ
    /// whose (pitch, onset) is found by only one of the two paths (a note
    /// moved by a frame counts twice).
    pub notes_on_one_path_at_default: Option<usize>,
    /// With [`ExperimentConfig::compare_exact`]: the reference path's notes
    /// at the default δ (0 otherwise).
    pub reference_notes_at_default: usize,
    /// The scores of the tool's default decision rule (the dictionary's
    /// calibration, or the uncalibrated defaults).
    pub default_rule: RuleScores,
}

/// The scores of one decision rule on one song, or their means over songs.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct RuleScores {
    /// Onset-only scores.
    pub onset: Point,
    /// Onset + offset F (offset ratio 0.2).
    pub onset_offset_f: f64,
    /// Onset + velocity F (mir_eval.transcription_velocity, offsets ignored,
    /// velocity tolerance 0.1); `None` when the reference has no velocities
    /// (a MAPS `.txt` without its `.mid`).
    pub onset_velocity_f: Option<f64>,
    /// Onset + offset + velocity F (mir_eval.transcription_velocity's
    /// defaults).
    pub onset_offset_velocity_f: Option<f64>,
    /// Mean absolute velocity error (MIDI units) of the onset-matched notes.
    pub velocity_mae: Option<f64>,
}

impl RuleScores {
    /// The scores of `estimate` against `reference` (and `with_velocity`, the
    /// reference with its velocities, when there is one).
    pub fn of(reference: &[Note], with_velocity: Option<&[Note]>, estimate: &[Note]) -> RuleScores {
        let scores = evaluate(reference, estimate, 0.05, 0.2);
        let velocity_f = |params: MatchParams| {
            with_velocity.map(|r| precision_recall_f1_velocity(r, estimate, &params, VELOCITY_TOLERANCE).f_measure)
        };
        RuleScores {
            onset: Point::from(scores.onset),
            onset_offset_f: scores.onset_offset.f_measure,
            onset_velocity_f: velocity_f(MatchParams::onset_only()),
            onset_offset_velocity_f: velocity_f(MatchParams::onset_offset()),
            velocity_mae: with_velocity.map(|r| velocity_mean_absolute_error(r, estimate, &MatchParams::onset_only())),
        }
    }

    /// The mean over `all` (each optional score over the songs that have it).
    pub fn mean(all: &[RuleScores]) -> RuleScores {
        let some = |f: &dyn Fn(&RuleScores) -> Option<f64>| {
            let v: Vec<f64> = all.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| mean(v.into_iter()))
        };
        RuleScores {
            onset: mean_point(&all.iter().map(|r| r.onset).collect::<Vec<_>>()),
            onset_offset_f: mean(all.iter().map(|r| r.onset_offset_f)),
            onset_velocity_f: some(&|r| r.onset_velocity_f),
            onset_offset_velocity_f: some(&|r| r.onset_offset_velocity_f),
            velocity_mae: some(&|r| r.velocity_mae),
        }
    }
}

impl SongResult {
    /// The grid index of the song's best onset F (ties: the smaller δ).
    pub fn best_index(&self) -> usize {
        best_index(&self.onset)
    }
}

fn best_index(points: &[Point]) -> usize {
    (0..points.len()).fold(0, |b, i| if points[i].f_measure > points[b].f_measure + 1e-12 { i } else { b })
}

/// A song that could not be scored, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedSong {
    /// Song id.
    pub song: String,
    /// Its audio file.
    pub audio: PathBuf,
    /// The one-line error (it names the file).
    pub error: String,
}

/// All songs of one (method, training piano, test piano, τ).
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    /// The transcription method ([`Method::name`]: `cnmf`, `nmf`,
    /// `attack-decay`).
    pub method: String,
    /// Templates' piano.
    pub train_piano: String,
    /// Songs' piano.
    pub test_piano: String,
    /// τ of the templates (CNMF; NMF uses their first slices); `None` for
    /// the attack/decay model, which has none.
    pub tau: Option<usize>,
    /// The songs scored.
    pub songs: Vec<SongResult>,
    /// The songs that failed (not in the means).
    pub failed: Vec<FailedSong>,
    /// Index of the global δ in the grid.
    pub global_index: usize,
    /// Mean onset scores at the global δ.
    pub global: Point,
    /// Mean onset+offset F at the global δ.
    pub global_onset_offset_f: f64,
    /// Mean of each song's best onset scores (best by onset F).
    pub songwise: Point,
    /// Mean onset+offset F, each song at its best onset δ.
    pub songwise_onset_offset_f: f64,
    /// Mean onset scores of the tool's default rule (its δ, on its own
    /// activation scaling: [`default_rule`](Self::default_rule)'s onset).
    pub at_default: Point,
    /// The δ of the tool's default rule for these templates: calibrated on
    /// their isolated notes, or [`crate::transcription::DEFAULT_THRESHOLD`].
    pub default_threshold: f64,
    /// Whether the default rule is the templates' calibration (cnmf on
    /// calibrated templates).
    pub calibrated: bool,
    /// The default rule's scaling and offset rule, in words.
    pub default_rule_description: String,
    /// Mean scores of the tool's default decision rule (its own δ, offsets
    /// and velocities).
    pub default_rule: RuleScores,
    /// How the model (the templates, or the attack/decay model) was
    /// obtained and how long learning it took.
    pub templates: LearnRecord,
    /// With [`ExperimentConfig::compare_exact`]: the reference path at its
    /// own global δ and songwise.
    pub exact: Option<ExactComparison>,
    /// The highest frequency fitted, in Hz (the top kept bin's), when the
    /// regression fits only the lowest bins (both paths); `None`: all bins.
    pub max_frequency: Option<f64>,
}

/// The main runs' path (fast or faithful) against the reference path on one condition.
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
    /// The dataset folder.
    pub dataset: PathBuf,
    /// Its layout, in words (`MAPS`, or `MAESTRO` with the index and split).
    pub layout: String,
    /// The MAPS folder the templates came from.
    pub templates_from: PathBuf,
    /// δ grid.
    pub thresholds: Vec<f64>,
    /// The δ the tool uses for templates without a calibration.
    pub default_threshold: f64,
    /// Scaling of activations.
    pub activation_scale: String,
    /// The regression path of the main runs (CNMF and NMF), in words.
    pub path: String,
    /// Songs' duration.
    pub duration_seconds: f64,
    /// Cores of the machine (`std::thread::available_parallelism`).
    pub cores: usize,
    /// Songs transcribed at a time.
    pub jobs: usize,
    /// Wall seconds of the whole run.
    pub wall_seconds: f64,
    /// With several intensities ([`ExperimentConfig::intensities`]): the
    /// templates, merge and selection in words (`None`: one template per
    /// pitch, intensity M).
    pub intensities: Option<String>,
    /// Per condition.
    pub conditions: Vec<Condition>,
    /// The template adaptation, when it was on (CNMF and NMF).
    pub adaptation: Option<Adaptation>,
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

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n.max(1) as f64
}

/// Which condition: method, training piano, test piano, τ.
struct ConditionKey<'a> {
    method: Method,
    train: &'a str,
    test: &'a str,
    tau: Option<usize>,
}

impl Condition {
    fn summarise(
        key: ConditionKey<'_>,
        songs: Vec<SongResult>,
        failed: Vec<FailedSong>,
        grid: &[f64],
        default: f64,
        templates: LearnRecord,
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
        let default_rule = RuleScores::mean(&songs.iter().map(|s| s.default_rule).collect::<Vec<_>>());
        Condition {
            method: key.method.to_string(),
            train_piano: key.train.to_string(),
            test_piano: key.test.to_string(),
            tau: key.tau,
            global_index,
            global: at(global_index),
            global_onset_offset_f: mean(songs.iter().map(|s| s.onset_offset_f[global_index])),
            songwise: songwise_point(&songs, |s| &s.onset),
            songwise_onset_offset_f: mean(songs.iter().map(|s| s.onset_offset_f[s.best_index()])),
            at_default: default_rule.onset,
            default_threshold: default,
            calibrated: false,
            default_rule_description: String::new(),
            default_rule,
            songs,
            failed,
            templates,
            exact,
            max_frequency: None,
        }
    }
}

/// The notes of `a` with no note of `b` at the same pitch and onset.
fn only_in(a: &[Note], b: &[Note]) -> usize {
    a.iter().filter(|x| !b.iter().any(|y| y.pitch == x.pitch && (y.onset - x.onset).abs() < 1e-9)).count()
}

/// The grid index with the best mean F over `songs` (ties: the smaller δ).
fn best_global_index(songs: &[SongResult], n_grid: usize, points: impl Fn(&SongResult) -> &[Point]) -> usize {
    let mean_f = |i: usize| mean(songs.iter().map(|s| points(s)[i].f_measure));
    (0..n_grid).fold(0, |best, i| if mean_f(i) > mean_f(best) + 1e-12 { i } else { best })
}

/// The mean over `songs` of each song's best point (ties: the smaller δ).
fn songwise_point(songs: &[SongResult], points: impl Fn(&SongResult) -> &[Point]) -> Point {
    let best: Vec<Point> = songs.iter().map(|s| points(s)[best_index(points(s))]).collect();
    mean_point(&best)
}

/// A detector's scaling and offset rule, in words (for the report).
pub fn rule_description(d: &OnsetDetector) -> String {
    use crate::transcription::OffsetRule;
    let scale = match d.scale {
        ActivationScale::Max => "max",
        ActivationScale::MeanPitchPeak => "mean pitch peak",
        ActivationScale::Raw => "raw",
    };
    let offsets = match d.offsets {
        OffsetRule::RunEnd => "end of the on-run".to_string(),
        OffsetRule::Decay { fraction, rate, bridge } => format!(
            "{fraction} of the {}peak{}",
            if rate.is_some() { "free-decaying " } else { "" },
            if bridge > 1 { format!(", bridge {bridge}") } else { String::new() }
        ),
    };
    format!("{scale}; {offsets}")
}

/// The reference notes with velocities of a song whose reference is a MAPS
/// `.txt` (which has none): the `.mid` beside it, if any; the reference
/// itself when it is a MIDI file; `None` otherwise.
pub fn velocity_reference(reference: &std::path::Path) -> Result<Option<Vec<Note>>> {
    let ext = reference.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let midi = match ext.as_str() {
        "mid" | "midi" => reference.to_path_buf(),
        _ => reference.with_extension("mid"),
    };
    if !midi.is_file() {
        return Ok(None);
    }
    read_notes(&midi).map(Some)
}

/// The reference notes of the first `duration` seconds: onsets before it,
/// offsets clipped to it.
pub fn reference_excerpt(notes: &[Note], duration: f64) -> Vec<Note> {
    notes.iter().filter(|n| n.onset < duration).map(|n| Note { offset: n.offset.min(duration), ..*n }).collect()
}

/// Runs `f(0..n)` on `jobs` threads (each taking the next index when it is
/// free), and returns the results in index order.
fn run_parallel<T: Send>(n: usize, jobs: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        let r = f(i);
        *slots[i].lock().expect("not poisoned") = Some(r);
    };
    std::thread::scope(|s| {
        for _ in 1..jobs.clamp(1, n.max(1)) {
            s.spawn(work);
        }
        work();
    });
    slots.into_iter().map(|m| m.into_inner().expect("not poisoned").expect("every index ran")).collect()
}

/// What every song of one (training piano, τ) shares.
struct SongRunner<'a> {
    config: &'a ExperimentConfig,
    transcriber: Transcriber,
    exact: Option<Transcriber>,
}

impl SongRunner<'_> {
    /// The scores of `song` on the δ grid; its activations are dropped.
    fn run(&self, song: &Song) -> Result<SongResult> {
        let config = self.config;
        let grid = &config.thresholds.0;
        let reference = reference_excerpt(&read_notes(&song.reference)?, config.duration_seconds);
        let cache = config.cache.as_deref();
        let fast = cached_activations(&self.transcriber, &song.audio, cache)?;
        let with_velocity =
            velocity_reference(&song.reference)?.map(|notes| reference_excerpt(&notes, config.duration_seconds));
        // The tool's own rule as it is (δ, scaling, offsets, velocities); the sweep changes δ on the
        // configured scaling and keeps the rest.
        let default_detector = self.transcriber.detector;
        let sweep = |activations: &Activations| -> (Vec<Point>, Vec<f64>) {
            grid.iter()
                .map(|&delta| {
                    let detector = OnsetDetector { threshold: delta, scale: config.scale, ..default_detector };
                    let scores = evaluate(&reference, &detector.detect(activations), 0.05, 0.2);
                    (Point::from(scores.onset), scores.onset_offset.f_measure)
                })
                .unzip()
        };
        let (onset, onset_offset_f) = sweep(&fast.activations);
        let mut result = SongResult {
            song: song.id.clone(),
            n_reference: reference.len(),
            onset,
            onset_offset_f,
            audio_seconds: fast.audio_seconds,
            seconds: fast.seconds,
            from_cache: fast.from_cache,
            exact_onset: Vec::new(),
            identical_notes_at_default: None,
            notes_on_one_path_at_default: None,
            reference_notes_at_default: 0,
            default_rule: RuleScores::of(
                &reference,
                with_velocity.as_deref(),
                &default_detector.detect(&fast.activations),
            ),
        };
        if let Some(exact) = &self.exact {
            let exact_activations = cached_activations(exact, &song.audio, cache)?.activations;
            result.exact_onset = sweep(&exact_activations).0;
            let detector = default_detector;
            let (fast_notes, exact_notes) = (detector.detect(&fast.activations), detector.detect(&exact_activations));
            result.identical_notes_at_default = Some(fast_notes == exact_notes);
            result.notes_on_one_path_at_default =
                Some(only_in(&fast_notes, &exact_notes) + only_in(&exact_notes, &fast_notes));
            result.reference_notes_at_default = exact_notes.len();
        }
        Ok(result)
    }
}

/// The pianos of `all` named in `names` (all of them when `names` is empty).
fn pick(all: &[Piano], names: &[String], dir: &std::path::Path) -> Result<Vec<Piano>> {
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|p| &p.name == n).cloned().ok_or_else(|| {
                let found: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
                Error::invalid_input(format!("no piano `{n}` (found: {})", found.join(", "))).with_path(dir)
            })
        })
        .collect()
}

/// Runs the experiment, calling `progress(done, total, what)` as it goes
/// (from several threads when songs run in parallel).
pub fn run_experiment(config: &ExperimentConfig, progress: impl Fn(usize, usize, &str) + Sync) -> Result<Report> {
    let started = Instant::now();
    let grid = &config.thresholds.0;
    if grid.is_empty() {
        return Err(Error::invalid_input("empty threshold grid"));
    }
    let (layout, mut tests, dataset_pianos) = match dataset_layout(&config.dataset)? {
        DatasetLayout::Maps => {
            if config.split.is_some() {
                return Err(Error::invalid_input(
                    "a split applies to MAESTRO folders (a maestro-v*.csv inside), not MAPS",
                )
                .with_path(&config.dataset));
            }
            let all = discover_maps_dataset(&config.dataset)?;
            ("MAPS".to_string(), pick(&all, &config.test_pianos, &config.dataset)?, Some(all))
        }
        DatasetLayout::Maestro { index } => {
            if !config.test_pianos.is_empty() {
                return Err(Error::invalid_input("a MAESTRO folder has no pianos to pick: its songs are one test set")
                    .with_path(&config.dataset));
            }
            let split = config.split.as_deref().unwrap_or("test");
            let piano = discover_maestro_dataset(&index, split)?;
            let name = index.file_name().unwrap_or_default().to_string_lossy();
            (format!("MAESTRO ({name}, split {split})"), vec![piano], None)
        }
    };
    for test in &mut tests {
        test.songs.truncate(config.song_limit.unwrap_or(usize::MAX));
    }
    let (templates_from, trains) = match (&config.templates_from, dataset_pianos) {
        (Some(dir), _) => {
            let all: Vec<Piano> =
                discover_maps_dataset(dir)?.into_iter().filter(|p| p.isolated_notes.is_some()).collect();
            (dir.clone(), pick(&all, &config.train_pianos, dir)?)
        }
        (None, Some(all)) if !config.train_pianos.is_empty() => {
            (config.dataset.clone(), pick(&all, &config.train_pianos, &config.dataset)?)
        }
        (None, Some(_)) => (config.dataset.clone(), tests.clone()),
        (None, None) => {
            return Err(Error::invalid_input(
                "MAESTRO has no isolated notes: give a MAPS folder to learn templates from (--templates-from)",
            )
            .with_path(&config.dataset))
        }
    };
    if let Some(p) = trains.iter().find(|p| p.isolated_notes.is_none()) {
        return Err(Error::invalid_input(format!("piano `{}` has no ISOL/NO folder to learn templates from", p.name))
            .with_path(&templates_from));
    }
    let pairs = |train: &Piano| -> Vec<usize> {
        (0..tests.len()).filter(|&i| !config.matched_only || tests[i].name == train.name).collect()
    };
    let songs_per_train: Vec<usize> =
        trains.iter().map(|t| pairs(t).iter().map(|&i| tests[i].songs.len()).sum()).collect();
    let methods = config.methods()?;
    if config.max_frequency.is_some() && !config.full_band && methods.contains(&Method::AttackDecay) {
        return Err(Error::invalid_input(
            "a highest frequency applies to cnmf and nmf; the attack/decay model fits every bin",
        ));
    }
    let template_methods: Vec<Method> = methods.iter().copied().filter(|&m| m != Method::AttackDecay).collect();
    let attack_decay = methods.contains(&Method::AttackDecay);
    let (all_songs, n_trains) = (songs_per_train.iter().sum::<usize>(), trains.len());
    let total = if template_methods.is_empty() { 0 } else { config.taus.len() * n_trains }
        + config.taus.len() * template_methods.len() * all_songs
        + usize::from(attack_decay) * (n_trains + all_songs);
    let jobs = if config.jobs == 0 { cores() } else { config.jobs };
    let default_threshold = OnsetDetector::default().threshold;
    let done = AtomicUsize::new(0);
    let learning = |what: String, learn: &dyn Fn() -> Result<(Model, LearnRecord)>| {
        progress(done.load(Ordering::Relaxed), total, &format!("learn {what}"));
        let learned = learn();
        done.fetch_add(1, Ordering::Relaxed);
        learned
    };
    // The songs of every test piano paired with `train`, by `method` on
    // `model`: one condition per test piano.
    let run_train = |train: &Piano, method: Method, tau: Option<usize>, model: Model, record: LearnRecord| {
        let mut transcriber = Transcriber::for_method(method, model)?;
        transcriber.regression.precision = config.precision;
        if config.full_band {
            transcriber.set_max_frequency(None)?;
        } else if config.max_frequency.is_some() {
            transcriber.set_max_frequency(config.max_frequency)?;
        }
        let max_frequency = transcriber.regression.max_bins.is_some().then(|| transcriber.max_frequency());
        if method != Method::AttackDecay {
            transcriber.adaptation = config.adaptation;
        }
        transcriber.merge = config.intensity_merge;
        transcriber.selection = config.intensity_selection;
        transcriber.decode = DecodeOptions { duration_seconds: Some(config.duration_seconds), ..Default::default() };
        let exact = (config.compare_exact && method != Method::AttackDecay).then(|| {
            let mut exact = transcriber.clone();
            exact.regression.precision = Precision::Exact;
            exact
        });
        // Only CNMF reads the dictionary's calibration (it was calibrated on CNMF activations).
        let calibrated = method == Method::Cnmf && transcriber.dictionary().calibration.is_some();
        let train_threshold = transcriber.detector.threshold;
        let runner = SongRunner { config, transcriber, exact };
        let todo: Vec<(usize, &Song)> =
            pairs(train).into_iter().flat_map(|i| tests[i].songs.iter().map(move |s| (i, s))).collect();
        let results = run_parallel(todo.len(), jobs, |j| {
            let (test, song) = todo[j];
            let r = runner.run(song);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(n, total, &format!("{method} {}→{} {}", train.name, tests[test].name, song.id));
            r
        });
        let mut conditions = Vec::new();
        for test in pairs(train) {
            let (mut songs, mut failed) = (Vec::new(), Vec::new());
            for ((_, song), r) in todo.iter().zip(&results).filter(|((i, _), _)| *i == test) {
                match r {
                    Ok(s) => songs.push(s.clone()),
                    Err(e) => failed.push(FailedSong {
                        song: song.id.clone(),
                        audio: song.audio.clone(),
                        error: e.to_string(),
                    }),
                }
            }
            let key = ConditionKey { method, train: &train.name, test: &tests[test].name, tau };
            let mut c = Condition::summarise(key, songs, failed, grid, train_threshold, record);
            c.calibrated = calibrated;
            c.max_frequency = max_frequency;
            c.default_rule_description = rule_description(&runner.transcriber.detector);
            conditions.push(c);
        }
        Result::Ok(conditions)
    };
    let mut conditions = Vec::new();
    if !template_methods.is_empty() {
        for &tau in &config.taus {
            for train in &trains {
                let (model, record) = learning(format!("{} τ={tau}", train.name), &|| {
                    let transcriber = |d| {
                        let mut t = crate::calibration::calibration_transcriber(d)?;
                        (t.merge, t.selection) = (config.intensity_merge, config.intensity_selection);
                        Ok(t)
                    };
                    let cache = config.cache.as_deref();
                    let learned = learn_or_load_intensities(train, tau, &config.intensities, transcriber, cache)?;
                    Ok((Model::Templates(learned.model), learned.record))
                })?;
                for &method in &template_methods {
                    conditions.extend(run_train(train, method, Some(tau), model.clone(), record)?);
                }
            }
        }
    }
    if attack_decay {
        for train in &trains {
            let (model, record) = learning(format!("{} attack/decay", train.name), &|| {
                let learned = learn_or_load_attack_decay(train, config.cache.as_deref())?;
                Ok((Model::AttackDecay(learned.model), learned.record))
            })?;
            conditions.extend(run_train(train, Method::AttackDecay, None, model, record)?);
        }
    }
    // Rows grouped by method, in the order asked for.
    conditions.sort_by_key(|c| methods.iter().position(|m| m.name() == c.method));
    progress(total, total, "done");
    Ok(Report {
        command_line: config.command_line.clone(),
        dataset: config.dataset.clone(),
        layout,
        templates_from,
        thresholds: grid.clone(),
        default_threshold,
        activation_scale: format!("{:?}", config.scale),
        path: path_description(config.precision).to_string(),
        duration_seconds: config.duration_seconds,
        cores: cores(),
        jobs,
        wall_seconds: started.elapsed().as_secs_f64(),
        intensities: config.intensities_description(),
        conditions,
        adaptation: config.adaptation,
    })
}

/// The regression path in words, as the report names it.
fn path_description(precision: Precision) -> &'static str {
    match precision {
        Precision::Fast => "the fast path (f32, sparse, extrapolated)",
        Precision::Faithful => "the faithful path (f32, the paper's iterations as they are)",
        Precision::Exact => "the reference path (f64, dense, the paper's iterations as they are)",
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

    fn song(fs: &[f64]) -> SongResult {
        let p = |f: f64| Point { precision: f, recall: f, f_measure: f, accuracy: f };
        SongResult {
            song: "s".into(),
            n_reference: 1,
            onset: fs.iter().map(|&f| p(f)).collect(),
            onset_offset_f: fs.iter().map(|&f| f / 2.0).collect(),
            audio_seconds: 30.0,
            seconds: 0.0,
            from_cache: false,
            exact_onset: Vec::new(),
            identical_notes_at_default: None,
            notes_on_one_path_at_default: None,
            reference_notes_at_default: 0,
            // The default rule scores as the grid's second δ (the test's default).
            default_rule: RuleScores { onset: p(fs[1]), ..RuleScores::default() },
        }
    }

    #[test]
    fn global_and_songwise_selection() {
        // Song A peaks at δ index 0, song B at index 2; the mean peaks at index 1.
        let songs = vec![song(&[0.9, 0.8, 0.1]), song(&[0.1, 0.7, 0.8])];
        let record = LearnRecord { templates: 88, seconds: 1.0, cores: 2, from_cache: false };
        let key = ConditionKey { method: Method::Cnmf, train: "a", test: "b", tau: Some(10) };
        let c = Condition::summarise(key, songs, Vec::new(), &[0.1, 0.2, 0.3], 0.2, record);
        assert_eq!(c.global_index, 1);
        assert!((c.global.f_measure - 0.75).abs() < 1e-12);
        assert!((c.global_onset_offset_f - 0.375).abs() < 1e-12);
        assert!((c.songwise.f_measure - 0.85).abs() < 1e-12);
        assert!((c.songwise_onset_offset_f - 0.425).abs() < 1e-12);
        assert!((c.at_default.f_measure - 0.75).abs() < 1e-12);
        assert_eq!(c.songs[1].best_index(), 2);
    }

    #[test]
    fn an_all_failed_condition_has_zero_scores() {
        let record = LearnRecord { templates: 88, seconds: 1.0, cores: 2, from_cache: false };
        let failed = vec![FailedSong { song: "x".into(), audio: "x.wav".into(), error: "x.wav: bad".into() }];
        let key = ConditionKey { method: Method::Cnmf, train: "a", test: "a", tau: Some(10) };
        let c = Condition::summarise(key, Vec::new(), failed, &[0.1, 0.2], 0.1, record);
        assert_eq!((c.global_index, c.global.f_measure, c.songwise.f_measure), (0, 0.0, 0.0));
        assert_eq!(c.failed.len(), 1);
    }

    #[test]
    fn parallel_results_come_back_in_order() {
        for jobs in [1, 2, 5] {
            assert_eq!(run_parallel(7, jobs, |i| i * i), vec![0, 1, 4, 9, 16, 25, 36]);
        }
        assert!(run_parallel(0, 3, |i| i).is_empty());
    }
}
