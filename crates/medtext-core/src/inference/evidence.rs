//! Which words drove a prediction: integrated gradients over the word
//! embeddings, gathered from tokens into words and reported as character
//! spans of the original text.
//!
//! Why gradients and not occlusion: occlusion needs one forward pass per
//! word (a 256-token note has about 180 words, so about 180 passes, many
//! seconds on a workstation), while integrated gradients need one batched
//! forward and backward pass whatever the length. A token's score is
//! `e · mean_k ∇ log p(top label)` at `k/8 · e`, `k = 1..8`, for its word
//! embedding `e`: positive when the token pushed the prediction towards the
//! top label (against the others), negative when it pulled away. The scores
//! add up to the change in `log p(top)` from no words to the note.
//! Plain gradient × input (one point) was tried first and was noisy.

use serde::{Deserialize, Serialize};

use crate::text::tokenize::Tokenized;

/// One word of the input and how much it drove the top label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordEvidence {
    /// `[start, end)` in characters (Unicode scalar values) of the text
    /// that was classified.
    pub start: usize,
    pub end: usize,
    /// In `[-1, 1]`: the word's share relative to the strongest word of the
    /// text (1 for the word that most supports the top label).
    pub score: f32,
}

/// Spreads per-window token scores back onto the text's tokens (a token seen
/// in two overlapping windows gets the mean of both), sums tokens into words
/// and scales so that the largest magnitude is 1. `window_scores[w]` holds
/// one score per token of window `w`, `[CLS]` and `[SEP]` included.
pub fn words_from_window_scores(
    tokenized: &Tokenized,
    window_scores: &[Vec<f32>],
) -> Vec<WordEvidence> {
    let mut sums = vec![0f32; tokenized.tokens];
    let mut seen = vec![0u32; tokenized.tokens];
    for (&start, scores) in tokenized.window_starts.iter().zip(window_scores) {
        // Drop [CLS] and [SEP]: they are not words of the text.
        let body = scores.get(1..scores.len().saturating_sub(1)).unwrap_or(&[]);
        for (i, score) in body.iter().enumerate() {
            if let (Some(sum), Some(n)) = (sums.get_mut(start + i), seen.get_mut(start + i)) {
                *sum += score;
                *n += 1;
            }
        }
    }
    let score_of = |token: usize| match (sums[token], seen[token]) {
        (_, 0) => 0.0,
        (sum, n) => sum / n as f32,
    };
    let mut words: Vec<WordEvidence> = Vec::new();
    let mut current_word = None;
    let original = tokenized.original_tokens.min(tokenized.tokens);
    for (token, (&(start, end), &word)) in tokenized
        .char_offsets
        .iter()
        .zip(&tokenized.word_ids)
        .enumerate()
        .take(original)
    {
        let score = score_of(token);
        match words.last_mut() {
            Some(last) if word.is_some() && word == current_word && token > 0 => {
                last.end = end;
                last.score += score;
            }
            _ => words.push(WordEvidence { start, end, score }),
        }
        current_word = word;
    }
    // Tokens of appended expansions point at the abbreviation they stand
    // for: their score is shared by the words of that abbreviation.
    for (token, &(start, end)) in tokenized.char_offsets.iter().enumerate().skip(original) {
        let within: Vec<&mut WordEvidence> = words
            .iter_mut()
            .filter(|w| w.start < end && start < w.end)
            .collect();
        let share = score_of(token) / within.len().max(1) as f32;
        for w in within {
            w.score += share;
        }
    }
    let strongest = words.iter().map(|w| w.score.abs()).fold(0f32, f32::max);
    if strongest > 0.0 {
        for w in &mut words {
            w.score /= strongest;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenized(
        offsets: &[(usize, usize)],
        words: &[u32],
        starts: &[usize],
        windows: &[usize],
    ) -> Tokenized {
        Tokenized {
            windows: windows.iter().map(|&n| vec![0; n + 2]).collect(),
            tokens: offsets.len(),
            window_starts: starts.to_vec(),
            char_offsets: offsets.to_vec(),
            word_ids: words.iter().map(|&w| Some(w)).collect(),
            original_tokens: offsets.len(),
        }
    }

    #[test]
    fn an_expansion_s_score_goes_to_the_words_of_its_abbreviation() {
        // "h/o CHF (congestive heart failure)": words h / o CHF, then the
        // appended bracket (nothing) and three tokens standing for "CHF".
        let mut t = tokenized(
            &[
                (0, 1),
                (1, 2),
                (2, 3),
                (4, 7),
                (0, 0),
                (4, 7),
                (4, 7),
                (4, 7),
                (0, 0),
            ],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0],
            &[9],
        );
        t.original_tokens = 4;
        let scores = vec![0.0, 0.1, 0.1, 0.1, 1.0, 5.0, 1.0, 1.0, 2.0, 7.0, 0.0];
        let words = words_from_window_scores(&t, &[scores]);
        let spans: Vec<(usize, usize)> = words.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(spans, vec![(0, 1), (1, 2), (2, 3), (4, 7)]);
        // CHF: its own 1.0 plus 1 + 1 + 2 from its expansion; the brackets'
        // 5 and 7 go nowhere.
        assert_eq!(words[3].score, 1.0);
        assert!((words[0].score - 0.1 / 5.0).abs() < 1e-6);
    }

    #[test]
    fn subword_scores_add_up_into_their_word_span() {
        // "tumors grow": tumor ##s | grow
        let t = tokenized(&[(0, 5), (5, 6), (7, 11)], &[0, 0, 1], &[0], &[3]);
        let words = words_from_window_scores(&t, &[vec![9.0, 1.0, 3.0, -2.0, 9.0]]);
        assert_eq!(
            words,
            vec![
                WordEvidence {
                    start: 0,
                    end: 6,
                    score: 1.0
                },
                WordEvidence {
                    start: 7,
                    end: 11,
                    score: -0.5
                },
            ]
        );
    }

    #[test]
    fn overlapping_windows_average_the_tokens_they_share() {
        // Four one-token words; windows cover tokens 0..3 and 2..4.
        let t = tokenized(
            &[(0, 1), (2, 3), (4, 5), (6, 7)],
            &[0, 1, 2, 3],
            &[0, 2],
            &[3, 2],
        );
        let words = words_from_window_scores(
            &t,
            &[vec![0.0, 1.0, 2.0, 4.0, 0.0], vec![0.0, 2.0, 8.0, 0.0]],
        );
        let scores: Vec<f32> = words.iter().map(|w| w.score).collect();
        // token 2 = (4 + 2) / 2 = 3; token 3 = 8; scaled by 8
        assert_eq!(scores, vec![1.0 / 8.0, 2.0 / 8.0, 3.0 / 8.0, 1.0]);
    }

    #[test]
    fn all_zero_scores_stay_zero() {
        let t = tokenized(&[(0, 1)], &[0], &[0], &[1]);
        let words = words_from_window_scores(&t, &[vec![5.0, 0.0, 5.0]]);
        assert_eq!(words[0].score, 0.0);
    }
}
