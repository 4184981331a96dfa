//! `medtext`: the command-line face of MedText, on the same core as the app.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

mod api;
mod generate;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use medtext_core::bench::inference::{self as bench, BenchPlan};
use medtext_core::history::anchor;
use medtext_core::history::audit;
use medtext_core::history::escrow::{self, EscrowStatus};
use medtext_core::history::store::{
    ExportFormat, Feedback, FeedbackFilter, HistoryQuery, OpenMode, Verdict,
};
use medtext_core::machine::policy::Policy;
use medtext_core::pack::archive;
use medtext_core::pack::manifest::{Pack, DEFAULT_PACK};
use medtext_core::training::fit::HeadShape;
use medtext_core::training::pipeline::{self as training, Progress, TrainRequest};
use medtext_core::{
    machine::logging, machine::network, machine::runtime, pack::signing, paths,
    text::validation as text, training::evaluation as metrics, training::examples as dataset,
    user_files, Classification, Classifier, HistoryStore,
};

/// What `medtext -V` prints after the name: the version, the commit and the
/// build date (medtext-build-info); `--version` adds the packs.
const VERSION: &str = medtext_build_info::VERSION_LINE;

#[derive(Parser)]
#[command(
    name = "medtext",
    version = VERSION,
    about = "Offline clinical text classification",
    long_about = "Offline clinical text classification. Nothing leaves this machine.\n\n\
Environment:\n  MEDTEXT_DATA_DIR    where the encrypted history lives (default: the platform data directory)\n  \
MEDTEXT_MODELS_DIR  where model packs are found (default: the models/ folder installed with MedText)"
)]
struct Cli {
    /// Inference threads, from 1 to 64 (default: RAYON_NUM_THREADS if set,
    /// else every CPU available, at most 64). More threads than CPUs only
    /// take turns on them.
    #[arg(
        long,
        global = true,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
            .range(1..=runtime::MAX_THREADS as u64)
    )]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify one text given as an argument, a file, or standard input
    /// (`--file -`; an argument is visible to other users in `ps`).
    Classify(ClassifyArgs),
    /// Search, show, correct and delete saved classifications (the encrypted
    /// history). Without a subcommand: list the newest, filtered.
    History(HistoryArgs),
    /// Check or export the audit trail kept in the history database.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write an encrypted backup of the whole history to a new file. The
    /// passphrase (at least 12 characters) is read from standard input.
    Backup {
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Replace the history with a backup, after checking it opens; the
    /// history it replaces is kept beside it. The passphrase is read from
    /// standard input.
    Restore { backup: PathBuf },
    /// The history database's key: recovery key, rotation, recovery.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check that MedText can work here: models, keychain, history database,
    /// audit trail. Exits non-zero if anything is wrong.
    Doctor,
    /// Evaluate a pack's head on a labelled CSV or JSON Lines file.
    Eval(EvalArgs),
    /// Train a linear or MLP head on a labelled CSV or JSON Lines file and write a model pack.
    Train(Box<TrainArgs>),
    /// Make a pack of a Hugging Face BertForSequenceClassification or
    /// DistilBertForSequenceClassification folder (writes its manifest.json).
    Import {
        /// Folder holding config.json, model.safetensors and tokenizer.json.
        folder: PathBuf,
        /// Pack name.
        #[arg(long)]
        name: String,
        /// The model's licence, recorded in the manifest.
        #[arg(long)]
        license: String,
        /// Who made the model and from what data, recorded in the manifest.
        #[arg(long)]
        attribution: String,
    },
    /// Install, export and list model packs (pack archives are plain tar files).
    #[command(subcommand)]
    Pack(PackCommand),
    /// Measure latency, throughput, load time and memory of a pack on this machine.
    Bench {
        /// Model pack: a name inside the models directory, or a path to a pack folder.
        #[arg(long, default_value = DEFAULT_PACK)]
        pack: String,
        /// Timed runs at each input length.
        #[arg(long, default_value_t = 30)]
        iterations: usize,
        /// Timed batches of 32 x 128 tokens.
        #[arg(long, default_value_t = 5)]
        batch_rounds: usize,
        /// Print JSON: {"p50_ms", "p95_ms", "batch32x128_per_s", "evidence_256_ms", "load_ms", "peak_rss_mb"}.
        #[arg(long)]
        json: bool,
    },
    /// Serve the local API on 127.0.0.1 (never another address) for programs
    /// on this machine: POST /v1/classify with an API key, GET /health,
    /// /ready and /metrics. Runs until stopped; each classify call is audited.
    Serve(api::ServeArgs),
    /// Make, list and revoke keys for the local API.
    #[command(subcommand)]
    ApiKey(api::ApiKeyCommand),
    /// Time the encrypted history at a realistic size (made-up records in a
    /// scratch folder; your history is not touched).
    BenchHistory {
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Print JSON: {"records", "insert_single_per_s", "insert_batch_per_s",
        /// "search_p50_ms", "search_p95_ms", "open_ms", "file_mb"}.
        #[arg(long)]
        json: bool,
    },
    /// Write the manual pages or print a shell's completion script, for
    /// packagers (not in the main help: no user needs it).
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct HistoryArgs {
    #[command(subcommand)]
    action: Option<HistoryAction>,
    /// How many entries to show (at most 500).
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Entries to skip, for paging.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Words that must all occur in the text (each also as a prefix).
    #[arg(long)]
    search: Option<String>,
    /// Top label id, e.g. I20-I25.
    #[arg(long)]
    label: Option<String>,
    /// Model pack name.
    #[arg(long)]
    pack: Option<String>,
    /// Only records with this feedback.
    #[arg(long, value_enum)]
    feedback: Option<FeedbackArg>,
    /// Only records saved on or after this day (YYYY-MM-DD, UTC).
    #[arg(long)]
    since: Option<String>,
    /// Only records saved on or before this day (YYYY-MM-DD, UTC).
    #[arg(long)]
    until: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FeedbackArg {
    Agree,
    Corrected,
    None,
}

#[derive(Subcommand)]
enum HistoryAction {
    /// Show one record in full, as it was classified (the view is audited).
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Record a clinician's verdict on a result.
    Feedback {
        id: i64,
        /// The suggested label is right.
        #[arg(long, conflicts_with = "correct", required_unless_present = "correct")]
        agree: bool,
        /// The right label id.
        #[arg(long)]
        correct: Option<String>,
        #[arg(long)]
        note: Option<String>,
    },
    /// Delete records (their bytes are overwritten in the file).
    Delete {
        /// Record ids.
        #[arg(required_unless_present = "all")]
        ids: Vec<i64>,
        /// Delete every record.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete the records older than N days, or than the retention period
    /// set with `medtext history retention`.
    Purge {
        #[arg(long)]
        older_than_days: Option<u32>,
    },
    /// Show or set how long records are kept; the app deletes older
    /// records at every start. The change is audited.
    Retention {
        /// Keep records this many days.
        #[arg(long, conflicts_with = "keep_forever")]
        days: Option<u32>,
        /// Keep records until they are deleted.
        #[arg(long)]
        keep_forever: bool,
    },
    /// Start a new, empty history where the old one is gone (its file
    /// deleted or emptied) and no backup can be restored: MedText refuses to
    /// make one on its own. The old recovery file is kept aside; the
    /// escrowed recovery key still opens it.
    StartNew {
        /// Confirm that the old history is lost.
        #[arg(long, required = true)]
        confirm: bool,
    },
    /// Write records to a CSV or JSON file for research. The file is NOT
    /// encrypted; the export is audited.
    Export {
        /// Record ids.
        #[arg(required_unless_present = "all")]
        ids: Vec<i64>,
        /// Every record.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, value_enum, default_value_t = ExportFormatArg::Csv)]
        format: ExportFormatArg,
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormatArg {
    Csv,
    Json,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the recovery key (for IT to keep, where the machine policy does
    /// not escrow it to IT already): it opens the history if the keychain
    /// entry is lost. Whoever holds it can read the history.
    Recovery,
    /// IT, on its own machine: open an escrow file written where the policy
    /// names IT's key ([recovery] escrow_public_key). Prints the recovery
    /// key on standard output and what it opens (host, user, history,
    /// date) on standard error, so that on the workstation
    /// `medtext key escrow-open ... | medtext key recover` opens the history.
    /// The standard `age -d -i IDENTITY FILE` opens it too.
    EscrowOpen {
        /// IT's age identity file (an AGE-SECRET-KEY-1… line, as
        /// `age-keygen` writes it).
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
        /// The `.age` file from the escrow folder.
        escrow_file: PathBuf,
    },
    /// Re-encrypt the history with a new random key kept in the keychain
    /// (the recovery key stays the same).
    Rotate,
    /// Open the history with a recovery key read from standard input (never
    /// from the command line, which shells keep) and store its key in the
    /// keychain again.
    Recover,
    /// Forget the app's unlock passphrase and its count of wrong attempts,
    /// for a clinician who forgot it: the app then asks for a new one. The
    /// lock guards the screen, not the file: this OS account can read the
    /// history with these commands anyway. Audited.
    ResetLock,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; names every edited, removed or reordered entry
    /// and exits non-zero if there is one. Also reports committed entries
    /// missing since the last anchor beside the database (a damaged or
    /// removed write-ahead log). The chain alone cannot show a rewrite by
    /// someone holding the database key, nor a cut tail: check it against
    /// the anchors MedText sends to the system log with --against-journal,
    /// or against a log IT collected with --against FILE.
    Verify {
        #[arg(long)]
        json: bool,
        /// Also check the chain against the anchors in the systemd journal
        /// (`journalctl SYSLOG_IDENTIFIER=medtext`).
        #[arg(long, conflicts_with = "against")]
        against_journal: bool,
        /// Also check the chain against the anchors in FILE: a syslog file,
        /// `journalctl -o cat` output or any log holding the
        /// `medtext-audit-anchor` lines IT collected from this machine.
        #[arg(long, value_name = "FILE")]
        against: Option<PathBuf>,
    },
    /// After `medtext` refused a history that lost committed work (a
    /// damaged write-ahead log) and no copy can be put back: record the loss
    /// in the audit trail and open the history as it is.
    AcceptLoss,
    /// Write every entry as JSON Lines for a compliance review (entries hold
    /// record ids and hashes, never text). The export is itself audited.
    Export {
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PackCommand {
    /// Install a pack archive into the models directory. Every hash is
    /// checked and every head loaded before anything is installed.
    Import {
        /// The archive (made by `medtext pack export`).
        archive: PathBuf,
    },
    /// Write an installed pack as one archive file.
    Export {
        /// Pack name (or folder).
        pack: String,
        /// Archive to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Include the shared encoder, for machines that do not have it.
        #[arg(long)]
        with_encoder: bool,
    },
    /// Make a key for signing pack archives. The secret goes to --out
    /// (owner-only; keep it off the workstations); the public key printed on
    /// the last line goes into the machine policy's `packs.allowed_signers`.
    Keygen {
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Sign a pack archive: writes ARCHIVE.sig beside it.
    Sign {
        archive: PathBuf,
        /// The secret key file `medtext pack keygen` wrote.
        #[arg(long)]
        key: PathBuf,
    },
    /// List the installed packs with their heads and labels.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct PackArgs {
    /// Model pack: a name inside the models directory, or a path to a pack folder.
    #[arg(long, default_value = DEFAULT_PACK)]
    pack: String,
    /// Head within the pack (default: the pack's first head).
    #[arg(long)]
    head: Option<String>,
}

#[derive(Args)]
struct ClassifyArgs {
    #[command(flatten)]
    pack: PackArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Save the text and result to the encrypted history.
    #[arg(long)]
    save: bool,
    /// Also show which words drove the top label (integrated gradients; adds
    /// one batched forward and backward pass). JSON gets an "evidence" list
    /// of character spans.
    #[arg(long)]
    evidence: bool,
    /// Answer with every head of the pack (one forward pass), e.g. an ICD
    /// chapter and block; JSON becomes a list. Not with --evidence or --save.
    #[arg(long, conflicts_with_all = ["evidence", "save", "head"])]
    all_heads: bool,
    /// Read the text from this file instead of TEXT; `--file -` reads
    /// standard input (`medtext classify --file - < note.txt`), the way to
    /// give a patient's note.
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// The text to classify. Quotes are optional: several words are joined
    /// by single spaces (so that clap never quotes a word of a note back as
    /// an "unexpected argument"). A note given here is visible to every
    /// user of this machine (in `ps` and /proc) while medtext runs, and
    /// stays in the shell's history: give patient text with `--file -`.
    #[arg(required_unless_present = "file", num_args = 1..)]
    text: Vec<String>,
}

#[derive(Args)]
struct LabelledFileArgs {
    /// Labelled file: CSV with a header row, or JSON Lines (.jsonl, one
    /// object per line; the column options then name the keys).
    #[arg(long)]
    input: PathBuf,
    /// Column holding the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column holding the label.
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Optional CSV (value,name with a header) mapping the file's label values
    /// to label ids, e.g. the abstracts' labels.csv mapping 1 to neoplasms.
    #[arg(long)]
    label_names: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    pack: PackArgs,
    #[command(flatten)]
    data: LabelledFileArgs,
    /// Print JSON: {"accuracy", "macro_f1", "ece", "per_class", "confusion", "n"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: LabelledFileArgs,
    /// Encoder folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    encoder: PathBuf,
    /// Folder to write the pack into.
    #[arg(long)]
    out: PathBuf,
    /// Pack name.
    #[arg(long)]
    name: String,
    /// Head name.
    #[arg(long, default_value = "category")]
    head: String,
    #[arg(long, default_value = "0.1.0")]
    version: String,
    /// What the pack does, shown to clinicians.
    #[arg(long)]
    task: String,
    #[arg(long)]
    license: String,
    #[arg(long)]
    attribution: String,
    /// Longest window fed to the encoder, special tokens included.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Top probability below which a result is flagged for review.
    #[arg(long, default_value_t = 0.5)]
    abstain_below: f64,
    /// Seed of the stratified 70/10/20 train/validation/test split, the
    /// head's initial weights and the order of training batches.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Head to train on the frozen encoder's vectors.
    #[arg(long, value_enum, default_value_t = HeadKindArg::Mlp)]
    head_kind: HeadKindArg,
    /// Width of the MLP head's hidden layer.
    #[arg(long, default_value_t = 256)]
    mlp_hidden: usize,
    /// AdamW learning rate (default: 1e-2 for linear, 5e-4 for MLP heads).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Column naming each row's group (e.g. an ICD category): whole groups go
    /// to one of train, validation and test, so the test figures measure
    /// groups the head never saw.
    #[arg(long)]
    group_column: Option<String>,
    /// CSV (id,display with a header) giving label ids their display names.
    #[arg(long)]
    label_displays: Option<PathBuf>,
    /// Add the head to the pack already in --out (same encoder), replacing
    /// a head of the same name, so one forward pass feeds every head.
    #[arg(long)]
    add_to_pack: bool,
    /// Fewest examples a label may have (ICD blocks with a single code have
    /// fewer than the default).
    #[arg(long, default_value_t = dataset::MIN_PER_LABEL)]
    min_examples: usize,
    /// Leave out every row whose text appears with two different labels
    /// (without it such a file is refused, naming the rows).
    #[arg(long)]
    drop_conflicting: bool,
    /// Low-rank deltas to add to the encoder's weights (a .safetensors from
    /// scripts/finetune/lora.py); copied into the pack.
    #[arg(long, value_name = "FILE")]
    encoder_adapter: Option<PathBuf>,
    /// CSV of clinicians' abbreviations (abbreviation,expansion) to spell
    /// out before embedding; copied into the pack so classification spells
    /// out the same. Rows: `CHF,congestive heart failure`; a phrase, which
    /// wins over its parts (`on RA,on room air`); a lab threshold (`K >5.2
    /// <10,hyperkalemia`, `glucose >11 mmol/L,hyperglycemia`); a reading
    /// only where no value follows (`Ca (no value),carcinoma`); a week count
    /// of gestation before the rest (`{weeks}/40,weeks gestation` reads
    /// "28/40" and "28+3/40"). Acronyms match as written; lower-case words
    /// of 4+ letters also capitalised.
    #[arg(long)]
    abbreviations: Option<PathBuf>,
    /// Also train a linear head on the texts' character n-grams (3 to 5
    /// letters of each word) and mix it into the head at the weight that
    /// does best on the validation part; left out if no weight helps. The
    /// pack then holds the n-grams of 3+ training texts as plain text:
    /// not for files of patients' notes.
    #[arg(long)]
    lexical: bool,
    /// Do not read or write the on-disk cache of sentence vectors (kept,
    /// owner-only, under the data directory's cache/ folder).
    #[arg(long)]
    no_cache: bool,
    /// Write the train / validation / test split to this CSV (part, label,
    /// group, text as the encoder reads it): a fine-tuning recipe outside
    /// MedText keeps to it. The file holds the training texts.
    #[arg(long, value_name = "FILE")]
    write_split: Option<PathBuf>,
    /// Use the split in this CSV (from --write-split) instead of drawing one,
    /// by group where rows have groups, else by text: a second head is then
    /// tested on the same held-out groups as the first.
    #[arg(long, value_name = "FILE")]
    split_from: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HeadKindArg {
    Linear,
    Mlp,
}

/// `medtext eval ... | head -n 1` closes the pipe early: like other
/// command-line tools, end quietly then instead of panicking in `println!`
/// (Rust ignores SIGPIPE by default; this restores the default action).
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first in `main`, before any other thread exists;
    // setting a signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The machine policy, loaded once at start (see `medtext_core::machine::policy`).
static POLICY: OnceLock<Policy> = OnceLock::new();

fn policy() -> &'static Policy {
    POLICY.get_or_init(Policy::default)
}

fn main() -> ExitCode {
    end_quietly_on_a_closed_pipe();
    let cli = parse_command_line();
    // Packaging runs `medtext generate` on the build machine: it needs no
    // machine policy, log or inference threads, and makes no folder there.
    if !matches!(cli.command, Command::Generate(_)) {
        if let Err(code) = set_up(cli.threads) {
            return code;
        }
    }
    let command = command_name(&cli.command);
    let started = std::time::Instant::now();
    let result = match cli.command {
        Command::Classify(args) => classify(args),
        Command::History(args) => history(args),
        Command::Audit(command) => audit_command(command),
        Command::Key(command) => key_command(command),
        Command::Backup { out } => backup(&out),
        Command::BenchHistory { records, json } => bench_history(records, json),
        Command::Restore { backup } => restore(&backup),
        Command::Doctor => doctor(),
        Command::Eval(args) => eval(args),
        Command::Train(args) => train(*args),
        Command::Import {
            folder,
            name,
            license,
            attribution,
        } => medtext_core::pack::manifest::import_sequence_classifier(
            &folder,
            &name,
            &license,
            &attribution,
        )
        .map(|path| eprintln!("wrote {}", path.display()))
        .map_err(err),
        Command::Pack(command) => pack_command(command),
        Command::Generate(command) => generate::run(command, Cli::command()),
        Command::Serve(args) => api::serve(args),
        Command::ApiKey(command) => api::api_key_command(command),
        Command::Bench {
            pack,
            iterations,
            batch_rounds,
            json,
        } => bench(
            &pack,
            BenchPlan {
                iterations: iterations.max(1),
                batch_rounds: batch_rounds.max(1),
            },
            json,
        ),
    };
    tracing::info!(
        event = "command",
        command,
        ok = result.is_ok(),
        ms = started.elapsed().as_secs_f64() * 1000.0
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the machine policy, starts the log and sizes the inference pool;
/// the exit code to stop with if the command must not run.
fn set_up(threads: Option<usize>) -> Result<(), ExitCode> {
    // A broken machine policy stops every command: running without it would
    // leave the machine less protected than IT believes.
    let machine_policy = Policy::load().map_err(|e| {
        logging::install_crash_guards();
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let log_settings = machine_policy.log_settings();
    let policy = POLICY.get_or_init(|| machine_policy);
    if let Err(e) = paths::log_dir().and_then(|dir| logging::init("cli", &dir, log_settings)) {
        // The command still runs; only its log is missing.
        eprintln!("warning: MedText cannot write its log ({e})");
    }
    if !policy.managed().is_empty() {
        tracing::info!(event = "policy", managed = policy.managed().len());
    }
    runtime::configure(threads).map(drop).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The subcommand's name, for the log (never its arguments: they may be
/// the text itself or a patient's file name).
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Classify(_) => "classify",
        Command::History(_) => "history",
        Command::Audit(_) => "audit",
        Command::Backup { .. } => "backup",
        Command::Restore { .. } => "restore",
        Command::Key(_) => "key",
        Command::Doctor => "doctor",
        Command::Eval(_) => "eval",
        Command::Train(_) => "train",
        Command::Import { .. } => "import",
        Command::Pack(_) => "pack",
        Command::Bench { .. } => "bench",
        Command::Serve(_) => "serve",
        Command::ApiKey(_) => "api-key",
        Command::BenchHistory { .. } => "bench-history",
        Command::Generate(_) => "generate",
    }
}

type CliResult = Result<(), String>;

/// Turns an error into the message shown to the user, logging only its
/// kind: the message may name a file, and a file name can name a patient.
fn err<E: ErrorKind>(e: E) -> String {
    tracing::warn!(event = "error", kind = e.kind());
    e.to_string()
}

trait ErrorKind: std::fmt::Display {
    fn kind(&self) -> &'static str;
}

impl ErrorKind for medtext_core::Error {
    fn kind(&self) -> &'static str {
        medtext_core::Error::kind(self)
    }
}

impl ErrorKind for std::io::Error {
    fn kind(&self) -> &'static str {
        "io"
    }
}

impl ErrorKind for std::time::SystemTimeError {
    fn kind(&self) -> &'static str {
        "clock"
    }
}

impl ErrorKind for serde_json::Error {
    fn kind(&self) -> &'static str {
        "json"
    }
}

/// Where packs are looked for when MEDTEXT_MODELS_DIR is not set: beside the
/// executable, in the Linux package's resource folder, and in the source tree
/// for development builds (target/<profile>/medtext).
fn models_dir() -> PathBuf {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    paths::models_dir(&[
        exe_dir.join("models"),
        exe_dir.join("../lib/MedText/models"),
        exe_dir.join("../../models"),
    ])
}

fn pack_command(command: PackCommand) -> CliResult {
    let models = models_dir();
    match command {
        PackCommand::Import { archive } => {
            let (pack, signer) =
                archive::import_file(&archive, &models, policy().allowed_pack_signers.as_deref())
                    .map_err(err)?;
            if let Some(signer) = signer {
                println!("signature verified: signed by {}", signer.to_text());
            }
            println!(
                "installed {} {} in {}",
                pack.manifest.name,
                text::printable(&pack.manifest.version),
                pack.dir.display()
            );
        }
        PackCommand::Export {
            pack,
            out,
            with_encoder,
        } => {
            let pack = Pack::find(&models, &pack).map_err(err)?;
            // Written under a name of its own, then put in place: an
            // existing file is never replaced, a failed export leaves none.
            let file = user_files::NewFile::create(&out).map_err(err)?;
            archive::write_archive(&pack, file.path(), with_encoder).map_err(err)?;
            file.place().map_err(err)?;
            println!("wrote {}", out.display());
        }
        PackCommand::Keygen { out } => {
            let key = signing::generate_key(&out).map_err(err)?;
            eprintln!(
                "wrote the secret key to {}; put the public key below in the policy's packs.allowed_signers",
                out.display()
            );
            println!("{}", key.to_text());
        }
        PackCommand::Sign { archive, key } => {
            let sig = signing::sign_archive(&archive, &key).map_err(err)?;
            println!("wrote {}", sig.display());
        }
        PackCommand::List { json } => {
            let packs = medtext_core::pack::manifest::installed(&models);
            if json {
                let list: Vec<serde_json::Value> = packs
                    .iter()
                    .map(|p| match p {
                        Ok(pack) => serde_json::json!({"dir": pack.dir, "manifest": pack.manifest}),
                        Err(e) => serde_json::json!({"error": e.to_string()}),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list).map_err(err)?);
                return Ok(());
            }
            for p in packs {
                match p {
                    // A manifest is anyone's text: escaped, it cannot
                    // drive the terminal.
                    Ok(pack) => {
                        let m = &pack.manifest;
                        println!(
                            "{} {}  {}",
                            m.name,
                            text::printable(&m.version),
                            text::printable(&m.task)
                        );
                        for h in &m.heads {
                            let labels: Vec<String> =
                                h.labels.iter().map(|l| text::printable(&l.id)).collect();
                            println!(
                                "  head {} ({} labels): {}",
                                text::printable(&h.name),
                                labels.len(),
                                labels.join(", ")
                            );
                        }
                    }
                    Err(e) => println!("broken pack: {e}"),
                }
            }
        }
    }
    Ok(())
}

fn load_classifier(args: &PackArgs) -> Result<Classifier, String> {
    Classifier::load(&models_dir(), &args.pack, args.head.as_deref()).map_err(err)
}

fn read_input(args: &ClassifyArgs) -> Result<String, String> {
    match (args.text.is_empty(), &args.file) {
        (false, _) => Ok(args.text.join(" ")),
        (true, Some(path)) if path.as_os_str() == "-" => {
            text::read_bounded(std::io::stdin().lock(), Path::new("standard input")).map_err(err)
        }
        (true, Some(path)) => std::fs::File::open(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|file| text::read_bounded(file, path).map_err(err)),
        (true, None) => {
            Err("give the text to classify with --file - (standard input) or --file PATH".into())
        }
    }
}

fn classify(args: ClassifyArgs) -> CliResult {
    let input = read_input(&args)?;
    // Reject bad input before the model loads, so the message comes at once.
    policy().check_text(&input).map_err(err)?;
    let classifier = load_classifier(&args.pack)?;
    if args.all_heads {
        let results = classifier.classify_every_head(&input).map_err(err)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&results).map_err(err)?);
        } else {
            for r in &results {
                println!("[{}]", r.head);
                print_classification(r);
            }
        }
        return Ok(());
    }
    let result = if args.evidence {
        classifier.classify_with_evidence(&input)
    } else {
        classifier.classify(&input)
    }
    .map_err(err)?;
    let saved_id = if args.save {
        Some(open_history()?.save(&input, &result).map_err(err)?)
    } else {
        None
    };
    if args.json {
        let mut value = serde_json::to_value(&result).map_err(err)?;
        value["saved_id"] = serde_json::json!(saved_id);
        println!("{}", serde_json::to_string_pretty(&value).map_err(err)?);
    } else {
        print_classification(&result);
        print_evidence(&input, &result);
        if let Some(id) = saved_id {
            println!("saved to history as record {id}");
        }
    }
    Ok(())
}

/// The command line. Only `--version` looks at the packs (it verifies each,
/// which takes a moment), so every other command starts as fast as before.
fn parse_command_line() -> Cli {
    let mut command = Cli::command();
    if std::env::args_os().skip(1).any(|a| a == "--version") {
        command = command.long_version(long_version());
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `medtext --version`: the version line, then every pack in the models
/// folder with its version and each head's model hash (the one results and
/// audit entries carry), so IT can tell exactly what a workstation runs.
fn long_version() -> String {
    let models = models_dir();
    let mut text = format!("{VERSION}\npacks in {}:", models.display());
    let packs = medtext_core::pack::manifest::identities(&models);
    if packs.is_empty() {
        text.push_str("\n  none");
    }
    for pack in packs {
        match pack {
            // A manifest is anyone's text: escaped, it cannot drive the
            // terminal.
            Ok(pack) => {
                text.push_str(&format!(
                    "\n  {} {}",
                    text::printable(&pack.name),
                    text::printable(&pack.version)
                ));
                for head in &pack.heads {
                    text.push_str(&format!(
                        "\n    {:<12} model {}",
                        text::printable(&head.name),
                        head.model_sha256
                    ));
                }
            }
            Err(e) => text.push_str(&format!("\n  (does not open: {e})")),
        }
    }
    text
}

/// Prints a result; its labels, version and head come from a pack's
/// manifest, so they are escaped ([`text::printable`]).
fn print_classification(c: &Classification) {
    let shown = text::printable;
    println!(
        "{}  {:.1}%  [{}]",
        shown(&c.top.display),
        c.top.probability * 100.0,
        shown(&c.top.id)
    );
    if c.needs_review {
        println!("needs review: confidence below the pack's threshold");
    }
    for l in &c.probabilities {
        println!(
            "  {:>6.1}%  {:<34} {}",
            l.probability * 100.0,
            shown(&l.display),
            shown(&l.id)
        );
    }
    println!(
        "{} tokens, {} window(s); {} {} / {}",
        c.tokens,
        c.windows,
        c.pack,
        shown(&c.pack_version),
        shown(&c.head)
    );
}

/// The words that most support the top label, strongest first.
fn print_evidence(text: &str, c: &Classification) {
    let mut supporting: Vec<_> = c.evidence.iter().filter(|w| w.score > 0.0).collect();
    if supporting.is_empty() {
        return;
    }
    supporting.sort_by(|a, b| b.score.total_cmp(&a.score));
    let words: Vec<String> = supporting
        .iter()
        .take(8)
        .map(|w| {
            let word: String = text.chars().skip(w.start).take(w.end - w.start).collect();
            format!("{word} ({:.2})", w.score)
        })
        .collect();
    println!("evidence for {}: {}", c.top.id, words.join(", "));
}

fn open_history() -> Result<HistoryStore, String> {
    let mut store = HistoryStore::open_in(&paths::data_dir().map_err(err)?).map_err(err)?;
    if let Some(key) = store.take_new_recovery_key() {
        if let EscrowStatus::NotWritten { reason } = store.escrow_status() {
            eprintln!("The recovery key could not be escrowed to IT: {reason}. It is shown below instead, and MedText tries again at every start.");
        }
        eprintln!(
            "A recovery key was made for this history. If the keychain entry is ever lost it opens the history again; give it to IT to keep safe (`medtext key recovery` shows it again):\n{}",
            key.to_text()
        );
    }
    Ok(store)
}

fn bench_history(records: usize, json: bool) -> CliResult {
    let scratch =
        std::env::temp_dir().join(format!("medtext-bench-history-{}", std::process::id()));
    paths::ensure_private_dir(&scratch).map_err(err)?;
    let report = medtext_core::bench::history::run(&scratch, records);
    let _ = std::fs::remove_dir_all(&scratch);
    let r = report.map_err(err)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).map_err(err)?);
    } else {
        println!("records              {}", r.records);
        println!(
            "save, one at a time  {:.0} records/s",
            r.insert_single_per_s
        );
        println!("save, in batches     {:.0} records/s", r.insert_batch_per_s);
        println!(
            "search p50 / p95     {:.1} / {:.1} ms",
            r.search_p50_ms, r.search_p95_ms
        );
        println!("open                 {:.1} ms", r.open_ms);
        println!("file                 {:.1} MB", r.file_mb);
    }
    Ok(())
}

fn backup(out: &Path) -> CliResult {
    let report = open_history()?
        .backup(out, &read_secret_line()?)
        .map_err(err)?;
    eprintln!(
        "backup of {} records written to {} and checked: it opens with the passphrase",
        report.records,
        report.path.display()
    );
    Ok(())
}

fn restore(backup: &Path) -> CliResult {
    let report = medtext_core::history::backup::restore(
        &paths::data_dir().map_err(err)?,
        backup,
        &read_secret_line()?,
    )
    .map_err(err)?;
    eprintln!(
        "restored {} records; the history it replaced is kept at {}",
        report.records,
        report
            .replaced_kept_at
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    Ok(())
}

fn history(args: HistoryArgs) -> CliResult {
    match args.action {
        // The one action that must not open the history first: it is gone.
        Some(HistoryAction::StartNew { .. }) => start_new_history(),
        Some(action) => history_action(&mut open_history()?, action),
        None => {
            let store = open_history()?;
            let query = HistoryQuery {
                text: args.search,
                label: args.label,
                pack: args.pack,
                from_ms: args.since.as_deref().map(day_start_ms).transpose()?,
                to_ms: args
                    .until
                    .as_deref()
                    .map(|d| day_start_ms(d).map(|ms| ms + DAY_MS - 1))
                    .transpose()?,
                feedback: args.feedback.map(|f| match f {
                    FeedbackArg::Agree => FeedbackFilter::Agree,
                    FeedbackArg::Corrected => FeedbackFilter::Corrected,
                    FeedbackArg::None => FeedbackFilter::None,
                }),
                offset: args.offset,
                limit: args.limit.max(1),
            };
            let page = store.search(&query).map_err(err)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&page.entries).map_err(err)?
                );
                return Ok(());
            }
            for e in &page.entries {
                println!(
                    "#{:<5} {:<32} {:>5.1}%  {}{}",
                    e.id,
                    e.top.display,
                    e.top.probability * 100.0,
                    e.pack,
                    match e.feedback {
                        Some(Verdict::Agree) => "  (agreed)",
                        Some(Verdict::Corrected) => "  (corrected)",
                        None => "",
                    }
                );
            }
            eprintln!("{} of {} matching records", page.entries.len(), page.total);
            Ok(())
        }
    }
}

/// `medtext history start-new --confirm` (clap requires the flag).
fn start_new_history() -> CliResult {
    let kept = HistoryStore::start_new(&paths::data_dir().map_err(err)?).map_err(err)?;
    for aside in kept {
        eprintln!("kept aside: {}", aside.display());
    }
    open_history()?;
    eprintln!("a new, empty history was started");
    Ok(())
}

fn history_action(store: &mut HistoryStore, action: HistoryAction) -> CliResult {
    match action {
        HistoryAction::StartNew { .. } => start_new_history()?,
        HistoryAction::Show { id, json } => {
            let record = store.record(id).map_err(err)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record).map_err(err)?);
            } else {
                let e = &record.entry;
                println!(
                    "record {} ({} {} / {})",
                    e.id, e.pack, e.pack_version, e.head
                );
                for label in &e.probabilities {
                    println!(
                        "  {:<40} {:>5.1}%",
                        label.display,
                        label.probability * 100.0
                    );
                }
                println!("\n{}", record.text);
            }
        }
        HistoryAction::Feedback {
            id,
            agree,
            correct,
            note,
        } => {
            let feedback = Feedback {
                verdict: if agree {
                    Verdict::Agree
                } else {
                    Verdict::Corrected
                },
                corrected_label: correct,
                note,
                at_ms: 0,
            };
            store.set_feedback(id, &feedback).map_err(err)?;
            eprintln!("feedback saved on record {id}");
        }
        HistoryAction::Delete { ids, all } => {
            let deleted = if all {
                store.delete_all()
            } else {
                store.delete(&ids)
            }
            .map_err(err)?;
            eprintln!("deleted {deleted} records");
        }
        HistoryAction::Purge {
            older_than_days: Some(days),
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(err)?
                .as_millis() as i64;
            let deleted = store
                .purge_older_than(now - i64::from(days) * DAY_MS)
                .map_err(err)?;
            eprintln!("deleted {deleted} records older than {days} days");
        }
        HistoryAction::Purge {
            older_than_days: None,
        } => {
            if store.retention_days().map_err(err)?.is_none() {
                return Err("no retention period is set: give --older-than-days or set one with `medtext history retention --days N`".into());
            }
            let deleted = store.apply_retention().map_err(err)?;
            eprintln!("deleted {deleted} records older than the retention period");
        }
        HistoryAction::Retention { days, keep_forever } => {
            if days.is_some() || keep_forever {
                store.set_retention_days(days).map_err(err)?;
            }
            match store.retention_days().map_err(err)? {
                Some(d) => println!("records are kept {d} days"),
                None => println!("records are kept until they are deleted"),
            }
        }
        HistoryAction::Export {
            ids,
            all,
            format,
            out,
        } => {
            let ids = if all {
                store.matching_ids(&HistoryQuery::default()).map_err(err)?
            } else {
                ids
            };
            let format = match format {
                ExportFormatArg::Csv => ExportFormat::Csv,
                ExportFormatArg::Json => ExportFormat::Json,
            };
            let written = store.export_records(&ids, format, &out).map_err(err)?;
            eprintln!(
                "wrote {written} records to {}\nwarning: this file is NOT encrypted and holds patient text; keep it only where your organisation allows, and delete it when done",
                out.display()
            );
        }
    }
    Ok(())
}

