//! Note templates: learning one per pitch (or one per pitch and intensity)
//! from isolated-note recordings, and the dictionary file that stores them.
//!
//! # Learning
//!
//! Each recording of one isolated note becomes a magnitude spectrogram, and a
//! rank-one CNMF of it ([`crate::factorization::learn_rank_one`]) gives the
//! note's F × τ template (Wu, Marmoret & Cohen 2022, §3.1).
//!
//! # Several templates per note
//!
//! A piano's timbre changes with how hard a key is struck (the paper's third
//! perspective, §5): a dictionary may hold one template per pitch and
//! intensity (MAPS's P, M, F; [`TemplateDictionary::from_intensities`]).
//! Transcription fits all of them and merges the activation rows of each
//! pitch ([`crate::transcription::IntensityMerge`]).
//!
//! # The dictionary file (format versions 1 and 2)
//!
//! A [safetensors](https://huggingface.co/docs/safetensors) file, readable
//! from Python with `safetensors.numpy.load_file` / `safe_open`:
//!
//! | tensor | dtype | shape | meaning |
//! |---|---|---|---|
//! | `templates` | F32 (or BF16) | [K, τ, F] | `templates[q, i, f]` = W[f, i, q] of the paper, each template summing to 1 |
//! | `pitches` | U8 | \[K\] | MIDI pitch of template q, strictly increasing |
//!
//! and string metadata (`__metadata__`): `format` = `sscnmf-templates`,
//! `format_version` = `1`, `sample_rate`, `n_fft`, `win_length`,
//! `hop_length`, `window` (`hann`), `tau`, `beta`, `iterations`,
//! `tool_version`, `source` (free text), `missing_pitches` (JSON list of the
//! MIDI pitches 21..=108 with no template), and optionally `calibration`
//! (JSON of [`crate::decision::Calibration`]: the δ, offset fraction and
//! velocity fit calibrated on the isolated notes; files without it — written
//! before it existed — load with the uncalibrated defaults).
//!
//! A dictionary with several templates per pitch is written as format
//! version 2 (so that an older sscnmf refuses it by its version rather than
//! misreading it): `pitches` is then non-decreasing, one entry per template,
//! and the metadata `intensities` is the JSON list of each template's
//! intensity label (`["P","M","F","P",…]`), no (pitch, intensity) twice.
//! One template per pitch is still written as version 1, byte for byte as
//! before; both versions are read.
//!
//! ```python
//! from safetensors import safe_open
//! with safe_open("piano.templates", "numpy") as f:
//!     meta = f.metadata(); W = f.get_tensor("templates")   # (K, tau, F)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::audio::{load_audio, DecodeOptions};
use crate::decision::Calibration;
use crate::factorization::{learn_rank_one, Beta, ConvTemplates, Matrix, RankOneCnmf};
pub use crate::model_file::model_file_format;
use crate::model_file::open_model_file_of_versions;
use crate::spectrogram::{Stft, StftConfig};
use crate::{Error, ErrorKind, Result};

/// The dictionary file's format name (`format` metadata key).
pub const FORMAT_NAME: &str = crate::model_file::TEMPLATES_FORMAT;
/// The dictionary file's format version written by this build for one
/// template per pitch.
pub const FORMAT_VERSION: u32 = 1;
/// The format version written for several templates per pitch (metadata
/// `intensities`).
pub const FORMAT_VERSION_INTENSITIES: u32 = 2;
/// The piano's range: A0 (21) to C8 (108).
pub const PIANO_PITCHES: std::ops::RangeInclusive<u8> = 21..=108;

/// The parameters a dictionary was learned with; transcription must use the
/// same STFT.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateParams {
    /// The STFT the templates were computed with.
    pub stft: StftConfig,
    /// β of the divergence used for learning.
    pub beta: f64,
    /// Maximum learning iterations.
    pub iterations: usize,
    /// The version of sscnmf that learned them.
    pub tool_version: String,
    /// Free text: where the notes came from.
    pub source: String,
}

/// Templates for a set of MIDI pitches, with their parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateDictionary {
    /// One template per pitch, F × τ × K, L1-normalised.
    pub templates: ConvTemplates<f32>,
    /// MIDI pitch of each template: strictly increasing with one template
    /// per pitch, non-decreasing with several
    /// ([`intensities`](Self::intensities)).
    pub pitches: Vec<u8>,
    /// The intensity label of each template (`P`, `M`, `F`, …) when the
    /// dictionary holds several templates per pitch; empty for one
    /// template per pitch (whatever intensity it was learned from).
    pub intensities: Vec<String>,
    /// How they were made.
    pub params: TemplateParams,
    /// The decision rule calibrated on the isolated notes (`None`: not
    /// calibrated; transcription then uses the uncalibrated defaults).
    pub calibration: Option<Calibration>,
}

impl TemplateDictionary {
    /// τ, frames per template.
    pub fn tau(&self) -> usize {
        self.templates.tau
    }

    /// Piano pitches (21..=108) that have no template.
    pub fn missing_pitches(&self) -> Vec<u8> {
        PIANO_PITCHES.filter(|p| !self.pitches.contains(p)).collect()
    }

    /// The distinct pitches, increasing: the rows of the activations a
    /// transcription reads notes from.
    pub fn distinct_pitches(&self) -> Vec<u8> {
        let mut p = self.pitches.clone();
        p.dedup();
        p
    }

