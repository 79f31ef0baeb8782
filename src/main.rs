//! The `heapsnap` command: argument parsing and printing only; every result comes from the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use heapsnap::analysis::Analysis;
use heapsnap::diff::{self, CandidateReport, DiffReport, Side};
use heapsnap::heap::Heap;
use heapsnap::import::open_any;
use heapsnap::progress::Progress;
use heapsnap::report::check::{Budget, CheckOptions, CheckReport};
use heapsnap::report::dot::{self, Direction};
use heapsnap::report::leaks::{LeakOptions, LeakReport};
use heapsnap::report::path::PathReport;
use heapsnap::report::summary::SummaryReport;
use heapsnap::report::top::{By, TopReport};
use heapsnap::report::{Format, Report};
use heapsnap::suppress::Suppressions;
use heapsnap::synth::{self, SynthOptions};
use heapsnap::{Error, Result, bench, cache};

/// Finds memory leaks in heap snapshots: leaked cycles, what retains memory, and why.
#[derive(Parser)]
#[command(name = "heapsnap", version, about)]
struct Cli {
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Neither read nor write the analysis cache (SNAP.hscache) of large snapshots.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Also look here for the binaries of recorded modules (by file name, build id checked) and for
    /// separate debug files (DIR/.build-id/xx/rest.debug); repeatable. HEAPSNAP_DEBUG_PATH adds more
    /// (separated by `:`), /usr/lib/debug comes last.
    #[arg(long, global = true, value_name = "DIR")]
    debug_dir: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Totals: reachable and leaked, by type, by allocation site.
    Summary {
        snapshot: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Rows per table.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// Leak groups, largest first, with their cycles and allocation sites.
    Leaks {
        snapshot: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Exit with status 1 when anything is lost (definitely, indirectly or possibly).
        #[arg(long)]
        fail: bool,
        /// Groups to list.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        /// List the identity of every member of every group (JSON: `groups[].members`).
        #[arg(long)]
        members: bool,
    },
    /// What retains the most memory.
    Top {
        snapshot: PathBuf,
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value = "object")]
        by: By,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// The shortest chains that keep a node alive.
    Path {
        snapshot: PathBuf,
        /// The node's identity (decimal) or an address in it (0x…).
        node: String,
        /// Chains to show, one per root, nearest first.
        #[arg(short = 'n', long, default_value_t = 3)]
        chains: usize,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Graphviz drawing of what a node references (default) or what references it.
    Dot {
        snapshot: PathBuf,
        node: String,
        /// Draw what the node references (objgraph's show_refs).
        #[arg(long, conflicts_with = "backrefs")]
        refs: bool,
        /// Draw what keeps the node alive (objgraph's show_backrefs).
        #[arg(long)]
        backrefs: bool,
        #[arg(long, default_value_t = 3)]
        depth: u32,
        /// Nodes to draw at most.
        #[arg(long, default_value_t = 200)]
        max_nodes: usize,
    },
    /// Convert a V8 heap snapshot (.heapsnapshot, from Chrome or Node), or resolve an address-keyed
    /// .hsnap (the Python exporter's), to a plain .hsnap. Every command also reads both directly,
    /// converting them on the fly.
    Convert {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// What grew from BASE to NEW; with three snapshots, leak candidates by memlab's rule.
    Diff {
        /// BASE NEW, or BASE TARGET FINAL.
        #[arg(num_args = 2..=3, required = true)]
        snapshots: Vec<PathBuf>,
        /// How to match nodes: by identity (one process), by type and site (different runs), or auto.
        #[arg(long, value_enum, default_value = "auto")]
        by: diff::By,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Rows per table.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// Gate for CI: exit 1 when a leak or growth budget is exceeded.
    Check {
        snapshot: PathBuf,
        /// The snapshot to measure growth against.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Most bytes that may leak (unsuppressed groups): 1234, 500kB, 10MiB.
        #[arg(long, value_parser = parse_size)]
        max_leaked: Option<(u64, String)>,
        /// Most growth against --baseline: a size, or a percentage of the baseline's reachable bytes (5%).
        #[arg(long, value_parser = parse_budget)]
        max_growth: Option<(Budget, String)>,
        /// Known leaks not to count (formats/suppressions.md).
        #[arg(long)]
        suppressions: Option<PathBuf>,
        /// Append the Markdown report to this file (such as "$GITHUB_STEP_SUMMARY").
        #[arg(long)]
        report: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Rows per table.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// Write a synthetic snapshot with planted leaks (for tests and benchmarks).
    Synth {
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        nodes: u32,
        #[arg(long, default_value_t = 4.0)]
        edges_per_node: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of extra edges that point anywhere in the heap (the rest stay near or go to shared hubs).
        #[arg(long, default_value_t = 0.05)]
        far_edges: f64,
        /// Also write the planted verdict, as JSON, to this file.
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// Run a program with the recorder preloaded; it writes heap snapshots (at exit by default),
    /// and the leaks of the last one are then printed to stderr, with every snapshot's path. The
    /// program's output and exit status are passed through.
    Record {
        /// The snapshot's path (default: heapsnap-PID.hsnap, or heapsnap-PID-N.hsnap with --signal
        /// or --every). `%p` is replaced by the process id, `%n` by the snapshot's number.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Snapshot at exit (the default when neither --signal nor --every is given).
        #[arg(long)]
        at_exit: bool,
        /// Snapshot each time the program gets this signal (USR2, RTMIN+3, 12, ...); a handler the
        /// program installs for it still runs.
        #[arg(long, value_parser = heapsnap::record::parse_signal)]
        signal: Option<i32>,
        /// Snapshot periodically (500ms, 2s, 1m).
        #[arg(long, value_parser = heapsnap::record::parse_duration)]
        every: Option<std::time::Duration>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Benchmark of capture: an allocation-heavy C workload natively, under the recorder, under
    /// heaptrack and under valgrind; prints wall time and peak memory as ratios to native.
    BenchCapture {
        /// Allocator operations per run.
        #[arg(long, default_value_t = 2_000_000)]
        ops: u64,
        /// Runs of the native and recorder cases (the fastest is kept).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Benchmark: load and analyse synthetic heaps of these sizes; prints times and peak memory.
    Bench {
        /// Node counts, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
        nodes: Vec<u32>,
        /// Where to write the snapshots.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Share of extra edges that point anywhere in the heap: the harder the caches work.
        #[arg(long, default_value_t = 0.05)]
        far_edges: f64,
        /// Also time petgraph's kosaraju_scc and simple_fast on the same graph.
        #[arg(long)]
        petgraph: bool,
        /// Keep the snapshots.
        #[arg(long)]
        keep: bool,
        /// Measure one snapshot in this process and print the figures as JSON (used by the
        /// benchmark itself, one child process per size).
        #[arg(long, hide = true)]
        one: Option<PathBuf>,
        /// Instead: V8 snapshots of about these node counts (comma separated), written by Node
        /// (tests/v8/make-heap.js), converted, loaded and analysed.
        #[arg(long, value_delimiter = ',')]
        v8: Option<Vec<u64>>,
        /// With --v8: also run memlab (getFullHeapFromFile) on each snapshot, in its own process.
        #[arg(long, requires = "v8")]
        memlab: bool,
        /// With --v8: write the snapshots with heapsnap's synthetic V8 writer instead of Node.
        #[arg(long, requires = "v8")]
        synthetic: bool,
        /// With --v8: where make-heap.js, memlab-retained.js and memlab's node_modules are.
        #[arg(long, requires = "v8", default_value_os_t = bench::v8::default_scripts())]
        scripts: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("heapsnap: {e}");
            ExitCode::from(2)
        }
    }
}

/// Loads a snapshot and its analysis, then hands both to `f`.
fn with_analysis<T>(cli: &Cli, path: &Path, f: impl FnOnce(&Heap<'_>, &Analysis) -> Result<T>) -> Result<T> {
    let progress = Progress::stderr(cli.quiet);
    let opened = heapsnap::import::open_any(path, &progress)?;
    let heap = opened.load(&progress)?.with_debug_dirs(&cli.debug_dir);
    let analysis = cache::analyze(&heap, &progress, !cli.no_cache, cache::MIN_NODES);
    let result = f(&heap, &analysis);
    print_notes(&heap);
    result
}

/// Says on stderr which modules could not be symbolized and why (once each).
fn print_notes(heap: &Heap<'_>) {
    for note in heap.symbols().notes() {
        eprintln!("heapsnap: note: {note}");
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ok = ExitCode::SUCCESS;
    match &cli.command {
        Command::Summary { snapshot, format, limit } => with_analysis(&cli, snapshot, |heap, analysis| {
            print(&SummaryReport::build(heap, analysis, *limit).render(*format))?;
            Ok(ok)
        }),
        Command::Leaks { snapshot, format, fail, limit, members } => with_analysis(&cli, snapshot, |heap, analysis| {
            let report = LeakReport::build(heap, analysis, LeakOptions { limit: *limit, members: *members });
            print(&report.render(*format))?;
            let lost = report.any() || report.possibly.objects > 0;
            Ok(if *fail && lost { ExitCode::from(1) } else { ok })
        }),
        Command::Top { snapshot, limit, by, format } => with_analysis(&cli, snapshot, |heap, analysis| {
            print(&TopReport::build(heap, analysis, *by, *limit).render(*format))?;
            Ok(ok)
        }),
        Command::Path { snapshot, node, chains, format } => with_analysis(&cli, snapshot, |heap, analysis| {
            let target = heap.find_node(node)?;
            print(&PathReport::build(heap, analysis, target, *chains).render(*format))?;
            Ok(ok)
        }),
        Command::Dot { snapshot, node, refs: _, backrefs, depth, max_nodes } => {
            with_analysis(&cli, snapshot, |heap, analysis| {
                let target = heap.find_node(node)?;
                let direction = if *backrefs { Direction::Backrefs } else { Direction::Refs };
                print(&dot::dot(heap, analysis, target, direction, *depth, *max_nodes))?;
                Ok(ok)
            })
        }
        Command::Convert { input, output } => {
            let converted = heapsnap::import::convert(input, output, &Progress::stderr(cli.quiet))?;
            eprintln!("{}: {}", output.display(), converted.summary());
            Ok(ok)
        }
        Command::Diff { snapshots, by, format, limit } => {
            let progress = Progress::stderr(cli.quiet);
            let files = snapshots.iter().map(|p| open_any(p, &progress)).collect::<Result<Vec<_>>>()?;
            let heaps = files
                .iter()
                .map(|f| f.load(&progress).map(|h| h.with_debug_dirs(&cli.debug_dir)))
                .collect::<Result<Vec<_>>>()?;
            let last = heaps.last().expect("clap requires two or three");
            let analysis = cache::analyze(last, &progress, !cli.no_cache, cache::MIN_NODES);
            let new = Side { heap: last, analysis: &analysis };
            let text = if let [base, target, _] = &heaps[..] {
                CandidateReport::build(base, target, new, *limit).render(*format)
            } else {
                let base_analysis = cache::analyze(&heaps[0], &progress, !cli.no_cache, cache::MIN_NODES);
                let base = Side { heap: &heaps[0], analysis: &base_analysis };
                DiffReport::build(base, new, *by, *limit).render(*format)
            };
            print(&text)?;
            heaps.iter().for_each(print_notes);
            Ok(ok)
        }
        Command::Check { snapshot, baseline, max_leaked, max_growth, suppressions, report, format, limit } => {
            if max_growth.is_some() && baseline.is_none() {
                return Err(Error::Usage("--max-growth needs --baseline".into()));
            }
            let suppressions = match suppressions {
                Some(path) => Suppressions::load(path)?,
                None => Suppressions::default(),
            };
            let options = CheckOptions {
                max_leaked: max_leaked.clone(),
                max_growth: max_growth.clone(),
                suppressions,
                limit: *limit,
            };
            let progress = Progress::stderr(cli.quiet);
            let file = open_any(snapshot, &progress)?;
            let base_file = baseline.as_deref().map(|p| open_any(p, &progress)).transpose()?;
            let heap = file.load(&progress)?.with_debug_dirs(&cli.debug_dir);
            let base_heap =
                base_file.as_ref().map(|f| f.load(&progress).map(|h| h.with_debug_dirs(&cli.debug_dir))).transpose()?;
            let analysis = cache::analyze(&heap, &progress, !cli.no_cache, cache::MIN_NODES);
            let base_analysis =
                base_heap.as_ref().map(|h| cache::analyze(h, &progress, !cli.no_cache, cache::MIN_NODES));
            let base = base_heap.as_ref().zip(base_analysis.as_ref()).map(|(heap, analysis)| Side { heap, analysis });
            let result = CheckReport::build(Side { heap: &heap, analysis: &analysis }, base, &options);
            if let Some(path) = report {
                let mut file =
                    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(Error::io(path))?;
                file.write_all((result.markdown() + "\n").as_bytes()).map_err(Error::io(path))?;
            }
            print(&result.render(*format))?;
            print_notes(&heap);
            base_heap.iter().for_each(print_notes);
            Ok(if result.pass { ok } else { ExitCode::from(1) })
        }
        Command::Synth { output, nodes, edges_per_node, seed, far_edges, truth } => {
            let options = SynthOptions {
                nodes: *nodes,
                edges_per_node: *edges_per_node,
                seed: *seed,
                far_fraction: *far_edges,
                ..SynthOptions::default()
            };
            let planted = synth::write(output, options)?;
            if let Some(truth) = truth {
                let json = serde_json::to_string_pretty(&planted).expect("serializable") + "\n";
                std::fs::write(truth, json).map_err(Error::io(truth))?;
            }
            Ok(ok)
        }
        Command::Record { output, at_exit, signal, every, command } => {
            let options = heapsnap::record::RecordOptions {
                command: command.clone(),
                output: output.clone(),
                recorder: None,
                signal: *signal,
                every: *every,
                at_exit: *at_exit || (signal.is_none() && every.is_none()),
            };
            let recording = heapsnap::record::run(&options)?;
            let progress = Progress::stderr(cli.quiet);
            eprint!("{}", heapsnap::record::report(&recording, &progress, !cli.no_cache)?);
            Ok(ExitCode::from(recording.exit_code()))
        }
        Command::BenchCapture { ops, repeat } => {
            let options = heapsnap::capture_bench::CaptureOptions { ops: *ops, repeat: *repeat, recorder: None };
            let quiet = cli.quiet;
            let results = heapsnap::capture_bench::run(&options, |step| {
                if !quiet {
                    eprintln!("heapsnap: running {step}");
                }
            })?;
            print(&heapsnap::capture_bench::table(&results, *ops))?;
            Ok(ok)
        }
        Command::Bench { nodes, dir, far_edges, petgraph, keep, one, v8, memlab, synthetic, scripts } => {
            if let Some(path) = one {
                let m = bench::measure(path, *petgraph)?;
                print(&(serde_json::to_string(&m).expect("serializable") + "\n"))?;
                return Ok(ok);
            }
            let exe = std::env::current_exe().map_err(Error::io("heapsnap"))?;
            if let Some(sizes) = v8 {
                let source = if *synthetic { bench::v8::Source::Synthetic } else { bench::v8::Source::Node };
                let options = bench::v8::V8BenchOptions {
                    sizes: sizes.clone(),
                    dir: dir.clone(),
                    source,
                    memlab: *memlab,
                    scripts: scripts.clone(),
                    keep: *keep,
                };
                print(&bench::v8::table(&bench::v8::run(&exe, &options)?))?;
                return Ok(ok);
            }
            let options = SynthOptions { far_fraction: *far_edges, ..SynthOptions::default() };
            let results = bench::run(&exe, nodes, options, dir, *petgraph, *keep)?;
            print(&bench::table(&results))?;
            Ok(ok)
        }
    }
}

/// A size argument, kept with its spelling for the report.
fn parse_size(text: &str) -> Result<(u64, String), String> {
    heapsnap::report::check::parse_size(text).map(|b| (b, text.to_string()))
}

/// A growth budget argument, kept with its spelling for the report.
fn parse_budget(text: &str) -> Result<(Budget, String), String> {
    heapsnap::report::check::parse_budget(text).map(|b| (b, text.to_string()))
}

/// Writes to stdout; a closed pipe (`heapsnap … | head`) is not an error.
fn print(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("standard output")(e)),
        _ => Ok(()),
    }
}
