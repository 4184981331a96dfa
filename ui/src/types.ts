// Shapes of what the Rust commands return (serde's field names).

export interface LabelScore {
  id: string;
  display: string;
  probability: number;
}

export interface Classification {
  pack: string;
  pack_version: string;
  head: string;
  top: LabelScore;
  probabilities: LabelScore[];
  needs_review: boolean;
  windows: number;
  tokens: number;
  /** Every word with its share in the decision; absent without evidence. */
  evidence?: WordEvidence[];
}

/** A word of the classified text: [start, end) in characters (code points). */
export interface WordEvidence {
  start: number;
  end: number;
  /** -1..1, relative to the word that most supports the top label. */
  score: number;
}

export interface ShippedEvaluation {
  dataset: string;
  n: number;
  accuracy: number;
  macro_f1: number;
  ece: number;
  ece_before_calibration?: number;
}

export interface HeadChoice {
  name: string;
  labels: number;
  /** [id, display name] of every label. */
  label_names: [string, string][];
  evaluation: ShippedEvaluation | null;
}

export interface PackChoice {
  pack: string;
  version: string;
  task: string;
  license: string;
  attribution: string;
  heads: HeadChoice[];
  card: string | null;
}

export interface PackList {
  packs: PackChoice[];
  broken: string[];
}

export interface ModelInfo {
  pack: string;
  version: string;
  head: string;
  task: string;
}

export interface ClassifyResponse {
  classification: Classification;
  saved_id: number | null;
  save_error: string | null;
}

/** A head and its model hash (the one every result carries). */
export interface HeadIdentity {
  name: string;
  model_sha256: string;
}

/** A pack as `medtext --version` names it (medtext_core::pack::PackIdentity). */
export interface PackIdentity {
  name: string;
  version: string;
  heads: HeadIdentity[];
}

/** The About box: this build and every pack, or why a pack does not open. */
export interface About {
  version: string;
  commit: string;
  build_date: string;
  packs: ({ Ok: PackIdentity } | { Err: string })[];
}

export interface HistoryEntry {
  id: number;
  created_at_ms: number;
  preview: string;
  pack: string;
  pack_version: string;
  head: string;
  top: LabelScore;
  needs_review: boolean;
  probabilities: LabelScore[];
  feedback?: Verdict | null;
}

export type Verdict = "agree" | "corrected";

export interface Feedback {
  verdict: Verdict;
  corrected_label: string | null;
  note: string | null;
  at_ms?: number;
}

/** A saved record in full (medtext_core::store::HistoryRecord). */
export interface HistoryRecord extends HistoryEntry {
  text: string;
  evidence: WordEvidence[];
  model_sha256: string;
  feedback_detail: Feedback | null;
}

/** medtext_core::store::HistoryQuery: every filter optional. */
export interface HistoryQuery {
  text?: string;
  label?: string;
  pack?: string;
  from_ms?: number;
  to_ms?: number;
  feedback?: "agree" | "corrected" | "none";
  offset: number;
  limit: number;
}

export interface HistoryPage {
  entries: HistoryEntry[];
  total: number;
  more_than_total: boolean;
}

export interface HistorySettings {
  retention_days: number | null;
  retention_managed: boolean;
  records: number;
  path: string;
}

export type Outcome<T> = { Ok: T } | { Err: string };

export interface AppStatus {
  model: Outcome<ModelInfo>;
  history: Outcome<null>;
  /** The start-up integrity check of the history; null while it runs. */
  history_integrity: Outcome<null> | null;
  max_text_chars: number;
  /** The machine policy IT deployed, or why MedText refuses to run. */
  policy: Outcome<PolicyStatus>;
  lock: LockStatus;
  log_file: Outcome<string>;
  version: string;
  threads: number | null;
  /** Threads chosen for the next start; null: one per processor. */
  threads_chosen: number | null;
  cpus: number;
}

export interface PolicyStatus {
  source: string | null;
  managed: { key: string; value: string }[];
}

export interface LockStatus {
  locked: boolean;
  idle_minutes: number | null;
  idle_managed: boolean;
  has_passphrase: boolean;
  /** What unlocking asks for: the app passphrase, or the OS account's password. */
  method: "passphrase" | "os";
  os_user: string | null;
}

/** `Progress` from medtext_core::training, sent on the training channel. */
export type TrainProgress =
  | { step: "embedding"; done: number; total: number; from_cache: number; eta_s: number | null }
  | { step: "training"; epoch: number; max_epochs: number; validation_loss: number; eta_s: number };

export interface ClassFigures {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface Metrics {
  n: number;
  accuracy: number;
  macro_f1: number;
  ece: number;
  per_class: ClassFigures[];
}

export interface TrainOutcome {
  removed_duplicates: number;
  removed_conflicting: number;
  best_epoch: number;
  epochs: number;
  temperature: number;
  test: Metrics;
  test_ece_before_calibration: number;
}

/** medtext_core::batch::BatchRow: the outcome for one text of a batch. */
export interface BatchRow {
  name: string;
  label_id: string | null;
  label: string | null;
  probability: number | null;
  needs_review: boolean;
  saved_id: number | null;
  error: string | null;
}