    /// Whether some pitch has more than one template.
    pub fn has_several_per_pitch(&self) -> bool {
        self.pitches.windows(2).any(|w| w[0] == w[1])
    }

    /// One dictionary of `parts` (an intensity label and the dictionary
    /// learned from that intensity's notes, one template per pitch, all with
    /// the same STFT and τ): every template of every part, sorted by pitch
    /// and then in the order of `parts`, each labelled with its part's
    /// intensity. The parameters are the first part's; its `source` names
    /// the intensities. No calibration (calibrate the result).
    pub fn from_intensities(parts: Vec<(String, TemplateDictionary)>) -> Result<Self> {
        let Some((_, first)) = parts.first() else {
            return Err(Error::invalid_input("no intensity to build a dictionary from"));
        };
        let (f, tau, params) = (first.templates.n_bins, first.templates.tau, first.params.clone());
        for (label, d) in &parts {
            if d.templates.n_bins != f || d.templates.tau != tau || d.params.stft != params.stft {
                return Err(Error::invalid_input(format!("the templates of intensity {label} have another shape")));
            }
            if d.has_several_per_pitch() || !d.intensities.is_empty() {
                return Err(Error::invalid_input(format!("intensity {label} has several templates per pitch")));
            }
            if parts.iter().filter(|(l, _)| l == label).count() > 1 {
                return Err(Error::invalid_input(format!("intensity {label} is given twice")));
            }
        }
        let mut order: Vec<(u8, usize, usize)> = Vec::new();
        for (i, (_, d)) in parts.iter().enumerate() {
            order.extend(d.pitches.iter().enumerate().map(|(q, &p)| (p, i, q)));
        }
        order.sort();
        let mut data = Vec::with_capacity(order.len() * f * tau);
        for &(_, i, q) in &order {
            data.extend_from_slice(parts[i].1.templates.template(q));
        }
        let labels: Vec<&str> = parts.iter().map(|(l, _)| l.as_str()).collect();
        Ok(TemplateDictionary {
            templates: ConvTemplates::new(f, tau, order.len(), data)?,
            pitches: order.iter().map(|o| o.0).collect(),
            intensities: order.iter().map(|o| parts[o.1].0.clone()).collect(),
            params: TemplateParams {
                source: format!("{} (intensities {})", params.source, labels.join(",")),
                ..params
            },
            calibration: None,
        })
    }

