//! Note lists and their file formats: standard MIDI files, CSV, MAPS txt, JSON.
//!
//! A note list is a `Vec<Note>`: onset and offset in seconds, MIDI pitch,
//! MIDI velocity. Every reader returns the notes sorted by (onset, pitch,
//! offset) and rejects bad input with an [`Error`] of kind
//! [`ErrorKind::Notes`]; no input makes a reader panic. The in-memory parsers
//! ([`parse_midi`], [`parse_csv`], [`parse_maps_txt`], [`parse_json`]) return
//! errors without a file name; [`read_notes`] adds it.
//!
//! # Formats
//!
//! ## Standard MIDI files (`.mid`, `.midi`)
//!
//! Reading (formats 0 and 1; format 2 is rejected):
//! - Any PPQ division with a full tempo map, or SMPTE timecode division
//!   (24, 25, 29.97, 30 frames per second; tempo events are then ignored).
//! - Set Tempo events of *every* track are merged into one tempo map that
//!   applies to all tracks (the usual format-1 reading; pretty_midi only
//!   honours track 0 and warns otherwise). Before the first Set Tempo the
//!   tempo is 120 quarter notes per minute. When several tracks set the tempo
//!   at the same tick, the last track's value wins. Ticks are converted to
//!   seconds from the exact integer sum of `ticks × µs per quarter`, with a
//!   single rounding at the final division.
//! - Note-on with velocity 0 is a note-off. Running status is handled.
//! - Notes of all 16 channels are read, including channel 10 (index 9,
//!   General MIDI percussion); program changes are ignored.
//! - Overlapping notes of one (channel, pitch) follow pretty_midi: a note-off
//!   closes *every* open note of that (channel, pitch) that started at an
//!   earlier tick; notes that started at the note-off's own tick stay open.
//!   A note-off with no open note is ignored.
//! - Zero-length notes (note-on and note-off at the same tick) are dropped,
//!   as pretty_midi drops them: such a note-off closes nothing, and the
//!   note-on it pairs with is discarded unless the same note-off also closed
//!   an earlier note, in which case the new note stays open.
//! - Notes still open at the end of a track end at the time of the track's
//!   last event (usually End of Track); if that is their own onset they are
//!   dropped (zero length). pretty_midi drops all unterminated notes instead.
//! - The sustain pedal (CC 64) and all other controllers are ignored:
//!   offsets are key releases, as in MAPS ground truth.
//! - The velocity of a note is its note-on velocity.
//! - A file that is not MIDI, declares more tracks than it holds, has a
//!   chunk running past the end of the file, or holds an undecodable event is
//!   an error.
//!
//! Writing ([`to_midi_bytes`]): format 0 (one track) with a track name,
//! tempo 500000 µs per quarter (120 quarter notes per minute) and 5000 ticks
//! per quarter, so one tick is exactly 0.1 ms and every time on a 20 ms
//! frame grid is exact. Times are rounded to the nearest tick and clamped to
//! 0 ..= 2^28 − 1 ticks (about 7.4 hours); non-finite times become 0. Notes
//! shorter than a tick after rounding are lengthened to one tick. Velocities
//! are clamped to 1..=127. Note-offs are explicit Note Off messages with
//! release velocity 64. At equal ticks note-offs come before note-ons, so
//! same-pitch notes that touch (offset of one = onset of the next) decode
//! back to the same notes. Same-pitch notes that *overlap* cannot be told
//! apart on one channel (a note-off closes them all), so each note goes to
//! the lowest channel among 0–8, 10–15 (channel 10, the percussion channel,
//! is skipped) where that pitch is not sounding; every channel used gets
//! program 0 (Acoustic Grand Piano). Only with more than 15 simultaneous
//! notes of one pitch does a note fall back to channel 0 and lose its
//! offset.
//!
//! ## CSV (`.csv`)
//!
//! The note-event CSV of basic-pitch: header
//! `start_time_s,end_time_s,pitch_midi,velocity`, then one note per line.
//! Columns are taken by position (onset, offset, pitch, velocity); header
//! names are not checked, except that a fourth column is a velocity only
//! when the header (if any) calls it `velocity`.
//! Reading accepts extra trailing columns (basic-pitch's `pitch_bends`),
//! files without the velocity column (velocity 100), files without a header
//! (a first line whose first field is not a number is the header), blank
//! lines, CRLF line endings, spaces and double quotes around fields, and
//! a pitch written as an integral float such as `60.0`. A velocity is
//! rounded to the nearest integer and must lie in 0..=127; 0 is read as 1.
//! Writing uses the four-column header and times with 6 decimals.
//!
//! ## MAPS txt (`.txt`)
//!
//! The ground-truth format of the MAPS database: header
//! `OnsetTime\tOffsetTime\tMidiPitch`, then one tab-separated note per line.
//! Reading splits on any whitespace and tolerates extra columns, blank lines,
//! CRLF and a missing header. The format has no velocity: notes read from it
//! get velocity 100. Writing uses the header, tabs, 6 decimals and `\n`.
//!
//! ## JSON (`.json`)
//!
//! ```json
//! {"format": "sscnmf-notes", "version": 1,
//!  "notes": [{"onset": 0.5, "offset": 1.25, "pitch": 60, "velocity": 100}]}
//! ```
//!
//! `notes` is required; each note needs `onset` and `offset` (seconds) and
//! `pitch` (MIDI number, an integer or integral float); `velocity` is
//! optional (default 100, same rules as CSV). `format` and `version` are
//! written, and checked when present (`"sscnmf-notes"`, version 1); other
//! fields are ignored. Times are written with the shortest decimal that reads
//! back to the same `f64`.
//!
//! ## Validation (text formats)
//!
//! Times must be finite and non-negative, the offset not before the onset
//! (equal is allowed), the pitch an integer in 0..=127. Errors name the line
//! (CSV, txt) or the note index (JSON).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use midly::num::{u15, u24, u28, u4, u7};
use midly::{Format, Fps, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

use crate::error::{Error, ErrorKind, Result};

/// One transcribed or reference note.
///
/// Times are in seconds from the start of the audio; `offset > onset`.
/// `pitch` is the MIDI note number (60 = C4, 69 = A4 = 440 Hz).
/// `velocity` is the MIDI velocity 1..=127.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Note {
    /// Onset time in seconds.
    pub onset: f64,
    /// Offset (release) time in seconds.
    pub offset: f64,
    /// MIDI pitch.
    pub pitch: u8,
    /// MIDI velocity, 1..=127.
    pub velocity: u8,
}

/// Velocity given to notes read from a format or column without velocities.
pub const DEFAULT_VELOCITY: u8 = 100;

/// Ticks per quarter note of the MIDI files we write.
pub const MIDI_WRITE_PPQ: u16 = 5000;

/// Tempo of the MIDI files we write, in µs per quarter note (120 qpm).
pub const MIDI_WRITE_TEMPO: u32 = 500_000;

/// Ticks per second of the MIDI files we write: one tick is 0.1 ms.
const WRITE_TICKS_PER_SECOND: f64 = 10_000.0;

/// Default tempo of a MIDI file before its first Set Tempo event.
const DEFAULT_TEMPO: u32 = 500_000;

/// A note-list file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoteFormat {
    /// Standard MIDI file (`.mid`, `.midi`).
    Midi,
    /// basic-pitch note-event CSV (`.csv`).
    Csv,
    /// MAPS ground-truth text (`.txt`).
    MapsTxt,
    /// JSON note list (`.json`), schema in the module documentation.
    Json,
}

