//! Note-level transcription metrics with the semantics of `mir_eval.transcription`
//! (mir_eval 0.8.2; C. Raffel et al., "mir_eval: A Transparent Implementation of
//! Common MIR Metrics", ISMIR 2014).
//!
//! # Conventions
//!
//! - Times are in seconds; a note is the interval `[onset, offset]`.
//! - Pitches are MIDI note numbers; for the pitch rule they are converted to
//!   Hz as mir_eval's callers do, `f = 440 · 2^((midi − 69) / 12)`, and
//!   compared in cents.
//! - `reference` is the ground truth, `estimate` the transcription; a match is
//!   a pair `(i, j)` of indices into them.
//!
//! # The hit rule
//!
//! Reference note `i` and estimated note `j` may be matched when
//!
//! 1. `round(|onset_i − onset_j|, 4) ≤ onset_tolerance`, where `round(x, 4)`
//!    is numpy's `np.around(x, 4)` = `rint(x · 10⁴) / 10⁴` (round half to
//!    even), applied to the distance computed in f64;
//! 2. `|1200 · (log₂ f_i − log₂ f_j)| ≤ pitch_tolerance` (cents);
//! 3. only when an offset ratio is given:
//!    `round(|offset_i − offset_j|, 4) ≤ max(offset_ratio · (offset_i − onset_i), offset_min_tolerance)`
//!    (the tolerance is not rounded; the duration is the reference note's).
//!
//! The matching is a maximum bipartite matching of these hit pairs (mir_eval
//! uses Hopcroft–Karp; here augmenting paths), so its size is the largest
//! number of one-to-one pairs — larger, in general, than a greedy
//! closest-first pairing finds.
//!
//! # Differences from mir_eval
//!
//! None in the matches counted, precision, recall and F-measure for integer
//! MIDI pitches (checked against mir_eval's own output in
//! `tests/evaluation_golden.rs`). Details:
//!
//! - The pitch tolerance in cents is applied to MIDI numbers converted to Hz
//!   as above, so the default 50 cents means "same MIDI pitch".
//! - Only mir_eval's `strict=False` (`≤` comparisons) is provided.
//! - When several maximum matchings exist, the one chosen may differ from
//!   mir_eval's Hopcroft–Karp choice; only the average overlap ratio can
//!   depend on that choice (it is the same whenever it is unique).
//! - mir_eval raises on invalid intervals (negative times, non-positive
//!   durations) and warns on empty lists; here nothing is validated and
//!   empty lists silently give all-zero scores, as mir_eval returns.
//! - [`Scores::accuracy`] is not part of `mir_eval.transcription`: it is the
//!   note-level accuracy `n / (n_ref + n_est − n)` of the MIREX multi-F0 task
//!   (Bay, Ehmann & Downie, ISMIR 2009).

use crate::notes::Note;

/// Parameters of the hit rule (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchParams {
    /// Largest onset distance, in seconds, after rounding to 4 decimals.
    /// Default 0.05 (mir_eval's `onset_tolerance`).
    pub onset_tolerance: f64,
    /// Largest pitch distance in cents. Default 50 (mir_eval's
    /// `pitch_tolerance`): same MIDI pitch.
    pub pitch_tolerance_cents: f64,
    /// `Some(r)`: offsets must also be within `max(r · reference duration,
    /// offset_min_tolerance)`; `None`: offsets are ignored. Default `None`
    /// (onset-only); mir_eval's default is 0.2 ([`MatchParams::onset_offset`]).
    pub offset_ratio: Option<f64>,
    /// Smallest offset tolerance in seconds. Default 0.05 (mir_eval's
    /// `offset_min_tolerance`).
    pub offset_min_tolerance: f64,
}

impl MatchParams {
    /// Onset-only matching: 50 ms onset tolerance, 50 cents, offsets ignored
    /// (mir_eval's `offset_ratio=None`).
    pub fn onset_only() -> MatchParams {
        MatchParams {
            onset_tolerance: 0.05,
            pitch_tolerance_cents: 50.0,
            offset_ratio: None,
            offset_min_tolerance: 0.05,
        }
    }

    /// Onset and offset matching with mir_eval's defaults: 50 ms onset
    /// tolerance, 50 cents, offset within `max(0.2 · duration, 50 ms)`.
    pub fn onset_offset() -> MatchParams {
        MatchParams { offset_ratio: Some(0.2), ..MatchParams::onset_only() }
    }
}

impl Default for MatchParams {
    /// [`MatchParams::onset_only`].
    fn default() -> MatchParams {
        MatchParams::onset_only()
    }
}