    /// The dictionary as safetensors bytes (format above), templates in F32.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_bytes_as(StoredPrecision::F32)
    }

    /// The dictionary as safetensors bytes with the templates stored in
    /// `precision` (BF16 halves the file; reading converts back to f32).
    pub fn to_bytes_as(&self, precision: StoredPrecision) -> Result<Vec<u8>> {
        use safetensors::tensor::{serialize, Dtype, TensorView};
        let t = &self.templates;
        let (dtype, bytes): (Dtype, Vec<u8>) = match precision {
            StoredPrecision::F32 => (Dtype::F32, t.data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            StoredPrecision::Bf16 => {
                (Dtype::BF16, t.data.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect())
            }
        };
        let templates = TensorView::new(dtype, vec![t.n_templates, t.tau, t.n_bins], &bytes)
            .map_err(|e| Error::internal(format!("templates tensor: {e}")))?;
        let pitches = TensorView::new(Dtype::U8, vec![self.pitches.len()], &self.pitches)
            .map_err(|e| Error::internal(format!("pitches tensor: {e}")))?;
        let version = if self.intensities.is_empty() { FORMAT_VERSION } else { FORMAT_VERSION_INTENSITIES };
        let mut meta = model_metadata(FORMAT_NAME, version, &self.params, &self.pitches);
        meta.insert("tau".to_string(), t.tau.to_string());
        if !self.intensities.is_empty() {
            meta.insert("intensities".to_string(), serde_json::to_string(&self.intensities).expect("strings"));
        }
        if let Some(c) = &self.calibration {
            meta.insert("calibration".to_string(), c.to_json());
        }
        let bytes = serialize([("pitches", pitches), ("templates", templates)], &Some(meta))
            .map_err(|e| Error::internal(format!("serialising templates: {e}")))?;
        crate::files::canonical_safetensors(bytes)
    }

    /// Parses and validates a dictionary from safetensors bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        use safetensors::tensor::Dtype;
        let bad = |msg: String| Error::new(ErrorKind::Templates, msg);
        let versions = FORMAT_VERSION..=FORMAT_VERSION_INTENSITIES;
        let (st, meta, version) = open_model_file_of_versions(bytes, FORMAT_NAME, versions, "templates file")?;
        let params = read_model_params(&meta)?;
        let stft = params.stft.clone();
        let tau_meta: usize = meta
            .get("tau")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("metadata `tau` is missing or not a whole number".into()))?;

        let (pitches, intensities) = if version == FORMAT_VERSION {
            (read_pitches(&st)?, Vec::new())
        } else {
            read_pitches_and_intensities(&st, &meta)?
        };
        let templates_view = st.tensor("templates").map_err(|_| bad("tensor `templates` is missing".into()))?;
        if !matches!(templates_view.dtype(), Dtype::F32 | Dtype::BF16) || templates_view.shape().len() != 3 {
            return Err(bad("tensor `templates` must be F32 or BF16 of shape [K, tau, F]".into()));
        }
        let shape = templates_view.shape().to_vec();
        let (k, tau, f) = (shape[0], shape[1], shape[2]);
        if k == 0 || pitches.is_empty() {
            return Err(bad("the file holds no templates".into()));
        }
        if k != pitches.len() {
            return Err(bad(format!("{k} templates but {} pitches", pitches.len())));
        }
        if tau != tau_meta || tau == 0 {
            return Err(bad(format!("templates have {tau} frames but metadata says tau = {tau_meta}")));
        }
        if f != stft.n_fft / 2 + 1 {
            return Err(bad(format!(
                "templates have {f} frequency bins but n_fft = {} gives {}",
                stft.n_fft,
                stft.n_fft / 2 + 1
            )));
        }
        let data = match templates_view.dtype() {
            Dtype::BF16 => templates_view
                .data()
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => f32_values(templates_view.data()),
        };
        if let Some(pos) = data.iter().position(|x| !x.is_finite() || *x < 0.0) {
            let q = pos / (tau * f);
            return Err(bad(format!(
                "template of MIDI pitch {} holds a negative or non-finite value ({})",
                pitches[q], data[pos]
            )));
        }
        for q in 0..k {
            if data[q * tau * f..(q + 1) * tau * f].iter().all(|&x| x == 0.0) {
                return Err(bad(format!("template of MIDI pitch {} is all zeros", pitches[q])));
            }
        }
        let calibration = match meta.get("calibration") {
            Some(json) => Some(Calibration::from_json(json)?),
            None => None,
        };
        Ok(TemplateDictionary {
            templates: ConvTemplates::new(f, tau, k, data)?,
            pitches,
            intensities,
            params,
            calibration,
        })
    }

    /// The dictionary built into the binary ([`BUILTIN_TEMPLATES`]): a grand
    /// piano, 88 pitches, τ = 10, the paper's STFT at 44.1 kHz.
    pub fn builtin() -> Result<Self> {
        Self::from_bytes(BUILTIN_TEMPLATES).map_err(|e| Error::internal(format!("the built-in dictionary: {e}")))
    }

    /// Reads and validates a dictionary file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.is_empty() {
            return Err(Error::new(ErrorKind::Templates, "empty file").with_path(path));
        }
        Self::from_bytes(&bytes).map_err(|e| e.with_path(path))
    }

    /// Writes the dictionary atomically (a temporary file in the same folder,
    /// then renamed), so a failure leaves no partial file.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::files::write_atomically(path, &self.to_bytes()?)
    }

    /// Keeps only the templates whose pitch is in `range` (e.g. to transcribe
    /// a smaller instrument with a piano dictionary).
    pub fn restrict(&self, range: std::ops::RangeInclusive<u8>) -> Result<Self> {
        let keep: Vec<usize> = (0..self.pitches.len()).filter(|&q| range.contains(&self.pitches[q])).collect();
        if keep.is_empty() {
            return Err(Error::invalid_input(format!(
                "no template between MIDI {} and {}",
                range.start(),
                range.end()
            )));
        }
        let mut data = Vec::with_capacity(keep.len() * self.templates.tau * self.templates.n_bins);
        for &q in &keep {
            data.extend_from_slice(self.templates.template(q));
        }
        Ok(TemplateDictionary {
            templates: ConvTemplates::new(self.templates.n_bins, self.templates.tau, keep.len(), data)?,
            pitches: keep.iter().map(|&q| self.pitches[q]).collect(),
            intensities: if self.intensities.is_empty() {
                Vec::new()
            } else {
                keep.iter().map(|&q| self.intensities[q].clone()).collect()
            },
            params: self.params.clone(),
            calibration: self.calibration.clone(),
        })
    }
}

/// The built-in dictionary's file (`assets/builtin-piano.templates`, BF16;
/// how it was made, its source and licence: `assets/README.md`).
pub const BUILTIN_TEMPLATES: &[u8] = include_bytes!("../assets/builtin-piano.templates");

/// How a dictionary file stores its templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoredPrecision {
    /// 32-bit floats (default; what `learn` writes).
    #[default]
    F32,
    /// bfloat16: f32's exponent range with an 8-bit significand (relative
    /// error below 2^-8), half the size; the built-in dictionary uses it.
    Bf16,
}