impl NoteFormat {
    /// The format named by a path's extension (case-insensitive): `.mid` and
    /// `.midi`, `.csv`, `.txt`, `.json`; `None` for anything else.
    pub fn from_path(path: &Path) -> Option<NoteFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "mid" | "midi" => Some(NoteFormat::Midi),
            "csv" => Some(NoteFormat::Csv),
            "txt" => Some(NoteFormat::MapsTxt),
            "json" => Some(NoteFormat::Json),
            _ => None,
        }
    }

    /// The file extension written for this format, without the dot:
    /// `mid`, `csv`, `txt` or `json`.
    pub fn extension(&self) -> &'static str {
        match self {
            NoteFormat::Midi => "mid",
            NoteFormat::Csv => "csv",
            NoteFormat::MapsTxt => "txt",
            NoteFormat::Json => "json",
        }
    }

    /// The name used on the command line: `midi`, `csv`, `txt` or `json`.
    pub fn name(&self) -> &'static str {
        match self {
            NoteFormat::Midi => "midi",
            NoteFormat::Csv => "csv",
            NoteFormat::MapsTxt => "txt",
            NoteFormat::Json => "json",
        }
    }
}

impl fmt::Display for NoteFormat {
    /// Writes [`NoteFormat::name`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NoteFormat {
    type Err = Error;

    /// Parses a command-line name, case-insensitive: `midi` (or `mid`),
    /// `csv`, `txt` (or `maps`), `json`.
    fn from_str(s: &str) -> Result<NoteFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "midi" | "mid" => Ok(NoteFormat::Midi),
            "csv" => Ok(NoteFormat::Csv),
            "txt" | "maps" => Ok(NoteFormat::MapsTxt),
            "json" => Ok(NoteFormat::Json),
            _ => Err(Error::invalid_input(format!("unknown note format '{s}' (expected midi, csv, txt or json)"))),
        }
    }
}

fn notes_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Notes, message)
}

/// Sorts notes by (onset, pitch, offset, velocity), the order every reader returns.
///
/// A time of −0 (a text "-0") becomes +0 first: the sort's total order puts
/// −0 before +0, while they are the same time (found by `cargo fuzz`: a note
/// at −0 with a higher pitch sorted before one at +0).
pub fn sort_notes(notes: &mut [Note]) {
    for n in notes.iter_mut() {
        // x + 0.0 is x, except that −0 + 0 = +0.
        n.onset += 0.0;
        n.offset += 0.0;
    }
    notes.sort_by(|a, b| {
        a.onset
            .total_cmp(&b.onset)
            .then(a.pitch.cmp(&b.pitch))
            .then(a.offset.total_cmp(&b.offset))
            .then(a.velocity.cmp(&b.velocity))
    });
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// Reads a note list from `path`.
///
/// The parser is chosen by the extension (see [`NoteFormat::from_path`]);
/// for any other extension the content decides: a file starting with the
/// `MThd` magic is MIDI, text starting with `{` is JSON, text whose first
/// non-blank line holds a comma is CSV, anything else is MAPS txt.
/// Errors name `path`.
pub fn read_notes(path: &Path) -> Result<Vec<Note>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format = NoteFormat::from_path(path).unwrap_or_else(|| sniff_format(&bytes));
    parse_bytes(&bytes, format).map_err(|e| e.with_path(path))
}

/// Guesses the format of a file with an unknown extension from its content.
fn sniff_format(bytes: &[u8]) -> NoteFormat {
    if bytes.starts_with(b"MThd") {
        return NoteFormat::Midi;
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.starts_with('{') {
        NoteFormat::Json
    } else if text.lines().next().is_some_and(|line| line.contains(',')) {
        NoteFormat::Csv
    } else {
        NoteFormat::MapsTxt
    }
}

fn parse_bytes(bytes: &[u8], format: NoteFormat) -> Result<Vec<Note>> {
    if format == NoteFormat::Midi {
        return parse_midi(bytes);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| notes_error(format!("not valid UTF-8 text ({e})")))?;
    match format {
        NoteFormat::Midi => unreachable!("handled above"),
        NoteFormat::Csv => parse_csv(text),
        NoteFormat::MapsTxt => parse_maps_txt(text),
        NoteFormat::Json => parse_json(text),
    }
}

/// Converts MIDI ticks to seconds.
enum Clock {
    /// PPQ division: a tempo map of (start tick, µs per quarter, Σ ticks × µs
    /// before the start tick), sorted by start tick, the first at tick 0.
    Metrical { ppq: u16, segments: Vec<(u64, u32, u128)> },
    /// SMPTE division: seconds = ticks × `numerator` / `denominator`.
    Timecode { numerator: u64, denominator: u64 },
}

impl Clock {
    fn metrical(ppq: u16, mut tempo_events: Vec<(u64, u32)>) -> Clock {
        // Stable sort: at equal ticks the event read last (later track) wins.
        tempo_events.sort_by_key(|&(tick, _)| tick);
        let mut segments: Vec<(u64, u32, u128)> = vec![(0, DEFAULT_TEMPO, 0)];
        for (tick, tempo) in tempo_events {
            let &(start, current, acc) = segments.last().expect("never empty");
            if tick == start {
                segments.last_mut().expect("never empty").1 = tempo;
            } else {
                let acc = acc + u128::from(tick - start) * u128::from(current);
                segments.push((tick, tempo, acc));
            }
        }
        Clock::Metrical { ppq, segments }
    }

    fn seconds(&self, tick: u64) -> f64 {
        match self {
            Clock::Metrical { ppq, segments } => {
                let i = segments.partition_point(|&(start, _, _)| start <= tick) - 1;
                let (start, tempo, acc) = segments[i];
                let micros_ticks = acc + u128::from(tick - start) * u128::from(tempo);
                micros_ticks as f64 / (f64::from(*ppq) * 1e6)
            }
            Clock::Timecode { numerator, denominator } => {
                (u128::from(tick) * u128::from(*numerator)) as f64 / *denominator as f64
            }
        }
    }
}

/// The `MTrk` chunks of a standard MIDI file, checking that the file holds
/// every track its header declares, each one complete.
fn track_chunks(bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let read_u32 = |at: usize| -> u32 { u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) };
    if bytes.len() < 14 || read_u32(4) < 6 {
        return Err(notes_error("truncated MIDI header"));
    }
    let declared = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
    let mut pos = 8 + read_u32(4) as usize;
    let mut tracks = Vec::with_capacity(declared);
    while tracks.len() < declared {
        let missing = || {
            notes_error(format!(
                "truncated MIDI file: the header declares {declared} tracks, \
                 only {} are complete",
                tracks.len()
            ))
        };
        if bytes.len().saturating_sub(pos) < 8 {
            return Err(missing());
        }
        let len = read_u32(pos + 4) as usize;
        let start = pos + 8;
        let end = start.checked_add(len).filter(|&end| end <= bytes.len()).ok_or_else(missing)?;
        if &bytes[pos..pos + 4] == b"MTrk" {
            tracks.push(&bytes[start..end]);
        }
        pos = end;
    }
    Ok(tracks)
}

/// Decodes one track's events with their absolute ticks.
fn track_events(track: &[u8], index: usize) -> Result<Vec<(u64, TrackEventKind<'_>)>> {
    let mut iter = midly::EventIter::new(track);
    let mut events = Vec::new();
    let mut tick: u64 = 0;
    loop {
        let remaining = iter.unread().len();
        match iter.next() {
            Some(Ok(TrackEvent { delta, kind })) => {
                tick += u64::from(delta.as_int());
                events.push((tick, kind));
            }
            Some(Err(e)) => {
                return Err(notes_error(format!("corrupt MIDI track {index}: {e}")));
            }
            // midly (unless built `strict`) ends the iteration silently at
            // an undecodable event: unread bytes mean the track is corrupt.
            None if remaining > 0 => {
                return Err(notes_error(format!("corrupt MIDI track {index}: undecodable event after tick {tick}")));
            }
            None => return Ok(events),
        }
    }
}

