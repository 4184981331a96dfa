//! Evaluation figures for a classifier on labelled data.

use serde::Serialize;

/// Bins used for the expected calibration error.
const ECE_BINS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassFigures {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Expected calibration error of the top probability, 10 equal-width bins.
    pub ece: f64,
    pub per_class: Vec<ClassFigures>,
    /// `confusion[true][predicted]`, in the order of `per_class`.
    pub confusion: Vec<Vec<usize>>,
    pub n: usize,
}

/// Figures for `probabilities` (one row per example, one column per label)
/// against the true label indices `truth`.
pub fn evaluate(labels: &[String], probabilities: &[Vec<f32>], truth: &[usize]) -> Metrics {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut bins = vec![(0usize, 0f64, 0f64); ECE_BINS]; // (count, confidence sum, correct sum)
    for (row, &t) in probabilities.iter().zip(truth) {
        let (pred, conf) =
            row.iter().enumerate().fold(
                (0, f32::MIN),
                |best, (i, &p)| if p > best.1 { (i, p) } else { best },
            );
        confusion[t][pred] += 1;
        let bin = ((conf as f64 * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        bins[bin].0 += 1;
        bins[bin].1 += conf as f64;
        bins[bin].2 += f64::from(u8::from(pred == t));
    }
    let n = truth.len();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassFigures> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassFigures {
                label: labels[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let ece = bins
        .iter()
        .filter(|b| b.0 > 0)
        .map(|(count, conf, hit)| {
            (*count as f64 / n.max(1) as f64) * ((conf - hit) / *count as f64).abs()
        })
        .sum();
    Metrics {
        accuracy: ratio(correct, n),
        macro_f1: macro_f1(&per_class, &confusion),
        ece,
        per_class,
        confusion,
        n,
    }
}

/// The mean F1 over the labels that occur in the evaluation, as truth or as
/// a prediction. A label with neither has no F1 at all (a held-out split
/// may have no example of a rare label); counting it as 0 would punish the
/// model for a gap in the data.
fn macro_f1(per_class: &[ClassFigures], confusion: &[Vec<usize>]) -> f64 {
    let present: Vec<f64> = per_class
        .iter()
        .enumerate()
        .filter(|(c, f)| f.support > 0 || confusion.iter().any(|row| row[*c] > 0))
        .map(|(_, f)| f.f1)
        .collect();
    present.iter().sum::<f64>() / present.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_a_hand_computed_example() {
        let labels = vec!["a".to_string(), "b".to_string()];
        // Predictions: a, a, b, b ; truth: a, b, b, b
        let probs = vec![
            vec![0.95, 0.05],
            vec![0.65, 0.35],
            vec![0.15, 0.85],
            vec![0.25, 0.75],
        ];
        let m = evaluate(&labels, &probs, &[0, 1, 1, 1]);
        assert_eq!(m.confusion, vec![vec![1, 0], vec![1, 2]]);
        assert!((m.accuracy - 0.75).abs() < 1e-12);
        // a: p=1/2 r=1 f1=2/3 ; b: p=1 r=2/3 f1=0.8
        assert!((m.per_class[0].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.per_class[1].f1 - 0.8).abs() < 1e-12);
        assert!((m.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
        // One example per bin: 0.95 (hit), 0.65 (miss), 0.85 (hit), 0.75 (hit).
        let expected_ece = (0.05 + 0.65 + 0.15 + 0.25) / 4.0;
        assert!((m.ece - expected_ece).abs() < 1e-6, "{}", m.ece);
        assert_eq!(m.n, 4);
    }

    #[test]
    fn a_label_absent_from_truth_and_predictions_does_not_count_in_macro_f1() {
        let labels = vec!["a".to_string(), "b".to_string(), "never".to_string()];
        let probs = vec![vec![0.9, 0.1, 0.0], vec![0.2, 0.8, 0.0]];
        let m = evaluate(&labels, &probs, &[0, 1]);
        assert_eq!(m.macro_f1, 1.0);
        // Predicted but never true: it counts (as 0).
        let probs = vec![vec![0.9, 0.1, 0.0], vec![0.2, 0.1, 0.7]];
        let m = evaluate(&labels, &probs, &[0, 1]);
        assert!((m.macro_f1 - 1.0 / 3.0).abs() < 1e-12, "{}", m.macro_f1);
    }
}