/// The metadata shared by the model files: `format`, `format_version`, the
/// STFT, `beta`, `iterations`, `tool_version`, `source`, `missing_pitches`.
pub(crate) fn model_metadata(
    format: &str,
    version: u32,
    p: &TemplateParams,
    pitches: &[u8],
) -> HashMap<String, String> {
    let missing: Vec<u8> = PIANO_PITCHES.filter(|q| !pitches.contains(q)).collect();
    [
        ("format", format.to_string()),
        ("format_version", version.to_string()),
        ("sample_rate", p.stft.sample_rate.to_string()),
        ("n_fft", p.stft.n_fft.to_string()),
        ("win_length", p.stft.win_length.to_string()),
        ("hop_length", p.stft.hop_length.to_string()),
        ("window", "hann".to_string()),
        ("beta", p.beta.to_string()),
        ("iterations", p.iterations.to_string()),
        ("tool_version", p.tool_version.clone()),
        ("source", p.source.clone()),
        ("missing_pitches", serde_json::to_string(&missing).expect("list of integers")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The STFT and learning parameters of a model file's metadata, validated.
pub(crate) fn read_model_params(meta: &HashMap<String, String>) -> Result<TemplateParams> {
    let bad = |msg: String| Error::new(ErrorKind::Templates, msg);
    let get = |key: &str| meta.get(key).ok_or_else(|| bad(format!("metadata `{key}` is missing")));
    let num = |key: &str| -> Result<usize> {
        get(key)?.parse::<usize>().map_err(|_| bad(format!("metadata `{key}` is not a whole number")))
    };
    let stft = StftConfig {
        sample_rate: num("sample_rate")? as u32,
        n_fft: num("n_fft")?,
        win_length: num("win_length")?,
        hop_length: num("hop_length")?,
    };
    stft.validate().map_err(|e| bad(format!("invalid STFT settings in metadata: {}", e.message())))?;
    if get("window")? != "hann" {
        return Err(bad(format!("unsupported window `{}`", get("window")?)));
    }
    Ok(TemplateParams {
        stft,
        beta: get("beta")?.parse().map_err(|_| bad("metadata `beta` is not a number".into()))?,
        iterations: num("iterations")?,
        tool_version: meta.get("tool_version").cloned().unwrap_or_default(),
        source: meta.get("source").cloned().unwrap_or_default(),
    })
}

/// Tensor `pitches` (U8, `[K]`): distinct MIDI numbers in increasing order.
pub(crate) fn read_pitches(st: &safetensors::SafeTensors) -> Result<Vec<u8>> {
    let bad = |msg: &str| Error::new(ErrorKind::Templates, msg);
    let view = st.tensor("pitches").map_err(|_| bad("tensor `pitches` is missing"))?;
    if view.dtype() != safetensors::Dtype::U8 || view.shape().len() != 1 {
        return Err(bad("tensor `pitches` must be U8 of shape [K]"));
    }
    let pitches = view.data().to_vec();
    if pitches.windows(2).any(|w| w[0] >= w[1]) || pitches.iter().any(|&p| p > 127) {
        return Err(bad("pitches must be distinct MIDI numbers in increasing order"));
    }
    Ok(pitches)
}

/// Tensor `pitches` and metadata `intensities` of a format-version-2
/// dictionary: non-decreasing MIDI numbers, one intensity label (1 to 16
/// letters, digits, `-` or `_`) per template, no (pitch, intensity) twice.
fn read_pitches_and_intensities(
    st: &safetensors::SafeTensors,
    meta: &HashMap<String, String>,
) -> Result<(Vec<u8>, Vec<String>)> {
    let bad = |msg: String| Error::new(ErrorKind::Templates, msg);
    let view = st.tensor("pitches").map_err(|_| bad("tensor `pitches` is missing".into()))?;
    if view.dtype() != safetensors::Dtype::U8 || view.shape().len() != 1 {
        return Err(bad("tensor `pitches` must be U8 of shape [K]".into()));
    }
    let pitches = view.data().to_vec();
    if pitches.windows(2).any(|w| w[0] > w[1]) || pitches.iter().any(|&p| p > 127) {
        return Err(bad("pitches must be MIDI numbers in non-decreasing order".into()));
    }
    let json = meta.get("intensities").ok_or_else(|| bad("format version 2 needs metadata `intensities`".into()))?;
    let intensities: Vec<String> = serde_json::from_str(json)
        .map_err(|e| bad(format!("metadata `intensities` is not a JSON list of strings ({e})")))?;
    if intensities.len() != pitches.len() {
        return Err(bad(format!(
            "metadata `intensities` names {} templates but there are {} pitches",
            intensities.len(),
            pitches.len()
        )));
    }
    let valid =
        |l: &str| (1..=16).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if let Some(l) = intensities.iter().find(|l| !valid(l)) {
        return Err(bad(format!("intensity label {l:?} must be 1 to 16 letters, digits, `-` or `_`")));
    }
    let mut pairs: Vec<(u8, &str)> = pitches.iter().copied().zip(intensities.iter().map(String::as_str)).collect();
    pairs.sort();
    if let Some(w) = pairs.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(format!("two templates of MIDI pitch {} at intensity {}", w[0].0, w[0].1)));
    }
    Ok((pitches, intensities))
}

/// Little-endian f32 values.
pub(crate) fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The magnitude spectrogram of one note's recording.
pub(crate) fn note_spectrogram(stft: &Stft, decode: &DecodeOptions, note: &NoteRecording) -> Result<Matrix<f64>> {
    let audio = load_audio(&note.path, decode, stft.config().sample_rate)?;
    let spec = stft.magnitude(&audio.samples);
    Matrix::from_column_major(spec.n_bins, spec.n_frames, spec.data)
}

/// Runs `learn_one` on every note (in parallel), calling `on_done` after
/// each; returns the notes sorted by pitch with their results. Two notes of
/// one pitch, or any failure (the first, naming its file), are an error.
pub(crate) fn learn_each<T: Send>(
    notes: &[NoteRecording],
    on_done: impl Fn(&NoteRecording) + Sync,
    learn_one: impl Fn(&NoteRecording) -> Result<T> + Sync,
) -> Result<(Vec<NoteRecording>, Vec<T>)> {
    let mut sorted = notes.to_vec();
    sorted.sort_by_key(|n| n.pitch);
    if sorted.windows(2).any(|w| w[0].pitch == w[1].pitch) {
        return Err(Error::invalid_input("two recordings of the same pitch"));
    }
    let learned: Vec<Result<T>> = sorted
        .par_iter()
        .map(|note| {
            let r = learn_one(note).map_err(|e| e.with_path(&note.path));
            on_done(note);
            r
        })
        .collect();
    let learned = learned.into_iter().collect::<Result<Vec<T>>>()?;
    Ok((sorted, learned))
}

/// One isolated-note recording and its MIDI pitch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRecording {
    /// The audio file.
    pub path: PathBuf,
    /// Its MIDI pitch.
    pub pitch: u8,
}