/// One line from standard input, for passphrases and keys: never taken from
/// the command line, which shells keep in their history. At most
/// [`user_files::SECRET_LINE`] is read (standard input may never end).
fn read_secret_line() -> Result<String, String> {
    user_files::SECRET_LINE
        .read_line(std::io::stdin().lock(), Path::new("standard input"))
        .map_err(err)
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Milliseconds since 1970 at the start of `day` (YYYY-MM-DD, UTC). An
/// impossible date (February 30th, April 31st) is refused, not carried over
/// into the next month.
fn day_start_ms(day: &str) -> Result<i64, String> {
    let bad = || format!("'{day}' is not a date: write it as YYYY-MM-DD");
    let parts: Vec<&str> = day.split('-').collect();
    let [year, month, day_of_month] = parts.as_slice() else {
        return Err(bad());
    };
    let year: i32 = year.parse().map_err(|_| bad())?;
    let month: u8 = month.parse().map_err(|_| bad())?;
    let day_of_month: u8 = day_of_month.parse().map_err(|_| bad())?;
    if !(1..=9999).contains(&year) {
        return Err(bad());
    }
    let month = time::Month::try_from(month).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(year, month, day_of_month)
        .map_err(|_| format!("'{day}' is not a date: {month} {year} has no day {day_of_month}"))?;
    let midnight = date.midnight().assume_utc();
    Ok(midnight.unix_timestamp() * 1000)
}

fn key_command(command: KeyCommand) -> CliResult {
    match command {
        KeyCommand::Recovery => {
            // Opening proves the keychain's keys are this history's.
            let store = open_history()?;
            let key = medtext_core::history::keychain::recovery_key(store.path())
                .map_err(err)?
                .ok_or("this history has no recovery key in the keychain")?;
            eprintln!(
                "recovery key of {} (keep it where IT keeps secrets):",
                store.path().display()
            );
            println!("{}", key.to_text());
        }
        KeyCommand::ResetLock => {
            open_history()?.reset_unlock().map_err(err)?;
            eprintln!(
                "the unlock passphrase is forgotten: MedText asks for a new one when it starts"
            );
        }
        KeyCommand::Rotate => {
            open_history()?.rotate_key().map_err(err)?;
            eprintln!("the history is re-encrypted with a new key; the recovery key is unchanged");
        }
        KeyCommand::Recover => {
            let data_dir = paths::data_dir().map_err(err)?;
            let store = HistoryStore::recover(&data_dir, &read_secret_line()?).map_err(err)?;
            eprintln!(
                "the history opens again ({} records); its keys are back in the keychain",
                store.count().map_err(err)?
            );
        }
        KeyCommand::EscrowOpen {
            identity,
            escrow_file,
        } => {
            let record = escrow::open(&identity, &escrow_file).map_err(err)?;
            // The file's words are IT's, but shown escaped all the same.
            let shown = text::printable;
            eprintln!(
                "escrow file {} (MedText {}, {}):",
                escrow_file.display(),
                shown(&record.medtext_version),
                shown(&record.format)
            );
            eprintln!("  host     {}", shown(&record.host));
            eprintln!("  user     {}", shown(&record.user));
            eprintln!(
                "  history  {} (id {})",
                shown(&record.history.to_string_lossy()),
                shown(&record.history_id)
            );
            eprintln!("  created  {}", shown(&record.created));
            eprintln!("recovery key (on that workstation, give it to `medtext key recover` on standard input):");
            println!("{}", record.recovery_key);
        }
    }
    Ok(())
}

fn audit_command(command: AuditCommand) -> CliResult {
    match command {
        AuditCommand::Verify {
            json,
            against_journal,
            against,
        } => {
            let store =
                HistoryStore::open_in_mode(&paths::data_dir().map_err(err)?, OpenMode::Inspect)
                    .map_err(err)?;
            let entries = store.audit_entries().map_err(err)?;
            let mut result = audit::verify(&entries);
            result
                .problems
                .extend(store.anchor_problem().map(str::to_string));
            let logged = match (against_journal, against) {
                (true, _) => Some(journal_anchors()?),
                (false, Some(file)) => Some(log_anchors(&file)?),
                (false, None) => None,
            };
            let anchored = match logged {
                Some(anchors) => {
                    let history = store.history_id().map_err(err)?.unwrap_or_default();
                    let check = anchor::verify_against(&entries, &history, &anchors);
                    result.problems.extend(check.problems.iter().cloned());
                    Some(check)
                }
                None => None,
            };
            if json {
                let report = serde_json::json!({
                    "entries": result.entries,
                    "problems": result.problems,
                    "anchors": anchored.as_ref().map(|c| c.anchors),
                    "anchored_up_to": anchored.as_ref().and_then(|c| c.anchored_up_to),
                });
                println!("{}", serde_json::to_string_pretty(&report).map_err(err)?);
            } else if result.problems.is_empty() {
                match &anchored {
                    Some(check) => println!(
                        "audit trail intact: {} entries, every link verified, and every entry up to {} anchored in the log ({} anchors)",
                        result.entries,
                        check.anchored_up_to.unwrap_or(0),
                        check.anchors
                    ),
                    None => println!(
                        "audit trail intact: {} entries, every link verified",
                        result.entries
                    ),
                }
            }
            for problem in &result.problems {
                eprintln!("audit problem: {problem}");
            }
            if result.problems.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "the audit trail has {} problem(s): it was changed or damaged outside MedText",
                    result.problems.len()
                ))
            }
        }
        AuditCommand::AcceptLoss => {
            let store =
                HistoryStore::open_in_mode(&paths::data_dir().map_err(err)?, OpenMode::AcceptLoss)
                    .map_err(err)?;
            match store.anchor_problem() {
                Some(problem) => eprintln!(
                    "recorded in the audit trail (an audit-loss entry): {problem}. The history opens as it is from now on"
                ),
                None => eprintln!("nothing was lost: the history matches its anchor"),
            }
            Ok(())
        }
        AuditCommand::Export { out } => {
            let written = open_history()?.export_audit(&out).map_err(err)?;
            eprintln!("wrote {written} audit entries to {}", out.display());
            Ok(())
        }
    }
}