/// numpy's `np.around(x, 4)`: `rint(x · 10⁴) / 10⁴`, ties to even.
fn round4(x: f64) -> f64 {
    (x * 1e4).round_ties_even() / 1e4
}

/// `log₂` of the frequency of a MIDI pitch, computed through Hz as mir_eval's
/// callers do.
fn log2_hz(pitch: u8) -> f64 {
    (440.0 * 2f64.powf((f64::from(pitch) - 69.0) / 12.0)).log2()
}

/// Whether reference note `r` and estimated note `e` may be matched: the hit
/// rule of `mir_eval.transcription.match_notes` except the pitch test, which
/// the caller has done.
fn times_hit(r: &Note, e: &Note, params: &MatchParams) -> bool {
    if round4((r.onset - e.onset).abs()) > params.onset_tolerance {
        return false;
    }
    match params.offset_ratio {
        None => true,
        Some(ratio) => {
            let tolerance = (ratio * (r.offset - r.onset).abs()).max(params.offset_min_tolerance);
            round4((r.offset - e.offset).abs()) <= tolerance
        }
    }
}

/// The hit pairs: for each reference note, the estimated notes it may be
/// matched with. Estimated notes are grouped by pitch and sorted by onset,
/// and only those in an onset window around each reference note are tested.
fn candidate_edges(reference: &[Note], estimate: &[Note], params: &MatchParams) -> Vec<Vec<usize>> {
    // Estimated notes by pitch, sorted by onset.
    let mut by_pitch: Vec<Vec<usize>> = vec![Vec::new(); 128];
    for (j, e) in estimate.iter().enumerate() {
        by_pitch[usize::from(e.pitch.min(127))].push(j);
    }
    for list in &mut by_pitch {
        list.sort_by(|&a, &b| estimate[a].onset.total_cmp(&estimate[b].onset));
    }
    let est_pitches: Vec<u8> = (0..128u8).filter(|&p| !by_pitch[usize::from(p)].is_empty()).collect();

    // For each reference pitch, the estimated pitches within the tolerance.
    let mut pitch_hits: Vec<Option<Vec<u8>>> = vec![None; 128];
    // Window wide enough for every distance that rounds to ≤ the tolerance.
    let window = params.onset_tolerance + 1e-3;

    let mut edges = vec![Vec::new(); reference.len()];
    for (i, r) in reference.iter().enumerate() {
        let hits = pitch_hits[usize::from(r.pitch.min(127))].get_or_insert_with(|| {
            let lr = log2_hz(r.pitch);
            est_pitches
                .iter()
                .copied()
                .filter(|&q| (1200.0 * (lr - log2_hz(q))).abs() <= params.pitch_tolerance_cents)
                .collect()
        });
        for &q in hits.iter() {
            let list = &by_pitch[usize::from(q)];
            let first = list.partition_point(|&j| estimate[j].onset < r.onset - window);
            for &j in &list[first..] {
                if estimate[j].onset > r.onset + window {
                    break;
                }
                if times_hit(r, &estimate[j], params) {
                    edges[i].push(j);
                }
            }
        }
    }
    edges
}

/// A maximum bipartite matching by augmenting paths (Kuhn's algorithm, with
/// an explicit stack). `edges[i]` lists the right vertices of left vertex
/// `i`; returns, for each left vertex, its matched right vertex.
fn maximum_matching(edges: &[Vec<usize>], n_right: usize) -> Vec<Option<usize>> {
    let mut left_of: Vec<Option<usize>> = vec![None; n_right];
    let mut right_of: Vec<Option<usize>> = vec![None; edges.len()];
    let mut visited_in: Vec<usize> = vec![usize::MAX; n_right];
    // Depth-first search frames: (left vertex, index of the next edge to try).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..edges.len() {
        stack.clear();
        stack.push((root, 0));
        while let Some(frame) = stack.last_mut() {
            let (u, k) = *frame;
            if k == edges[u].len() {
                stack.pop();
                continue;
            }
            frame.1 += 1;
            let v = edges[u][k];
            if visited_in[v] == root {
                continue;
            }
            visited_in[v] = root;
            match left_of[v] {
                Some(next) => stack.push((next, 0)),
                None => {
                    // Augment: every frame's last tried edge joins the matching.
                    for &(u, k) in &stack {
                        let v = edges[u][k - 1];
                        left_of[v] = Some(u);
                        right_of[u] = Some(v);
                    }
                    break;
                }
            }
        }
    }
    right_of
}