/// The parts of a MAPS isolated-note file name
/// `MAPS_ISOL_NO_<I>_S<s>_M<midi>_<piano>.<ext>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsNoteName {
    /// Intensity: `P`, `M` or `F` (MAPS also has others, e.g. `PP`).
    pub intensity: String,
    /// Sustain pedal: 0 or 1.
    pub sustain: u8,
    /// MIDI pitch.
    pub pitch: u8,
    /// Piano name.
    pub piano: String,
}

/// Parses a MAPS isolated-note file name (without folders), or `None`.
pub fn parse_maps_note_name(file_name: &str) -> Option<MapsNoteName> {
    let stem = file_name.rsplit_once('.').map(|(s, _)| s).unwrap_or(file_name);
    let rest = stem.strip_prefix("MAPS_ISOL_NO_")?;
    let mut parts = rest.splitn(4, '_');
    let intensity = parts.next()?.to_string();
    let sustain = parts.next()?.strip_prefix('S')?.parse().ok()?;
    let pitch: u8 = parts.next()?.strip_prefix('M')?.parse().ok()?;
    let piano = parts.next()?.to_string();
    if intensity.is_empty() || piano.is_empty() || pitch > 127 {
        return None;
    }
    Some(MapsNoteName { intensity, sustain, pitch, piano })
}

/// Audio file extensions the tool reads.
pub const AUDIO_EXTENSIONS: &[&str] = &["wav", "flac", "mp3", "ogg"];

/// Whether `path` has one of [`AUDIO_EXTENSIONS`].
pub fn is_audio_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// The isolated notes in `dir` named in MAPS's convention, filtered by
/// intensity (`None` = any) and sustain (`None` = any), sorted by pitch.
/// Two files for one pitch are an error naming both.
pub fn discover_maps_notes(dir: &Path, intensity: Option<&str>, sustain: Option<u8>) -> Result<Vec<NoteRecording>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut by_pitch: BTreeMap<u8, PathBuf> = BTreeMap::new();
    let mut names: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if is_audio_file(&path) {
            names.push(path);
        }
    }
    names.sort();
    for path in names {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(parse_maps_note_name) else {
            continue;
        };
        if intensity.is_some_and(|i| i != name.intensity) || sustain.is_some_and(|s| s != name.sustain) {
            continue;
        }
        if let Some(other) = by_pitch.insert(name.pitch, path.clone()) {
            return Err(Error::invalid_input(format!(
                "two recordings of MIDI pitch {}: {} and {} (choose one with --intensity, or use --manifest)",
                name.pitch,
                other.display(),
                path.display()
            )));
        }
    }
    if by_pitch.is_empty() {
        return Err(Error::invalid_input(format!(
            "no isolated-note recordings named MAPS_ISOL_NO_<I>_S<s>_M<midi>_<piano>.<wav|flac|mp3|ogg>{} here; \
             use --manifest for other names",
            intensity.map(|i| format!(" with intensity {i}")).unwrap_or_default()
        ))
        .with_path(dir));
    }
    Ok(by_pitch.into_iter().map(|(pitch, path)| NoteRecording { path, pitch }).collect())
}

/// Reads a manifest CSV with columns `path,midi` (a header line naming them
/// is required; paths relative to the manifest's folder). Duplicated pitches
/// are an error naming both files.
pub fn read_manifest(path: &Path) -> Result<Vec<NoteRecording>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let bad = |line: usize, msg: &str| Error::invalid_input(format!("line {line}: {msg}")).with_path(path);
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad(1, "empty manifest"))?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
    let path_col = cols.iter().position(|c| c == "path").ok_or_else(|| bad(1, "header must name a `path` column"))?;
    let midi_col = cols.iter().position(|c| c == "midi").ok_or_else(|| bad(1, "header must name a `midi` column"))?;
    let mut by_pitch: BTreeMap<u8, PathBuf> = BTreeMap::new();
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim()).collect();
        let (Some(p), Some(m)) = (fields.get(path_col), fields.get(midi_col)) else {
            return Err(bad(i + 1, "missing fields"));
        };
        let pitch: u8 = m.parse().ok().filter(|&p: &u8| p <= 127).ok_or_else(|| bad(i + 1, "midi must be 0..127"))?;
        let file = base.join(p);
        if let Some(other) = by_pitch.insert(pitch, file.clone()) {
            return Err(bad(
                i + 1,
                &format!("two recordings of MIDI pitch {pitch}: {} and {}", other.display(), file.display()),
            ));
        }
    }
    if by_pitch.is_empty() {
        return Err(bad(1, "the manifest lists no notes"));
    }
    Ok(by_pitch.into_iter().map(|(pitch, path)| NoteRecording { path, pitch }).collect())
}

/// Learns templates from isolated-note recordings.
#[derive(Debug, Clone, Default)]
pub struct TemplateLearner {
    /// The STFT (default: the paper's, 44.1 kHz, 8192/4096/882).
    pub stft: StftConfig,
    /// The rank-one CNMF (default: τ = 10, 500 iterations, KL).
    pub cnmf: RankOneCnmf,
    /// How to decode (default: mean of the channels, whole file).
    pub decode: DecodeOptions,
    /// Free text stored in the dictionary's `source` metadata.
    pub source: String,
}

