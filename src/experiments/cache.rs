//! The experiment's cache: learned templates and each song's activations,
//! keyed by everything that shapes them and written atomically, so that a
//! re-run (another δ grid, an interrupted run) reuses them. Each entry also
//! records how long it took to make, for the report's timing table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::dataset::Piano;
use crate::attack_decay::{AttackDecayLearner, AttackDecayModel};
use crate::calibration;
use crate::factorization::RankOneCnmf;
use crate::templates::{discover_maps_notes, TemplateDictionary, TemplateLearner};
use crate::transcription::{Activations, Method, Transcriber};
use crate::{Error, Result};

/// How a model (a template dictionary or an attack/decay model) was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LearnRecord {
    /// Notes learned (templates, or notes of the attack/decay model).
    pub templates: usize,
    /// Wall seconds the learning took (when it happened: in this run, or in
    /// the run that filled the cache).
    pub seconds: f64,
    /// Cores of the machine that learned them.
    pub cores: usize,
    /// Whether the model was loaded from the cache in this run.
    pub from_cache: bool,
}

/// A learned model (a template dictionary or an attack/decay model) and how
/// it was obtained.
#[derive(Debug, Clone)]
pub struct Learned<M> {
    /// The model.
    pub model: M,
    /// Learning time and origin.
    pub record: LearnRecord,
}

/// A template dictionary and how it was obtained.
pub type LearnedTemplates = Learned<TemplateDictionary>;

/// An attack/decay model and how it was obtained.
pub type LearnedAttackDecay = Learned<AttackDecayModel>;

/// The cores this process may use (`std::thread::available_parallelism`).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The isolated notes of `piano` and a digest of their folder's canonical
/// path (for cache file names).
fn isolated_notes(piano: &Piano) -> Result<(&PathBuf, u32)> {
    let Some(isolated) = &piano.isolated_notes else {
        return Err(Error::invalid_input(format!(
            "piano `{}` has no ISOL/NO folder to learn templates from",
            piano.name
        )));
    };
    let source = isolated.canonicalize().unwrap_or_else(|_| isolated.clone());
    Ok((isolated, fnv1a(source.to_string_lossy().as_bytes(), FNV_OFFSET) as u32))
}

/// A model loaded from `cached` when that file is there (with the learning
/// time recorded beside it, `<file>.json`), else made by `learn` and, when
/// `cached` is given, saved there (atomically, by `save`) with its record.
fn learn_or_load_model<M>(
    cached: Option<PathBuf>,
    load: impl Fn(&Path) -> Result<M>,
    save: impl Fn(&M, &Path) -> Result<()>,
    learn: impl FnOnce() -> Result<M>,
    count: impl Fn(&M) -> usize,
) -> Result<Learned<M>> {
    let record_path = |p: &Path| {
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(".json");
        p.with_file_name(name)
    };
    if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
        let model = load(path)?;
        let recorded: Option<LearnRecord> =
            std::fs::read(record_path(path)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let record = LearnRecord {
            templates: count(&model),
            from_cache: true,
            ..recorded.unwrap_or(LearnRecord { templates: 0, seconds: f64::NAN, cores: 0, from_cache: true })
        };
        return Ok(Learned { model, record });
    }
    let started = Instant::now();
    let model = learn()?;
    let record = LearnRecord {
        templates: count(&model),
        seconds: started.elapsed().as_secs_f64(),
        cores: cores(),
        from_cache: false,
    };
    if let Some(path) = &cached {
        let dir = path.parent().expect("in a folder");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        save(&model, path)?;
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(format!("learn record: {e}")))?;
        crate::files::write_atomically(&record_path(path), &json)?;
    }
    Ok(Learned { model, record })
}

/// The templates of `piano` (its intensity-M, no-sustain isolated notes) at
/// `tau` with the default learning parameters, calibrated on all its
/// no-sustain isolated notes ([`crate::calibration::calibrate_on_folder`]):
/// loaded from `cache` when a file learned from the same folder with the same
/// parameters and tool version is there, else learned (and saved there with
/// a record of the learning time beside it; the calibration is not timed).
/// The calibration is cached beside the templates under a digest of the
/// calibration procedure ([`crate::calibration::procedure_key`]), so a new
/// procedure recalibrates without relearning; notes without a `.mid`
/// ground truth leave the templates uncalibrated.
pub fn learn_or_load(piano: &Piano, tau: usize, cache: Option<&Path>) -> Result<LearnedTemplates> {
    learn_or_load_intensities(piano, tau, &["M".to_string()], calibration::calibration_transcriber, cache)
}