/// Matches reference and estimated notes as `mir_eval.transcription.match_notes`
/// (with `strict=False`): a maximum bipartite matching of the pairs that
/// satisfy the hit rule of the module documentation.
///
/// Returns `(reference index, estimate index)` pairs sorted by reference
/// index. Candidate pairs are found per pitch in an onset window, so the cost
/// is close to linear in the number of notes.
pub fn match_notes(reference: &[Note], estimate: &[Note], params: &MatchParams) -> Vec<(usize, usize)> {
    let edges = candidate_edges(reference, estimate, params);
    maximum_matching(&edges, estimate.len()).into_iter().enumerate().filter_map(|(i, j)| j.map(|j| (i, j))).collect()
}

/// Note-level scores of an estimate against a reference.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    /// `n / n_est`: the fraction of estimated notes that are matched.
    pub precision: f64,
    /// `n / n_ref`: the fraction of reference notes that are matched.
    pub recall: f64,
    /// `2 · P · R / (P + R)`, 0 when `P + R = 0`.
    pub f_measure: f64,
    /// `n / (n_ref + n_est − n)`, 0 when the denominator is 0 (MIREX note
    /// accuracy; not in mir_eval).
    pub accuracy: f64,
    /// Mean over matched pairs of `(min(offsets) − max(onsets)) /
    /// (max(offsets) − min(onsets))`, 0 when nothing is matched
    /// (mir_eval's `average_overlap_ratio`). In −1..=1: negative when
    /// matched notes do not overlap, which onset-only matching allows.
    pub average_overlap_ratio: f64,
    /// `n`, the number of matched pairs.
    pub matched: usize,
}

impl Scores {
    /// All zeros: what mir_eval returns when either list is empty.
    fn zero() -> Scores {
        Scores { precision: 0.0, recall: 0.0, f_measure: 0.0, accuracy: 0.0, average_overlap_ratio: 0.0, matched: 0 }
    }
}

/// Precision, recall, F-measure, accuracy and average overlap ratio, as
/// `mir_eval.transcription.precision_recall_f1_overlap` (plus accuracy).
///
/// The matching is [`match_notes`]; the formulas are those of [`Scores`].
/// When either list is empty every score is 0, as in mir_eval.
pub fn precision_recall_f1_overlap(reference: &[Note], estimate: &[Note], params: &MatchParams) -> Scores {
    if reference.is_empty() || estimate.is_empty() {
        return Scores::zero();
    }
    scores_of_matching(reference, estimate, &match_notes(reference, estimate, params))
}

/// The [`Scores`] of a matching of `reference` and `estimate` (both
/// non-empty).
fn scores_of_matching(reference: &[Note], estimate: &[Note], matching: &[(usize, usize)]) -> Scores {
    let n = matching.len();
    let (n_ref, n_est) = (reference.len(), estimate.len());
    let precision = n as f64 / n_est as f64;
    let recall = n as f64 / n_ref as f64;
    let f_measure = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    let accuracy = if n_ref + n_est - n == 0 { 0.0 } else { n as f64 / (n_ref + n_est - n) as f64 };
    let average_overlap_ratio = if n == 0 {
        0.0
    } else {
        let sum: f64 = matching
            .iter()
            .map(|&(i, j)| {
                let (r, e) = (&reference[i], &estimate[j]);
                (r.offset.min(e.offset) - r.onset.max(e.onset)) / (r.offset.max(e.offset) - r.onset.min(e.onset))
            })
            .sum();
        sum / n as f64
    };
    Scores { precision, recall, f_measure, accuracy, average_overlap_ratio, matched: n }
}

/// mir_eval's default `velocity_tolerance`.
pub const VELOCITY_TOLERANCE: f64 = 0.1;

