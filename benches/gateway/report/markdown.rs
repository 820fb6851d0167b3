//! The markdown report of a run: the machine and versions, a table of every phase, the ratios
//! and targets, the overload timeline and, with `--soak-secs`, the soak's minutes.

use std::fmt::Write as _;

use crate::phases::memory::MemorySummary;
use crate::phases::overload::OverloadSummary;
use crate::phases::soak::SoakSummary;
use crate::report::summary::Summary;
use crate::report::{RunInfo, file_stem, fmt_opt};
use crate::results::PhaseResult;

pub(crate) fn markdown(
    info: &RunInfo,
    results: &[PhaseResult],
    memory: &[MemorySummary],
    summary: &Summary,
    overload: Option<&OverloadSummary>,
    svg_name: &str,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# ackgate benchmark {}, run {} ({})\n",
        file_stem(),
        info.run_id,
        if info.quick { "quick" } else { "full" }
    );
    let _ = writeln!(
        md,
        "- machine: **nproc {}**, {}, {} GiB, Linux {}; load average at start {}",
        info.nproc,
        info.cpu_model,
        fmt_opt(info.memory_gib, 1),
        info.kernel,
        info.load_average
    );
    let _ = writeln!(
        md,
        "- versions: {} (git {}{}), {}, librdkafka {}, broker {}, Redis {}",
        info.ackgate_version,
        info.git_sha,
        if info.git_dirty { ", dirty" } else { "" },
        info.rustc,
        info.librdkafka,
        info.broker,
        info.redis
    );
    let _ = writeln!(
        md,
        "- settings: {} B JSON events, {} partitions, {} s measured per phase after {} s warm-up, \
         windows {:?}, duplicate mix {} %, gateway flags `{}`; everything on this one machine \
         over loopback (gateway, broker, Redis and the load generator share the cores)",
        info.event_bytes,
        info.partitions,
        info.duration_s,
        info.warmup_s,
        info.windows,
        info.duplicate_percent,
        if info.gateway_args.is_empty() {
            "(defaults)"
        } else {
            &info.gateway_args
        }
    );
    let _ = writeln!(
        md,
        "- batch phase: {}; memory phase: {}; baseline build: {}",
        match (info.batch_events, info.batch_window) {
            (Some(events), Some(window)) =>
                format!("{events} events per request, ~{window} events outstanding"),
            _ => "none".to_owned(),
        },
        match info.memory_records {
            0 => "none".to_owned(),
            n => format!("{n} records"),
        },
        info.baseline.as_deref().unwrap_or("none"),
    );
    let _ = writeln!(md, "- started {}\n", info.started_at);
    md.push_str(
        "CPU/10k is CPU-seconds per 10 000 successful events of the measured process: the gateway \
         for gateway phases, the bench's own client for raw phases. CPU % is of one core; machine busy % is of all cores, \
         everything on the machine included. \
         Latency is request → whole response (gateway), send → delivery report (raw producer), \
         claim + settle (raw Redis); fixed-rate phases count from the intended send time. \
         `gateway_batch`: the window is events outstanding (connections × events per batch), \
         latency is that of the whole batch request; `gateway_unique_baseline` is \
         `gateway_unique` on the baseline build; `gateway_wrk` is `gateway_unique` with wrk as \
         the load generator (its window is wrk's connections; wrk's own latency percentiles; \
         generator CPU is wrk's).\n\n",
    );
    md.push_str(
        "| phase | window | rate asked | throughput ev/s | p50 ms | p99 ms | p99.9 ms | CPU/10k s | \
         measured CPU % | gateway peak RSS MiB | generator CPU % | broker CPU % | Redis CPU % | \
         machine busy % | non-2xx |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.phase,
            if r.profiled { " (under perf)" } else { "" },
            r.window,
            fmt_opt(r.target_rate_eps, 0),
            r.throughput_eps,
            fmt_opt(r.latency_ms.map(|l| l.p50), 2),
            fmt_opt(r.latency_ms.map(|l| l.p99), 2),
            fmt_opt(r.latency_ms.map(|l| l.p999), 2),
            fmt_opt(r.process_cpu_s_per_10k, 3),
            r.process_cpu_pct,
            fmt_opt(r.gateway_peak_rss_mib, 1),
            fmt_opt(r.generator_cpu_pct, 0),
            fmt_opt(r.broker_cpu_pct, 0),
            fmt_opt(r.redis_cpu_pct, 0),
            fmt_opt(r.machine_busy_pct, 0),
            if r.phase == "overload_4x" {
                format!(
                    "{} shed (503), {} other",
                    r.answers.get("503 + Retry-After").copied().unwrap_or(0),
                    r.failures
                )
            } else {
                r.failures.to_string()
            }
        );
    }
    cpu_per_event(&mut md, results);
    memory_markdown(&mut md, memory);
    md.push_str("\n## Ratios (within this run)\n\n");
    md.push_str(
        "| window | gateway / raw producer | baseline / raw producer | gateway / raw Redis | \
         dup mix / unique | gateway p99 / raw producer p99 | gateway CPU µs/event | generator + \
         Redis + broker CPU µs/event | ceiling if the gateway cost nothing, ev/s |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &summary.ratios {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.window,
            fmt_opt(r.gateway_over_raw_producer, 2),
            fmt_opt(r.baseline_over_raw_producer, 2),
            fmt_opt(r.gateway_over_raw_redis, 2),
            fmt_opt(r.dup_over_unique, 2),
            fmt_opt(r.gateway_p99_over_raw_producer_p99, 2),
            fmt_opt(r.gateway_cpu_us_per_event, 0),
            fmt_opt(r.others_cpu_us_per_event, 0),
            fmt_opt(r.colocated_ceiling_eps, 0),
        );
    }
    md.push_str(
        "\nThe ceiling column: the cores of this machine divided by what the load generator, \
         Redis and the broker spent per gateway event in the same phase: no gateway, however \
         cheap, passes it while they share the machine.\n",
    );
    md.push_str("\n## Targets\n\n| target | measured | met |\n|---|---|---|\n");
    for t in &summary.targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            t.target,
            t.measured,
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            }
        );
    }
    if let Some(o) = overload {
        let _ = writeln!(
            md,
            "\n## Overload: 4× the sustainable rate\n\n\
             One gateway with `--max-in-flight {}`: {} connections closed-loop, then {} connections \
             open-loop at 4 × {:.0} = {:.0} ev/s (new events, no retries), then closed-loop again.\n\n\
             - during overload: sent and answered {:.0} req/s ({} scheduled requests skipped: every \
             connection was busy): {:.0} × 201/s, {:.0} × 503 + Retry-After/s, {} other answers; \
             503 latency p50 {} ms, p99 {} ms; 201 latency p50 {} ms, p99 {} ms\n\
             - throughput before {:.0} ev/s, after {:.0} ev/s: recovered to {:.2}×\n\
             - RSS (MiB) at the end of: before {}, overload {}, after {}; max during overload {}; \
             peak (VmHWM) {}\n",
            o.max_in_flight,
            o.max_in_flight,
            o.connections,
            o.sustainable_eps,
            o.offered_eps,
            o.sent_eps,
            o.skipped_tickets,
            o.ok_eps,
            o.shed_eps,
            o.other_answers,
            fmt_opt(o.shed_latency_ms.map(|l| l.p50), 2),
            fmt_opt(o.shed_latency_ms.map(|l| l.p99), 2),
            fmt_opt(o.ok_latency_ms.map(|l| l.p50), 2),
            fmt_opt(o.ok_latency_ms.map(|l| l.p99), 2),
            o.throughput_before_eps,
            o.throughput_after_eps,
            o.recovered_ratio,
            fmt_opt(o.rss_mib_end_before, 1),
            fmt_opt(o.rss_mib_end_overload, 1),
            fmt_opt(o.rss_mib_end_after, 1),
            fmt_opt(o.rss_mib_max_during_overload, 1),
            fmt_opt(o.peak_rss_mib, 1),
        );
        let _ = writeln!(
            md,
            "| back-pressure check | measured |\n|---|---|\n\
             | keeps answering | {} connection errors or timeouts; 503 p99 {} ms |\n\
             | sheds load with 503 + Retry-After | {:.0} per second, {} other answers |\n\
             | goodput while shedding | {:.0} × 201/s = {:.2} × the sustainable rate |\n\
             | RSS flat | {} → max {} MiB; drift over the overload once its connections are \
             open: {} MiB |\n\
             | recovers its throughput | {:.0} → {:.0} ev/s = {:.2}× |\n",
            o.transport_errors,
            fmt_opt(o.shed_latency_ms.map(|l| l.p99), 1),
            o.shed_eps,
            o.other_answers,
            o.ok_eps,
            o.ok_eps / o.sustainable_eps.max(f64::MIN_POSITIVE),
            fmt_opt(o.rss_mib_end_before, 1),
            fmt_opt(o.rss_mib_max_during_overload, 1),
            fmt_opt(o.rss_mib_drift_during_overload, 1),
            o.throughput_before_eps,
            o.throughput_after_eps,
            o.recovered_ratio,
        );
        md.push_str(
            "| second | 201 | 503 | other | skipped | 201 p99 ms | gateway RSS MiB | gateway CPU % |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &o.timeline {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.second,
                s.ok,
                s.shed,
                s.other,
                s.skipped,
                fmt_opt(s.ok_p99_ms, 1),
                fmt_opt(s.rss_mib, 1),
                fmt_opt(s.cpu_pct, 0)
            );
        }
    }
    let _ = writeln!(
        md,
        "\n![latency vs throughput]({svg_name})\n\nRaw data: `{}.jsonl` (one JSON object per \
         line: `run`, `phase`, `redis_memory`, `overload`, `summary`).",
        file_stem()
    );
    md
}