/// An SMPTE division (top bit of the header's division word set) must hold
/// −24, −25, −29 or −30 frames per second in its high byte (SMF 1.0). Checked
/// before midly 0.5, whose reader negates that byte as an `i8` and overflows
/// (a panic where overflow checks are on) on −128; found by `cargo fuzz`.
fn check_smpte_division(bytes: &[u8]) -> Result<()> {
    if let Some(&hi) = bytes.get(12) {
        if hi & 0x80 != 0 && ![-24i8, -25, -29, -30].contains(&(hi as i8)) {
            return Err(notes_error(format!(
                "bad MIDI header: an SMPTE division of {} frames per second (24, 25, 29 or 30)",
                -i16::from(hi as i8)
            )));
        }
    }
    Ok(())
}

/// Parses a standard MIDI file (format 0 or 1) held in memory.
///
/// The semantics (tempo map, overlapping and zero-length notes, channels,
/// sustain pedal) are described in the module documentation. Errors carry
/// no file name.
pub fn parse_midi(bytes: &[u8]) -> Result<Vec<Note>> {
    if !bytes.starts_with(b"MThd") {
        return Err(notes_error("not a MIDI file (no MThd header)"));
    }
    check_smpte_division(bytes)?;
    let (header, _) = midly::parse(bytes).map_err(|e| notes_error(format!("bad MIDI header: {e}")))?;
    if header.format == Format::Sequential {
        return Err(notes_error("MIDI format 2 (sequential tracks) is not supported"));
    }
    let tracks = track_chunks(bytes)?
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| track_events(chunk, i))
        .collect::<Result<Vec<_>>>()?;

    let clock = match header.timing {
        Timing::Metrical(ppq) => {
            let ppq = ppq.as_int();
            if ppq == 0 {
                return Err(notes_error("bad MIDI header: 0 ticks per quarter note"));
            }
            let tempo_events = tracks
                .iter()
                .flatten()
                .filter_map(|&(tick, kind)| match kind {
                    TrackEventKind::Meta(MetaMessage::Tempo(t)) => Some((tick, t.as_int())),
                    _ => None,
                })
                .collect();
            Clock::metrical(ppq, tempo_events)
        }
        Timing::Timecode(fps, ticks_per_frame) => {
            if ticks_per_frame == 0 {
                return Err(notes_error("bad MIDI header: 0 ticks per SMPTE frame"));
            }
            let tpf = u64::from(ticks_per_frame);
            let (numerator, denominator) = match fps {
                Fps::Fps29 => (1001, 30_000 * tpf),
                other => (1, u64::from(other.as_int()) * tpf),
            };
            Clock::Timecode { numerator, denominator }
        }
    };

    let mut notes = Vec::new();
    for events in &tracks {
        track_notes(events, &clock, &mut notes);
    }
    sort_notes(&mut notes);
    Ok(notes)
}

/// Pairs the note-ons and note-offs of one track (pretty_midi's rules).
fn track_notes(events: &[(u64, TrackEventKind<'_>)], clock: &Clock, notes: &mut Vec<Note>) {
    let note = |start: u64, end: u64, pitch: u8, velocity: u8| Note {
        onset: clock.seconds(start),
        offset: clock.seconds(end),
        pitch,
        velocity,
    };
    // (channel, pitch) → open notes as (start tick, velocity).
    let mut open: HashMap<(u8, u8), Vec<(u64, u8)>> = HashMap::new();
    for &(tick, kind) in events {
        let TrackEventKind::Midi { channel, message } = kind else {
            continue;
        };
        let (key, is_on, vel) = match message {
            MidiMessage::NoteOn { key, vel } => (key.as_int(), vel.as_int() > 0, vel.as_int()),
            MidiMessage::NoteOff { key, .. } => (key.as_int(), false, 0),
            _ => continue,
        };
        let open_notes = open.entry((channel.as_int(), key)).or_default();
        if is_on {
            open_notes.push((tick, vel));
            continue;
        }
        // A note-off closes the notes started before its tick; notes started
        // at its tick stay open, but only if something was closed (else the
        // note-on/note-off pair is a dropped zero-length note).
        let (close, keep): (Vec<_>, Vec<_>) = open_notes.iter().partition(|&&(start, _)| start != tick);
        for &(start, velocity) in &close {
            notes.push(note(start, tick, key, velocity));
        }
        *open_notes = if close.is_empty() { Vec::new() } else { keep };
    }
    let last_tick = events.last().map_or(0, |&(tick, _)| tick);
    for (&(_, key), open_notes) in &open {
        for &(start, velocity) in open_notes {
            if start < last_tick {
                notes.push(note(start, last_tick, key, velocity));
            }
        }
    }
}

/// Which text table is being parsed.
#[derive(Clone, Copy, PartialEq)]
enum Table {
    Csv,
    MapsTxt,
}

/// Parses basic-pitch note-event CSV (see the module documentation).
pub fn parse_csv(text: &str) -> Result<Vec<Note>> {
    parse_table(text, Table::Csv)
}

/// Parses MAPS ground-truth text (see the module documentation). Notes get
/// velocity [`DEFAULT_VELOCITY`].
pub fn parse_maps_txt(text: &str) -> Result<Vec<Note>> {
    parse_table(text, Table::MapsTxt)
}

fn parse_table(text: &str, table: Table) -> Result<Vec<Note>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut notes = Vec::new();
    let mut seen_first_line = false;
    // Column of the velocity (CSV only); a header can say there is none.
    let mut velocity_column = match table {
        Table::Csv => Some(3),
        Table::MapsTxt => None,
    };
    for (index, line) in text.split('\n').enumerate() {
        let line_number = index + 1;
        let fields: Vec<&str> = match table {
            Table::Csv => line.split(',').map(|f| f.trim().trim_matches('"').trim()).collect(),
            Table::MapsTxt => line.split_whitespace().collect(),
        };
        if fields.iter().all(|f| f.is_empty()) {
            continue;
        }
        let is_header = !seen_first_line && fields[0].parse::<f64>().is_err();
        seen_first_line = true;
        if is_header {
            if table == Table::Csv {
                let has_velocity = fields.get(3).is_some_and(|f| f.eq_ignore_ascii_case("velocity"));
                velocity_column = has_velocity.then_some(3);
            }
            continue;
        }
        let line_error = |message: String| notes_error(format!("line {line_number}: {message}"));
        if fields.len() < 3 {
            return Err(line_error(format!(
                "expected at least 3 fields (onset, offset, pitch), found {}",
                fields.len()
            )));
        }
        let velocity = match velocity_column.and_then(|c| fields.get(c)) {
            Some(field) if !field.is_empty() => parse_velocity(field).map_err(line_error)?,
            _ => DEFAULT_VELOCITY,
        };
        let note = parse_note_fields(fields[0], fields[1], fields[2], velocity).map_err(line_error)?;
        notes.push(note);
    }
    sort_notes(&mut notes);
    Ok(notes)
}

fn parse_number(field: &str, what: &str) -> std::result::Result<f64, String> {
    field.parse::<f64>().map_err(|_| format!("{what} is not a number: '{field}'"))
}

fn parse_note_fields(onset: &str, offset: &str, pitch: &str, velocity: u8) -> std::result::Result<Note, String> {
    let onset = parse_number(onset, "onset")?;
    let offset = parse_number(offset, "offset")?;
    let pitch = parse_number(pitch, "pitch")?;
    validate_note(onset, offset, pitch, velocity)
}

/// Checks times and pitch; returns the note.
fn validate_note(onset: f64, offset: f64, pitch: f64, velocity: u8) -> std::result::Result<Note, String> {
    for (name, t) in [("onset", onset), ("offset", offset)] {
        if !t.is_finite() {
            return Err(format!("{name} {t} is not a finite number"));
        }
        if t < 0.0 {
            return Err(format!("{name} {t} is negative"));
        }
    }
    if offset < onset {
        return Err(format!("offset {offset} is before onset {onset}"));
    }
    if !(0.0..=127.0).contains(&pitch) || pitch.fract() != 0.0 {
        return Err(format!("pitch {pitch} is not an integer MIDI pitch in 0..=127"));
    }
    Ok(Note { onset, offset, pitch: pitch as u8, velocity })
}

fn parse_velocity(field: &str) -> std::result::Result<u8, String> {
    let v = parse_number(field, "velocity")?;
    velocity_from_f64(v)
}

/// A velocity in 0..=127, rounded; 0 becomes 1.
fn velocity_from_f64(v: f64) -> std::result::Result<u8, String> {
    if !(0.0..=127.0).contains(&v) {
        return Err(format!("velocity {v} is outside 0..=127"));
    }
    Ok((v.round() as u8).max(1))
}

#[derive(serde::Deserialize)]
struct JsonFile {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    notes: Vec<JsonNote>,
}

#[derive(serde::Deserialize)]
struct JsonNote {
    onset: f64,
    offset: f64,
    pitch: f64,
    #[serde(default)]
    velocity: Option<f64>,
}

/// The format tag written in JSON note files.
const JSON_FORMAT: &str = "sscnmf-notes";
/// The schema version written in JSON note files.
const JSON_VERSION: u64 = 1;

/// Parses a JSON note list (schema in the module documentation).
pub fn parse_json(text: &str) -> Result<Vec<Note>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let file: JsonFile = serde_json::from_str(text).map_err(|e| notes_error(format!("bad JSON note list: {e}")))?;
    if let Some(format) = &file.format {
        if format != JSON_FORMAT {
            return Err(notes_error(format!("JSON \"format\" is '{format}', expected '{JSON_FORMAT}'")));
        }
    }
    if let Some(version) = file.version {
        if version != JSON_VERSION {
            return Err(notes_error(format!("unsupported JSON note list version {version} (expected {JSON_VERSION})")));
        }
    }
    let mut notes = file
        .notes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let velocity = match n.velocity {
                Some(v) => velocity_from_f64(v),
                None => Ok(DEFAULT_VELOCITY),
            };
            velocity
                .and_then(|velocity| validate_note(n.onset, n.offset, n.pitch, velocity))
                .map_err(|message| notes_error(format!("notes[{i}]: {message}")))
        })
        .collect::<Result<Vec<_>>>()?;
    sort_notes(&mut notes);
    Ok(notes)
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Seconds → ticks of the files we write (0.1 ms), rounded to nearest and
/// clamped so that every delta time, and a one-tick note after the last
/// onset, fits in a MIDI delta (28 bits).
fn seconds_to_write_tick(seconds: f64) -> u64 {
    let max = u28::max_value().as_int() - 1;
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * WRITE_TICKS_PER_SECOND).round().min(f64::from(max)) as u64
    } else {
        0
    }
}

