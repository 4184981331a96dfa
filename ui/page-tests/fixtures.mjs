// Canned answers of the Rust commands, shaped as serde writes them.

export const labels = [
  ["cardiovascular diseases", "Cardiovascular diseases"],
  ["digestive system diseases", "Digestive system diseases"],
  ["general pathological conditions", "General pathological conditions"],
  ["neoplasms", "Neoplasms"],
  ["nervous system diseases", "Nervous system diseases"],
];

const model = { pack: "medical-abstracts", version: "0.1.0", head: "category", task: "Disease category of a medical abstract or note" };

export function status(overrides = {}) {
  return {
    model: { Ok: model },
    history: { Ok: null },
    history_integrity: { Ok: null },
    max_text_chars: 100000,
    policy: { Ok: { source: null, managed: [] } },
    lock: { locked: false, idle_minutes: null, idle_managed: false, has_passphrase: true, method: "passphrase", os_user: null },
    log_file: { Ok: "/home/clinician/.local/state/MedText/logs/app.log" },
    version: "0.1.0",
    threads: 2,
    threads_chosen: null,
    cpus: 2,
    ...overrides,
  };
}

export const NOTE =
  "68 year old man with crushing substernal chest pain radiating to the left arm, ST elevation and raised troponin.";

const probabilities = [
  { id: "cardiovascular diseases", display: "Cardiovascular diseases", probability: 0.82 },
  { id: "general pathological conditions", display: "General pathological conditions", probability: 0.09 },
  { id: "nervous system diseases", display: "Nervous system diseases", probability: 0.05 },
  { id: "neoplasms", display: "Neoplasms", probability: 0.03 },
  { id: "digestive system diseases", display: "Digestive system diseases", probability: 0.01 },
];

export const classification = {
  pack: model.pack,
  pack_version: model.version,
  head: model.head,
  model_sha256: "27bf",
  top: probabilities[0],
  probabilities,
  needs_review: false,
  windows: 1,
  tokens: 29,
  evidence: [
    { start: 21, end: 29, score: 0.6 },
    { start: 41, end: 46, score: 1 },
    { start: 82, end: 91, score: 0.4 },
    { start: 103, end: 111, score: 0.9 },
  ],
};

export function entry(id, preview, extra = {}) {
  return {
    id,
    created_at_ms: Date.UTC(2026, 10, 20, 9, 30) - id * 3_600_000,
    preview,
    pack: model.pack,
    pack_version: model.version,
    head: model.head,
    top: probabilities[0],
    needs_review: false,
    probabilities,
    feedback: null,
    ...extra,
  };
}

export const packs = {
  packs: [
    {
      pack: "medical-abstracts",
      version: "0.1.0",
      task: model.task,
      license: "Head: CC BY-SA 3.0; encoder: Apache-2.0",
      attribution: "Medical Abstracts corpus",
      card: "# Medical abstracts\n\nIntended use: suggests a disease category. A clinician decides.\n",
      heads: [{ name: "category", labels: 5, label_names: labels, evaluation: { dataset: "abstracts.csv test part", n: 433, accuracy: 0.61, macro_f1: 0.608, ece: 0.07 } }],
    },
    {
      pack: "icd10cm",
      version: "0.2.0",
      task: "ICD-10-CM chapter and block suggestion from diagnosis text",
      license: "ICD-10-CM is public domain; encoder: Apache-2.0",
      attribution: "CDC/NCHS",
      card: null,
      heads: [
        { name: "chapter", labels: 22, label_names: [["I00-I99", "Diseases of the circulatory system"]], evaluation: { dataset: "held-out categories", n: 13456, accuracy: 0.763, macro_f1: 0.661, ece: 0.038 } },
        { name: "block", labels: 285, label_names: [["I20-I25", "Ischemic heart diseases"]], evaluation: null },
      ],
    },
  ],
  broken: [],
};

/** The About box's facts: the build and every pack's model hashes. */
export const about = {
  version: "0.1.0",
  commit: "622e5af0c1d2",
  build_date: "2026-12-07",
  packs: [
    { Ok: { name: "icd10cm", version: "0.2.0", heads: [
      { name: "chapter", model_sha256: "3f1e6c0a9b7d4e2f8a6c5b4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f" },
      { name: "block", model_sha256: "8c2d4e6f0a1b3c5d7e9f1a2b4c6d8e0f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d" },
    ] } },
    { Ok: { name: "medical-abstracts", version: "0.1.0", heads: [
      { name: "category", model_sha256: "27bf5a9e3c1d7b6f0e2a4c8d9b1f3e5a7c9d0b2f4e6a8c1d3b5f7e9a0c2d4b6f" },
    ] } },
    { Err: "models/old-pack: \"head.safetensors\": sha256 mismatch: the file is damaged or was replaced" },
  ],
};

/** Answers for a working app: every command a screen calls. */
export function working(overrides = {}) {
  const history = [
    entry(3, "Progressive memory loss and tremor; MRI shows hippocampal atrophy.", { feedback: "agree" }),
    entry(2, "Colon adenocarcinoma with liver metastases, on chemotherapy.", { needs_review: true }),
    entry(1, NOTE),
  ];
  return {
    app_status: status(),
    about,
    network_check: "1 process(es) hold 4 socket(s); none reaches beyond this machine (0 on loopback, the rest Unix or kernel sockets)",
    take_recovery_key: null,
    lock_status: status().lock,
    list_packs: packs,
    recent_history: history,
    activity: null,
    classify: () => ({ classification: { ...classification, evidence: [] }, saved_id: 4, save_error: null }),
    explain: classification.evidence,
    set_feedback: null,
    search_history: ({ query }) => {
      const words = (query.text ?? "").toLowerCase();
      const entries = history.filter((e) => e.preview.toLowerCase().includes(words));
      return { entries, total: entries.length, more_than_total: false };
    },
    history_record: ({ id }) => ({
      ...history.find((e) => e.id === id),
      text: NOTE,
      evidence: classification.evidence,
      model_sha256: "27bf",
      feedback_detail: null,
    }),
    delete_records: ({ ids }) => ids.length,
    export_records: ({ ids }) => ({ path: "/home/clinician/Downloads/medtext-export-1.csv", records: ids.length }),
    history_settings: { retention_days: 365, retention_managed: false, records: 3, path: "/home/clinician/.local/share/MedText/history.db" },
    set_retention_days: 0,
    set_engine_threads: null,
    read_batch_file: () => Array.from({ length: 5 }, (_, i) => `note ${i}`),
    classify_batch: ({ names }) =>
      names.map((name, i) => ({
        name,
        label_id: i === 3 ? null : "neoplasms",
        label: i === 3 ? null : "Neoplasms",
        probability: i === 3 ? null : 0.7,
        needs_review: i === 2,
        saved_id: null,
        error: i === 3 ? "the text is over the limit of 20,000 characters" : null,
      })),
    save_batch_results: "/home/clinician/Downloads/medtext-export-2.csv",
    import_pack: () => {
      throw "pack signature /tmp/staged-1.tar.sig: missing: this machine's policy only accepts packs signed by a key IT allowed";
    },
    ...overrides,
  };
}

/**
 * Answers for a working app whose lock the page can use: `lock_now` locks,
 * `unlock` unlocks, `lock_status` tells. `overrides` as for `working`.
 */
export function lockable(overrides = {}) {
  let locked = false;
  return working({
    lock_status: () => ({ ...status().lock, locked }),
    lock_now: () => {
      locked = true;
      return null;
    },
    unlock: () => {
      locked = false;
      return null;
    },
    ...overrides,
  });
}