/// Matches notes as `mir_eval.transcription_velocity.match_notes`: the
/// matching of [`match_notes`] with `params`, then only the pairs whose
/// velocities agree after rescaling (Hawthorne et al., "Onsets and Frames",
/// ISMIR 2018):
///
/// 1. reference velocities are mapped to [0, 1] by `(v − min) / max(1, max −
///    min)`, min and max over *all* reference notes;
/// 2. the estimated velocities of the matched pairs are mapped by the least
///    squares line `slope · v + intercept` onto their references' (numpy's
///    `lstsq`; when the matched estimates all have one velocity, its minimum
///    norm solution maps them all to the mean of their references);
/// 3. a pair is kept when `|rescaled estimate − reference| < tolerance`
///    (strictly, as mir_eval).
///
/// Pairs come sorted by reference index. As for [`match_notes`], when several
/// maximum matchings exist the one rescaled may differ from mir_eval's.
pub fn match_notes_with_velocity(
    reference: &[Note],
    estimate: &[Note],
    params: &MatchParams,
    velocity_tolerance: f64,
) -> Vec<(usize, usize)> {
    let matching = match_notes(reference, estimate, params);
    if matching.is_empty() {
        return matching;
    }
    let (lo, hi) = reference.iter().fold((u8::MAX, u8::MIN), |(lo, hi), n| (lo.min(n.velocity), hi.max(n.velocity)));
    let range = f64::from(hi - lo).max(1.0);
    let r: Vec<f64> = matching.iter().map(|&(i, _)| f64::from(reference[i].velocity - lo) / range).collect();
    let e: Vec<f64> = matching.iter().map(|&(_, j)| f64::from(estimate[j].velocity)).collect();
    let m = matching.len() as f64;
    let (me, mr) = (e.iter().sum::<f64>() / m, r.iter().sum::<f64>() / m);
    let see: f64 = e.iter().map(|x| (x - me) * (x - me)).sum();
    let ser: f64 = e.iter().zip(&r).map(|(x, y)| (x - me) * (y - mr)).sum();
    // Centred least squares; with constant estimates every fitted value is the mean.
    let slope = if see > 0.0 { ser / see } else { 0.0 };
    let intercept = mr - slope * me;
    matching
        .into_iter()
        .zip(e.iter().zip(&r))
        .filter(|(_, (&x, &y))| (slope * x + intercept - y).abs() < velocity_tolerance)
        .map(|(pair, _)| pair)
        .collect()
}

/// Precision, recall, F-measure (and accuracy, average overlap ratio) with
/// velocities, as `mir_eval.transcription_velocity.precision_recall_f1_overlap`:
/// the formulas of [`Scores`] on [`match_notes_with_velocity`]'s pairs. All
/// zeros when either list is empty.
pub fn precision_recall_f1_velocity(
    reference: &[Note],
    estimate: &[Note],
    params: &MatchParams,
    velocity_tolerance: f64,
) -> Scores {
    if reference.is_empty() || estimate.is_empty() {
        return Scores::zero();
    }
    scores_of_matching(reference, estimate, &match_notes_with_velocity(reference, estimate, params, velocity_tolerance))
}

/// The mean absolute difference of MIDI velocities (estimate − reference, as
/// given, not rescaled) over the pairs of [`match_notes`] with `params`; 0
/// when nothing matches.
pub fn velocity_mean_absolute_error(reference: &[Note], estimate: &[Note], params: &MatchParams) -> f64 {
    let matching = match_notes(reference, estimate, params);
    let sum: f64 =
        matching.iter().map(|&(i, j)| (f64::from(estimate[j].velocity) - f64::from(reference[i].velocity)).abs()).sum();
    sum / matching.len().max(1) as f64
}

/// Onset-only and onset+offset scores of one estimate.
///
/// Serialises to JSON as `{"onset": {...}, "onset_offset": {...},
/// "n_reference": N, "n_estimate": M}`, each score object holding the
/// fields of [`Scores`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Onset-only scores (offsets ignored).
    pub onset: Scores,
    /// Onset and offset scores.
    pub onset_offset: Scores,
    /// Number of reference notes.
    pub n_reference: usize,
    /// Number of estimated notes.
    pub n_estimate: usize,
}