/// [`learn_or_load`] from the notes of each of `intensities` (MAPS labels):
/// one template per pitch for one intensity (`["M"]` is
/// [`learn_or_load`]), one per pitch and intensity for several
/// ([`TemplateLearner::learn_maps_intensities`]); the cache file's name
/// holds the intensities (`M`, `PMF`). The calibration runs on the
/// transcriber `transcriber` makes of the (uncalibrated) dictionary: with
/// several templates per pitch, its merge and selection shape the
/// activations the rule is calibrated on, so they are part of the cached
/// calibration's name. `transcriber` gives the calibration's frequency
/// range too: [`calibration::calibration_transcriber`]'s all bins.
pub fn learn_or_load_intensities(
    piano: &Piano,
    tau: usize,
    intensities: &[String],
    transcriber: impl Fn(TemplateDictionary) -> Result<Transcriber>,
    cache: Option<&Path>,
) -> Result<LearnedTemplates> {
    let (isolated, source) = isolated_notes(piano)?;
    let learner = TemplateLearner {
        cnmf: RankOneCnmf { tau, ..Default::default() },
        source: isolated.display().to_string(),
        ..Default::default()
    };
    let cached = cache.map(|dir| {
        dir.join(format!(
            "{}-{source:08x}-{}-tau{}-it{}-beta{}-v{}.templates",
            piano.name,
            intensities.concat(),
            tau,
            learner.cnmf.iterations,
            learner.cnmf.beta.value(),
            env!("CARGO_PKG_VERSION")
        ))
    });
    let mut learned = learn_or_load_model(
        cached.clone(),
        TemplateDictionary::load,
        TemplateDictionary::save,
        || learner.learn_maps_intensities(isolated, intensities, Some(0), |_| {}),
        |d| d.pitches.len(),
    )?;
    learned.model.calibration = calibrate_or_load(&learned.model, isolated, cached.as_deref(), transcriber)?;
    Ok(learned)
}

/// The calibration of `dictionary` on the isolated notes in `isolated`:
/// read from beside `templates_file` (`<file>.calibration-<digest>.json`)
/// when there, else computed (and saved there). `None` when the notes have
/// no `.mid` ground truth.
fn calibrate_or_load(
    dictionary: &TemplateDictionary,
    isolated: &Path,
    templates_file: Option<&Path>,
    transcriber: impl Fn(TemplateDictionary) -> Result<Transcriber>,
) -> Result<Option<calibration::Calibration>> {
    let plain = TemplateDictionary { calibration: None, ..dictionary.clone() };
    let calibrating = transcriber(plain)?;
    let path = templates_file.map(|p| {
        let mut key = calibration::procedure_key();
        if dictionary.has_several_per_pitch() {
            key.push_str(&format!(" merge={:?} selection={:?}", calibrating.merge, calibrating.selection));
        }
        let digest = fnv1a(key.as_bytes(), FNV_OFFSET) as u32;
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".calibration-{digest:08x}.json"));
        p.with_file_name(name)
    });
    let stored = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    if let Some(c) = stored.and_then(|json| calibration::Calibration::from_json(&json).ok()) {
        return Ok(Some(c));
    }
    match calibration::calibrate_on_folder(&calibrating, isolated, 0) {
        Ok(c) => {
            if let Some(p) = &path {
                crate::files::write_atomically(p, c.to_json().as_bytes())?;
            }
            Ok(Some(c))
        }
        Err(e) if e.kind() == crate::ErrorKind::InvalidInput => Ok(None),
        Err(e) => Err(e),
    }
}