impl TemplateLearner {
    /// The template of one recording (F × τ, unit L1 norm).
    pub fn learn_one(&self, stft: &Stft, note: &NoteRecording) -> Result<Matrix<f64>> {
        let m = note_spectrogram(stft, &self.decode, note)?;
        let fit = learn_rank_one(&m, &self.cnmf).map_err(|e| e.with_path(&note.path))?;
        Ok(fit.template)
    }

    /// The template of one note given as samples at the STFT's sample rate.
    pub fn learn_samples(&self, stft: &Stft, samples: &[f32]) -> Result<Matrix<f64>> {
        let spec = stft.magnitude(samples);
        let m = Matrix::from_column_major(spec.n_bins, spec.n_frames, spec.data)?;
        Ok(learn_rank_one(&m, &self.cnmf)?.template)
    }

    /// Learns every note (in parallel), calling `on_done` after each, and
    /// returns the dictionary sorted by pitch. The first failure is returned
    /// as an error naming its file.
    pub fn learn(
        &self,
        notes: &[NoteRecording],
        on_done: impl Fn(&NoteRecording) + Sync,
    ) -> Result<TemplateDictionary> {
        Beta::new(self.cnmf.beta.value())?;
        let stft = Stft::new(self.stft.clone())?;
        let (sorted, learned) = learn_each(notes, on_done, |note| self.learn_one(&stft, note))?;
        self.dictionary(sorted.iter().map(|n| n.pitch).collect(), learned)
    }

    /// Learns the MAPS-named isolated notes of `dir` (sustain `sustain`,
    /// `None` = any) at each of `intensities`: with one intensity, one
    /// template per pitch ([`learn`](Self::learn) of
    /// [`discover_maps_notes`]); with several, one per pitch and intensity
    /// ([`TemplateDictionary::from_intensities`]). `on_done` is called after
    /// each note.
    pub fn learn_maps_intensities(
        &self,
        dir: &Path,
        intensities: &[String],
        sustain: Option<u8>,
        on_done: impl Fn(&NoteRecording) + Sync,
    ) -> Result<TemplateDictionary> {
        match intensities {
            [] => Err(Error::invalid_input("no intensity to learn")),
            [one] => self.learn(&discover_maps_notes(dir, Some(one), sustain)?, on_done),
            several => {
                let mut parts = Vec::new();
                for i in several {
                    parts.push((i.clone(), self.learn(&discover_maps_notes(dir, Some(i), sustain)?, &on_done)?));
                }
                TemplateDictionary::from_intensities(parts)
            }
        }
    }