/// Scores `estimate` against `reference` twice: onset-only, and onset plus
/// offset with `offset_ratio`; both with `onset_tolerance` (seconds), a
/// 50-cent pitch tolerance and a 50 ms minimum offset tolerance. The
/// standard values are `onset_tolerance = 0.05`, `offset_ratio = 0.2`.
pub fn evaluate(reference: &[Note], estimate: &[Note], onset_tolerance: f64, offset_ratio: f64) -> Evaluation {
    let onset = MatchParams { onset_tolerance, ..MatchParams::onset_only() };
    let onset_offset = MatchParams { offset_ratio: Some(offset_ratio), ..onset };
    Evaluation {
        onset: precision_recall_f1_overlap(reference, estimate, &onset),
        onset_offset: precision_recall_f1_overlap(reference, estimate, &onset_offset),
        n_reference: reference.len(),
        n_estimate: estimate.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn note(onset: f64, offset: f64, pitch: u8) -> Note {
        Note { onset, offset, pitch, velocity: 100 }
    }

    /// Every hit pair by brute force over all n × m pairs, straight from
    /// mir_eval's formulas.
    fn brute_force_edges(reference: &[Note], estimate: &[Note], params: &MatchParams) -> Vec<Vec<usize>> {
        reference
            .iter()
            .map(|r| {
                (0..estimate.len())
                    .filter(|&j| {
                        let e = &estimate[j];
                        let cents = (1200.0 * (log2_hz(r.pitch) - log2_hz(e.pitch))).abs();
                        cents <= params.pitch_tolerance_cents && times_hit(r, e, params)
                    })
                    .collect()
            })
            .collect()
    }

    /// Size of a maximum matching by exhaustive search (small graphs only).
    fn exhaustive_max_matching(edges: &[Vec<usize>], used: &mut Vec<bool>, i: usize) -> usize {
        if i == edges.len() {
            return 0;
        }
        let mut best = exhaustive_max_matching(edges, used, i + 1);
        for &j in &edges[i] {
            if !used[j] {
                used[j] = true;
                best = best.max(1 + exhaustive_max_matching(edges, used, i + 1));
                used[j] = false;
            }
        }
        best
    }

    /// Closest-onset-first greedy pairing (what mir_eval does *not* do).
    fn greedy_closest_first(reference: &[Note], estimate: &[Note], params: &MatchParams) -> usize {
        let edges = brute_force_edges(reference, estimate, params);
        let mut pairs: Vec<(f64, usize, usize)> = edges
            .iter()
            .enumerate()
            .flat_map(|(i, js)| js.iter().map(move |&j| (i, j)))
            .map(|(i, j)| ((reference[i].onset - estimate[j].onset).abs(), i, j))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut ref_used, mut est_used) = (vec![false; reference.len()], vec![false; estimate.len()]);
        let mut n = 0;
        for (_, i, j) in pairs {
            if !ref_used[i] && !est_used[j] {
                ref_used[i] = true;
                est_used[j] = true;
                n += 1;
            }
        }
        n
    }

    #[test]
    fn defaults() {
        let d = MatchParams::default();
        assert_eq!(d, MatchParams::onset_only());
        assert_eq!(
            (d.onset_tolerance, d.pitch_tolerance_cents, d.offset_ratio, d.offset_min_tolerance),
            (0.05, 50.0, None, 0.05)
        );
        assert_eq!(MatchParams::onset_offset().offset_ratio, Some(0.2));
    }

    #[test]
    fn maximum_matching_beats_greedy_closest_first() {
        // e0 hits r0 (40 ms) and r1 (20 ms); e1 hits only r1 (30 ms). Greedy
        // takes e0–r1 first and strands e1; the maximum matching pairs both.
        let reference = [note(0.0, 1.0, 60), note(0.06, 1.0, 60)];
        let estimate = [note(0.04, 1.0, 60), note(0.09, 1.0, 60)];
        let params = MatchParams::onset_only();
        assert_eq!(greedy_closest_first(&reference, &estimate, &params), 1);
        assert_eq!(match_notes(&reference, &estimate, &params), vec![(0, 0), (1, 1)]);
        let s = precision_recall_f1_overlap(&reference, &estimate, &params);
        assert_eq!((s.precision, s.recall, s.f_measure, s.accuracy, s.matched), (1.0, 1.0, 1.0, 1.0, 2));
    }

    #[test]
    fn hit_rule_boundaries() {
        let p = MatchParams::onset_only();
        let hits = |r: Note, e: Note, p: &MatchParams| match_notes(&[r], &[e], p).len();
        // 50 ms exactly, and decimal differences that are inexact in binary.
        assert_eq!(hits(note(1.23, 2.0, 60), note(1.28, 2.0, 60), &p), 1);
        assert_eq!(hits(note(0.0, 2.0, 60), note(0.05004, 2.0, 60), &p), 1);
        assert_eq!(hits(note(0.0, 2.0, 60), note(0.050051, 2.0, 60), &p), 0);
        assert_eq!(hits(note(0.0, 2.0, 60), note(0.051, 2.0, 60), &p), 0);
        // Pitch: 50 cents = same MIDI pitch; 150 cents admits neighbours.
        assert_eq!(hits(note(0.0, 1.0, 60), note(0.0, 1.0, 61), &p), 0);
        let wide = MatchParams { pitch_tolerance_cents: 150.0, ..p };
        assert_eq!(hits(note(0.0, 1.0, 60), note(0.0, 1.0, 61), &wide), 1);
        assert_eq!(hits(note(0.0, 1.0, 60), note(0.0, 1.0, 62), &wide), 0);
        // Offsets: max(0.2 × reference duration, 50 ms), the distance rounded.
        let o = MatchParams::onset_offset();
        assert_eq!(hits(note(0.0, 1.0, 60), note(0.0, 1.2, 60), &o), 1);
        assert_eq!(hits(note(0.0, 1.0, 60), note(0.0, 1.20004, 60), &o), 1);
        assert_eq!(hits(note(0.0, 1.0, 60), note(0.0, 1.2001, 60), &o), 0);
        assert_eq!(hits(note(0.0, 0.1, 60), note(0.0, 0.15, 60), &o), 1);
        assert_eq!(hits(note(0.0, 0.1, 60), note(0.0, 0.151, 60), &o), 0);
        // Duration of the reference, not the estimate.
        assert_eq!(hits(note(0.0, 0.1, 60), note(0.0, 1.0, 60), &o), 0);
        assert_eq!(hits(note(0.0, 1.0, 60), note(0.0, 0.8, 60), &o), 1);
    }

    #[test]
    fn round4_is_numpy_around() {
        assert_eq!(round4(0.05004), 0.05);
        // Ties go to even: 0.5 → 0, 2.5 → 2, 3.5 → 4 (in units of 1e-4).
        assert_eq!(round4(0.00005), 0.0);
        assert_eq!(round4(0.00025), 0.0002);
        assert_eq!(round4(0.00035), 0.0004);
        assert_eq!(round4(0.05005), 0.05); // 500.5 → 500
                                           // 1.5e-4 · 1e4 is 1.4999999999999998 in f64: rounds down, as in numpy.
        assert_eq!(round4(0.00015), 0.0001);
        assert_eq!(round4(1.28 - 1.23), 0.05);
    }

    #[test]
    fn empty_lists_score_zero() {
        let some = [note(0.0, 1.0, 60)];
        let zero = Scores {
            precision: 0.0,
            recall: 0.0,
            f_measure: 0.0,
            accuracy: 0.0,
            average_overlap_ratio: 0.0,
            matched: 0,
        };
        for (r, e) in [(&some[..], &[][..]), (&[][..], &some[..]), (&[][..], &[][..])] {
            assert_eq!(precision_recall_f1_overlap(r, e, &MatchParams::onset_only()), zero);
            assert!(match_notes(r, e, &MatchParams::onset_only()).is_empty());
        }
    }

    #[test]
    fn scores_by_hand() {
        let reference = [note(0.0, 1.0, 60), note(1.0, 2.0, 62), note(2.0, 3.0, 64)];
        let estimate = [note(0.01, 0.5, 60), note(1.0, 2.0, 63)];
        let s = precision_recall_f1_overlap(&reference, &estimate, &MatchParams::onset_only());
        assert_eq!(s.matched, 1);
        assert_eq!((s.precision, s.recall), (0.5, 1.0 / 3.0));
        assert!((s.f_measure - 0.4).abs() < 1e-15);
        assert_eq!(s.accuracy, 0.25); // 1 / (3 + 2 − 1)
        assert!((s.average_overlap_ratio - 0.49).abs() < 1e-15); // (0.5 − 0.01) / (1 − 0)
    }

    fn loud(onset: f64, pitch: u8, velocity: u8) -> Note {
        Note { onset, offset: onset + 0.5, pitch, velocity }
    }

    #[test]
    fn velocity_matching_by_hand() {
        // Reference velocities 20, 60, 100, 40 rescale to 0, 0.5, 1, 0.25.
        let reference = [loud(0.0, 60, 20), loud(1.0, 62, 60), loud(2.0, 64, 100), loud(3.0, 65, 40)];
        let estimate = [loud(0.0, 60, 30), loud(1.0, 62, 50), loud(2.0, 64, 90), loud(3.0, 65, 45), loud(4.0, 70, 64)];
        // Least squares of (0, 0.5, 1, 0.25) on (30, 50, 90, 45): slope 32.1875 / 1968.75 and intercept
        // 0.4375 − slope · 53.75 give 0.0492, 0.3762, 1.0302, 0.2944: errors 0.049, 0.124, 0.030, 0.044,
        // so the second pair fails the 0.1 tolerance.
        let params = MatchParams::onset_only();
        let pairs = match_notes_with_velocity(&reference, &estimate, &params, VELOCITY_TOLERANCE);
        assert_eq!(pairs, vec![(0, 0), (2, 2), (3, 3)]);
        let s = precision_recall_f1_velocity(&reference, &estimate, &params, VELOCITY_TOLERANCE);
        assert_eq!((s.matched, s.precision, s.recall), (3, 0.6, 0.75));
        assert!((s.f_measure - 2.0 / 3.0).abs() < 1e-12);
        // A looser tolerance keeps all four.
        assert_eq!(match_notes_with_velocity(&reference, &estimate, &params, 0.13).len(), 4);
        // The velocity error is over the timing matches, unscaled: (10 + 10 + 10 + 5) / 4.
        assert!((velocity_mean_absolute_error(&reference, &estimate, &params) - 8.75).abs() < 1e-12);
    }

    #[test]
    fn velocity_matching_degenerate_cases() {
        let params = MatchParams::onset_only();
        // Constant estimated velocities all map to the mean of their references (numpy's
        // minimum-norm lstsq): 0.5 against 0 and 1, both off by 0.5.
        let reference = [loud(0.0, 60, 40), loud(1.0, 60, 100)];
        let estimate = [loud(0.0, 60, 64), loud(1.0, 60, 64)];
        assert!(match_notes_with_velocity(&reference, &estimate, &params, 0.1).is_empty());
        // One pair is fitted exactly; one reference velocity gives a range of 1.
        assert_eq!(match_notes_with_velocity(&reference[..1], &estimate[..1], &params, 0.1), vec![(0, 0)]);
        let same = [loud(0.0, 60, 80), loud(1.0, 62, 80)];
        let est = [loud(0.0, 60, 10), loud(1.0, 62, 120)];
        assert_eq!(match_notes_with_velocity(&same, &est, &params, 0.1).len(), 2);
        // Nothing matched in time: nothing at all; empty lists score zero.
        assert!(match_notes_with_velocity(&reference, &[loud(5.0, 60, 64)], &params, 0.1).is_empty());
        assert_eq!(precision_recall_f1_velocity(&[], &estimate, &params, 0.1).f_measure, 0.0);
        assert_eq!(velocity_mean_absolute_error(&reference, &[], &params), 0.0);
    }

    #[test]
    fn disjoint_matched_notes_have_a_negative_overlap_ratio() {
        // Onset-only matching pairs notes that do not overlap at all:
        // (0.92 − 0.93) / (0.94 − 0.91) = −1/3, as mir_eval computes it.
        let s =
            precision_recall_f1_overlap(&[note(0.91, 0.92, 58)], &[note(0.93, 0.94, 58)], &MatchParams::onset_only());
        assert_eq!(s.matched, 1);
        assert!((s.average_overlap_ratio + 1.0 / 3.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn evaluation_json_layout() {
        let notes = [note(0.0, 1.0, 60), note(0.5, 1.0, 72)];
        let e = evaluate(&notes, &notes[..1], 0.05, 0.2);
        let value = serde_json::to_value(e).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4);
        for key in ["onset", "onset_offset", "n_reference", "n_estimate"] {
            assert!(keys.contains(&key), "{keys:?}");
        }
        for part in ["onset", "onset_offset"] {
            for key in ["precision", "recall", "f_measure", "accuracy", "matched", "average_overlap_ratio"] {
                assert!(value[part].get(key).is_some(), "{part}.{key}");
            }
        }
        assert_eq!(value["n_reference"], 2);
        assert_eq!(value["n_estimate"], 1);
        assert_eq!(value["onset"]["matched"], 1);
        assert_eq!(value["onset"]["precision"], 1.0);
    }

    #[test]
    fn evaluate_uses_its_tolerances() {
        let reference = [note(0.0, 1.0, 60)];
        let estimate = [note(0.08, 1.5, 60)];
        let tight = evaluate(&reference, &estimate, 0.05, 0.2);
        assert_eq!((tight.onset.matched, tight.onset_offset.matched), (0, 0));
        let loose = evaluate(&reference, &estimate, 0.1, 0.2);
        assert_eq!((loose.onset.matched, loose.onset_offset.matched), (1, 0));
        let looser = evaluate(&reference, &estimate, 0.1, 0.5);
        assert_eq!((looser.onset.matched, looser.onset_offset.matched), (1, 1));
    }

    /// Random note lists on a coarse grid, so that many notes collide.
    fn notes_strategy(max: usize) -> impl Strategy<Value = Vec<Note>> {
        prop::collection::vec((0u32..200, 1u32..60, 58u8..63), 0..max).prop_map(|raw| {
            raw.into_iter()
                .map(|(start, len, pitch)| note(f64::from(start) * 0.01, f64::from(start + len) * 0.01, pitch))
                .collect()
        })
    }

    fn params_strategy() -> impl Strategy<Value = MatchParams> {
        (0.0f64..0.2, prop::sample::select(vec![50.0, 99.9, 100.0, 150.0, 250.0]), prop::option::of(0.0f64..0.5))
            .prop_map(|(onset_tolerance, cents, ratio)| MatchParams {
                onset_tolerance,
                pitch_tolerance_cents: cents,
                offset_ratio: ratio,
                offset_min_tolerance: 0.05,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn matching_is_maximum_and_uses_only_hits(
            reference in notes_strategy(9),
            estimate in notes_strategy(9),
            params in params_strategy(),
        ) {
            let matching = match_notes(&reference, &estimate, &params);
            let edges = brute_force_edges(&reference, &estimate, &params);
            for &(i, j) in &matching {
                prop_assert!(edges[i].contains(&j));
            }
            let mut refs: Vec<usize> = matching.iter().map(|m| m.0).collect();
            let mut ests: Vec<usize> = matching.iter().map(|m| m.1).collect();
            refs.dedup();
            ests.sort_unstable();
            ests.dedup();
            prop_assert!(refs.len() == matching.len() && ests.len() == matching.len());
            prop_assert!(matching.windows(2).all(|w| w[0].0 < w[1].0));
            let best = exhaustive_max_matching(&edges, &mut vec![false; estimate.len()], 0);
            prop_assert_eq!(matching.len(), best);
        }

        #[test]
        fn windowed_edges_equal_brute_force(
            reference in notes_strategy(40),
            estimate in notes_strategy(40),
            params in params_strategy(),
        ) {
            let mut fast = candidate_edges(&reference, &estimate, &params);
            for list in &mut fast {
                list.sort_unstable();
            }
            prop_assert_eq!(fast, brute_force_edges(&reference, &estimate, &params));
        }

        #[test]
        fn swapping_reference_and_estimate_swaps_precision_and_recall(
            reference in notes_strategy(30),
            estimate in notes_strategy(30),
            tolerance in 0.0f64..0.2,
        ) {
            let params = MatchParams { onset_tolerance: tolerance, ..MatchParams::onset_only() };
            let a = precision_recall_f1_overlap(&reference, &estimate, &params);
            let b = precision_recall_f1_overlap(&estimate, &reference, &params);
            prop_assert_eq!(a.matched, b.matched);
            prop_assert_eq!((a.precision, a.recall), (b.recall, b.precision));
            prop_assert!((a.f_measure - b.f_measure).abs() < 1e-15);
            prop_assert_eq!(a.accuracy, b.accuracy);
        }

        #[test]
        fn scores_are_bounded(
            reference in notes_strategy(30),
            estimate in notes_strategy(30),
            params in params_strategy(),
        ) {
            let s = precision_recall_f1_overlap(&reference, &estimate, &params);
            for v in [s.precision, s.recall, s.f_measure, s.accuracy] {
                prop_assert!((0.0..=1.0).contains(&v), "{s:?}");
            }
            // Matched notes need not overlap (onset-only): the ratio can be negative.
            prop_assert!((-1.0..=1.0).contains(&s.average_overlap_ratio), "{s:?}");
            prop_assert!(s.matched <= reference.len().min(estimate.len()));
            prop_assert!(s.f_measure <= s.precision.max(s.recall) + 1e-15 && s.f_measure >= s.precision.min(s.recall) - 1e-15);
        }

        #[test]
        fn self_evaluation_is_perfect(notes in notes_strategy(30)) {
            prop_assume!(!notes.is_empty());
            let e = evaluate(&notes, &notes, 0.05, 0.2);
            for s in [e.onset, e.onset_offset] {
                prop_assert_eq!(s.matched, notes.len());
                prop_assert_eq!((s.precision, s.recall, s.f_measure, s.accuracy), (1.0, 1.0, 1.0, 1.0));
                // Duplicated notes may pair with their twins, which overlap fully too.
                prop_assert!(s.average_overlap_ratio > 0.0);
            }
        }
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        // One pitch struck every 20 ms for 200 s: every estimate hits up to
        // five references, and augmenting paths run along the whole chain.
        let reference: Vec<Note> =
            (0..10_000).map(|k| note(f64::from(k) * 0.02, f64::from(k) * 0.02 + 0.01, 60)).collect();
        let estimate: Vec<Note> = reference.iter().map(|n| note(n.onset + 0.045, n.offset + 0.045, 60)).collect();
        let matching = match_notes(&reference, &estimate, &MatchParams::onset_only());
        assert_eq!(matching.len(), reference.len());
    }
}