/// The anchors in the systemd journal.
fn journal_anchors() -> Result<Vec<anchor::Anchor>, String> {
    let mut journal = std::process::Command::new("journalctl")
        .args(["--no-pager", "--quiet", "-o", "cat"])
        .arg(format!("SYSLOG_IDENTIFIER={}", anchor::SYSLOG_TAG))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run journalctl ({e}): on a machine without the systemd journal, check against a collected log with --against FILE"))?;
    let anchors = journal
        .stdout
        .take()
        .map(anchor::read_anchors)
        .transpose()
        .map_err(|e| format!("reading the journal: {e}"))?
        .unwrap_or_default();
    let status = journal.wait().map_err(err)?;
    if !status.success() {
        return Err(format!(
            "journalctl failed ({status}): is this user allowed to read the system journal?"
        ));
    }
    Ok(anchors)
}

/// The anchors in a log IT collected.
fn log_anchors(file: &Path) -> Result<Vec<anchor::Anchor>, String> {
    let log = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    anchor::read_anchors(log).map_err(|e| format!("{}: {e}", file.display()))
}

/// Runs every check and prints one line each; fails if any failed.
fn doctor() -> CliResult {
    let mut failed = 0;
    let mut report = |what: &str, outcome: Result<String, String>| match outcome {
        Ok(detail) => println!("ok    {what}: {detail}"),
        Err(problem) => {
            failed += 1;
            println!("FAIL  {what}: {problem}");
        }
    };
    let models = models_dir();
    report(
        "model packs",
        Ok(format!("looking in {}", models.display())).and_then(|where_| {
            let packs = medtext_core::pack::manifest::installed(&models);
            let broken: Vec<String> = packs
                .iter()
                .filter_map(|p| p.as_ref().err().map(|e| e.to_string()))
                .collect();
            match (packs.len(), broken.is_empty()) {
                (0, _) => Err(format!("no packs ({where_})")),
                (n, true) => Ok(format!("{n} packs open and verify ({where_})")),
                (_, false) => Err(broken.join("; ")),
            }
        }),
    );
    report(
        "default pack",
        Classifier::load(&models, DEFAULT_PACK, None)
            .and_then(|c| {
                c.classify("chest pain")
                    .map(|_| c.pack().manifest.version.clone())
            })
            .map(|v| format!("{DEFAULT_PACK} {v} loads and classifies"))
            .map_err(err),
    );
    let store = open_history();
    report(
        "history database and keychain",
        store
            .as_ref()
            .map(|s| {
                format!(
                    "{} opens with its key from the OS keychain",
                    s.path().display()
                )
            })
            .map_err(Clone::clone),
    );
    if let Ok(store) = &store {
        report(
            "database integrity (cipher_integrity_check, integrity_check)",
            store
                .integrity_problems()
                .map_err(err)
                .and_then(|problems| {
                    if problems.is_empty() {
                        Ok("every page authenticates, structure sound".into())
                    } else {
                        Err(problems.join("; "))
                    }
                }),
        );
        report(
            "audit trail",
            store.audit_entries().map_err(err).and_then(|entries| {
                let v = audit::verify(&entries);
                if v.problems.is_empty() {
                    Ok(format!("{} entries, chain intact", v.entries))
                } else {
                    Err(v.problems.join("; "))
                }
            }),
        );
        report(
            "audit anchor",
            store.history_id().map_err(err).map(|id| match id {
                Some(id) => format!(
                    "the history (id {id}) matches {}",
                    anchor::file_for(store.path()).display()
                ),
                None => "no anchor yet".into(),
            }),
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            let socket = anchor::syslog_socket();
            if std::fs::metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
                println!("ok    system log: audit anchors go to {}", socket.display());
            } else {
                // Not a failure: the anchor file still catches damage.
                println!(
                    "warn  system log: {} is not there, so audit anchors stay on this machine's anchor file only; start systemd-journald or rsyslog",
                    socket.display()
                );
            }
        }
        report(
            "recovery key escrow",
            match store.escrow_status() {
                EscrowStatus::NotManaged => Ok("not managed: the machine policy names no escrow key, so the recovery key was shown to the user (`medtext key recovery` prints it)".into()),
                EscrowStatus::Written { file } => Ok(format!("escrowed to IT: written to {}", file.display())),
                EscrowStatus::NotWritten { reason } => Err(format!("not written: {reason}. The recovery key was shown to the user instead; MedText tries again at every start")),
            },
        );
        report(
            "local API keys",
            store.api_keys().map_err(err).map(|keys| {
                let active = keys.iter().filter(|k| k.revoked_at_ms.is_none()).count();
                let allowed = if policy().check_local_api().is_ok() {
                    "`medtext serve` may run"
                } else {
                    "the machine policy forbids `medtext serve`"
                };
                format!(
                    "{active} active, {} revoked; {allowed}",
                    keys.len() - active
                )
            }),
        );
    }
    report(
        "machine policy",
        Ok(match &policy().source {
            Some(path) => {
                let managed: Vec<String> = policy()
                    .managed()
                    .iter()
                    .map(|m| format!("{} = {}", m.key, m.value))
                    .collect();
                format!(
                    "{} read; managed: {}",
                    path.display(),
                    if managed.is_empty() {
                        "nothing".to_string()
                    } else {
                        managed.join("; ")
                    }
                )
            }
            None => format!(
                "none at {}; every setting is the user's",
                medtext_core::machine::policy::machine_policy_path().display()
            ),
        }),
    );
    report(
        "logs",
        paths::log_dir()
            .map(|dir| {
                let s = policy().log_settings();
                format!(
                    "{} (JSON lines without patient text, kept {} days, rotated at {} MB)",
                    dir.display(),
                    s.keep_days,
                    s.max_file_bytes >> 20
                )
            })
            .map_err(err),
    );
    report(
        "network",
        network::check_own_sockets().and_then(|r| {
            if r.beyond_loopback.is_empty() {
                Ok(format!(
                    "{} after loading the model and opening the history. MedText has no network client (checked at build time by tests/network_zero.rs)",
                    r.statement()
                ))
            } else {
                Err(r.statement())
            }
        }),
    );
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} check(s) failed"))
    }
}