    /// Learns from notes rendered in memory (e.g. by
    /// [`crate::soundfont::render_isolated_notes`], at the STFT's sample
    /// rate), in parallel, calling `on_done` with each pitch when done.
    /// Two notes of one pitch are an error.
    pub fn learn_rendered(
        &self,
        notes: &[crate::soundfont::RenderedNote],
        on_done: impl Fn(u8) + Sync,
    ) -> Result<TemplateDictionary> {
        Beta::new(self.cnmf.beta.value())?;
        let stft = Stft::new(self.stft.clone())?;
        let mut sorted: Vec<&crate::soundfont::RenderedNote> = notes.iter().collect();
        sorted.sort_by_key(|n| n.pitch);
        if let Some(w) = sorted.windows(2).find(|w| w[0].pitch == w[1].pitch) {
            return Err(Error::invalid_input(format!("two renderings of MIDI pitch {}", w[0].pitch)));
        }
        let learned = sorted
            .par_iter()
            .map(|note| {
                let r = self.learn_samples(&stft, &note.samples);
                on_done(note.pitch);
                r.map_err(|e| {
                    let message = format!("MIDI pitch {}: {}", note.pitch, e.message());
                    e.with_message(message)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.dictionary(sorted.iter().map(|n| n.pitch).collect(), learned)
    }

    /// The dictionary of `learned` templates (F × τ each) for `pitches`.
    fn dictionary(&self, pitches: Vec<u8>, learned: Vec<Matrix<f64>>) -> Result<TemplateDictionary> {
        let f = self.stft.n_fft / 2 + 1;
        let tau = self.cnmf.tau;
        let mut data = Vec::with_capacity(f * tau * pitches.len());
        for r in learned {
            data.extend(r.data.iter().map(|&x| x as f32));
        }
        Ok(TemplateDictionary {
            templates: ConvTemplates::new(f, tau, pitches.len(), data)?,
            pitches,
            params: TemplateParams {
                stft: self.stft.clone(),
                beta: self.cnmf.beta.value(),
                iterations: self.cnmf.iterations,
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                source: self.source.clone(),
            },
            intensities: Vec::new(),
            calibration: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_dictionary() -> TemplateDictionary {
        let stft = StftConfig { sample_rate: 8000, n_fft: 16, win_length: 8, hop_length: 4 };
        let data: Vec<f32> = (0..9 * 2 * 3).map(|i| (i % 7) as f32 / 50.0 + 0.01).collect();
        TemplateDictionary {
            templates: ConvTemplates::new(9, 2, 3, data).unwrap(),
            pitches: vec![40, 60, 61],
            intensities: Vec::new(),
            params: TemplateParams {
                stft,
                beta: 1.0,
                iterations: 5,
                tool_version: "test".into(),
                source: "unit".into(),
            },
            calibration: None,
        }
    }

    #[test]
    fn dictionary_round_trips_through_safetensors() {
        let d = small_dictionary();
        let back = TemplateDictionary::from_bytes(&d.to_bytes().unwrap()).unwrap();
        assert_eq!(back, d);
        // The same dictionary always gives the same bytes (the metadata map's
        // order would otherwise change from run to run).
        let bytes = d.to_bytes().unwrap();
        assert!((0..5).all(|_| small_dictionary().to_bytes().unwrap() == bytes));
        assert_eq!(d.missing_pitches().len(), 88 - 3);
    }

    #[test]
    fn calibration_travels_in_the_metadata_and_old_files_fall_back() {
        let c = crate::calibration::Calibration {
            threshold: 0.13,
            scale: crate::transcription::ActivationScale::MeanPitchPeak,
            offset_fraction: 0.01,
            offset_decay_rate: None,
            offset_bridge: 1,
            velocity_intercept: 90.0,
            velocity_slope: 30.0,
            mix_seconds: 60.0,
            mix_notes: 10,
            seed: 7,
            mix_onset_f: 1.0,
            mix_onset_offset_f: 0.5,
            mix_velocity_mae: 3.0,
        };
        let d = TemplateDictionary { calibration: Some(c.clone()), ..small_dictionary() };
        let back = TemplateDictionary::from_bytes(&d.to_bytes().unwrap()).unwrap();
        assert_eq!(back.calibration, Some(c));
        let t = crate::transcription::Transcriber::new(back).unwrap();
        assert_eq!(t.detector.threshold, 0.13);
        // A file without `calibration` (written before it existed) gets the uncalibrated rule.
        let old = crate::transcription::Transcriber::new(small_dictionary()).unwrap();
        assert_eq!(old.detector, crate::transcription::OnsetDetector::default());
        assert_eq!(old.detector.threshold, crate::transcription::DEFAULT_THRESHOLD);
    }

    /// Two parts (intensities P and F) of the small dictionary, the F
    /// part's templates doubled and without pitch 40.
    fn two_intensities() -> TemplateDictionary {
        let p = small_dictionary();
        let mut f = small_dictionary().restrict(50..=70).unwrap();
        f.templates.data.iter_mut().for_each(|x| *x *= 2.0);
        TemplateDictionary::from_intensities(vec![("P".into(), p), ("F".into(), f)]).unwrap()
    }

    #[test]
    fn templates_per_intensity_round_trip_as_version_2() {
        let d = two_intensities();
        assert_eq!(d.pitches, vec![40, 60, 60, 61, 61]);
        assert_eq!(d.intensities, ["P", "P", "F", "P", "F"]);
        assert_eq!(d.distinct_pitches(), vec![40, 60, 61]);
        assert!(d.has_several_per_pitch() && !small_dictionary().has_several_per_pitch());
        // Sorted by pitch, then in the parts' order: template 2 is F's pitch 60 (the small dictionary's
        // template 1, doubled).
        let small = small_dictionary();
        assert!(d.templates.template(2).iter().zip(small.templates.template(1)).all(|(a, b)| *a == 2.0 * b));
        assert!(d.params.source.ends_with("(intensities P,F)"), "{}", d.params.source);
        let bytes = d.to_bytes().unwrap();
        let version = |b: &[u8]| model_file_metadata(b, "format_version");
        assert_eq!(version(&bytes).as_deref(), Some("2"));
        assert_eq!(TemplateDictionary::from_bytes(&bytes).unwrap(), d);
        assert_eq!(d.restrict(60..=60).unwrap().intensities, ["P", "F"]);
        // One template per pitch is still version 1, without `intensities`.
        let old = small.to_bytes().unwrap();
        assert_eq!(version(&old).as_deref(), Some("1"));
        assert_eq!(model_file_metadata(&old, "intensities"), None);
        // Parts must agree and not repeat.
        let twice = vec![("P".to_string(), small.clone()), ("P".to_string(), small.clone())];
        assert!(TemplateDictionary::from_intensities(twice).unwrap_err().to_string().contains("given twice"));
        let nested = vec![("X".to_string(), d.clone())];
        assert!(TemplateDictionary::from_intensities(nested).is_err());
        assert!(TemplateDictionary::from_intensities(Vec::new()).is_err());
    }

    /// The bytes of `d` with metadata `key` replaced by `value` (removed for
    /// `None`) and tensor `pitches` by `pitches`.
    fn tampered(d: &TemplateDictionary, key: &str, value: Option<&str>, pitches: &[u8]) -> Vec<u8> {
        use safetensors::tensor::{serialize, Dtype, TensorView};
        let bytes = d.to_bytes().unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        match value {
            Some(v) => meta.insert(key.to_string(), v.to_string()),
            None => meta.remove(key),
        };
        let t = st.tensor("templates").unwrap();
        let templates = TensorView::new(Dtype::F32, t.shape().to_vec(), t.data()).unwrap();
        let pitches = TensorView::new(Dtype::U8, vec![pitches.len()], pitches).unwrap();
        serialize([("pitches", pitches), ("templates", templates)], &Some(meta)).unwrap()
    }

    #[test]
    fn damaged_intensity_mappings_are_one_line_errors() {
        let d = two_intensities();
        let p = d.pitches.clone();
        let cases: [(&str, Option<&str>, Vec<u8>, &str); 7] = [
            ("intensities", None, p.clone(), "needs metadata `intensities`"),
            ("intensities", Some("[\"P\",\"F\"]"), p.clone(), "names 2 templates but there are 5"),
            ("intensities", Some("P,F"), p.clone(), "not a JSON list of strings"),
            (
                "intensities",
                Some("[\"P\",\"P\",\"P\",\"P\",\"F\"]"),
                p.clone(),
                "two templates of MIDI pitch 60 at intensity P",
            ),
            ("intensities", Some("[\"P\",\"P\",\"\",\"P\",\"F\"]"), p.clone(), "must be 1 to 16 letters"),
            ("intensities", Some("[\"P\",\"P\",\"F\",\"P\",\"F\"]"), vec![40, 61, 60, 61, 61], "non-decreasing"),
            (
                "format_version",
                Some("3"),
                p.clone(),
                "format version 3 is not supported by this sscnmf (reads versions 1 to 2)",
            ),
        ];
        for (key, value, pitches, needle) in cases {
            let err = TemplateDictionary::from_bytes(&tampered(&d, key, value, &pitches)).unwrap_err().to_string();
            assert!(err.contains(needle) && !err.contains('\n'), "{key}={value:?}: {err}");
        }
        // A version-1 file may not repeat a pitch, even with labels.
        let err = TemplateDictionary::from_bytes(&tampered(&d, "format_version", Some("1"), &p)).unwrap_err();
        assert!(err.to_string().contains("distinct MIDI numbers"), "{err}");
    }

    /// Metadata `key` of a safetensors file.
    fn model_file_metadata(bytes: &[u8], key: &str) -> Option<String> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
        header.metadata().as_ref()?.get(key).cloned()
    }

    #[test]
    fn builtin_dictionary_covers_the_piano() {
        let d = TemplateDictionary::builtin().unwrap();
        assert_eq!(d.pitches, PIANO_PITCHES.collect::<Vec<u8>>());
        assert_eq!((d.tau(), d.params.stft.clone()), (10, StftConfig::default()));
        assert!(BUILTIN_TEMPLATES.len() < 10 << 20);
    }

    #[test]
    fn bf16_dictionaries_read_back_to_bf16_precision() {
        let d = small_dictionary();
        let bytes = d.to_bytes_as(StoredPrecision::Bf16).unwrap();
        assert!(bytes.len() < d.to_bytes().unwrap().len());
        let back = TemplateDictionary::from_bytes(&bytes).unwrap();
        assert_eq!((back.pitches.clone(), back.params.clone()), (d.pitches.clone(), d.params.clone()));
        for (a, b) in d.templates.data.iter().zip(&back.templates.data) {
            assert!((a - b).abs() <= a.abs() / 256.0, "{a} read back as {b}");
        }
    }

    #[test]
    fn damaged_dictionaries_are_rejected_with_a_reason() {
        let bytes = small_dictionary().to_bytes().unwrap();
        let err = TemplateDictionary::from_bytes(&bytes[..bytes.len() - 10]).unwrap_err();
        assert!(err.to_string().contains("not a valid templates file"), "{err}");
        assert!(TemplateDictionary::from_bytes(b"hello").is_err());
        assert!(TemplateDictionary::from_bytes(&[]).is_err());
        let mut d = small_dictionary();
        d.templates.data[5] = f32::NAN;
        let err = TemplateDictionary::from_bytes(&d.to_bytes().unwrap()).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
        let mut d = small_dictionary();
        d.params.stft.n_fft = 32;
        let err = TemplateDictionary::from_bytes(&d.to_bytes().unwrap()).unwrap_err();
        assert!(err.to_string().contains("frequency bins"), "{err}");
    }

    #[test]
    fn maps_names_parse() {
        let n = parse_maps_note_name("MAPS_ISOL_NO_M_S0_M60_FluidR3.flac").unwrap();
        assert_eq!(n, MapsNoteName { intensity: "M".into(), sustain: 0, pitch: 60, piano: "FluidR3".into() });
        let n = parse_maps_note_name("MAPS_ISOL_NO_PP_S1_M108_ENSTDkCl.wav").unwrap();
        assert_eq!((n.intensity.as_str(), n.sustain, n.pitch), ("PP", 1, 108));
        assert!(parse_maps_note_name("MAPS_MUS-bach_FluidR3.flac").is_none());
        assert!(parse_maps_note_name("MAPS_ISOL_NO_M_S0_Mxx_F.wav").is_none());
    }

    #[test]
    fn discovery_filters_and_reports_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        for name in
            ["MAPS_ISOL_NO_M_S0_M60_X.wav", "MAPS_ISOL_NO_F_S0_M60_X.wav", "MAPS_ISOL_NO_M_S0_M61_X.flac", "notes.txt"]
        {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let found = discover_maps_notes(dir.path(), Some("M"), Some(0)).unwrap();
        assert_eq!(found.iter().map(|n| n.pitch).collect::<Vec<_>>(), vec![60, 61]);
        let err = discover_maps_notes(dir.path(), None, None).unwrap_err().to_string();
        assert!(err.contains("MAPS_ISOL_NO_F_S0_M60_X.wav") && err.contains("MAPS_ISOL_NO_M_S0_M60_X.wav"), "{err}");
        std::fs::write(dir.path().join("m.csv"), "path,midi\na.wav,60\nb.wav,60\n").unwrap();
        let err = read_manifest(&dir.path().join("m.csv")).unwrap_err().to_string();
        assert!(err.contains("a.wav") && err.contains("b.wav"), "{err}");
    }
}
