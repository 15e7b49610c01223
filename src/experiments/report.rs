//! The experiment's outputs: `report.md` (the paper's tables), `results.json`
//! (everything) and `songs.csv` (one row per song and condition).
//!
//! - **Table 1**: per condition, onset-only precision, recall, F1 and
//!   accuracy at the global δ, onset + offset F1 at the global δ, onset and
//!   onset + offset F1 songwise, onset F1 at the tool's default δ.
//! - **Table 2**: templates of one piano on the songs of another, one
//!   matrix per (method, τ) ([`Report::cross_piano`]).
//! - **Table 3**: the time to learn one template and to transcribe 30 s,
//!   measured in this run (or as the cache recorded it, said so).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{Condition, Report, SongResult};
use crate::{Error, Result};

/// One matrix of table 2: a condition index (into [`Report::conditions`])
/// for each (templates' piano, songs' piano) that was run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrossPianoTable {
    /// The method.
    pub method: String,
    /// τ (`None` for the attack/decay model).
    pub tau: Option<usize>,
    /// Templates' pianos (rows), in the order they were run.
    pub train: Vec<String>,
    /// Songs' pianos (columns), in the order they were run.
    pub test: Vec<String>,
    /// `cells[r][c]`: the condition of `train[r]` on `test[c]`.
    pub cells: Vec<Vec<Option<usize>>>,
}

/// τ in a table: its value, or `–` when the method has none.
fn tau_cell(tau: Option<usize>) -> String {
    tau.map_or_else(|| "–".to_string(), |t| t.to_string())
}