/// Reads the labelled file and maps its label values through `--label-names`.
fn read_examples(
    args: &LabelledFileArgs,
    group_column: Option<&str>,
) -> Result<Vec<dataset::Example>, String> {
    let columns = dataset::Columns {
        text: &args.text_column,
        label: &args.label_column,
        group: group_column,
    };
    let mut examples = dataset::read_labelled(&args.input, columns).map_err(err)?;
    if let Some(names) = &args.label_names {
        let map = read_label_names(names)?;
        for e in &mut examples {
            e.label = map
                .iter()
                .find(|(value, _)| *value == e.label)
                .map(|(_, name)| name.clone())
                .ok_or_else(|| {
                    format!(
                        "label value {} is not in {}",
                        dataset::cell_for_message(&e.label),
                        names.display()
                    )
                })?;
        }
    }
    Ok(examples)
}

fn read_label_names(path: &Path) -> Result<Vec<(String, String)>, String> {
    let mut reader = csv_reader(path)?;
    reader
        .records()
        .map(|r| {
            let r = r.map_err(|e| format!("{}: {e}", path.display()))?;
            match (r.get(0), r.get(1)) {
                (Some(v), Some(n)) => Ok((v.trim().to_string(), n.trim().to_string())),
                _ => Err(format!(
                    "{}: every row needs a value and a name",
                    path.display()
                )),
            }
        })
        .collect()
}

