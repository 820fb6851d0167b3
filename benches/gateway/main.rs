//! The gateway against its physical limits, in one run on one machine: the raw idempotent
//! producer, the raw Redis claim + settle scripts, and the gateway process under keep-alive
//! HTTP/1.1 load, each with the same number of events outstanding (the window).
//!
//! Run it through `scripts/bench.sh [--quick]`, which starts a broker, makes sure Redis runs,
//! builds `target/release/ackgate` and this binary, and passes where everything is. The numbers
//! are measurements, never assertions: the binary fails only when the benchmark itself is
//! broken (errors, no throughput, answers other than the expected ones beyond a tiny tolerance).
//!
//! Phases, for every window W:
//! - `raw_producer`: a `ThreadedProducer` configured as the gateway's keeps W unique events
//!   outstanding; latency is send → delivery report.
//! - `raw_redis`: W tasks on one multiplexed connection run the gateway's CLAIM then SETTLE
//!   scripts on unique keys; latency is claim + settle.
//! - `gateway_unique`: W keep-alive HTTP/1.1 connections post unique events with unique keys to
//!   a fresh `ackgate serve` process; latency is request → whole response.
//! - `gateway_dup10`: the same, with one request in ten a retry of an answered event (replayed).
//! - `gateway_unique_baseline` (with `--baseline-bin`): `gateway_unique` on an older build.
//! - `gateway_wrk` (at the reference window only, when wrk is installed): `gateway_unique` with
//!   wrk as the load generator.
//!
//! Then `gateway_batch`: a few connections each with one batch of unique events in flight at
//! `events:batch`, about `--batch-window` events outstanding, beside a raw producer phase at
//! that window; and `redis_memory`: a Redis of the bench's own, `--memory-records` events
//! through one gateway, `used_memory` before and after: bytes per settled record (also for the
//! baseline build).
//!
//! Then, at half the gateway's best throughput, `gateway_fixed` and `raw_producer_fixed` at the
//! same open-loop rate (latency from the intended send time); then `overload`: one gateway with
//! `--max-in-flight` = W, closed-loop load, then 4× the sustainable rate open-loop, then
//! closed-loop load again, with a per-second timeline of answers, RSS and CPU.
//!
//! With `--soak-secs`, one gateway also runs that long at the largest window, its RSS and CPU
//! sampled every second, to show that memory settles instead of growing.
//!
//! This file owns the entry point and the order of the phases. The rest, by role:
//! - [`cli`]: the flags, and the gateway settings the bench runs with and mirrors;
//! - [`load`]: the load generators (hand-written HTTP/1.1 client, raw producer, raw Redis) and
//!   their pacing;
//! - [`processes`]: the gateway process the bench starts, and the sampling of its CPU and memory
//!   and those of Redis and the broker;
//! - [`backends`]: the broker's topics and Redis's keys the phases use and clean up;
//! - [`tally`] and [`results`]: what one phase counted, and the result it reports;
//! - [`phases`]: the phases themselves (throughput, batch, memory, overload, soak, wrk);
//! - [`report`]: the run's description, the `.jsonl`, markdown, SVG and perf reports.

mod backends;
mod cli;
mod load;
mod phases;
mod processes;
mod report;
mod results;
mod tally;

use std::io::Write as _;

use anyhow::bail;
use clap::Parser;

