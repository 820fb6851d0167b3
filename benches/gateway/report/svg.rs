//! The run's plot: latency (p99 and p50, log scale) against throughput, one series per kind of
//! phase, as a standalone SVG.

use std::fmt::Write as _;

use crate::report::file_stem;
use crate::results::PhaseResult;

/// Latency (p99 filled, p50 hollow; log scale) against throughput, one series per phase kind.
pub(crate) fn svg(results: &[PhaseResult]) -> String {
    let series: [(&str, &str, &[&str]); 6] = [
        (
            "raw producer",
            "#1f77b4",
            &["raw_producer", "raw_producer_fixed"],
        ),
        ("raw Redis", "#2ca02c", &["raw_redis"]),
        (
            "gateway, unique",
            "#d62728",
            &["gateway_unique", "gateway_fixed"],
        ),
        ("gateway, 10 % retries", "#ff7f0e", &["gateway_dup10"]),
        ("gateway, batches", "#9467bd", &["gateway_batch"]),
        (
            "baseline build, unique",
            "#7f7f7f",
            &["gateway_unique_baseline"],
        ),
    ];
    let points: Vec<(usize, f64, f64, f64, String)> = results
        .iter()
        .filter(|r| !r.profiled)
        .filter_map(|r| {
            let s = series
                .iter()
                .position(|(_, _, phases)| phases.contains(&r.phase.as_str()))?;
            let l = r.latency_ms?;
            let label = match r.target_rate_eps {
                Some(_) => format!("w{} fixed", r.window),
                None => format!("w{}", r.window),
            };
            Some((s, r.throughput_eps, l.p50.max(0.01), l.p99.max(0.01), label))
        })
        .collect();
    let (w, h, left, right, top, bottom) = (900.0, 560.0, 80.0, 220.0, 40.0, 60.0);
    let x_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let y_lo = points
        .iter()
        .map(|p| p.2)
        .fold(f64::INFINITY, f64::min)
        .min(1.0)
        .log10()
        .floor();
    let y_hi = points
        .iter()
        .map(|p| p.3)
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(y_lo + 1.0);
    let px = |x: f64| left + x / x_max * (w - left - right);
    let py = |y: f64| top + (y_hi - y.log10()) / (y_hi - y_lo) * (h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\">ackgate: latency vs throughput ({})</text>\n",
        left,
        file_stem()
    );
    // Axes and grid.
    let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
    let _ = writeln!(
        s,
        "<line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"black\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>"
    );
    for decade in (y_lo as i32)..=(y_hi as i32) {
        let v = 10f64.powi(decade);
        let y = py(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} ms</text>",
            x0 - 6.0,
            y + 4.0,
            if v < 1.0 {
                format!("{v}")
            } else {
                format!("{v:.0}")
            }
        );
    }
    let step = nice_step(x_max / 6.0);
    let mut tick = 0.0;
    while tick <= x_max {
        let x = px(tick);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{tick:.0}</text>",
            y1 + 5.0,
            y1 + 18.0
        );
        tick += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">throughput (events/s)</text>\
         <text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">\
         latency (ms, log scale)</text>",
        (x0 + x1) / 2.0,
        h - 18.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    for (i, (name, color, _)) in series.iter().enumerate() {
        let mut mine: Vec<_> = points.iter().filter(|p| p.0 == i).collect();
        mine.sort_by(|a, b| a.1.total_cmp(&b.1));
        // The closed-loop points, in window order: the curve as the window grows.
        let mut curve: Vec<_> = mine.iter().filter(|p| !p.4.ends_with("fixed")).collect();
        curve.sort_by_key(|p| p.4.trim_start_matches('w').parse::<usize>().unwrap_or(0));
        if curve.len() > 1 {
            let path: Vec<String> = curve
                .iter()
                .map(|p| format!("{:.1},{:.1}", px(p.1), py(p.3)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
                path.join(" ")
            );
        }
        for p in &mine {
            let (x, y50, y99) = (px(p.1), py(p.2), py(p.3));
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{y50:.1}\" x2=\"{x:.1}\" y2=\"{y99:.1}\" stroke=\"{color}\" \
                 stroke-opacity=\"0.4\"/>\
                 <circle cx=\"{x:.1}\" cy=\"{y99:.1}\" r=\"5\" fill=\"{color}\"/>\
                 <circle cx=\"{x:.1}\" cy=\"{y50:.1}\" r=\"4\" fill=\"white\" stroke=\"{color}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>",
                x + 7.0,
                y99 - 6.0,
                p.4
            );
        }
        let ly = top + 20.0 + 22.0 * i as f64;
        let lx = w - right + 20.0;
        let _ = writeln!(
            s,
            "<circle cx=\"{lx}\" cy=\"{ly}\" r=\"5\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            lx + 10.0,
            ly + 4.0
        );
    }
    let ly = top + 20.0 + 22.0 * series.len() as f64 + 10.0;
    let lx = w - right + 20.0;
    let _ = writeln!(
        s,
        "<circle cx=\"{lx}\" cy=\"{ly}\" r=\"5\" fill=\"#555\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">p99</text>\
         <circle cx=\"{lx}\" cy=\"{:.1}\" r=\"4\" fill=\"white\" stroke=\"#555\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">p50</text>",
        lx + 10.0,
        ly + 4.0,
        ly + 20.0,
        lx + 10.0,
        ly + 24.0
    );
    s.push_str("</svg>\n");
    s
}

fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.max(1.0).log10().floor());
    let base = raw / magnitude;
    let nice = if base <= 1.0 {
        1.0
    } else if base <= 2.0 {
        2.0
    } else if base <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}