fn csv_reader(path: &Path) -> Result<medtext_core::tabular::CsvReader, String> {
    medtext_core::tabular::open_csv(path).map_err(err)
}

fn eval(args: EvalArgs) -> CliResult {
    // The file first: a refusal comes at once, not after the model loads.
    let examples = read_examples(&args.data, None)?;
    let classifier = load_classifier(&args.pack)?;
    let labels = &classifier.head_spec().labels;
    let ids: Vec<String> = labels.iter().map(|l| l.id.clone()).collect();
    let mut truth = Vec::with_capacity(examples.len());
    for (row, e) in examples.iter().enumerate() {
        let t = ids.iter().position(|id| *id == e.label).ok_or_else(|| {
            format!(
                "row {}: label {} is not one of this head's labels ({})",
                row + 1,
                dataset::cell_for_message(&e.label),
                ids.join(", ")
            )
        })?;
        truth.push(t);
    }
    // Batches grouped by length (see Classifier::classify_batch).
    const TEXTS_PER_BATCH: usize = 64;
    let mut probabilities = Vec::with_capacity(examples.len());
    for (b, chunk) in examples.chunks(TEXTS_PER_BATCH).enumerate() {
        let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
        let results = classifier.classify_batch(&texts).map_err(err)?;
        for (i, result) in results.into_iter().enumerate() {
            let c = result.map_err(|e| format!("row {}: {e}", b * TEXTS_PER_BATCH + i + 1))?;
            probabilities.push(
                ids.iter()
                    .map(|id| {
                        c.probabilities
                            .iter()
                            .find(|l| &l.id == id)
                            .map_or(0.0, |l| l.probability)
                    })
                    .collect(),
            );
        }
    }
    let m = metrics::evaluate(&ids, &probabilities, &truth);
    print_metrics(&m, args.json)
}

