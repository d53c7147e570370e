//! Draws a contention run's wait-time distribution as a self-contained SVG
//! histogram (no plotting dependency: a few rectangles and labels).

use std::fmt::Write as _;

use crate::contend::{percentile, Report};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 56.0;
const BINS: usize = 48;

/// The SVG text of a histogram of the report's waits, in milliseconds on a
/// logarithmic axis (waits under contention span four decades), with p50
/// and p99 marked.
pub fn wait_histogram(report: &Report) -> String {
    let waits_ms: Vec<f64> = report.waits().iter().map(|w| w.as_secs_f64() * 1e3).collect();
    // From the decade below the shortest wait (at least 1 µs) to the decade above the longest.
    let shortest = waits_ms.first().copied().unwrap_or(1.0).max(1e-3);
    let longest = waits_ms.last().copied().unwrap_or(1.0).max(shortest * 10.0);
    let (lo, hi) = (shortest.log10().floor(), longest.log10().ceil());
    let position = |ms: f64| ((ms.max(1e-3).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
    let mut counts = [0usize; BINS];
    for &wait in &waits_ms {
        let bin = (position(wait) * BINS as f64) as usize;
        counts[bin.min(BINS - 1)] += 1;
    }
    let tallest = counts.iter().copied().max().unwrap_or(0).max(1);
    let (plot_w, plot_h) = (WIDTH - 2.0 * MARGIN, HEIGHT - 2.0 * MARGIN);
    let x = |ms: f64| MARGIN + position(ms) * plot_w;
    let y = |count: usize| HEIGHT - MARGIN - count as f64 / tallest as f64 * plot_h;

    let c = &report.config;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="14">uuidlock contend: wait before holding the lock ({} processes x {}, hold {:?}, runner {})</text>"#,
        WIDTH / 2.0,
        c.processes,
        c.iterations,
        c.hold,
        c.runner_name()
    );
    let bar_w = plot_w / BINS as f64;
    for (bin, &count) in counts.iter().enumerate() {
        if count > 0 {
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4a7bd0"><title>{count}</title></rect>"##,
                MARGIN + bin as f64 * bar_w,
                y(count),
                (bar_w - 1.0).max(1.0),
                HEIGHT - MARGIN - y(count)
            );
        }
    }
    let (x0, y0) = (MARGIN, HEIGHT - MARGIN);
    let _ = writeln!(svg, r#"<line x1="{x0}" y1="{y0}" x2="{}" y2="{y0}" stroke="black"/>"#, WIDTH - MARGIN);
    let _ = writeln!(svg, r#"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{MARGIN}" stroke="black"/>"#);
    for decade in lo as i32..=hi as i32 {
        let ms = 10f64.powi(decade);
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{}" text-anchor="middle">{ms}</text>"#, x(ms), y0 + 16.0);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">wait (ms, log scale)</text>"#,
        WIDTH / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">{tallest}</text>"#, x0 - 6.0, MARGIN + 4.0);
    let _ = writeln!(svg, r#"<text x="{}" y="{y0}" text-anchor="end">0</text>"#, x0 - 6.0);
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">acquisitions</text>"#,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    let waits = report.waits();
    for (label, q, colour) in [("p50", 0.50, "#2a9d3a"), ("p99", 0.99, "#d0492a")] {
        let ms = percentile(&waits, q).as_secs_f64() * 1e3;
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{MARGIN}" x2="{0:.1}" y2="{y0}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{1:.1}" y="{2}" fill="{colour}">{label} {ms:.2} ms</text>"#,
            x(ms),
            x(ms) + 4.0,
            MARGIN + if q < 0.9 { 12.0 } else { 26.0 }
        );
    }
    svg.push_str("</svg>\n");
    svg
}