/// Channels notes are spread over: 0–15 except 9 (General MIDI percussion).
const WRITE_CHANNELS: [u8; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15];

/// Encodes notes as a format-0 standard MIDI file (details in the module
/// documentation: 5000 PPQ at 120 qpm, so one tick is 0.1 ms).
pub fn to_midi_bytes(notes: &[Note]) -> Vec<u8> {
    // (start tick, end tick, pitch, velocity), in time order.
    let mut timed: Vec<(u64, u64, u8, u8)> = notes
        .iter()
        .map(|n| {
            let start = seconds_to_write_tick(n.onset);
            let end = seconds_to_write_tick(n.offset).max(start + 1);
            (start, end, n.pitch.min(127), n.velocity.clamp(1, 127))
        })
        .collect();
    timed.sort_unstable();

    // Give each note the first channel where its pitch is silent by then.
    let mut busy_until = [[0u64; 128]; 16];
    let mut used = [false; 16];
    // Events as (tick, 0 = off / 1 = on, channel, pitch, velocity).
    let mut events: Vec<(u64, u8, u8, u8, u8)> = Vec::with_capacity(2 * timed.len());
    for &(start, end, pitch, velocity) in &timed {
        let p = usize::from(pitch);
        let channel = WRITE_CHANNELS.iter().copied().find(|&c| busy_until[usize::from(c)][p] <= start).unwrap_or(0);
        let c = usize::from(channel);
        busy_until[c][p] = busy_until[c][p].max(end);
        used[c] = true;
        events.push((start, 1, channel, pitch, velocity));
        events.push((end, 0, channel, pitch, 64));
    }
    events.sort_unstable();

    let mut track = vec![
        TrackEvent { delta: u28::new(0), kind: TrackEventKind::Meta(MetaMessage::TrackName(b"sscnmf")) },
        TrackEvent { delta: u28::new(0), kind: TrackEventKind::Meta(MetaMessage::Tempo(u24::new(MIDI_WRITE_TEMPO))) },
    ];
    for channel in (0..16u8).filter(|&c| used[usize::from(c)] || c == 0) {
        track.push(TrackEvent {
            delta: u28::new(0),
            kind: TrackEventKind::Midi {
                channel: u4::new(channel),
                message: MidiMessage::ProgramChange { program: u7::new(0) },
            },
        });
    }
    let mut now = 0u64;
    for (tick, kind, channel, pitch, velocity) in events {
        let (key, vel) = (u7::new(pitch), u7::new(velocity));
        let message = if kind == 1 { MidiMessage::NoteOn { key, vel } } else { MidiMessage::NoteOff { key, vel } };
        track.push(TrackEvent {
            delta: u28::new((tick - now) as u32),
            kind: TrackEventKind::Midi { channel: u4::new(channel), message },
        });
        now = tick;
    }
    track.push(TrackEvent { delta: u28::new(0), kind: TrackEventKind::Meta(MetaMessage::EndOfTrack) });

    let smf = Smf {
        header: Header::new(Format::SingleTrack, Timing::Metrical(u15::new(MIDI_WRITE_PPQ))),
        tracks: vec![track],
    };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).expect("writing MIDI to memory cannot fail");
    bytes
}

/// Encodes notes as basic-pitch CSV: header
/// `start_time_s,end_time_s,pitch_midi,velocity`, times with 6 decimals.
pub fn to_csv(notes: &[Note]) -> String {
    let mut out = String::from("start_time_s,end_time_s,pitch_midi,velocity\n");
    for n in notes {
        out.push_str(&format!("{:.6},{:.6},{},{}\n", n.onset, n.offset, n.pitch, n.velocity));
    }
    out
}

/// Encodes notes as MAPS text: header `OnsetTime\tOffsetTime\tMidiPitch`,
/// tab-separated, 6 decimals, `\n` line endings; velocities are not kept.
pub fn to_maps_txt(notes: &[Note]) -> String {
    let mut out = String::from("OnsetTime\tOffsetTime\tMidiPitch\n");
    for n in notes {
        out.push_str(&format!("{:.6}\t{:.6}\t{}\n", n.onset, n.offset, n.pitch));
    }
    out
}

/// Encodes notes as JSON (schema in the module documentation), one note per
/// line, times in shortest round-trip form.
pub fn to_json(notes: &[Note]) -> String {
    let mut out = format!("{{\n  \"format\": \"{JSON_FORMAT}\",\n  \"version\": {JSON_VERSION},\n  \"notes\": [");
    for (i, n) in notes.iter().enumerate() {
        let line = serde_json::to_string(n).expect("a Note always serialises");
        out.push_str(if i == 0 { "\n    " } else { ",\n    " });
        out.push_str(&line);
    }
    out.push_str(if notes.is_empty() { "]\n}\n" } else { "\n  ]\n}\n" });
    out
}

