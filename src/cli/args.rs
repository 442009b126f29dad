//! The command line: every command and its arguments (clap derive). Parsing only.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use govshare_core::ingest::Encoding;

#[derive(Parser)]
#[command(
    name = "govshare",
    version,
    about = "Government data-sharing engine: versioned base databases with validation and indexes"
)]
pub(crate) struct Cli {
    /// Store directory.
    #[arg(
        long,
        global = true,
        env = "GOVSHARE_STORE",
        default_value = "govshare-store"
    )]
    pub(crate) store: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum EncodingArg {
    Auto,
    Utf8,
    Gbk,
}

impl From<EncodingArg> for Encoding {
    fn from(e: EncodingArg) -> Self {
        match e {
            EncodingArg::Auto => Encoding::Auto,
            EncodingArg::Utf8 => Encoding::Utf8,
            EncodingArg::Gbk => Encoding::Gbk,
        }
    }
}

/// The audit chain's hash function (`init --chain-hash`).
#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum ChainHashArg {
    Blake3,
    Sm3,
}

impl From<ChainHashArg> for govshare_core::audit::ChainHash {
    fn from(c: ChainHashArg) -> Self {
        match c {
            ChainHashArg::Blake3 => govshare_core::audit::ChainHash::Blake3,
            ChainHashArg::Sm3 => govshare_core::audit::ChainHash::Sm3,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum Format {
    Csv,
    Parquet,
}

/// How a query's rows are printed.
#[derive(Clone, Copy, ValueEnum, PartialEq, Default)]
pub(crate) enum OutputFormat {
    /// A table for people, with the row count.
    #[default]
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per row, one per line.
    Json,
    /// An Arrow IPC stream (binary, for programs: `pyarrow.ipc.open_stream`).
    Arrow,
}

/// Every command. The data commands are one family ([`DataCmd`]), flattened so they stay
/// top-level commands.
#[derive(Subcommand)]
pub(crate) enum Command {
    #[command(flatten)]
    Data(DataCmd),
    /// Manage departments.
    Dept {
        #[command(subcommand)]
        action: DeptCmd,
    },
    /// Manage real-name users.
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// Grants: request (unconditional fields), approve / reject (conditional), revoke, list.
    Grant {
        #[command(subcommand)]
        action: GrantCmd,
    },
    /// Register host systems that link govshare.
    System {
        #[command(subcommand)]
        action: SystemCmd,
    },
    /// Run a SQL query as a user, for a declared purpose, under that user's grants.
    Sql {
        /// User id.
        #[arg(long)]
        user: String,
        /// Purpose code the query is made for.
        #[arg(long)]
        purpose: String,
        /// How the user was authenticated: sensitive items (grade L4) in clear need
        /// second-factor.
        #[arg(long, value_enum, default_value = "password")]
        auth: AuthArg,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Same as `--format csv`.
        #[arg(long, conflicts_with = "format")]
        csv: bool,
        /// A value for the query's next placeholder (`$1`, `$2`, ... in order; repeat the
        /// option): bound into the planned query as a value, never pasted into the SQL.
        #[arg(long = "param", value_name = "VALUE")]
        params: Vec<String>,
        /// The query.
        query: String,
    },
    /// A consumer's lookup by key: every granted field of those subjects, masked as granted
    /// (recorded like a query; the key field must be granted in clear). `lookup` is the
    /// operator's administrative lookup.
    ByKey {
        /// User id.
        #[arg(long)]
        user: String,
        /// Purpose code.
        #[arg(long)]
        purpose: String,
        /// How the user was authenticated (sensitive items in clear need second-factor).
        #[arg(long, value_enum, default_value = "password")]
        auth: AuthArg,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Dataset.
        dataset: String,
        /// Keys (citizen IDs, USCCs).
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// The changes of a push subscription since its last acknowledgement, as CSV (`_op`, then
    /// the granted fields); with `--ack`, acknowledged once the file is written.
    Changes {
        /// User id.
        #[arg(long)]
        user: String,
        /// Purpose code.
        #[arg(long)]
        purpose: String,
        /// How the user was authenticated (sensitive items in clear need second-factor).
        #[arg(long, value_enum, default_value = "password")]
        auth: AuthArg,
        /// Dataset.
        dataset: String,
        /// Where to write the changes (CSV with a header; never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Acknowledge the changes once the file is written and synced.
        #[arg(long)]
        ack: bool,
    },
    /// Run an aggregate query under an aggregate-only grant (groups smaller than the grant's
    /// minimum are left out).
    Aggregate {
        /// User id.
        #[arg(long)]
        user: String,
        /// Purpose code.
        #[arg(long)]
        purpose: String,
        /// How the user was authenticated.
        #[arg(long, value_enum, default_value = "password")]
        auth: AuthArg,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// The query.
        query: String,
    },
    /// Export the granted fields and rows of a dataset (masked as granted) under an export
    /// grant, with a manifest whose digest is on the audit trail.
    Export {
        /// User id.
        #[arg(long)]
        user: String,
        /// Purpose code.
        #[arg(long)]
        purpose: String,
        /// How the user was authenticated (sensitive items in clear need second-factor).
        #[arg(long, value_enum, default_value = "password")]
        auth: AuthArg,
        /// Dataset.
        dataset: String,
        /// parquet, csv, csv-gbk or arrow.
        #[arg(long, default_value = "parquet")]
        format: String,
        /// Directory to write into (created; existing exports are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a received export against its manifest: every file there with its size and
    /// blake3; prints the manifest's blake3 to compare with the trail's `export` record.
    ExportCheck {
        /// The manifest (`<dataset>.<ext>.manifest.json`).
        manifest: PathBuf,
    },
    /// Verify claims (核验) under a verify grant: match / no match per field, never a value.
    /// One subject with `--key` and `--claim FIELD=VALUE`, or a CSV file of claims.
    Verify {
        /// User id.
        #[arg(long)]
        user: String,
        /// Purpose code.
        #[arg(long)]
        purpose: String,
        /// Dataset.
        dataset: String,
        /// The subject's key.
        #[arg(long, required_unless_present = "file")]
        key: Option<String>,
        /// A claim, `FIELD=VALUE` (repeatable).
        #[arg(long = "claim", value_name = "FIELD=VALUE", requires = "key")]
        claims: Vec<String>,
        /// A UTF-8 CSV file of claims: a header, the key column first, then claimed fields.
        #[arg(long, conflicts_with = "key")]
        file: Option<PathBuf>,
    },
    /// The service catalog a user applies against: datasets, items, share types, sources,
    /// versions, deadlines and what the user's department holds.
    Services {
        /// Who reads (any active user; recorded).
        #[arg(long)]
        by: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Applications for data: apply, the completeness check, decisions, disputes, list.
    Application {
        #[command(subcommand)]
        action: AppCmd,
    },
    /// Objections on data: file, extend (signed off), answer, list.
    Objection {
        #[command(subcommand)]
        action: ObjectionCmd,
    },
    /// Sharing agreements for long-term needs: make, renew, revoke.
    Agreement {
        #[command(subcommand)]
        action: AgreementCmd,
    },
    /// Escalate every overdue application and objection to the coordinator.
    Escalate {
        /// A coordinator or platform administrator.
        #[arg(long)]
        by: String,
    },
    /// Conflicts between sources (one source per field): list, resolve.
    Conflicts {
        #[command(subcommand)]
        action: ConflictCmd,
    },
    /// The working-day calendar: add a year from its State Council notice (operator).
    Calendar {
        #[command(subcommand)]
        action: CalendarCmd,
    },
    /// Any workflow act as JSON (`{"act": "close_reclassification", ...}`; see the README).
    Act {
        /// The act, as JSON.
        json: String,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
    /// Reports for coordinators and auditors: a table by name, SQL over the report tables,
    /// or the HTML page with charts.
    Report {
        /// A report table (usage, applications, objections, agreements, late_providers,
        /// denials, volumes).
        name: Option<String>,
        /// SQL over the report tables instead of one table.
        #[arg(long, conflicts_with = "name")]
        sql: Option<String>,
        /// Write the rows as CSV to this file.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write the HTML report (every table, with charts) to this file.
        #[arg(long)]
        html: Option<PathBuf>,
        /// A coordinator or auditor.
        #[arg(long)]
        by: String,
    },
    /// The audit trail: verify, tail, checkpoint, who-accessed.
    Audit {
        #[command(subcommand)]
        action: AuditCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `govshare completions bash > /etc/bash_completion.d/govshare`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Guided tour: build a store with synthetic data and show what govshare does.
    Demo {
        /// Persons to generate.
        #[arg(long, default_value_t = 1_000_000)]
        persons: usize,
        /// Legal entities to generate.
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
        /// Where the demo store is built (recreated on each run).
        #[arg(long, default_value = "govshare-demo")]
        dir: PathBuf,
    },
}

/// The data commands: stores, files, loads, the catalog, versions.
#[derive(Subcommand)]
pub(crate) enum DataCmd {
    /// Create a store (with the built-in catalog) at --store, naming its first platform
    /// administrator; every later act is done by a user that administrator, or another, adds.
    Init {
        /// The first platform administrator's account id.
        #[arg(long)]
        admin: String,
        /// Their real name.
        #[arg(long)]
        admin_name: String,
        /// The platform's own department code.
        #[arg(long, default_value = "PLAT")]
        dept: String,
        /// Its name.
        #[arg(long, default_value = "数据共享平台")]
        dept_name: String,
        /// Its region of jurisdiction (GB/T 2260 code).
        #[arg(long)]
        region: String,
        /// The audit chain's hash: blake3, or sm3 (GM/T 0004-2012) where national
        /// cryptography is required. Chosen once, here.
        #[arg(long, value_enum, default_value = "blake3")]
        chain_hash: ChainHashArg,
    },
    /// Write deterministic synthetic person and legal-entity files.
    Generate {
        /// Number of persons.
        #[arg(long, default_value_t = 10_000)]
        persons: usize,
        /// Number of legal entities.
        #[arg(long, default_value_t = 1_000)]
        entities: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory (person.csv / legal_entity.csv, or .parquet).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// File format.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// CSV encoding.
        #[arg(long, value_enum, default_value = "utf8")]
        encoding: EncodingArg,
    },
    /// Load a CSV or Parquet file into a dataset as a new version.
    Load {
        /// Dataset name.
        dataset: String,
        /// Input file (.csv or .parquet).
        file: PathBuf,
        /// Upsert and delete by key (column `_op`: upsert/delete) instead of replacing.
        #[arg(long)]
        incremental: bool,
        /// Commit nothing if any row is invalid.
        #[arg(long)]
        strict: bool,
        /// Let a full load with no valid row commit, emptying the dataset (refused otherwise).
        #[arg(long)]
        allow_empty: bool,
        /// CSV encoding.
        #[arg(long, value_enum, default_value = "auto")]
        encoding: EncodingArg,
        /// Providing department (default: the dataset's provider).
        #[arg(long, default_value = "")]
        provider: String,
        /// Person handing the data over.
        #[arg(long, default_value = "unspecified")]
        handover_person: String,
        /// Person receiving it.
        #[arg(long, default_value = "unspecified")]
        receiver: String,
        /// Delivery method.
        #[arg(long, default_value = "file")]
        method: String,
        /// Objections this delivery corrects (ids).
        #[arg(long, value_delimiter = ',')]
        corrects: Vec<u64>,
        /// The operator doing the load (recorded; needs the operator role).
        #[arg(long)]
        by: String,
    },
    /// Show or change the catalog.
    Catalog {
        #[command(subcommand)]
        action: CatalogCmd,
    },
    /// Publish a k-anonymous open-data extract of a dataset (开放): only open items, the
    /// conditionally open ones generalised until every group holds k rows. Done by the
    /// providing department's approver; recorded before a row is read.
    Release {
        /// Dataset name.
        dataset: String,
        /// The items, in order (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        fields: Vec<String>,
        /// Every released group holds at least this many rows.
        #[arg(long, default_value_t = 10)]
        k: u64,
        /// At most this share of rows may be left out (0 to 0.5).
        #[arg(long, default_value_t = 0.01)]
        max_suppression: f64,
        /// Directory to write into (existing releases are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The provider-approver releasing (recorded).
        #[arg(long)]
        by: String,
    },
    /// Check a received open-data release against its manifest; prints the manifest's blake3
    /// to compare with the trail's `open_release_done` record.
    ReleaseCheck {
        /// The manifest (`<dataset>.open.parquet.manifest.json`).
        manifest: PathBuf,
    },
    /// List the versions of a dataset with their handover records.
    Versions {
        /// Dataset name.
        dataset: String,
        /// Who reads (an operator, platform administrator or auditor; recorded).
        #[arg(long)]
        by: String,
    },
    /// Data-quality report of a file against a dataset (nothing is loaded).
    Validate {
        /// Input file.
        file: PathBuf,
        /// Dataset to check against.
        #[arg(long)]
        dataset: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Who checks (reads the store's catalog as that user; without a store, the built-in
        /// catalog is used and no one need be named).
        #[arg(long)]
        by: Option<String>,
    },
    /// An operator's administrative lookup of one row by key (recorded with its reason).
    Lookup {
        /// Dataset name.
        dataset: String,
        /// Key value (citizen ID, USCC, ...).
        key: String,
        /// The operator looking (needs the operator role).
        #[arg(long)]
        by: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
    },
    /// Rewrite a dataset's live rows into clustered files (new version, same content).
    Compact {
        /// Dataset name.
        dataset: String,
        /// The operator doing it.
        #[arg(long)]
        by: String,
    },
    /// Delete all but the newest versions of a dataset and unreferenced files.
    Vacuum {
        /// Dataset name.
        dataset: String,
        /// Versions to keep.
        #[arg(long, default_value_t = 1)]
        keep: usize,
        /// The operator doing it.
        #[arg(long)]
        by: String,
    },
    /// Copy the whole store (data, indexes, catalog, policy, keys, audit trail) into a new
    /// directory with a manifest of blake3 digests; `--base` copies only what changed since
    /// an earlier backup.
    Backup {
        /// The new backup directory.
        dest: PathBuf,
        /// An earlier backup of this store to build on (incremental).
        #[arg(long)]
        base: Option<PathBuf>,
        /// The operator doing it.
        #[arg(long)]
        by: String,
    },
    /// Restore a backup into a new store directory: every file and the audit trail verified
    /// first, nothing created if any of it fails; `--by` is an operator of the backed-up store.
    Restore {
        /// The backup directory.
        backup: PathBuf,
        /// The new store directory.
        target: PathBuf,
        /// The operator doing it.
        #[arg(long)]
        by: String,
    },
    /// Verify a backup (and its bases) against its manifests without restoring it.
    BackupCheck {
        /// The backup directory.
        backup: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
    /// Walk the hash chain; report the first altered, missing, reordered or truncated record.
    Verify {
        /// A checkpoint file kept from `audit checkpoint` (JSON).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The auditor checking.
        #[arg(long)]
        by: String,
    },
    /// The last records (an auditor sees all but their own; others their department's).
    Tail {
        /// How many.
        #[arg(short, default_value_t = 10)]
        n: usize,
        /// Who reads.
        #[arg(long)]
        by: String,
    },
    /// Print the chain head as JSON, for an external party to keep.
    Checkpoint {
        /// The auditor taking it.
        #[arg(long)]
        by: String,
    },
    /// Every department, time and purpose whose query read this citizen ID or USCC.
    WhoAccessed {
        /// The subject's key.
        key: String,
        /// The auditor asking.
        #[arg(long)]
        by: String,
    },
    /// Move a torn tail left by a crash aside, as a recorded act (appends do it too; reads
    /// never do).
    Repair {
        /// The operator doing it (recorded).
        #[arg(long)]
        by: String,
    },
    /// Move closed segments into Parquet archives (they stay on the chain and verifiable).
    Archive {
        /// The operator doing it (recorded).
        #[arg(long)]
        by: String,
    },
    /// Delete archived records older than the retention (never younger ones).
    Purge {
        /// Retention in years; at least 3 (the regulations' minimum).
        #[arg(long, default_value_t = govshare_core::audit::Retention::MIN_YEARS)]
        retention_years: u32,
        /// The operator doing it (recorded).
        #[arg(long)]
        by: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum AuthArg {
    Password,
    Certificate,
    SecondFactor,
}

impl From<AuthArg> for govshare_core::access::policy::AuthMethod {
    fn from(a: AuthArg) -> Self {
        use govshare_core::access::policy::AuthMethod as M;
        match a {
            AuthArg::Password => M::Password,
            AuthArg::Certificate => M::Certificate,
            AuthArg::SecondFactor => M::SecondFactor,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum SystemCmd {
    /// Register (or change) a host system run by a department.
    Add {
        /// Id.
        id: String,
        /// Name.
        name: String,
        /// The department that runs it.
        #[arg(long)]
        dept: String,
        /// Who registers it (a platform administrator).
        #[arg(long)]
        by: String,
    },
    /// Suspend a host system: its sessions are refused from their next query on.
    Suspend {
        /// Id.
        id: String,
        /// Who suspends it.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum DeptCmd {
    /// Add (or update) a department.
    Add {
        /// Code.
        code: String,
        /// Name.
        name: String,
        /// Region of jurisdiction (GB/T 2260 code).
        #[arg(long)]
        region: String,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// Suspend a department: every session of its users is refused from the next query on.
    Suspend {
        /// Code.
        code: String,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// Reactivate a department.
    Activate {
        /// Code.
        code: String,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// List departments.
    List {
        /// Who reads.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum UserCmd {
    /// Add (or update) a user.
    Add {
        /// Account id.
        id: String,
        /// Real name.
        name: String,
        /// Department code.
        #[arg(long)]
        dept: String,
        /// Roles: consumer, provider-approver, platform-admin, auditor, coordinator, operator, or
        /// public (a member of the public: open items only, and no other role).
        #[arg(long, value_delimiter = ',', default_value = "consumer")]
        roles: Vec<String>,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// Suspend a user.
    Suspend {
        /// Account id.
        id: String,
        /// Who makes the change.
        #[arg(long)]
        by: String,
    },
    /// List users (a department's own, unless the reader oversees the platform).
    List {
        /// Who reads.
        #[arg(long)]
        by: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct GrantArgs {
    /// Consumer department.
    #[arg(long)]
    pub(crate) dept: String,
    /// Dataset.
    #[arg(long)]
    pub(crate) dataset: String,
    /// Fields, each `name` (clear) or `name:mask` (citizen_id, name, phone, address,
    /// date_to_year, nullify, pseudonym).
    #[arg(long, value_delimiter = ',')]
    pub(crate) fields: Vec<String>,
    /// Purpose code.
    #[arg(long)]
    pub(crate) purpose: String,
    /// Purpose in words.
    #[arg(long)]
    pub(crate) purpose_text: String,
    /// Region scope (codes at any level).
    #[arg(long, value_delimiter = ',')]
    pub(crate) regions: Option<Vec<String>>,
    /// Subject scope (keys).
    #[arg(long, value_delimiter = ',')]
    pub(crate) subjects: Option<Vec<String>>,
    /// Narrow to these users of the department.
    #[arg(long, value_delimiter = ',')]
    pub(crate) users: Vec<String>,
    /// Validity in days from now.
    #[arg(long, default_value_t = 365)]
    pub(crate) days: i64,
    /// An export grant instead of a query grant, with its limits: `MAX_ROWS,PER_DAY` (rows one
    /// export may carry, exports a day).
    #[arg(long, value_name = "LIMITS", conflicts_with = "verify")]
    pub(crate) export: Option<String>,
    /// An aggregate-only grant instead of a query grant, with its limits: `MIN_GROUP,PER_DAY`
    /// (the smallest group answered, queries a day).
    #[arg(long, value_name = "LIMITS", conflicts_with_all = ["verify", "export"])]
    pub(crate) aggregate: Option<String>,
    /// A verify grant (核验) instead of a query grant, with its limits:
    /// `PER_SECOND,PER_DAY,PER_SUBJECT_PER_DAY` checks, and `,disclose` to let answers say that
    /// a subject does not exist.
    #[arg(long, value_name = "LIMITS")]
    pub(crate) verify: Option<String>,
    /// Acting user (platform admin for requests, provider approver for decisions).
    #[arg(long)]
    pub(crate) by: String,
}

#[derive(Subcommand)]
pub(crate) enum GrantCmd {
    /// Grant unconditional fields on request (platform administrator).
    Request(GrantArgs),
    /// Approve a request for conditional fields (provider approver).
    Approve(GrantArgs),
    /// Reject a request (provider approver), with a reason.
    Reject {
        #[command(flatten)]
        args: GrantArgs,
        /// Reason.
        #[arg(long)]
        reason: String,
    },
    /// Revoke a grant.
    Revoke {
        /// Grant id.
        id: u64,
        /// Who revokes.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// List grants and decisions as the reader may see them.
    List {
        /// Who reads.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum CatalogCmd {
    /// Datasets with their field counts by share type.
    List {
        /// Who reads (any active user; recorded).
        #[arg(long)]
        by: String,
    },
    /// Fields of one dataset.
    Show {
        /// Dataset name.
        dataset: String,
        /// Catalog version (default: current).
        #[arg(long)]
        version: Option<u64>,
        /// Who reads (any active user; recorded).
        #[arg(long)]
        by: String,
    },
    /// Every catalog version: who, when, what changed.
    History {
        /// Who reads (any active user; recorded).
        #[arg(long)]
        by: String,
    },
    /// Declare datasets / code tables from a JSON or TOML file, as a new catalog version.
    Apply {
        /// Catalog file.
        file: PathBuf,
        /// Who makes the change (a platform administrator; a coordinator to reclassify).
        #[arg(long, alias = "author")]
        by: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StepArg {
    /// Pass the completeness check (platform administrator).
    Complete,
    /// Return as incomplete, with --reason (platform administrator).
    Return,
    /// Resubmit a returned application (applicant).
    Resubmit,
    /// Withdraw (applicant).
    Withdraw,
    /// Dispute a rejection, with --reason (applicant).
    Dispute,
    /// Hand an escalated application back to the provider, with --reason (coordinator).
    HandBack,
}

#[derive(Subcommand)]
pub(crate) enum AppCmd {
    /// File an application (a consumer, for their own department): unconditional items are
    /// granted at once, conditional ones go to the completeness check, not-shared ones to the
    /// coordinator.
    Apply {
        // Boxed: the grant's options make this variant much larger than the others.
        #[command(flatten)]
        grant: Box<GrantArgs>,
        /// The legal basis of the need.
        #[arg(long)]
        legal_basis: String,
    },
    /// Move an application one step.
    Step {
        /// Application id.
        id: u64,
        /// The step.
        #[arg(value_enum)]
        step: StepArg,
        /// Why (needed to return, dispute, hand back).
        #[arg(long, default_value = "")]
        reason: String,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
    /// Approve (possibly narrower) or reject an application.
    Decide {
        /// Application id.
        id: u64,
        /// Reject instead of approve.
        #[arg(long)]
        reject: bool,
        /// Why (needed to reject).
        #[arg(long, default_value = "")]
        reason: String,
        /// Approve only these items, `name` or `name:mask`.
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// Approve a shorter validity: days from now.
        #[arg(long)]
        days: Option<i64>,
        /// The provider's approver (or the coordinator on escalation and dispute).
        #[arg(long)]
        by: String,
    },
    /// Applications as the reader may see them, with deadlines.
    List {
        /// Who reads.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ObjectionCmd {
    /// File an objection on one field of one subject.
    File {
        /// Dataset.
        #[arg(long)]
        dataset: String,
        /// The subject's key.
        #[arg(long)]
        key: String,
        /// The field.
        #[arg(long)]
        field: String,
        /// What is wrong (no data values).
        #[arg(long)]
        description: String,
        /// When it was found (YYYY-MM-DD; default today).
        #[arg(long)]
        discovered: Option<chrono::NaiveDate>,
        /// A consumer whose department holds the item.
        #[arg(long)]
        by: String,
    },
    /// Ask for the one extension (the source's approver).
    Extend {
        /// Objection id.
        id: u64,
        /// Working days (at most 10).
        #[arg(long)]
        days: u32,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
    /// Sign off an extension (another approver of the source).
    SignOff {
        /// Objection id.
        id: u64,
        /// Note.
        #[arg(long)]
        reason: String,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
    /// Answer: confirmed, or corrected by --version (a data version loaded with --corrects).
    Answer {
        /// Objection id.
        id: u64,
        /// The correcting data version.
        #[arg(long)]
        version: Option<u64>,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
    /// Objections as the reader may see them.
    List {
        /// Who reads.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AgreementCmd {
    /// Make an agreement over grants that end with its term (the provider's approver).
    Make {
        /// Consumer department.
        #[arg(long)]
        dept: String,
        /// What it is for.
        #[arg(long)]
        title: String,
        /// Grant ids.
        #[arg(long, value_delimiter = ',')]
        grants: Vec<u64>,
        /// End of the term (RFC 3339).
        #[arg(long)]
        until: chrono::DateTime<chrono::Utc>,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
    /// Renew before the term ends.
    Renew {
        /// Agreement id.
        id: u64,
        /// New end of the term (RFC 3339).
        #[arg(long)]
        until: chrono::DateTime<chrono::Utc>,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
    /// Revoke with its grants.
    Revoke {
        /// Agreement id.
        id: u64,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConflictCmd {
    /// Conflicts recorded by loads, with their resolutions.
    List {
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Who reads (the source's approver, a coordinator or an auditor).
        #[arg(long)]
        by: String,
    },
    /// Resolve a conflict as the authoritative source.
    Resolve {
        /// Conflict id (dataset:version:n).
        id: String,
        /// The later version that corrected the authoritative value, if any.
        #[arg(long)]
        version: Option<u64>,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who acts.
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum CalendarCmd {
    /// Add (or correct) years from a TOML file of `[[year]]` tables (the shape of the shipped
    /// core/data/cn_calendar.toml).
    Add {
        /// The file.
        file: PathBuf,
        /// Why.
        #[arg(long, default_value = "new year's notice")]
        note: String,
        /// An operator.
        #[arg(long)]
        by: String,
    },
}