fn push_unique(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|x| x == name) {
        list.push(name.to_string());
    }
}

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Report {
    /// Songs that failed, over all conditions.
    pub fn failed_songs(&self) -> usize {
        self.conditions.iter().map(|c| c.failed.len()).sum()
    }

    /// Table 2's matrices: one per (method, τ) that has a condition whose
    /// templates' piano differs from its songs' piano.
    pub fn cross_piano(&self) -> Vec<CrossPianoTable> {
        let mut tables: Vec<CrossPianoTable> = Vec::new();
        for c in self.conditions.iter().filter(|c| c.train_piano != c.test_piano) {
            if !tables.iter().any(|t| t.method == c.method && t.tau == c.tau) {
                tables.push(CrossPianoTable {
                    method: c.method.clone(),
                    tau: c.tau,
                    train: Vec::new(),
                    test: Vec::new(),
                    cells: Vec::new(),
                });
            }
        }
        for t in &mut tables {
            let mine: Vec<(usize, &Condition)> =
                self.conditions.iter().enumerate().filter(|(_, c)| c.method == t.method && c.tau == t.tau).collect();
            for (_, c) in &mine {
                push_unique(&mut t.train, &c.train_piano);
                push_unique(&mut t.test, &c.test_piano);
            }
            t.cells = vec![vec![None; t.test.len()]; t.train.len()];
            for (i, c) in mine {
                let r = t.train.iter().position(|x| *x == c.train_piano).expect("listed");
                let col = t.test.iter().position(|x| *x == c.test_piano).expect("listed");
                t.cells[r][col] = Some(i);
            }
        }
        tables
    }

    /// The same report with every wall-clock time and `jobs` set to 0: two
    /// runs of the same experiment on equally filled caches, with any
    /// `jobs`, give the same bytes once their timings are zeroed.
    pub fn with_timings_zeroed(&self) -> Report {
        let mut r = self.clone();
        r.wall_seconds = 0.0;
        r.jobs = 0;
        for c in &mut r.conditions {
            c.templates.seconds = 0.0;
            c.songs.iter_mut().for_each(|s| s.seconds = 0.0);
        }
        r
    }

    /// One row per scored song and condition: the scores at the
    /// condition's global δ, at the song's best δ, and the time.
    pub fn songs_csv(&self) -> String {
        let mut s = String::from(
            "method,templates,songs,tau,song,n_reference,global_delta,global_precision,global_recall,global_f,\
             global_accuracy,global_onset_offset_f,best_delta,best_precision,best_recall,best_f,best_accuracy,\
             best_onset_offset_f,audio_seconds,seconds,from_cache\n",
        );
        for c in &self.conditions {
            for song in &c.songs {
                let (g, b) = (c.global_index, song.best_index());
                let (pg, pb) = (&song.onset[g], &song.onset[b]);
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{}",
                    csv_field(&c.method),
                    csv_field(&c.train_piano),
                    csv_field(&c.test_piano),
                    c.tau.map_or(String::new(), |t| t.to_string()),
                    csv_field(&song.song),
                    song.n_reference,
                    self.thresholds[g],
                    pg.precision,
                    pg.recall,
                    pg.f_measure,
                    pg.accuracy,
                    song.onset_offset_f[g],
                    self.thresholds[b],
                    pb.precision,
                    pb.recall,
                    pb.f_measure,
                    pb.accuracy,
                    song.onset_offset_f[b],
                    song.audio_seconds,
                    song.seconds,
                    song.from_cache
                );
            }
        }
        s
    }

    /// Writes `report.md`, `results.json` and `songs.csv` into `dir`
    /// (created if needed), each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::internal(format!("results.json: {e}")))?;
        crate::files::write_atomically(&dir.join("report.md"), self.to_markdown().as_bytes())?;
        crate::files::write_atomically(&dir.join("results.json"), json.as_bytes())?;
        crate::files::write_atomically(&dir.join("songs.csv"), self.songs_csv().as_bytes())
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "# sscnmf experiment\n\nCommand: `{}`\n\nDataset: `{}` ({}); templates from `{}`. First {} s of each \
             song; onset tolerance 50 ms, offsets within max(50 ms, 0.2 × the reference note's duration) for \
             onset + offset F1; δ grid {}..{} ({} values), activations scaled: {}; F is the mean of the songs' \
             F-measures. CNMF and NMF run on {}.{}\n\n",
            self.command_line,
            self.dataset.display(),
            self.layout,
            self.templates_from.display(),
            self.duration_seconds,
            self.thresholds.first().unwrap_or(&0.0),
            self.thresholds.last().unwrap_or(&0.0),
            self.thresholds.len(),
            self.activation_scale,
            self.path,
            self.frequency_sentence(),
        );
        if let Some(a) = &self.adaptation {
            let _ = write!(
                s,
                "**Templates adapted to each song** (`--adapt`; cnmf and nmf): after the fit on the learned \
                 templates, {} rounds of one penalised KL update of the templates and one of the activations, \
                 pulled towards the learned templates with strength {}{}{}{}{} (src/factorization/adapt.rs).\n\n",
                a.rounds,
                a.strength,
                if a.filter_bands_per_octave > 0 {
                    format!(
                        "; with a spectral filter shared by all templates ({} bands per octave, pulled towards \
                         flat with strength {})",
                        a.filter_bands_per_octave, a.filter_strength
                    )
                } else {
                    String::new()
                },
                if a.dense_first_pass { "; the first fit without pruning (dense)" } else { "" },
                if a.refit { "; then the activations fitted again from scratch on the adapted templates" } else { "" },
                if a.cycles > 1 {
                    format!("; {} such cycles, each from the previous one's templates and activations", a.cycles)
                } else {
                    String::new()
                },
            );
        }
        if let Some(intensities) = &self.intensities {
            let _ = write!(s, "Templates: {intensities}.\n\n");
        }
        self.methods_paragraph(&mut s);
        self.table_1(&mut s);
        self.default_rule_table(&mut s);
        self.table_2(&mut s);
        self.table_3(&mut s);
        self.exact_table(&mut s);
        self.per_song_table(&mut s);
        self.failed_table(&mut s);
        s
    }

    /// Which methods fit only the lowest bins, in words (empty when every
    /// condition fits all of them).
    fn frequency_sentence(&self) -> String {
        let mut cuts: Vec<(&str, f64)> = Vec::new();
        for c in &self.conditions {
            if let Some(hz) = c.max_frequency.filter(|&hz| !cuts.contains(&(c.method.as_str(), hz))) {
                cuts.push((c.method.as_str(), hz));
            }
        }
        let cuts: Vec<String> = cuts.iter().map(|(m, hz)| format!("{m} up to {hz:.0} Hz")).collect();
        if cuts.is_empty() {
            return String::new();
        }
        format!(
            " Bins fitted: {} (the top kept bin; the templates were learned on all bins); other methods all bins.",
            cuts.join(", ")
        )
    }

    /// What each method present does, so that its rows can be read.
    fn methods_paragraph(&self, s: &mut String) {
        let present = |name: &str| self.conditions.iter().any(|c| c.method == name);
        let mut lines = Vec::new();
        if present("cnmf") {
            lines.push(
                "- **cnmf**: the paper's semi-supervised convolutive NMF on the templates' τ frames (50 NMF + 100 \
                 CNMF iterations).",
            );
        }
        if present("nmf") {
            lines.push(
                "- **nmf**: supervised NMF on the first slice of each template of the same dictionary (an F × 88 \
                 dictionary, 150 NMF iterations). Its τ is that of the templates it takes the first slices from: the \
                 first slice of a template learned at another τ is another spectrum, so its rows at different τ \
                 differ through the templates alone.",
            );
        }
        if present("attack-decay") {
            lines.push(
                "- **attack-decay**: the attack/decay model of Cheng et al. (ISMIR 2016), learned from the same \
                 isolated notes (an attack and a decay spectrum, a decay rate per note, one attack envelope), 50 \
                 sparse KL updates of the onsets; its attack activations are read. It has no τ (–), so it runs once \
                 per pair of pianos.",
            );
        }
        let _ = write!(
            s,
            "Methods (same spectrogram, same onset rule and δ grid, same scoring):\n\n{}\n\n",
            lines.join("\n")
        );
    }

    fn table_1(&self, s: &mut String) {
        let _ = write!(
            s,
            "## Table 1: scores per condition (%)\n\nglobal: the one δ of the grid with the best mean onset F1 \
             over the condition's songs; songwise: each song at its own best onset δ. Offsets and velocities come \
             from the default rule of each row (next table); only δ is swept, on the activation scaling above. \
             Default rule: the tool's own (next table), on its own scaling.\n\n\
             | method | templates | songs | τ | songs scored | global δ | P | R | Onset F1 (global) | Acc | \
             Onset + offset F1 (global) | Onset F1 (songwise) | Onset + offset F1 (songwise) | \
             Onset F1 (default rule) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        );
        for c in &self.conditions {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | **{:.1}** | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                c.method,
                c.train_piano,
                c.test_piano,
                tau_cell(c.tau),
                c.songs.len(),
                self.thresholds[c.global_index],
                100.0 * c.global.precision,
                100.0 * c.global.recall,
                100.0 * c.global.f_measure,
                100.0 * c.global.accuracy,
                100.0 * c.global_onset_offset_f,
                100.0 * c.songwise.f_measure,
                100.0 * c.songwise_onset_offset_f,
                100.0 * c.at_default.f_measure,
            );
        }
    }

    fn default_rule_table(&self, s: &mut String) {
        let _ = write!(
            s,
            "\n## The default decision rule (%)\n\nThe tool's own rule, no oracle. For cnmf on calibrated templates: \
             δ (relative to the mean of the pitches' peak activations, not to the loudest one: not on the grid's \
             scale), the offset rule and the velocity fit calibrated on the templates' isolated notes (a synthetic \
             mix of them; `sscnmf::calibration`), no song involved. nmf and attack-decay do not use the \
             calibration (it was made on CNMF activations): they run the uncalibrated rule, δ = {} of the largest \
             activation (chosen on the dev songs), offsets at {} of the peak, velocity 127·sqrt(scaled peak); so \
             do uncalibrated templates. A note ends when its activation stays below a fraction of its peak (for \
             a \"free-decaying\" peak, of the peak decayed at the pitch's calibrated free decay rate; \"bridge\": \
             for that many frames in a row), or at the next onset of its pitch. Velocity F1: mir_eval.transcription_velocity (velocities rescaled by least squares, tolerance \
             0.1), against the `.mid` beside each song's reference; velocity error: mean |estimate − reference| \
             in MIDI units over the onset-matched notes. Onset + offset F1 / onset F1 is the default rule's.\n\n\
             | method | templates | songs | τ | δ (default) | scaling; offsets | Onset F1 (default) | oracle \
             global δ | Onset F1 (oracle) | default − oracle | Onset + offset F1 | offset / onset | Onset + \
             velocity F1 | Onset + offset + velocity F1 | velocity error |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.default_threshold,
            crate::transcription::DEFAULT_OFFSET_FRACTION,
        );
        let pct = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.1}", 100.0 * v));
        for c in &self.conditions {
            let d = &c.default_rule;
            let ratio = if d.onset.f_measure > 0.0 { d.onset_offset_f / d.onset.f_measure } else { 0.0 };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2}{} | {} | **{:.1}** | {:.2} | {:.1} | {:+.1} | {:.1} | {:.0} % | {} | {} | {} |",
                c.method,
                c.train_piano,
                c.test_piano,
                tau_cell(c.tau),
                c.default_threshold,
                if c.calibrated { " (calibrated)" } else { " (uncalibrated)" },
                c.default_rule_description,
                100.0 * d.onset.f_measure,
                self.thresholds[c.global_index],
                100.0 * c.global.f_measure,
                100.0 * (d.onset.f_measure - c.global.f_measure),
                100.0 * d.onset_offset_f,
                100.0 * ratio,
                pct(d.onset_velocity_f),
                pct(d.onset_offset_velocity_f),
                d.velocity_mae.map_or("–".to_string(), |v| format!("{v:.1}")),
            );
        }
    }

    fn table_2(&self, s: &mut String) {
        for t in self.cross_piano() {
            let _ = write!(
                s,
                "\n## Table 2: templates of one piano on the songs of another ({}, {}; onset F1 %, global / \
                 songwise)\n\n| templates \\ songs | {} |\n|---|{}\n",
                t.method,
                t.tau.map_or_else(|| "no τ".to_string(), |tau| format!("τ = {tau}")),
                t.test.join(" | "),
                "---|".repeat(t.test.len())
            );
            for (name, row) in t.train.iter().zip(&t.cells) {
                let cells: Vec<String> = row
                    .iter()
                    .map(|cell| match cell {
                        Some(i) => {
                            let c = &self.conditions[*i];
                            format!("{:.1} / {:.1}", 100.0 * c.global.f_measure, 100.0 * c.songwise.f_measure)
                        }
                        None => "–".to_string(),
                    })
                    .collect();
                let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
            }
        }
    }

    fn table_3(&self, s: &mut String) {
        let _ = write!(
            s,
            "\n## Table 3: time\n\nThis machine: {} cores (std::thread::available_parallelism); {} song(s) \
             transcribed at a time{}. Learning: wall time of the whole dictionary (or attack/decay model) divided \
             by its notes (notes are learned in parallel); nmf uses cnmf's templates, so its learning time is \
             theirs. Transcription: each song's wall time from decoding to activations, scaled \
             to 30 s of audio, averaged over the songs transcribed in this run; times read from the cache are \
             those recorded when it was filled.\n\n\
             | method | templates | τ | notes learned | learn s per note | songs transcribed in this run | \
             transcribe s per 30 s |\n|---|---|---|---|---|---|---|\n",
            self.cores,
            self.jobs,
            if self.jobs > 1 { " (songs share the cores, so each song's time includes the others' load)" } else { "" }
        );
        let mut seen: Vec<(&str, &str, Option<usize>)> = Vec::new();
        for c in &self.conditions {
            let key = (c.method.as_str(), c.train_piano.as_str(), c.tau);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let t = &c.templates;
            let per_template = t.seconds / t.templates.max(1) as f64;
            let learn = match (t.from_cache, t.seconds.is_finite()) {
                (false, _) => format!("{per_template:.2}"),
                (true, true) => format!("cached (recorded {per_template:.2} on {} cores)", t.cores),
                (true, false) => "cached (no record)".to_string(),
            };
            let songs: Vec<&SongResult> = self
                .conditions
                .iter()
                .filter(|x| (x.method.as_str(), x.train_piano.as_str(), x.tau) == key)
                .flat_map(|x| &x.songs)
                .collect();
            let per_30 =
                |list: &[&&SongResult]| super::mean(list.iter().map(|x| x.seconds / x.audio_seconds.max(1e-9) * 30.0));
            let fresh: Vec<&&SongResult> = songs.iter().filter(|x| !x.from_cache).collect();
            let cached: Vec<&&SongResult> = songs.iter().filter(|x| x.from_cache).collect();
            let transcribe = match (fresh.is_empty(), cached.is_empty()) {
                (true, true) => "–".to_string(),
                (true, false) => format!("cached (recorded {:.2})", per_30(&cached)),
                (false, _) => format!("{:.2}", per_30(&fresh)),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {learn} | {} of {} | {transcribe} |",
                c.method,
                c.train_piano,
                tau_cell(c.tau),
                t.templates,
                fresh.len(),
                songs.len()
            );
        }
    }

    fn exact_table(&self, s: &mut String) {
        if !self.conditions.iter().any(|c| c.exact.is_some()) {
            return;
        }
        let _ = write!(
            s,
            "\n## The main path against the reference path\n\nThe main runs, on {}, against the reference path \
             (f64, dense, the paper's iterations as they are), onset F1 (%):\n\n",
            self.path
        );
        s.push_str("| templates | songs | τ | main path global (δ) | reference global (δ) | main path songwise | reference songwise | songs with identical notes at the default δ | same pitches and onsets | notes on one path only |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for c in &self.conditions {
            let Some(x) = &c.exact else { continue };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.2} | {:.2} | {} of {} | {} of {} | {} of {} |",
                c.train_piano,
                c.test_piano,
                tau_cell(c.tau),
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
            );
        }
    }

    fn per_song_table(&self, s: &mut String) {
        s.push_str(
            "\n## Per song\n\nOnset F1 (%) at the condition's global δ and at the song's best δ (also in \
             songs.csv):\n\n| method | templates | songs | τ | song | notes | Onset F1 global | Onset + offset F1 \
             global | Onset F1 best | best δ |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for c in &self.conditions {
            for song in &c.songs {
                let b = song.best_index();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
                    c.method,
                    c.train_piano,
                    c.test_piano,
                    tau_cell(c.tau),
                    song.song,
                    song.n_reference,
                    100.0 * song.onset[c.global_index].f_measure,
                    100.0 * song.onset_offset_f[c.global_index],
                    100.0 * song.onset[b].f_measure,
                    self.thresholds[b]
                );
            }
        }
    }

    fn failed_table(&self, s: &mut String) {
        if self.conditions.iter().all(|c| c.failed.is_empty()) {
            return;
        }
        s.push_str(
            "\n## Failed songs\n\nNot in any mean above.\n\n| method | templates | songs | τ | song | error |\n\
             |---|---|---|---|---|---|\n",
        );
        for c in &self.conditions {
            for f in &c.failed {
                let error = f.error.replace('|', "\\|");
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {error} |",
                    c.method,
                    c.train_piano,
                    c.test_piano,
                    tau_cell(c.tau),
                    f.song
                );
            }
        }
    }
}
