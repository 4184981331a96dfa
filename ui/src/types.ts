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
}

export interface ClassifyResponse {
  classification: Classification;
  saved_id: number | null;
  save_error: string | null;
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
}

export type Outcome<T> = { Ok: T } | { Err: string };

export interface AppStatus {
  model: Outcome<{ pack: string; version: string; head: string; task: string }>;
  history: Outcome<null>;
  max_text_chars: number;
}