/// Writes `notes` to `path` in `format`, atomically: the data goes to a
/// temporary file in the target folder, which is then renamed over `path`,
/// so a failure never leaves a partial file. On Unix the file gets the
/// permissions a newly created file would (0666 less the umask). Errors
/// name `path`.
pub fn write_notes(path: &Path, notes: &[Note], format: NoteFormat) -> Result<()> {
    let bytes = match format {
        NoteFormat::Midi => to_midi_bytes(notes),
        NoteFormat::Csv => to_csv(notes).into_bytes(),
        NoteFormat::MapsTxt => to_maps_txt(notes).into_bytes(),
        NoteFormat::Json => to_json(notes).into_bytes(),
    };
    crate::files::write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn note(onset: f64, offset: f64, pitch: u8, velocity: u8) -> Note {
        Note { onset, offset, pitch, velocity }
    }

    /// MIDI variable-length quantity.
    fn vlq(mut value: u32) -> Vec<u8> {
        let mut out = vec![(value & 0x7f) as u8];
        value >>= 7;
        while value > 0 {
            out.insert(0, (value & 0x7f) as u8 | 0x80);
            value >>= 7;
        }
        out
    }

    /// A track chunk from (delta, raw event bytes) pairs; End of Track is added.
    fn mtrk(events: &[(u32, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        for (delta, bytes) in events {
            data.extend(vlq(*delta));
            data.extend_from_slice(bytes);
        }
        data.extend([0x00, 0xff, 0x2f, 0x00]);
        let mut chunk = b"MTrk".to_vec();
        chunk.extend((data.len() as u32).to_be_bytes());
        chunk.extend(data);
        chunk
    }

    fn smf(format: u16, division: u16, tracks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"MThd".to_vec();
        out.extend(6u32.to_be_bytes());
        out.extend(format.to_be_bytes());
        out.extend((tracks.len() as u16).to_be_bytes());
        out.extend(division.to_be_bytes());
        for t in tracks {
            out.extend(t);
        }
        out
    }

    fn tempo(us: u32) -> Vec<u8> {
        let b = us.to_be_bytes();
        vec![0xff, 0x51, 0x03, b[1], b[2], b[3]]
    }

    fn assert_close(a: &[Note], b: &[Note], tol: f64, same_velocity: bool) {
        assert_eq!(a.len(), b.len(), "{a:?}\nvs\n{b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x.onset - y.onset).abs() <= tol && (x.offset - y.offset).abs() <= tol && x.pitch == y.pitch,
                "{x:?} vs {y:?}"
            );
            if same_velocity {
                assert_eq!(x.velocity, y.velocity, "{x:?} vs {y:?}");
            }
        }
    }

    fn sample_notes() -> Vec<Note> {
        let mut notes = vec![
            note(0.5, 1.0, 60, 100),
            note(0.5, 0.52, 64, 1),
            note(0.52, 0.9, 64, 127), // touches the previous 64
            note(1.02, 3.14158, 21, 64),
            note(1.25, 1.75, 108, 80),
            note(2.0, 2.0004, 0, 30), // four ticks long
            note(2.5, 4.0, 127, 90),
        ];
        sort_notes(&mut notes);
        notes
    }

    // ----- formats -----

    #[test]
    fn format_names_and_extensions() {
        assert_eq!(NoteFormat::from_path(Path::new("a/b.MID")), Some(NoteFormat::Midi));
        assert_eq!(NoteFormat::from_path(Path::new("b.midi")), Some(NoteFormat::Midi));
        assert_eq!(NoteFormat::from_path(Path::new("b.Csv")), Some(NoteFormat::Csv));
        assert_eq!(NoteFormat::from_path(Path::new("b.txt")), Some(NoteFormat::MapsTxt));
        assert_eq!(NoteFormat::from_path(Path::new("b.JSON")), Some(NoteFormat::Json));
        assert_eq!(NoteFormat::from_path(Path::new("b.wav")), None);
        assert_eq!(NoteFormat::from_path(Path::new("noext")), None);
        for f in [NoteFormat::Midi, NoteFormat::Csv, NoteFormat::MapsTxt, NoteFormat::Json] {
            assert_eq!(f.to_string().parse::<NoteFormat>().unwrap(), f);
            let path = format!("x.{}", f.extension());
            assert_eq!(NoteFormat::from_path(Path::new(&path)), Some(f));
        }
        assert_eq!("MIDI".parse::<NoteFormat>().unwrap(), NoteFormat::Midi);
        let err = "wav".parse::<NoteFormat>().unwrap_err();
        assert!(err.to_string().contains("wav"), "{err}");
    }

    #[test]
    fn every_format_round_trips() {
        let notes = sample_notes();
        assert_close(&parse_midi(&to_midi_bytes(&notes)).unwrap(), &notes, 0.5e-4, true);
        assert_close(&parse_csv(&to_csv(&notes)).unwrap(), &notes, 1e-6, true);
        assert_close(&parse_maps_txt(&to_maps_txt(&notes)).unwrap(), &notes, 1e-6, false);
        assert_eq!(parse_json(&to_json(&notes)).unwrap(), notes);
        assert!(parse_maps_txt(&to_maps_txt(&notes)).unwrap().iter().all(|n| n.velocity == DEFAULT_VELOCITY));
        for empty in [parse_midi(&to_midi_bytes(&[])), parse_csv(&to_csv(&[])), parse_json(&to_json(&[]))] {
            assert_eq!(empty.unwrap(), vec![]);
        }
    }

    #[test]
    fn files_round_trip_and_unknown_extensions_are_sniffed() {
        let dir = tempfile::tempdir().unwrap();
        let notes = sample_notes();
        for format in [NoteFormat::Midi, NoteFormat::Csv, NoteFormat::MapsTxt, NoteFormat::Json] {
            let path = dir.path().join(format!("notes.{}", format.extension()));
            write_notes(&path, &notes, format).unwrap();
            let back = read_notes(&path).unwrap();
            let tolerance = if format == NoteFormat::Midi { 0.5e-4 } else { 1e-6 };
            assert_close(&back, &notes, tolerance, format != NoteFormat::MapsTxt);
            // The same bytes under an unknown extension.
            let odd = dir.path().join(format!("notes-{format}.dat"));
            std::fs::copy(&path, &odd).unwrap();
            assert_eq!(read_notes(&odd).unwrap(), back);
        }
        // Only the written files are left: no temporaries.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 8);
    }

    #[test]
    fn write_errors_name_the_path_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-folder").join("out.mid");
        let err = write_notes(&missing, &sample_notes(), NoteFormat::Midi).unwrap_err();
        assert_eq!(err.path(), Some(missing.as_path()));
        assert!(err.to_string().contains("out.mid") && !err.to_string().contains('\n'), "{err}");

        // A "folder" that is a file.
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let target = file.join("out.txt");
        let err = write_notes(&target, &sample_notes(), NoteFormat::MapsTxt).unwrap_err();
        assert_eq!(err.path(), Some(target.as_path()));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("read-only");
            std::fs::create_dir(&ro).unwrap();
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
            // root ignores directory permissions: only check when they apply.
            if std::fs::File::create(ro.join("probe")).is_err() {
                let target = ro.join("out.csv");
                let err = write_notes(&target, &sample_notes(), NoteFormat::Csv).unwrap_err();
                assert_eq!(err.path(), Some(target.as_path()));
                assert!(err.to_string().contains("permission denied"), "{err}");
                assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
            }
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn write_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.json");
        std::fs::write(&path, "old content that is much longer than the new one ...................").unwrap();
        write_notes(&path, &[note(1.0, 2.0, 60, 90)], NoteFormat::Json).unwrap();
        assert_eq!(read_notes(&path).unwrap(), vec![note(1.0, 2.0, 60, 90)]);
    }

    #[test]
    fn read_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.mid");
        let err = read_notes(&missing).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.to_string().contains("absent.mid"), "{err}");

        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "start_time_s,end_time_s,pitch_midi\n1,0.5,60\n").unwrap();
        let err = read_notes(&bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Notes);
        assert_eq!(err.to_string(), format!("{}: line 2: offset 0.5 is before onset 1", bad.display()));

        let fake = dir.path().join("fake.mid");
        std::fs::write(&fake, "OnsetTime\tOffsetTime\tMidiPitch\n").unwrap();
        let err = read_notes(&fake).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{}: not a MIDI file", fake.display())), "{err}");

        let binary = dir.path().join("binary.txt");
        std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
        assert!(read_notes(&binary).unwrap_err().to_string().contains("UTF-8"));
    }

    // ----- MIDI reading -----

    #[test]
    fn tempo_map_from_every_track_applies_to_all_tracks() {
        // PPQ 100. Track 0: 1 s per quarter from tick 0, 0.25 s per quarter
        // from tick 200. Track 2 (a note track) halves the tempo again at tick
        // 400. Track 1 holds the notes.
        let t0 = mtrk(&[(0, &tempo(1_000_000)), (200, &tempo(250_000))]);
        let t1 = mtrk(&[
            (100, &[0x90, 60, 80]), // tick 100: 1.0 s
            (200, &[0x80, 60, 0]),  // tick 300: 2 s + 100 × 2.5 ms = 2.25 s
            (100, &[0x90, 62, 70]), // tick 400: 2.5 s
            (100, &[0x90, 62, 0]),  // tick 500: 2.5 s + 100 × 1.25 ms = 2.625 s
        ]);
        let t2 = mtrk(&[(400, &tempo(125_000))]);
        let notes = parse_midi(&smf(1, 100, &[t0, t1, t2])).unwrap();
        assert_eq!(notes, vec![note(1.0, 2.25, 60, 80), note(2.5, 2.625, 62, 70)]);
    }

    #[test]
    fn default_tempo_and_format_0() {
        let t = mtrk(&[(0, &[0x90, 69, 100]), (480, &[0x80, 69, 64])]);
        assert_eq!(parse_midi(&smf(0, 480, &[t])).unwrap(), vec![note(0.0, 0.5, 69, 100)]);
    }

    #[test]
    fn negative_zero_is_time_zero() {
        let notes = parse_csv("-0,0.5,61,100\n0,1,60,100\n").unwrap();
        assert_eq!((notes[0].pitch, notes[1].pitch), (60, 61));
        assert!(notes.iter().all(|n| n.onset.is_sign_positive()));
    }

    #[test]
    fn smpte_division() {
        // 25 fps × 40 ticks per frame = 1000 ticks per second; tempo is ignored.
        let t = mtrk(&[(0, &tempo(100_000)), (250, &[0x90, 60, 100]), (1000, &[0x80, 60, 0])]);
        let division = u16::from_be_bytes([(-25i8) as u8, 40]);
        assert_eq!(parse_midi(&smf(0, division, &[t])).unwrap(), vec![note(0.25, 1.25, 60, 100)]);
        // 29.97 fps (30000/1001, drop frame) × 100 ticks per frame: 30 frames last 1.001 s.
        let t = mtrk(&[(0, &[0x90, 60, 100]), (3000, &[0x80, 60, 0])]);
        let division = u16::from_be_bytes([(-29i8) as u8, 100]);
        let notes = parse_midi(&smf(0, division, &[t])).unwrap();
        assert!((notes[0].offset - 1.001).abs() < 1e-12, "{notes:?}");
        // −128 (which midly negates with an overflow) and 0x80 | 12 are no SMPTE rates.
        for hi in [0x80u8, 0x8c] {
            let t = mtrk(&[(0, &[0x90, 60, 100]), (3000, &[0x80, 60, 0])]);
            let e = parse_midi(&smf(0, u16::from_be_bytes([hi, 100]), &[t])).unwrap_err();
            assert!(e.message().starts_with("bad MIDI header: an SMPTE division of"), "{e}");
        }
    }

    #[test]
    fn running_status() {
        // One 0x90 status byte for two note-ons and a velocity-0 note-off,
        // then explicit note-off with running status too.
        let events: &[(u32, &[u8])] = &[
            (0, &[0x90, 60, 90]),
            (0, &[64, 80]),
            (96, &[60, 0]),
            (0, &[0x80, 64, 0]),
            (0, &[0x91, 67, 50]),
            (96, &[67, 0]),
        ];
        let notes = parse_midi(&smf(0, 96, &[mtrk(events)])).unwrap();
        assert_eq!(notes, vec![note(0.0, 0.5, 60, 90), note(0.0, 0.5, 64, 80), note(0.5, 1.0, 67, 50)]);
    }

    #[test]
    fn zero_length_and_overlapping_notes_follow_pretty_midi() {
        // Zero-length note alone: dropped.
        let t = mtrk(&[(0, &[0x90, 60, 100]), (0, &[0x80, 60, 0]), (10, &[0x90, 61, 100]), (10, &[0x80, 61, 0])]);
        assert_eq!(parse_midi(&smf(0, 100, &[t])).unwrap(), vec![note(0.05, 0.1, 61, 100)]);

        // Re-strike written on-before-off at the same tick: the off closes
        // the old note only, the new one stays open.
        let t = mtrk(&[(0, &[0x90, 60, 100]), (100, &[0x90, 60, 90]), (0, &[0x80, 60, 0]), (100, &[0x80, 60, 0])]);
        assert_eq!(parse_midi(&smf(0, 100, &[t])).unwrap(), vec![note(0.0, 0.5, 60, 100), note(0.5, 1.0, 60, 90)]);

        // Overlap on one channel: one note-off closes both.
        let t = mtrk(&[(0, &[0x90, 60, 100]), (50, &[0x90, 60, 90]), (50, &[0x80, 60, 0]), (50, &[0x80, 60, 0])]);
        assert_eq!(parse_midi(&smf(0, 100, &[t])).unwrap(), vec![note(0.0, 0.5, 60, 100), note(0.25, 0.5, 60, 90)]);

        // Same pitch on two channels: independent. Channel 10 (index 9) is read.
        let t = mtrk(&[(0, &[0x90, 60, 100]), (50, &[0x99, 60, 90]), (50, &[0x80, 60, 0]), (50, &[0x89, 60, 0])]);
        assert_eq!(parse_midi(&smf(0, 100, &[t])).unwrap(), vec![note(0.0, 0.5, 60, 100), note(0.25, 0.75, 60, 90)]);

        // Spurious note-off ignored; a note never released ends at the last event.
        let t = mtrk(&[(0, &[0x80, 50, 0]), (0, &[0x90, 60, 100]), (200, &[0xb0, 64, 127])]);
        assert_eq!(parse_midi(&smf(0, 100, &[t])).unwrap(), vec![note(0.0, 1.0, 60, 100)]);
    }

    #[test]
    fn sustain_pedal_is_ignored() {
        let t = mtrk(&[(0, &[0xb0, 64, 127]), (0, &[0x90, 60, 100]), (100, &[0x80, 60, 0]), (300, &[0xb0, 64, 0])]);
        assert_eq!(parse_midi(&smf(0, 100, &[t])).unwrap(), vec![note(0.0, 0.5, 60, 100)]);
    }

    #[test]
    fn malformed_midi_is_an_error() {
        let good = to_midi_bytes(&sample_notes());
        for len in 0..good.len() {
            assert!(parse_midi(&good[..len]).is_err(), "truncated to {len} bytes parsed");
        }
        assert!(parse_midi(&good).is_ok());
        let mut junk_tail = good.clone();
        junk_tail.extend(b"\0\0\0");
        assert!(parse_midi(&junk_tail).is_ok(), "bytes after the declared tracks are ignored");

        let t = || mtrk(&[(0, &[0x90, 60, 100])]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not a MIDI file", b"RIFF....WAVEfmt ".to_vec()),
            ("format 2", smf(2, 96, &[t()])),
            ("0 ticks per quarter", smf(0, 0, &[t()])),
            ("declares 2 tracks", {
                let mut b = smf(1, 96, &[t()]);
                b[11] = 2;
                b
            }),
            ("corrupt MIDI track 0", {
                // A data byte with no running status: undecodable.
                smf(0, 96, &[mtrk(&[(0, &[0x40, 0x40])])])
            }),
        ];
        for (expected, bytes) in cases {
            let err = parse_midi(&bytes).unwrap_err();
            assert!(err.to_string().contains(expected), "{expected:?} not in {err}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    // ----- MIDI writing -----

    #[test]
    fn midi_output_layout() {
        let bytes = to_midi_bytes(&[note(0.02, 0.04, 60, 200)]);
        let smf = Smf::parse(&bytes).unwrap();
        assert_eq!(smf.header.format, Format::SingleTrack);
        assert_eq!(smf.header.timing, Timing::Metrical(u15::new(5000)));
        assert_eq!(smf.tracks.len(), 1);
        let kinds: Vec<TrackEventKind> = smf.tracks[0].iter().map(|e| e.kind).collect();
        assert!(matches!(kinds[0], TrackEventKind::Meta(MetaMessage::TrackName(_))));
        assert_eq!(kinds[1], TrackEventKind::Meta(MetaMessage::Tempo(u24::new(500_000))));
        assert!(kinds.contains(&TrackEventKind::Midi {
            channel: u4::new(0),
            message: MidiMessage::ProgramChange { program: u7::new(0) }
        }));
        assert_eq!(*kinds.last().unwrap(), TrackEventKind::Meta(MetaMessage::EndOfTrack));
        // 20 ms = 200 ticks; velocity clamped to 127.
        let deltas: Vec<u32> = smf.tracks[0].iter().map(|e| e.delta.as_int()).collect();
        assert_eq!(deltas.iter().sum::<u32>(), 400);
        assert_eq!(parse_midi(&bytes).unwrap(), vec![note(0.02, 0.04, 60, 127)]);
    }

    #[test]
    fn midi_output_keeps_touching_and_overlapping_same_pitch_notes() {
        let notes = vec![
            note(0.0, 0.5, 60, 100),
            note(0.1, 0.3, 60, 90), // inside the first
            note(0.3, 0.9, 60, 80), // touches the second, overlaps the first
            note(0.3, 0.9, 60, 70), // duplicate of the third but for velocity
            note(0.9, 1.0, 60, 60), // touches the third and fourth
        ];
        let mut expected = notes.clone();
        sort_notes(&mut expected);
        assert_close(&parse_midi(&to_midi_bytes(&notes)).unwrap(), &expected, 0.5e-4, true);
    }

    #[test]
    fn midi_output_rounds_to_the_tick_and_lengthens_zero_length_notes() {
        let notes = vec![note(1.00004, 1.00016, 60, 100), note(2.0, 2.0, 61, 100), note(-1.0, f64::NAN, 62, 100)];
        let back = parse_midi(&to_midi_bytes(&notes)).unwrap();
        assert_close(
            &back,
            &[note(0.0, 0.0001, 62, 100), note(1.0, 1.0002, 60, 100), note(2.0, 2.0001, 61, 100)],
            1e-12,
            true,
        );
        // Times beyond 2^28 ticks (7.4 hours) are clamped, not wrapped.
        let back = parse_midi(&to_midi_bytes(&[note(1e9, 2e9, 60, 100), note(0.5, 1.0, 61, 100)])).unwrap();
        let last = f64::from((1u32 << 28) - 1) / 1e4;
        assert_close(&back, &[note(0.5, 1.0, 61, 100), note(last - 1e-4, last, 60, 100)], 1e-9, true);
    }

    prop_compose! {
        /// Notes on the 0.1 ms tick grid; same-pitch notes do not overlap.
        fn grid_notes()(raw in prop::collection::vec((0u32..2_000_000, 1u32..50_000, 0u8..128, 1u8..128), 0..60))
            -> Vec<Note>
        {
            let mut busy_until = [0u32; 128];
            let mut raw = raw;
            raw.sort();
            let mut notes = Vec::new();
            for (start, len, pitch, velocity) in raw {
                if start >= busy_until[usize::from(pitch)] {
                    busy_until[usize::from(pitch)] = start + len;
                    notes.push(note(f64::from(start) / 1e4, f64::from(start + len) / 1e4, pitch, velocity));
                }
            }
            notes
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn midi_write_then_read_is_exact_to_the_tick(notes in grid_notes()) {
            let mut expected = notes.clone();
            sort_notes(&mut expected);
            let back = parse_midi(&to_midi_bytes(&notes)).unwrap();
            prop_assert_eq!(back.len(), expected.len());
            for (b, e) in back.iter().zip(&expected) {
                prop_assert!((b.onset - e.onset).abs() < 0.5e-4 && (b.offset - e.offset).abs() < 0.5e-4);
                prop_assert_eq!((b.pitch, b.velocity), (e.pitch, e.velocity));
            }
        }

        #[test]
        fn text_write_then_read_is_within_a_microsecond(notes in grid_notes()) {
            let mut expected = notes.clone();
            sort_notes(&mut expected);
            let csv = parse_csv(&to_csv(&notes)).unwrap();
            let txt = parse_maps_txt(&to_maps_txt(&notes)).unwrap();
            for (back, velocity) in [(csv, true), (txt, false)] {
                prop_assert_eq!(back.len(), expected.len());
                for (b, e) in back.iter().zip(&expected) {
                    prop_assert!((b.onset - e.onset).abs() < 1e-6 && (b.offset - e.offset).abs() < 1e-6);
                    prop_assert!(b.pitch == e.pitch && (!velocity || b.velocity == e.velocity));
                }
            }
            prop_assert_eq!(parse_json(&to_json(&notes)).unwrap(), expected);
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_midi(&bytes);
            let mut with_magic = b"MThd\0\0\0\x06\0\x01\0\x02\x00\x60".to_vec();
            with_magic.extend(&bytes);
            let _ = parse_midi(&with_magic);
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_csv(&text);
            let _ = parse_maps_txt(&text);
            let _ = parse_json(&text);
        }

        #[test]
        fn midi_parser_never_panics_on_corrupted_files(
            notes in grid_notes(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = to_midi_bytes(&notes);
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let _ = parse_midi(&bytes);
        }
    }

    // ----- CSV -----

    #[test]
    fn csv_variants() {
        let expected = vec![note(0.5, 1.0, 60, 80), note(1.5, 2.0, 62, 100)];
        let texts = [
            "start_time_s,end_time_s,pitch_midi,velocity\n0.5,1.0,60,80\n1.5,2.0,62,100\n",
            "start_time_s,end_time_s,pitch_midi,velocity\r\n\r\n 0.5 , 1.0 , 60.0 , 80 \r\n\r\n1.5,2,62,100\r\n",
            // basic-pitch: pitch bends after the velocity.
            "start_time_s,end_time_s,pitch_midi,velocity,pitch_bend\n0.5,1.0,60,80,0,1,2,1\n1.5,2.0,62,100,0\n",
            // No header.
            "0.5,1.0,60,80\n1.5,2.0,62,100",
            "\u{feff}\"start_time_s\",\"end_time_s\",\"pitch_midi\",\"velocity\"\n\"0.5\",\"1.0\",\"60\",\"80\"\n1.5,2.0,62,100.0\n",
            // Unsorted input comes back sorted.
            "1.5,2.0,62,100\n0.5,1.0,60,80\n",
        ];
        for text in texts {
            assert_eq!(parse_csv(text).unwrap(), expected, "{text:?}");
        }
        // No velocity column: 100.
        let text = "start_time_s,end_time_s,pitch_midi\n0.5,1.0,60\n";
        assert_eq!(parse_csv(text).unwrap(), vec![note(0.5, 1.0, 60, 100)]);
        let text = "0.5,1.0,60\n";
        assert_eq!(parse_csv(text).unwrap(), vec![note(0.5, 1.0, 60, 100)]);
        // Header without velocity but extra columns: they are not velocities.
        let text = "start_time_s,end_time_s,pitch_midi,pitch_bend\n0.5,1.0,60,3\n";
        assert_eq!(parse_csv(text).unwrap(), vec![note(0.5, 1.0, 60, 100)]);
        // Velocity 0 becomes 1; fractional velocities round.
        assert_eq!(
            parse_csv("0.5,1.0,60,0\n1,2,61,63.6").unwrap(),
            vec![note(0.5, 1.0, 60, 1), note(1.0, 2.0, 61, 64)]
        );
        // Zero-length notes are allowed.
        assert_eq!(parse_csv("1,1,60,50").unwrap(), vec![note(1.0, 1.0, 60, 50)]);
        assert_eq!(parse_csv("").unwrap(), vec![]);
        assert_eq!(parse_csv("start_time_s,end_time_s,pitch_midi,velocity\n\n").unwrap(), vec![]);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let header = "start_time_s,end_time_s,pitch_midi,velocity\n";
        let cases = [
            ("0.5,1.0,60,80\n\nNaN,1.0,60,80", "line 4: onset NaN is not a finite number"),
            ("0.5,inf,60,80", "line 2: offset inf is not a finite number"),
            ("-0.5,1.0,60,80", "line 2: onset -0.5 is negative"),
            ("1.0,0.5,60,80", "line 2: offset 0.5 is before onset 1"),
            ("0.5,1.0,128,80", "line 2: pitch 128 is not an integer MIDI pitch in 0..=127"),
            ("0.5,1.0,-1,80", "line 2: pitch -1 is not an integer MIDI pitch"),
            ("0.5,1.0,60.5,80", "line 2: pitch 60.5 is not an integer MIDI pitch"),
            ("0.5,1.0,60,128", "line 2: velocity 128 is outside 0..=127"),
            ("0.5,1.0", "line 2: expected at least 3 fields (onset, offset, pitch), found 2"),
            ("0.5,abc,60", "line 2: offset is not a number: 'abc'"),
        ];
        for (body, expected) in cases {
            let err = parse_csv(&format!("{header}{body}")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Notes);
            assert!(err.to_string().starts_with(expected), "{err} does not start with {expected}");
        }
        // A second non-numeric line is not a header.
        let err = parse_csv("onset,offset,pitch\nonset,offset,pitch\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2: onset is not a number"), "{err}");
    }

    // ----- MAPS txt -----

    #[test]
    fn maps_txt_variants() {
        let expected = vec![note(0.495833, 1.190104, 59, 100), note(0.501563, 1.110417, 62, 100)];
        let texts = [
            "OnsetTime\tOffsetTime\tMidiPitch\n0.495833\t1.190104\t59\n0.501563\t1.110417\t62\n",
            "OnsetTime\tOffsetTime\tMidiPitch\r\n0.495833\t1.190104\t59\r\n\r\n0.501563\t1.110417\t62\r\n",
            "0.501563 1.110417 62\n  0.495833    1.190104 59  \n",
            "OnsetTime\tOffsetTime\tMidiPitch\tVelocity\n0.495833\t1.190104\t59\t30\n0.501563\t1.110417\t62.0\tx\n",
        ];
        for text in texts {
            assert_eq!(parse_maps_txt(text).unwrap(), expected, "{text:?}");
        }
        let err = parse_maps_txt("OnsetTime\tOffsetTime\tMidiPitch\n0.5\t0.4\t60\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: offset 0.4 is before onset 0.5");
        let err = parse_maps_txt("0.5\t0.6\t200\n").unwrap_err();
        assert!(err.to_string().starts_with("line 1: pitch 200"), "{err}");
    }

    // ----- JSON -----

    #[test]
    fn json_schema() {
        let text = r#"{"notes": [{"onset": 1, "offset": 2.5, "pitch": 60.0, "velocity": 30},
                                  {"onset": 0.5, "offset": 0.75, "pitch": 61, "extra": true}], "other": 1}"#;
        assert_eq!(parse_json(text).unwrap(), vec![note(0.5, 0.75, 61, 100), note(1.0, 2.5, 60, 30)]);
        let written = to_json(&[note(0.1, 0.30000000000000004, 60, 100)]);
        assert!(written.contains("\"format\": \"sscnmf-notes\"") && written.contains("\"version\": 1"));
        assert!(written.contains("0.30000000000000004"), "{written}");
        let value: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(value["notes"][0]["pitch"], 60);

        let cases = [
            ("[]", "bad JSON note list"),
            ("{\"notes\": [{\"onset\": 1}]}", "missing field `offset`"),
            ("{\"notes\": [{\"onset\": 1, \"offset\": 0, \"pitch\": 60}]}", "notes[0]: offset 0 is before onset 1"),
            ("{\"notes\": [{\"onset\": 1, \"offset\": 2, \"pitch\": 60.5}]}", "notes[0]: pitch 60.5"),
            ("{\"format\": \"other\", \"notes\": []}", "JSON \"format\" is 'other'"),
            ("{\"version\": 2, \"notes\": []}", "unsupported JSON note list version 2"),
            ("{\"notes\": [", "bad JSON note list"),
        ];
        for (text, expected) in cases {
            let err = parse_json(text).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    // ----- the dev dataset -----

    /// The dev dataset: `$SSCNMF_DATA`, else `../shared/data/dev` beside the
    /// crate. `None` (after a note) when it is absent, unless `CI=true`.
    fn dev_data() -> Option<std::path::PathBuf> {
        let dir = match std::env::var_os("SSCNMF_DATA") {
            Some(d) => std::path::PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/dev"),
        };
        if dir.is_dir() {
            return Some(dir);
        }
        assert!(std::env::var("CI").as_deref() != Ok("true"), "dev dataset not found at {}", dir.display());
        eprintln!("note: dev dataset not found at {}; test skipped", dir.display());
        None
    }

    #[test]
    fn maps_midi_files_match_their_txt_ground_truth() {
        let Some(data) = dev_data() else { return };
        let mus = data.join("FluidR3").join("MUS");
        let mut midi_files: Vec<_> = std::fs::read_dir(&mus)
            .unwrap_or_else(|e| panic!("{}: {e}", mus.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| NoteFormat::from_path(p) == Some(NoteFormat::Midi))
            .collect();
        midi_files.sort();
        assert!(!midi_files.is_empty(), "no MIDI files in {}", mus.display());
        for midi in &midi_files {
            let from_midi = read_notes(midi).unwrap();
            let from_txt = read_notes(&midi.with_extension("txt")).unwrap();
            assert!(!from_midi.is_empty());
            assert_close(&from_midi, &from_txt, 1e-6, false);
            // Ground-truth times are ticks of 1/1920 s.
            for n in &from_midi {
                let ticks = n.onset * 1920.0;
                assert!((ticks - ticks.round()).abs() < 1e-6, "{}: {n:?}", midi.display());
            }
        }
    }
}