fn print_metrics(m: &metrics::Metrics, json: bool) -> CliResult {
    if json {
        println!("{}", serde_json::to_string_pretty(m).map_err(err)?);
        return Ok(());
    }
    println!(
        "n = {}   accuracy {:.3}   macro-F1 {:.3}   ECE {:.3}",
        m.n, m.accuracy, m.macro_f1, m.ece
    );
    println!(
        "{:<34} {:>9} {:>7} {:>6} {:>8}",
        "label", "precision", "recall", "F1", "support"
    );
    for c in &m.per_class {
        println!(
            "{:<34} {:>9.3} {:>7.3} {:>6.3} {:>8}",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    Ok(())
}

fn train(args: TrainArgs) -> CliResult {
    let examples = read_examples(&args.data, args.group_column.as_deref())?;
    let label_displays = match &args.label_displays {
        Some(path) => read_label_names(path)?,
        None => Vec::new(),
    };
    let cache_dir = if args.no_cache {
        None
    } else {
        Some(paths::data_dir().map_err(err)?.join("cache"))
    };
    let request = TrainRequest {
        input: args.data.input.clone(),
        examples,
        drop_conflicting: args.drop_conflicting,
        min_per_label: args.min_examples,
        encoder_dir: args.encoder,
        max_tokens: args.max_tokens,
        abbreviations: args.abbreviations,
        encoder_adapter: args.encoder_adapter,
        shape: match args.head_kind {
            HeadKindArg::Linear => HeadShape::Linear,
            HeadKindArg::Mlp => HeadShape::Mlp {
                hidden: args.mlp_hidden,
            },
        },
        learning_rate: args.learning_rate,
        weight_decay: args.weight_decay,
        seed: args.seed,
        label_displays,
        cache_dir,
        out: args.out,
        name: args.name,
        version: args.version,
        task: args.task,
        license: args.license,
        attribution: args.attribution,
        head_name: args.head,
        abstain_below: args.abstain_below,
        add_to_pack: args.add_to_pack,
        split_out: args.write_split,
        split_from: args.split_from,
        lexical: args.lexical,
    };
    let outcome = training::train_pack(request, &mut show_progress).map_err(err)?;
    eprintln!();
    if outcome.removed_duplicates + outcome.removed_conflicting > 0 {
        eprintln!(
            "left out {} repeated rows and {} rows whose text carries two labels",
            outcome.removed_duplicates, outcome.removed_conflicting
        );
    }
    eprintln!(
        "kept epoch {} of {}; validation: macro-F1 {:.3}; test: accuracy {:.3}, macro-F1 {:.3}, ECE {:.3} ({:.3} before calibration)",
        outcome.best_epoch,
        outcome.epochs,
        outcome.validation.macro_f1,
        outcome.test.accuracy,
        outcome.test.macro_f1,
        outcome.test.ece,
        outcome.test_ece_before_calibration
    );
    if let Some(lexical) = &outcome.lexical {
        eprintln!("{lexical}");
    }
    eprintln!(
        "wrote {} and {}",
        outcome.manifest.display(),
        outcome.report.display()
    );
    Ok(())
}

/// One line of progress on stderr, rewritten in place.
fn show_progress(progress: Progress) {
    match progress {
        Progress::Embedding {
            done: 0,
            total,
            from_cache,
            ..
        } => eprintln!("embedding {} texts ({from_cache} from the cache)", total + from_cache),
        Progress::Embedding {
            done, total, eta_s, ..
        } => eprint!("\rembedding {done}/{total}  ETA {eta_s:.0}s   "),
        Progress::Training {
            epoch,
            max_epochs,
            validation_loss,
            eta_s,
        } => eprint!(
            "\rtraining: epoch {epoch} of at most {max_epochs}, validation loss {validation_loss:.4}, ETA at most {eta_s:.0}s   "
        ),
    }
}

fn bench(pack: &str, plan: BenchPlan, json: bool) -> CliResult {
    let report = bench::run(&models_dir(), pack, plan).map_err(err)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(err)?);
        return Ok(());
    }
    println!("{:>8} {:>9} {:>9}", "tokens", "p50 ms", "p95 ms");
    for len in bench::LENGTHS.map(|l| l.to_string()) {
        let figure =
            |m: &std::collections::BTreeMap<String, f64>| m.get(&len).copied().unwrap_or(f64::NAN);
        println!(
            "{len:>8} {:>9.1} {:>9.1}",
            figure(&report.p50_ms),
            figure(&report.p95_ms)
        );
    }
    println!(
        "batch 32 x 128: {:.1} sequences/s",
        report.batch32x128_per_s
    );
    println!(
        "classify with evidence, 256 tokens: {:.1} ms",
        report.evidence_256_ms
    );
    println!("pack load: {:.0} ms", report.load_ms);
    if let Some(mb) = report.peak_rss_mb {
        println!("peak RSS: {mb:.0} MB");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_midnights_and_impossible_dates_are_refused() {
        assert_eq!(day_start_ms("1970-01-01"), Ok(0));
        assert_eq!(day_start_ms("2000-02-29"), Ok(951_782_400_000));
        assert_eq!(day_start_ms("2026-11-26"), Ok(1_795_651_200_000));
        for bad in [
            "300000000-01-01",
            "0-01-01",
            "2026-13-01",
            "2026-11-32",
            "yesterday",
        ] {
            let e = day_start_ms(bad).unwrap_err();
            assert!(e.contains("is not a date"), "{bad}: {e}");
        }
    }

    #[test]
    fn days_a_month_does_not_have_are_refused_not_carried_into_the_next() {
        assert_eq!(day_start_ms("2024-02-29"), Ok(1_709_164_800_000));
        assert_eq!(day_start_ms("2026-04-30"), Ok(1_777_507_200_000));
        for impossible in [
            "2026-02-29",
            "2026-02-30",
            "2026-02-31",
            "2026-04-31",
            "1900-02-29",
        ] {
            let e = day_start_ms(impossible).unwrap_err();
            assert!(
                e.contains("is not a date") && e.contains("has no day"),
                "{impossible}: {e}"
            );
        }
    }
}