/// Every phase's CPU per successful event, by process.
fn cpu_per_event(md: &mut String, results: &[PhaseResult]) {
    md.push_str(
        "\n## CPU per event\n\nMicroseconds of CPU per successful event, from `/proc/<pid>/stat` \
         over the measured window: the gateway, Redis, the broker, and the bench's own process \
         (the load generator; in raw phases, the raw client itself; in `gateway_wrk`, wrk).\n\n\
         | phase | window | ev/s | gateway µs | Redis µs | broker µs | generator µs | total µs |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let c = r.cpu_us_per_event;
        let parts = [c.gateway, c.redis, c.broker, c.generator];
        let total = parts.iter().flatten().sum::<f64>();
        let _ = writeln!(
            md,
            "| {}{} | {} | {:.0} | {} | {} | {} | {} | {} |",
            r.phase,
            if r.profiled { " (under perf)" } else { "" },
            r.window,
            r.throughput_eps,
            fmt_opt(c.gateway, 1),
            fmt_opt(c.redis, 1),
            fmt_opt(c.broker, 1),
            fmt_opt(c.generator, 1),
            fmt_opt((r.events > 0).then_some(total), 1),
        );
    }
}

/// The memory phases: Redis bytes per settled record.
fn memory_markdown(md: &mut String, memory: &[MemorySummary]) {
    if memory.is_empty() {
        return;
    }
    md.push_str(
        "\n## Redis memory per settled record\n\nA `redis-server` of the bench's own (`--save '' \
         --appendonly no`, defaults otherwise), one gateway on it (default key prefix, principal \
         `anonymous`, the bench's topic name), unique events with keys shaped like UUIDs; \
         `used_memory` before the gateway starts and after it stopped.\n\n\
         | build | sent as | records settled | DBSIZE | used_memory before → after B | bytes per \
         record | sample key | its MEMORY USAGE B | other answers |\n\
         |---|---|---:|---:|---|---:|---|---:|---:|\n",
    );
    for m in memory {
        let _ = writeln!(
            md,
            "| {} ({}) | {} | {} | {} | {} → {} | {} | `{}` | {} | {} |",
            m.build,
            m.ackgate_version,
            m.endpoint,
            m.settled,
            m.dbsize,
            m.used_memory_before,
            m.used_memory_after,
            fmt_opt(m.bytes_per_record, 0),
            m.sample_key.as_deref().unwrap_or("–"),
            m.sample_key_memory_usage
                .map_or_else(|| "–".to_owned(), |u| u.to_string()),
            m.failures,
        );
    }
}