use crate::backends::{redis_connection, redis_server_info};
use crate::cli::Args;
use crate::load::pacing::Pace;
use crate::phases::Run;
use crate::phases::wrk::wrk_installed;
use crate::processes::procfs::Probes;
use crate::report::markdown::{markdown, soak_markdown};
use crate::report::perf::perf_text;
use crate::report::summary::{broken, summarize, summary_lines};
use crate::report::svg::svg;
use crate::report::{append_line, command_output, file_stem, run_info};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(data) = &args.perf_report {
        return match perf_text(data, &data.display().to_string()) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("perf report failed: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("bench error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs every phase; `Ok(false)` when the benchmark turned out broken.
async fn run(args: Args) -> anyhow::Result<bool> {
    if args.brokers.is_empty() {
        bail!("--brokers (ACKGATE_BENCH_KAFKA_BROKERS) is required: run scripts/bench.sh");
    }
    if args.windows.is_empty() || args.windows.contains(&0) {
        bail!("--windows must list positive numbers");
    }
    if !args.gateway_bin.exists() {
        bail!(
            "{} does not exist: cargo build --release --bin ackgate",
            args.gateway_bin.display()
        );
    }
    if let Some(baseline) = &args.baseline_bin
        && !baseline.exists()
    {
        bail!("the baseline build {} does not exist", baseline.display());
    }
    if args.batch_events == 0 || args.batch_window == 0 {
        bail!("--batch-events and --batch-window must be positive");
    }
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::create_dir_all(&args.work_dir)?;
    let run_id = ulid::Ulid::new().to_string().to_lowercase()[16..].to_owned();
    let mut redis = redis_connection(&args.redis_url).await?;
    let (redis_pid, redis_version) = redis_server_info(&mut redis).await;
    let info = run_info(&args, &run_id, &redis_version);
    let stem = file_stem();
    let jsonl = args.out_dir.join(format!("{stem}.jsonl"));
    append_line(&jsonl, &serde_json::to_string(&info)?)?;
    println!(
        "ackgate bench {stem} run {run_id}: nproc {}, {}; windows {:?}, {} s (+{} s warm-up) per \
         phase, {} B events",
        info.nproc, info.cpu_model, args.windows, args.duration, args.warmup, args.event_bytes
    );
    let reference = args.reference_window.unwrap_or_else(|| {
        if args.windows.contains(&256) {
            256
        } else {
            *args.windows.iter().max().expect("not empty")
        }
    });
    let wrk = !args.no_wrk && wrk_installed();
    if !args.no_wrk && !wrk {
        eprintln!("warning: wrk is not installed (apt-get install wrk); no gateway_wrk phase");
    }
    let mut run = Run {
        args: args.clone(),
        run_id: run_id.clone(),
        probes: Probes {
            gateway: None,
            broker: args.broker_pid,
            redis: redis_pid,
        },
        redis,
        phase_count: 0,
        results: Vec::new(),
        jsonl: jsonl.clone(),
    };

    for &window in &args.windows {
        if !args.gateway_only {
            run.raw_producer(window, Pace::Closed).await?;
            run.raw_redis(window).await?;
        }
        run.gateway(window, Pace::Closed, 0, false).await?;
        if let Some(baseline) = &args.baseline_bin {
            run.gateway_baseline(window, baseline).await?;
        }
        if args.duplicate_percent > 0 {
            run.gateway(window, Pace::Closed, args.duplicate_percent, false)
                .await?;
        }
        if window == reference && wrk {
            run.gateway_wrk(window).await?;
        }
    }
    if !args.no_batch {
        // The batch phase's reference, if the windows did not include it.
        let measured =
            |r: &results::PhaseResult| r.phase == "raw_producer" && r.window == args.batch_window;
        if !args.gateway_only && !run.results.iter().any(measured) {
            run.raw_producer(args.batch_window, Pace::Closed).await?;
        }
        run.gateway_batch(args.batch_window).await?;
    }
    let mut memory = Vec::new();
    if args.memory_records > 0 {
        let current = run
            .redis_memory("current", &args.gateway_bin, !args.no_batch)
            .await?;
        memory.push(current);
        if let Some(baseline) = &args.baseline_bin {
            memory.push(run.redis_memory("baseline", baseline, false).await?);
        }
    }
    let gateway_max = run
        .results
        .iter()
        .filter(|r| r.phase == "gateway_unique")
        .map(|r| r.throughput_eps)
        .fold(0.0, f64::max);
    if !args.no_fixed_rate && gateway_max > 0.0 {
        let half = gateway_max / 2.0;
        run.gateway(reference, Pace::Rate(half), 0, false).await?;
        if !args.gateway_only {
            run.raw_producer(reference, Pace::Rate(half)).await?;
        }
    }
    let overload = if !args.no_overload && gateway_max > 0.0 {
        Some(run.overload(reference, gateway_max).await?)
    } else {
        None
    };
    let soak = if args.soak_secs > 0.0 {
        let window = *args.windows.iter().max().expect("not empty");
        Some(run.soak(window, args.soak_secs).await?)
    } else {
        None
    };
    if args.perf {
        if command_output("perf", &["--version"]).is_some() {
            run.gateway(reference, Pace::Closed, 0, true).await?;
        } else {
            eprintln!("warning: perf is not installed; no profile");
        }
    }

    let summary = summarize(
        &run_id,
        &args,
        &run.results,
        &memory,
        reference,
        gateway_max,
        info.nproc,
    );
    append_line(&jsonl, &serde_json::to_string(&summary)?)?;
    // One .jsonl and one .md per day and commit, each run appended; one plot per run.
    let svg_name = format!("{stem}-{run_id}.svg");
    std::fs::write(args.out_dir.join(&svg_name), svg(&run.results))?;
    let mut md = markdown(
        &info,
        &run.results,
        &memory,
        &summary,
        overload.as_ref(),
        &svg_name,
    );
    if let Some(soak) = &soak {
        soak_markdown(&mut md, soak);
    }
    let md_path = args.out_dir.join(format!("{stem}.md"));
    let separator = if md_path.exists() { "\n---\n\n" } else { "" };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&md_path)?
        .write_all(format!("{separator}{md}").as_bytes())?;
    println!("\n{md}");
    println!(
        "results: {} (+ .md, .svg)",
        args.out_dir.join(format!("{stem}.jsonl")).display()
    );

    for line in summary_lines(&summary) {
        println!("{line}");
    }
    let problems = broken(&run.results, &memory, overload.as_ref());
    for problem in &problems {
        eprintln!("BROKEN: {problem}");
    }
    Ok(problems.is_empty())
}