/// The attack/decay model of `piano` (Cheng et al. 2016; its intensity-M,
/// no-sustain isolated notes, the default [`AttackDecayLearner`]), from
/// `cache` or learned and saved there, as [`learn_or_load`] does for the
/// templates. The file name holds the training rounds, the envelope's
/// half-width, the frames kept after the onset, the seed, a digest of every
/// learner setting (STFT, decoding, training) and the tool's version.
pub fn learn_or_load_attack_decay(piano: &Piano, cache: Option<&Path>) -> Result<LearnedAttackDecay> {
    let (isolated, source) = isolated_notes(piano)?;
    let learner = AttackDecayLearner { source: isolated.display().to_string(), ..Default::default() };
    let t = &learner.training;
    let settings = format!("{:?} {:?} {:?}", learner.stft, learner.decode, learner.training);
    let cached = cache.map(|dir| {
        dir.join(format!(
            "{}-{source:08x}-M-ad-it{}-env{}-after{}-seed{}-{:08x}-v{}.attack-decay",
            piano.name,
            t.iterations,
            2 * t.half_envelope + 1,
            t.frames_after_onset,
            t.seed,
            fnv1a(settings.as_bytes(), FNV_OFFSET) as u32,
            env!("CARGO_PKG_VERSION")
        ))
    });
    learn_or_load_model(
        cached,
        AttackDecayModel::load,
        AttackDecayModel::save,
        || learner.learn(&discover_maps_notes(isolated, Some("M"), Some(0))?, |_| {}),
        |m| m.pitches.len(),
    )
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

/// A digest of the spectra `method` fits, and of everything else of its
/// model: CNMF, the whole templates; NMF, their first slices; attack/decay,
/// all its tensors (attack and decay spectra, decay rates, envelope). The
/// pitches are in every digest.
fn model_digest(transcriber: &Transcriber) -> u64 {
    let bytes = |hash: u64, v: &[f32]| v.iter().fold(hash, |h, x| fnv1a(&x.to_le_bytes(), h));
    let d = transcriber.dictionary();
    let hash = fnv1a(&d.pitches, FNV_OFFSET);
    match (transcriber.method(), transcriber.attack_decay_params()) {
        (Method::AttackDecay, Some(p)) => bytes(bytes(bytes(hash, &p.spectra), &p.decay_rates), &p.envelope),
        (Method::Nmf, _) => bytes(hash, &d.templates.first_slices().data),
        _ => bytes(hash, &d.templates.data),
    }
}

/// Everything that shapes a song's activations, as text: the audio file
/// (path, size, modification time), the decoding, the method, its
/// regression's settings, a digest of its model ([`model_digest`]), the
/// merge and selection of several templates per pitch (when the model has
/// them) and the tool's version.
fn activation_key(transcriber: &Transcriber, audio: &Path) -> Result<String> {
    let meta = std::fs::metadata(audio).map_err(|e| Error::io(audio, e))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let method = transcriber.method();
    let regression = match method {
        Method::AttackDecay => format!("{:?}", transcriber.onset_regression),
        Method::Cnmf | Method::Nmf => transcriber.regression.settings_key(),
    };
    // Only when on, so that the keys of runs without adaptation stay as they were.
    let regression = match &transcriber.adaptation {
        Some(a) => format!("{regression} adaptation={a:?}"),
        None => regression,
    };
    let intensities = if transcriber.dictionary().has_several_per_pitch() {
        format!(" merge={:?} selection={:?}", transcriber.merge, transcriber.selection)
    } else {
        String::new()
    };
    Ok(format!(
        "audio={} size={} modified={:?} decode={:?} chunking={:?} method={method} regression={regression} stft={:?} \
         model={:016x}{intensities} version={}",
        audio.display(),
        meta.len(),
        modified,
        transcriber.decode,
        transcriber.chunking,
        transcriber.dictionary().params.stft,
        model_digest(transcriber),
        env!("CARGO_PKG_VERSION")
    ))
}

/// A song's activations and how they were obtained.
#[derive(Debug, Clone)]
pub struct SongActivations {
    /// The activations.
    pub activations: Activations,
    /// Seconds of audio they cover.
    pub audio_seconds: f64,
    /// Wall seconds the transcription took (in this run, or as recorded by
    /// the run that filled the cache).
    pub seconds: f64,
    /// Whether they were read from the cache in this run.
    pub from_cache: bool,
}

/// The activations of `audio`, from `cache` (a folder) when an entry made
/// with exactly the same key is there, else computed and stored there. An
/// entry is written atomically, so an interrupted run never leaves one
/// half-written; an entry that does not parse or whose key differs is
/// recomputed.
pub fn cached_activations(transcriber: &Transcriber, audio: &Path, cache: Option<&Path>) -> Result<SongActivations> {
    let compute = || -> Result<SongActivations> {
        let started = Instant::now();
        let t = transcriber.transcribe_file(audio)?;
        Ok(SongActivations {
            activations: t.activations,
            audio_seconds: t.audio_seconds,
            seconds: started.elapsed().as_secs_f64(),
            from_cache: false,
        })
    };
    let Some(dir) = cache else {
        return compute();
    };
    let key = activation_key(transcriber, audio)?;
    let path = dir.join("activations").join(format!("{:016x}.safetensors", fnv1a(key.as_bytes(), FNV_OFFSET)));
    if let Some(hit) = std::fs::read(&path).ok().and_then(|bytes| read_activations(&bytes, &key)) {
        return Ok(hit);
    }
    let computed = compute()?;
    let folder = path.parent().expect("in a folder");
    std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    crate::files::write_atomically(&path, &write_activations(&computed, &key)?)?;
    Ok(computed)
}

fn write_activations(s: &SongActivations, key: &str) -> Result<Vec<u8>> {
    use safetensors::tensor::{serialize, Dtype, TensorView};
    let a = &s.activations;
    let bytes: Vec<u8> = a.values.data.iter().flat_map(|x| x.to_le_bytes()).collect();
    // Column-major K × N is row-major N × K.
    let view = TensorView::new(Dtype::F64, vec![a.values.cols, a.values.rows], &bytes)
        .map_err(|e| Error::internal(format!("activations tensor: {e}")))?;
    let meta: std::collections::HashMap<String, String> = [
        ("key".to_string(), key.to_string()),
        ("pitches".to_string(), serde_json::to_string(&a.pitches).expect("integers")),
        ("hop_seconds".to_string(), format!("{:e}", a.hop_seconds)),
        ("start_seconds".to_string(), format!("{:e}", a.start_seconds)),
        ("audio_seconds".to_string(), format!("{:e}", s.audio_seconds)),
        ("transcribe_seconds".to_string(), format!("{:e}", s.seconds)),
    ]
    .into_iter()
    .collect();
    let bytes =
        serialize([("activations", view)], &Some(meta)).map_err(|e| Error::internal(format!("activations: {e}")))?;
    crate::files::canonical_safetensors(bytes)
}

fn read_activations(bytes: &[u8], key: &str) -> Option<SongActivations> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let meta = meta.metadata().as_ref()?;
    if meta.get("key").map(String::as_str) != Some(key) {
        return None;
    }
    let number = |name: &str| meta.get(name)?.parse::<f64>().ok();
    let pitches: Vec<u8> = serde_json::from_str(meta.get("pitches")?).ok()?;
    let (hop_seconds, start_seconds) = (number("hop_seconds")?, number("start_seconds")?);
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
    Some(SongActivations {
        activations: Activations { values, pitches, hop_seconds, start_seconds },
        audio_seconds: number("audio_seconds")?,
        seconds: number("transcribe_seconds")?,
        from_cache: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_activations_round_trip_and_check_their_key() {
        let mut values = crate::factorization::Matrix::zeros(3, 5);
        values.set(1, 4, 0.25);
        values.set(2, 0, 1.0 / 3.0);
        let a = Activations { values, pitches: vec![60, 62, 64], hop_seconds: 0.02, start_seconds: 1.5 };
        let s = SongActivations { activations: a.clone(), audio_seconds: 0.1, seconds: 2.5, from_cache: false };
        let bytes = write_activations(&s, "key one").unwrap();
        let back = read_activations(&bytes, "key one").unwrap();
        assert_eq!(back.activations.values, a.values);
        assert_eq!((back.activations.pitches, back.activations.hop_seconds), (a.pitches.clone(), 0.02));
        assert_eq!((back.activations.start_seconds, back.audio_seconds, back.seconds), (1.5, 0.1, 2.5));
        assert!(back.from_cache);
        assert!(read_activations(&bytes, "key two").is_none());
        assert!(read_activations(&bytes[..bytes.len() - 1], "key one").is_none());
        assert!(read_activations(b"", "key one").is_none());
    }
}