pub(crate) fn soak_markdown(md: &mut String, s: &SoakSummary) {
    let drift = match (s.rss_mib_at_half, s.rss_mib_end) {
        (Some(half), Some(end)) => format!("{:+.1} MiB", end - half),
        _ => "–".to_owned(),
    };
    let _ = writeln!(
        md,
        "\n## Soak: {:.0} s at window {}\n\n\
         One gateway, {} keep-alive connections posting unique events closed-loop for {:.0} s: \
         {:.0} ev/s, {} unexpected answers. RSS (MiB) after the first minute {}, at half time {}, \
         at the end {}, highest sample {}, peak (VmHWM) {}; over the second half: {drift}.\n\n\
         | minute | ev/s | gateway RSS MiB at its end | gateway CPU % | Redis RSS MiB | Redis CPU % \
         | broker RSS MiB | broker CPU % |\n|---:|---:|---:|---:|---:|---:|---:|---:|",
        s.duration_s,
        s.window,
        s.window,
        s.duration_s,
        s.throughput_eps,
        s.failures,
        fmt_opt(s.rss_mib_after_first_minute, 1),
        fmt_opt(s.rss_mib_at_half, 1),
        fmt_opt(s.rss_mib_end, 1),
        fmt_opt(s.rss_mib_max, 1),
        fmt_opt(s.peak_rss_mib, 1),
    );
    for m in &s.minutes {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            m.minute,
            m.events_per_s,
            fmt_opt(m.rss_mib, 1),
            fmt_opt(m.cpu_pct, 0),
            fmt_opt(m.redis_rss_mib, 0),
            fmt_opt(m.redis_cpu_pct, 0),
            fmt_opt(m.broker_rss_mib, 0),
            fmt_opt(m.broker_cpu_pct, 0)
        );
    }
}
